"""Evaluation: accuracy matrix, forgetting metrics, robustness under shift, compression."""

from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.evaluation.report import EvalReport

__all__ = ["EvalReport", "Evaluator"]
