"""Loggers: consume EvalReports (never models) and write them somewhere."""

from lifelong_kd.loggers.base import Logger
from lifelong_kd.loggers.csv import CSVLogger
from lifelong_kd.loggers.jsonl import JsonlLogger
from lifelong_kd.loggers.wandb import WandbLogger

__all__ = ["CSVLogger", "JsonlLogger", "Logger", "WandbLogger"]
