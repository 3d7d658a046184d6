"""TensorBoard logger: scalars stepped by experience, heatmaps, hparams and the config.

The only module that imports ``SummaryWriter``. Tags:

* ``accuracy/experience_{j}``: R[step, j];
* ``metrics/{name}``: average_accuracy, forgetting, backward_transfer, forward_transfer, ...;
* ``robustness/{mean_corrupted_accuracy, relative_robustness, corrupted_forgetting, clean_accuracy}``
  and ``robustness/corruption/{name}``;
* ``compression/{ratio name}`` and ``compression/{parameters, state_bytes, ...}``, only when the
  run has a reference model (``--reference-model``, a compression run's teacher): without one
  every ratio is 1 and every size a constant (:func:`has_reference`);
* ``instruments/{class_forgetting, negative_flip_rate, cka_previous, cka_first}`` and
  ``per_class_accuracy/experience_{j}/class_{i}`` (position ``i`` in the experience's classes);
* figures ``accuracy_matrix`` and ``robustness_grid`` at the steps
  :func:`lifelong_kd.loggers.figures.figures_due` picks (every ``figures_every``-th experience and
  the last; by default every experience of streams up to 5 experiences, about 5 times on
  streams up to 20, after the last alone on longer ones), and after the last experience
  ``confusion_matrix`` and ``representation_drift``; text ``config``; hparams at close:
  the config's settings that change the numbers (:func:`hparams`), with the strategy options
  flattened (``temperature``, ``alpha``, ...); text ``run_name``: what the run is (benchmark,
  scenario, strategy, seed: :func:`lifelong_kd.loggers.base.run_label`), also in the figures' titles;
* ``stability/{min_accuracy, worst_case_accuracy, final_accuracy, windowed_forgetting_{w}}`` at
  experience steps, and ``continual/{experience_{j}, average}`` (continual evaluation) stepped by
  the global iteration in the sub-run ``tensorboard/continual`` (its own purge step);
* ``train/loss``: the mean training loss every few iterations, stepped by the global iteration,
  in the sub-run ``tensorboard/train`` (its own purge step, so a resumed run shows each point once),
  and beside it each part of the loss: ``train/cross_entropy`` and the strategy's terms
  (``train/distillation``, ``train/feature``, ``train/penalty``, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.loggers.base import run_label
from lifelong_kd.loggers.figures import (
    accuracy_matrix_figure,
    check_figures_every,
    confusion_matrix_figure,
    drift_figure,
    figures_due,
    png_size,
    robustness_figure,
    shared_png,
)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _hparam(value: Any) -> bool | int | float | str | None:
    """A value as the HParams plugin takes it: scalars as they are, lists of scalars as ``1,2,3``, else None."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (bool, int, float, str)) for v in value):
        return ",".join(str(v) for v in value)
    return None


def has_reference(compression: Mapping[str, Any] | None) -> bool:
    """Whether a report's compression measurements compare the model with another (a reference model).

    Without ``--reference-model`` the evaluator measures the model against itself: its
    ``reference`` measurements are the model's own and every ratio is 1.
    """
    return bool(compression) and compression.get("reference") != compression.get("model")


def hparams(config: Mapping[str, Any]) -> dict[str, bool | int | float | str]:
    """The run's hyperparameters for TensorBoard's HParams table.

    The config's keys without those that do not change the numbers
    (:data:`lifelong_kd.pipeline.VOLATILE_KEYS`: ``out``, ``quiet``, ``resume``, ...), and the
    strategy options (``strategy_options``) flattened into it (``temperature``, ``alpha``, ...).
    Lists become ``1,2,3``; None and nested values are left out.
    """
    from lifelong_kd.pipeline import VOLATILE_KEYS

    flat = {key: value for key, value in config.items() if key not in VOLATILE_KEYS}
    options = config.get("strategy_options")
    if isinstance(options, Mapping):
        flat.update({str(name): value for name, value in options.items() if name not in flat})
    converted = {key: _hparam(value) for key, value in flat.items()}
    return {key: value for key, value in converted.items() if value is not None}


