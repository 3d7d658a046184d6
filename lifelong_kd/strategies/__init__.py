"""Continual-learning strategies: one file per method, all on the Strategy contract."""

from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.bic import BiC
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.strategies.der import DER, DERpp
from lifelong_kd.strategies.er import ER
from lifelong_kd.strategies.ewc import EWC
from lifelong_kd.strategies.finetune import Finetune
from lifelong_kd.strategies.icarl import ICaRL
from lifelong_kd.strategies.joint import Joint
from lifelong_kd.strategies.lucir import LUCIR
from lifelong_kd.strategies.lwf import LwF
from lifelong_kd.strategies.multi_teacher import MultiTeacher

__all__ = ["BiC", "Compress", "DER", "DERpp", "ER", "EWC", "Finetune", "ICaRL", "Joint", "LUCIR", "LwF", "ModelOutput", "MultiTeacher", "Strategy"]
