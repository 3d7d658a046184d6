"""Continual-learning strategies: one file per method, all on the Strategy contract."""

from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.finetune import Finetune

__all__ = ["Finetune", "ModelOutput", "Strategy"]
