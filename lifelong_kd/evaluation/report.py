"""EvalReport: everything the evaluator measured after one experience; loggers read only this."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def json_safe(value: Any) -> Any:
    """Replace NaN/inf floats by None (JSON has no NaN), recursively; tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(type(v) is int or (type(v) is float and math.isfinite(v)) for v in value):  # finite numbers: one pass, a copy
            return list(value)
        return [json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class EvalReport:
    """Evaluation after training experience ``step``.

    Attributes:
        step: Index of the experience just trained (row of the accuracy matrix).
        accuracy_matrix: Rows 0..step of R; ``R[i][j]`` = accuracy on experience j's
            test set after training experience i (fractions in [0, 1]).
        metrics: Headline metrics of the matrix so far (see ``docs/metrics.md``).
        initial_accuracy: A randomly initialised model's accuracy per experience (for FWT).
        robustness: Accuracy under corruptions, or None when no shift suite is run.
        compression: Size/speed of the evaluated model and ratios to a reference, or None.
        eval_seconds: Wall time of this evaluation.
        instruments: Per-class accuracy and forgetting, confusion matrix, negative flips and
            representation drift (:mod:`lifelong_kd.evaluation.instruments`), or None.
        continual: The continual-evaluation curve so far (accuracy on the probe subsets every
            K iterations, :mod:`lifelong_kd.evaluation.continual`), or None.
        stability: The stability-gap metrics of that curve (min-ACC, WC-ACC, WF^w), or None.
    """

    step: int
    accuracy_matrix: tuple[tuple[float, ...], ...]
    metrics: Mapping[str, float]
    initial_accuracy: tuple[float, ...] | None = None
    robustness: Mapping[str, Any] | None = None
    compression: Mapping[str, Any] | None = None
    eval_seconds: float = 0.0
    instruments: Mapping[str, Any] | None = None
    continual: Mapping[str, Any] | None = None
    stability: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> tuple[float, ...]:
        """The newest row: accuracy on every experience after training ``step``."""
        return self.accuracy_matrix[-1]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN -> None)."""
        return json_safe(
            {
                "step": self.step,
                "accuracy_matrix": self.accuracy_matrix,
                "metrics": dict(self.metrics),
                "initial_accuracy": self.initial_accuracy,
                "robustness": self.robustness,
                "compression": self.compression,
                "eval_seconds": self.eval_seconds,
                **{name: value for name, value in self.optional_parts().items() if value is not None},
                **dict(self.extra),
            }
        )

    def optional_parts(self) -> dict[str, Mapping[str, Any] | None]:
        """The optional measurements (written to the dict only when measured)."""
        return {"instruments": self.instruments, "continual": self.continual, "stability": self.stability}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        """The report :meth:`to_dict` gave (fields not of the dataclass go to ``extra``)."""
        names = {"step", "accuracy_matrix", "metrics", "initial_accuracy", "robustness", "compression", "eval_seconds", "instruments", "continual", "stability"}
        matrix = tuple(tuple(float("nan") if v is None else v for v in row) for row in data["accuracy_matrix"])
        initial = data.get("initial_accuracy")
        return cls(
            step=int(data["step"]),
            accuracy_matrix=matrix,
            metrics={k: float("nan") if v is None else v for k, v in data["metrics"].items()},
            initial_accuracy=tuple(initial) if initial is not None else None,
            robustness=data.get("robustness"),
            compression=data.get("compression"),
            eval_seconds=float(data.get("eval_seconds") or 0.0),
            instruments=data.get("instruments"),
            continual=data.get("continual"),
            stability=data.get("stability"),
            extra={k: v for k, v in data.items() if k not in names},
        )
