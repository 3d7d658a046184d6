"""The evaluator: one accuracy-matrix row per experience, and the metrics of the matrix so far."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from lifelong_kd.data.stream import Experience, Stream
from lifelong_kd.evaluation import metrics
from lifelong_kd.evaluation.report import EvalReport


@torch.inference_mode()
def accuracy(model: nn.Module, experience: Experience, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``experience``'s test set (its own head in the task scenario)."""
    was_training = model.training
    model.eval()
    correct = 0
    test = experience.test
    for start in range(0, len(test), batch_size):
        x = experience.transform(test.x[start : start + batch_size])
        logits = model(x, experience.task_id)
        correct += int((logits.argmax(1) == test.y[start : start + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(test), 1)


class Evaluator:
    """Evaluates a model on every experience of a stream after each training step.

    Args:
        batch_size: Samples per inference batch.
        forgetting_definition: ``"max"`` (Chaudhry et al. 2018, ours) or ``"avalanche"``.
    """

    def __init__(self, batch_size: int = 1024, forgetting_definition: str = "max") -> None:
        self.batch_size = batch_size
        self.forgetting_definition = forgetting_definition
        self.rows_: list[list[float]] = []
        self.initial_: list[float] | None = None

    def row(self, model: nn.Module, stream: Stream) -> list[float]:
        """Accuracy on every experience's test set."""
        return [accuracy(model, experience, self.batch_size) for experience in stream]

    def measure_initial(self, model: nn.Module, stream: Stream) -> None:
        """Record a randomly initialised model's accuracy per experience (the FWT baseline)."""
        self.initial_ = self.row(model, stream)

    def evaluate(self, model: nn.Module, stream: Stream, step: int) -> EvalReport:
        """Evaluate after training experience ``step``; appends row ``step`` of R."""
        start = time.perf_counter()
        self.rows_ = self.rows_[:step] + [self.row(model, stream)]
        summary = metrics.summarize(self.rows_, self.initial_, self.forgetting_definition)
        return EvalReport(
            step=step,
            accuracy_matrix=tuple(tuple(r) for r in self.rows_),
            metrics=summary,
            initial_accuracy=tuple(self.initial_) if self.initial_ is not None else None,
            eval_seconds=time.perf_counter() - start,
        )

    def state_dict(self) -> dict[str, Any]:
        """Rows measured so far and the initial accuracies."""
        return {"rows": [list(r) for r in self.rows_], "initial": self.initial_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rows_ = [list(r) for r in state["rows"]]
        self.initial_ = state["initial"]
