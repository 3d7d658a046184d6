"""Loggers: consume EvalReports (never models) and write them somewhere."""

from lifelong_kd.loggers.base import Logger
from lifelong_kd.loggers.jsonl import JsonlLogger

__all__ = ["JsonlLogger", "Logger"]
