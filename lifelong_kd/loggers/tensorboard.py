"""TensorBoard logger: scalars stepped by experience, heatmaps, hparams and the config.

The only module that imports ``SummaryWriter``. Tags:

* ``accuracy/experience_{j}``: R[step, j];
* ``metrics/{name}``: average_accuracy, forgetting, backward_transfer, forward_transfer, ...;
* ``robustness/{mean_corrupted_accuracy, relative_robustness, corrupted_forgetting, clean_accuracy}``
  and ``robustness/corruption/{name}``;
* ``compression/{ratio name}`` and ``compression/{parameters, state_bytes, ...}``;
* figures ``accuracy_matrix`` and ``robustness_grid``; text ``config``; hparams at close.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.loggers.figures import accuracy_matrix_figure, robustness_figure


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class TensorBoardLogger:
    """Writes event files under ``<folder>/tensorboard``.

    Args:
        folder: Run folder.
        figures: Also log the accuracy-matrix and robustness heatmaps.
    """

    def __init__(self, folder: str | Path, figures: bool = True) -> None:
        self.folder = Path(folder)
        self.figures = figures
        self.writer_ = None
        self.first_step_ = 0
        self.config_: dict[str, Any] = {}
        self.last_: EvalReport | None = None

    @property
    def log_dir(self) -> Path:
        """Where the event files go."""
        return self.folder / "tensorboard"

    def _writer(self):  # noqa: ANN202 (SummaryWriter)
        if self.writer_ is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard hides what an interrupted writer logged at or after it.
            # A fresh run's folder holds no events, so purging at step 0 is harmless there.
            self.writer_ = SummaryWriter(log_dir=str(self.log_dir), purge_step=self.first_step_)
        return self.writer_

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """The run config as a JSON text block; events at ``first_step`` and later are replaced."""
        self.first_step_ = first_step
        self.config_ = json_safe(dict(config))
        writer = self._writer()  # made now, so its purge comes before anything it logs
        if first_step == 0:  # a resumed run keeps the text logged at step 0
            writer.add_text("config", "```\n" + json.dumps(self.config_, indent=2) + "\n```", 0)

    def _scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        for name, value in values.items():
            if _finite(value):
                self._writer().add_scalar(f"{prefix}/{name}", value, step)

    def log_report(self, report: EvalReport) -> None:
        """Scalars, and figures of the matrix so far, at global step = experience index."""
        step = report.step
        self._scalars("accuracy", {f"experience_{j}": v for j, v in enumerate(report.accuracy)}, step)
        self._scalars("metrics", report.metrics, step)
        if report.robustness:
            self._scalars("robustness", report.robustness, step)
            self._scalars("robustness/corruption", report.robustness.get("per_corruption", {}), step)
        if report.compression:
            self._scalars("compression", report.compression.get("ratios", {}), step)
            self._scalars("compression/model", report.compression.get("model", {}), step)
        self._scalars("timing", {"eval_seconds": report.eval_seconds}, step)
        if self.figures:
            self._writer().add_figure("accuracy_matrix", accuracy_matrix_figure(report.accuracy_matrix), step)
            if report.robustness:
                self._writer().add_figure("robustness_grid", robustness_figure(report.robustness, step), step)
        self._writer().flush()
        self.last_ = report

    def close(self) -> None:
        """Write hparams with the final metrics (once the stream is finished), then close the writer.

        The hparams metrics are logged at the last experience's step, so a resumed run's
        purge replaces them like any other event of that step.
        """
        if self.last_ is not None and self.last_.step == len(self.last_.accuracy) - 1:
            hparams = {k: v for k, v in self.config_.items() if isinstance(v, (int, float, str, bool))}
            final = {f"final/{k}": v for k, v in self.last_.metrics.items() if _finite(v)}
            if self.last_.robustness and _finite(self.last_.robustness.get("relative_robustness")):
                final["final/relative_robustness"] = self.last_.robustness["relative_robustness"]
            self._writer().add_hparams(hparams, final, run_name=".", global_step=self.last_.step)
        if self.writer_ is not None:
            self.writer_.close()
            self.writer_ = None