class TensorBoardLogger:
    """Writes event files under ``<folder>/tensorboard``.

    Args:
        folder: Run folder.
        figures: Also log the accuracy-matrix and robustness heatmaps.
        figures_every: Log them after every ``figures_every``-th experience and the last; None:
            as :func:`lifelong_kd.loggers.figures.figures_due` chooses (scalars are logged at every experience).
    """

    def __init__(self, folder: str | Path, figures: bool = True, figures_every: int | None = None) -> None:
        check_figures_every(figures_every)
        self.folder = Path(folder)
        self.figures = figures
        self.figures_every = figures_every
        self.writer_ = None
        self.train_writer_ = None
        self.continual_writer_ = None
        self.first_step_ = 0
        self.config_: dict[str, Any] = {}
        self.label_ = ""
        self.last_: EvalReport | None = None
        self.pending_: dict[int, list[Any]] = {}  # scalars queued by step, written once per report (_write_scalars)

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
        self.label_ = run_label(self.config_)
        writer = self._writer()  # made now, so its purge comes before anything it logs
        if first_step == 0:  # a resumed run keeps the text logged at step 0
            writer.add_text("config", "```\n" + json.dumps(self.config_, indent=2) + "\n```", 0)
            if self.label_:
                writer.add_text("run_name", self.label_ + (f" ({self.config_['out']})" if self.config_.get("out") else ""), 0)

    def _scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Queue the finite ``values`` as scalars ``prefix/name`` at ``step`` (:meth:`_write_scalars` writes them)."""
        from torch.utils.tensorboard.summary import scalar

        queued = self.pending_.setdefault(step, [])
        for name, value in values.items():
            if _finite(value):
                queued.extend(scalar(f"{prefix}/{name}", value).value)  # the value add_scalar would write

    def _write_scalars(self) -> None:
        """The queued scalars, one event per step: an event per scalar (``add_scalar``) cost about 40 us each,
        and a 50-experience stream logs about 550 per experience (accuracy and per-class accuracy of every experience)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        for step, values in self.pending_.items():
            if values:
                self._writer()._get_file_writer().add_summary(Summary(value=values), step)  # as add_scalar does, for many values
        self.pending_ = {}

    def log_report(self, report: EvalReport) -> None:
        """Scalars, and figures of the matrix so far, at global step = experience index."""
        step = report.step
        self._scalars("accuracy", {f"experience_{j}": v for j, v in enumerate(report.accuracy)}, step)
        self._scalars("metrics", report.metrics, step)
        if report.robustness:
            self._scalars("robustness", report.robustness, step)
            self._scalars("robustness/corruption", report.robustness.get("per_corruption", {}), step)
        if has_reference(report.compression):
            self._scalars("compression", report.compression.get("ratios", {}), step)
            self._scalars("compression/model", report.compression.get("model", {}), step)
        self._scalars("timing", {"eval_seconds": report.eval_seconds}, step)
        self._loss_curve(report.extra.get("training"))
        if report.continual:
            self._continual(report.continual, report.stability or {}, step)
        if report.instruments:
            self._instruments(report.instruments, step, last=step == len(report.accuracy) - 1)
        if self.figures and figures_due(step, len(report.accuracy), self.figures_every):
            self._image("accuracy_matrix", shared_png(accuracy_matrix_figure, report.accuracy_matrix, self.label_), step)
            if report.robustness:
                self._image("robustness_grid", shared_png(robustness_figure, report.robustness, step, self.label_), step)
        self._write_scalars()
        self._writer().flush()
        self.last_ = report

    def _instruments(self, instruments: Mapping[str, Any], step: int, last: bool) -> None:
        """Per-class accuracy, class forgetting, negative flips and drift; the confusion and drift heatmaps after the last experience."""
        drift = instruments.get("drift") or {}
        flips = instruments.get("negative_flips") or {}
        headline = {"class_forgetting": instruments.get("class_forgetting"), "negative_flip_rate": flips.get("rate")}
        self._scalars("instruments", {**headline, "cka_previous": drift.get("cka_previous"), "cka_first": drift.get("cka_first")}, step)
        for j, row in enumerate(instruments.get("per_class_accuracy", [])):
            self._scalars(f"per_class_accuracy/experience_{j}", {f"class_{i}": value for i, value in enumerate(row)}, step)
        if self.figures and last:
            if instruments.get("confusion_matrix") is not None:  # None in an earlier report of a long stream (run_folder.compact_report)
                confusion = shared_png(confusion_matrix_figure, instruments["confusion_matrix"], instruments["unit_names"], step, self.label_)
                self._image("confusion_matrix", confusion, step)
            if drift:
                self._image("representation_drift", shared_png(drift_figure, drift["cka_matrix"], self.label_), step)

    def _image(self, tag: str, png: bytes, step: int) -> None:
        """An image event holding ``png`` as it is (what ``add_figure`` writes, without drawing and encoding the figure again)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        height, width = png_size(png)
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)  # 4: RGBA, as savefig writes
        self._writer()._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def _continual(self, curve: Mapping[str, Any], stability: Mapping[str, Any], step: int) -> None:
        """The stability metrics at ``step``; the curve's points of experience ``step`` at their global iterations, in the sub-run ``continual``.

        Its writer purges from the experience's first iteration when it is made (at the first
        report, which on resume is the re-sent last finished experience), like ``train``'s.
        """
        forgetting = {f"windowed_forgetting_{w}": value for w, value in (stability.get("windowed_forgetting") or {}).items()}
        self._scalars("stability", {**{k: stability.get(k) for k in ("min_accuracy", "worst_case_accuracy", "final_accuracy")}, **forgetting}, step)
        if self.continual_writer_ is None:
            from torch.utils.tensorboard import SummaryWriter

            first = curve["ends"][step - 1] + 1 if 0 < step <= len(curve["ends"]) else 1
            self.continual_writer_ = SummaryWriter(log_dir=str(self.log_dir / "continual"), purge_step=first)
        for iteration, experience, row in zip(curve["iterations"], curve["experience"], curve["accuracy"]):
            if experience == step:
                seen = [value for value in row if value is not None]
                values = {**{f"experience_{j}": value for j, value in enumerate(row) if value is not None}, "average": sum(seen) / len(seen)}
                for name, value in values.items():
                    self.continual_writer_.add_scalar(f"continual/{name}", value, int(iteration))
        self.continual_writer_.flush()

    def _loss_curve(self, training: Mapping[str, Any] | None) -> None:
        """``train/loss`` at each point's global iteration, in the sub-run ``train``.

        Its writer is made at the first report with a loss curve, purging from that report's
        first iteration: on resume that is the re-sent last finished experience, so its points
        (and anything an interrupted run logged after them) are replaced, the earlier ones kept.
        """
        points = (training or {}).get("loss_curve") or []
        if not points:
            return
        if self.train_writer_ is None:
            from torch.utils.tensorboard import SummaryWriter

            first = int(training.get("first_iteration") or points[0][0])
            self.train_writer_ = SummaryWriter(log_dir=str(self.log_dir / "train"), purge_step=first)
        for iteration, loss in points:
            if _finite(loss):
                self.train_writer_.add_scalar("train/loss", loss, int(iteration))
        for name, term_points in (training.get("loss_terms_curve") or {}).items():  # train/cross_entropy, train/distillation, ...
            for iteration, value in term_points:
                if _finite(value):
                    self.train_writer_.add_scalar(f"train/{name}", value, int(iteration))
        self.train_writer_.flush()

    def close(self) -> None:
        """Write hparams with the final metrics (once the stream is finished), then close the writer.

        The hparams metrics are logged at the last experience's step, so a resumed run's
        purge replaces them like any other event of that step.
        """
        if self.last_ is not None and self.last_.step == len(self.last_.accuracy) - 1:
            final = {f"final/{k}": v for k, v in self.last_.metrics.items() if _finite(v)}
            if self.last_.robustness and _finite(self.last_.robustness.get("relative_robustness")):
                final["final/relative_robustness"] = self.last_.robustness["relative_robustness"]
            stability = self.last_.stability or {}
            final.update({f"final/{k}": stability[k] for k in ("min_accuracy", "worst_case_accuracy") if _finite(stability.get(k))})
            self._writer().add_hparams(hparams(self.config_), final, run_name=".", global_step=self.last_.step)
        if self.writer_ is not None:
            self.writer_.close()
            self.writer_ = None
        if self.train_writer_ is not None:
            self.train_writer_.close()
            self.train_writer_ = None
        if self.continual_writer_ is not None:
            self.continual_writer_.close()
            self.continual_writer_ = None
