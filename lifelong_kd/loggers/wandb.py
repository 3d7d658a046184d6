"""Weights & Biases logger: the same reports as TensorBoard, in a W&B run (optional: ``pip install "lifelong-kd[wandb]"``).

What it logs (same tags and units as :mod:`lifelong_kd.loggers.tensorboard`: fractions):

* the run config flattened like TensorBoard's HParams (:func:`~lifelong_kd.loggers.tensorboard.hparams`:
  the settings that change the numbers, strategy options included) as the W&B config;
* per experience, against the x-axis ``experience`` (0-based): ``accuracy/experience_{j}`` for the
  experiences trained so far, ``metrics/*``, ``robustness/*``, ``stability/*``, ``timing/eval_seconds``
  and the experience's mean training loss and its parts, ``loss/mean`` and ``loss/{term}``;
* the loss curve against the x-axis ``iteration``: ``train/loss`` and ``train/{term}``
  (``train/cross_entropy``, ``train/distillation``, ...), as TensorBoard's ``train`` sub-run;
* at the end, the final metrics in the run summary (``final/*``).

The run is named after what it is (:func:`~lifelong_kd.loggers.base.run_label`) and grouped by
benchmark, scenario and strategy, so W&B's grouping shows the mean over seeds. Its files go to
``<folder>/wandb``. ``mode`` (or ``$WANDB_MODE``) ``offline`` writes the run there without a
network or an account; ``wandb sync <folder>/wandb/offline-run-*`` uploads it later.

Resuming: W&B cannot delete what a run has logged, so the logger keeps ``<folder>/wandb/lifelong_kd.json``
(the W&B run id and the last experience logged). A resumed run (``first_step`` > 0) continues the
same W&B run (``resume="allow"``) and skips the reports the W&B run already holds: each experience
is logged once however often the run was interrupted.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.files import write_atomic
from lifelong_kd.loggers.base import run_label

INSTALL = 'pip install "lifelong-kd[wandb]"'
STATE = "lifelong_kd.json"
# Metrics logged once per experience (x-axis "experience") and per loss-curve point (x-axis "iteration").
EXPERIENCE_GROUPS = ("accuracy", "metrics", "robustness", "stability", "timing", "loss")


def wandb_available() -> bool:
    """Whether the ``wandb`` package can be imported (without importing it)."""
    import importlib.util
    import sys

    if "wandb" in sys.modules:  # imported already, or blocked (None)
        return sys.modules["wandb"] is not None
    return importlib.util.find_spec("wandb") is not None


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ModuleNotFoundError(f"The Weights & Biases logger needs the wandb package: {INSTALL} (or pip install wandb).") from None
    return wandb


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def experience_values(report: EvalReport) -> dict[str, float]:
    """The per-experience values of one report, keyed by their W&B names (non-finite values left out)."""
    values: dict[str, Any] = {f"accuracy/experience_{j}": value for j, value in enumerate(report.accuracy[: report.step + 1])}
    values.update({f"metrics/{name}": value for name, value in report.metrics.items()})
    robustness = report.robustness or {}
    values.update({f"robustness/{name}": value for name, value in robustness.items() if not isinstance(value, (dict, list))})
    stability = report.stability or {}
    values.update({f"stability/{name}": stability.get(name) for name in ("min_accuracy", "worst_case_accuracy", "final_accuracy")})
    values["timing/eval_seconds"] = report.eval_seconds
    training = report.extra.get("training") or {}
    values["loss/mean"] = training.get("mean_loss")
    values.update({f"loss/{name}": value for name, value in (training.get("loss_terms") or {}).items()})
    return {key: float(value) for key, value in values.items() if _finite(value)}


def curve_points(report: EvalReport) -> list[dict[str, float]]:
    """The report's loss-curve points, one W&B row per global iteration: ``{"iteration", "train/loss", "train/{term}"}``."""
    training = report.extra.get("training") or {}
    rows: dict[int, dict[str, float]] = {}
    for iteration, loss in training.get("loss_curve") or []:
        rows.setdefault(int(iteration), {})["train/loss"] = loss
    for name, points in (training.get("loss_terms_curve") or {}).items():
        for iteration, value in points:
            rows.setdefault(int(iteration), {})[f"train/{name}"] = value
    return [{"iteration": iteration, **{k: v for k, v in row.items() if _finite(v)}} for iteration, row in sorted(rows.items())]


class WandbLogger:
    """Logs each report to a Weights & Biases run (see the module docstring).

    Args:
        folder: Run folder; W&B writes under ``<folder>/wandb``.
        project: W&B project name.
        mode: ``"online"``, ``"offline"`` or ``"disabled"``; None: W&B's own choice (``$WANDB_MODE``, else online).
        entity: W&B entity (user or team); None: the account's default.
        member: The model of a lifelong-compression run this logger is for (``student``, ``teacher``, ...):
            added to the run's name and group. None: a plain run.
    """

    def __init__(self, folder: str | Path, project: str, mode: str | None = None, entity: str | None = None, member: str | None = None) -> None:
        self.folder = Path(folder)
        self.project = project
        self.mode = mode
        self.entity = entity
        self.member = member
        self.run_: Any = None
        self.logged_ = -1
        self.last_: EvalReport | None = None

    @property
    def directory(self) -> Path:
        """Where W&B writes its files, and the logger its state."""
        return self.folder / "wandb"

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.directory / STATE).read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self) -> None:
        write_atomic(self.directory / STATE, json.dumps({"id": self.run_.id, "logged": self.logged_}).encode())

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Start (or, when ``first_step`` > 0, continue) the W&B run with the flattened config."""
        from lifelong_kd.loggers.tensorboard import hparams

        wandb = _import_wandb()
        state = self._state() if first_step > 0 else {}
        run_id = state.get("id") or uuid.uuid4().hex[:12]
        self.logged_ = int(state.get("logged", -1)) if state.get("id") else -1
        self.directory.mkdir(parents=True, exist_ok=True)
        plain = json_safe(dict(config))
        parts = [str(plain[key]) for key in ("benchmark", "scenario", "strategy") if plain.get(key)] + ([self.member] if self.member else [])
        name = ", ".join(part for part in (run_label(plain), self.member) if part)
        arguments = {"mode": self.mode} if self.mode else {}
        self.run_ = wandb.init(
            project=self.project, entity=self.entity, name=name or None, group=", ".join(parts) or None, config=hparams(plain),
            dir=str(self.folder), id=run_id, resume="allow", settings=wandb.Settings(console="off"), **arguments,
        )
        self.run_.define_metric("experience")
        self.run_.define_metric("iteration")
        for name in EXPERIENCE_GROUPS:
            self.run_.define_metric(f"{name}/*", step_metric="experience")
        self.run_.define_metric("train/*", step_metric="iteration")
        self._save_state()

    def log_report(self, report: EvalReport) -> None:
        """Log the report's loss-curve points, then its per-experience values (a report W&B holds already is skipped)."""
        self.last_ = report
        if self.run_ is None or report.step <= self.logged_:
            return
        for row in curve_points(report):
            self.run_.log(row)
        self.run_.log({"experience": report.step, **experience_values(report)})
        self.logged_ = report.step
        self._save_state()

    def close(self) -> None:
        """Put the final metrics in the run's summary (once the stream is finished) and finish the run."""
        if self.run_ is None:
            return
        last = self.last_
        if last is not None and last.step == len(last.accuracy) - 1:
            for name, value in last.metrics.items():
                if _finite(value):
                    self.run_.summary[f"final/{name}"] = value
        self.run_.finish()
        self.run_ = None
