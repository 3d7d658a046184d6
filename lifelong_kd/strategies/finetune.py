"""Fine-tuning: plain sequential training, the lower bound of every table."""

from __future__ import annotations

from lifelong_kd.strategies.base import Strategy


class Finetune(Strategy):
    """Train on each experience in turn with cross-entropy only ("None" in van de Ven et al. 2019)."""

    name = "finetune"
