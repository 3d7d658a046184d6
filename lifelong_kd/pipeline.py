"""Run a stream end to end: a plain for-loop over experiences, with checkpoints and resume.

After every experience the run folder gets, atomically (temp file + rename):

* ``checkpoint.pt``: model, strategy and evaluator state (loads with ``weights_only=True``);
* ``results.json``: config, accuracy matrix, metrics, per-experience reports, timing.

``resume=True`` continues from the last finished experience; because each experience
reseeds every random source from ``(seed, experience index)``, a resumed run ends with
the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong_kd.data.stream import Stream
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.files import save_torch_atomic, write_atomic
from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.loggers.base import Logger
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.train import TrainConfig, autocast, train_experience

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
# Keys of the config record that may differ between a run and its resumption.
VOLATILE_KEYS = frozenset({"resume", "out", "progress", "quiet", "config_file"})


class ResumeError(RuntimeError):
    """The run folder cannot be resumed with this configuration."""


def seed_everything(seed: int, experience_index: int = -1) -> None:
    """Seed torch's global generator from the run seed and the experience index."""
    torch.manual_seed(seed * 1_000_003 + experience_index + 1)


def _comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in json_safe(dict(record)).items() if k not in VOLATILE_KEYS}


class RunState:
    """What a run has finished: reports, timing, and the record of its config."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)
        self.reports: list[dict[str, Any]] = []
        self.timing: list[dict[str, float]] = []

    @property
    def finished(self) -> int:
        """Number of finished experiences."""
        return len(self.reports)

    def results(self) -> dict[str, Any]:
        """The ``results.json`` document."""
        last = self.reports[-1] if self.reports else {}
        train_seconds = sum(t["train_seconds"] for t in self.timing)
        eval_seconds = sum(t["eval_seconds"] for t in self.timing)
        return json_safe(
            {
                "config": self.record,
                "finished_experiences": self.finished,
                "accuracy_matrix": last.get("accuracy_matrix", []),
                "metrics": last.get("metrics", {}),
                "initial_accuracy": last.get("initial_accuracy"),
                "robustness": last.get("robustness"),
                "compression": last.get("compression"),
                "reports": self.reports,
                "timing": {
                    "train_seconds": train_seconds,
                    "eval_seconds": eval_seconds,
                    "per_experience": self.timing,
                    "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform()},
                },
            }
        )


def save(folder: Path, state: RunState, model: nn.Module, strategy: Strategy, evaluator: Evaluator) -> None:
    """Write the checkpoint, then ``results.json``, each atomically."""
    checkpoint = {
        "model": model.state_dict(),
        "strategy": strategy.state_dict(),
        "evaluator": evaluator.state_dict(),
        "reports": state.reports,
        "timing": state.timing,
        "record": json_safe(state.record),
    }
    save_torch_atomic(checkpoint, folder / CHECKPOINT)
    write_atomic(folder / RESULTS, json.dumps(state.results(), indent=2).encode())


def load(folder: Path, state: RunState, model: nn.Module, strategy: Strategy, evaluator: Evaluator) -> None:
    """Restore a run from ``folder``'s checkpoint into the given objects."""
    checkpoint = torch.load(folder / CHECKPOINT, weights_only=True)
    if _comparable(checkpoint["record"]) != _comparable(state.record):
        raise ResumeError(
            f"{folder} holds a run with a different configuration; resume it with the same "
            "options, or choose a new --out folder."
        )
    model.load_state_dict(checkpoint["model"])
    strategy.load_state_dict(checkpoint["strategy"])
    evaluator.load_state_dict(checkpoint["evaluator"])
    state.reports, state.timing = list(checkpoint["reports"]), list(checkpoint["timing"])


def run(
    stream: Stream,
    model: nn.Module,
    strategy: Strategy,
    evaluator: Evaluator | None = None,
    loggers: Sequence[Logger] = (),
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on every experience of ``stream`` with ``strategy``; evaluate after each.

    Args:
        stream: The benchmark stream.
        model: The model (a :class:`~lifelong_kd.models.Classifier` or compatible).
        strategy: The continual-learning strategy.
        evaluator: The evaluator (default: accuracy matrix and forgetting metrics).
        loggers: Receive the config and each :class:`EvalReport`.
        config: Training settings.
        out: Run folder; None keeps nothing on disk.
        resume: Continue from ``out``'s checkpoint when there is one.
        record: The run's configuration as plain values, stored in ``results.json``.

    Returns:
        The ``results.json`` document.
    """
    config = config or TrainConfig()
    evaluator = evaluator or Evaluator(batch_size=config.eval_batch_size)
    strategy.check_stream(stream)
    folder = Path(out) if out is not None else None
    state = RunState(record or {})
    if folder is not None and resume and (folder / CHECKPOINT).exists():
        load(folder, state, model, strategy, evaluator)
    elif state.finished == 0:
        with autocast(config.precision):
            evaluator.measure_initial(model, stream)
    for logger in loggers:
        logger.log_config(state.record)
    for experience in stream.experiences[state.finished :]:
        report, timing = _run_experience(stream, experience.index, model, strategy, evaluator, config)
        state.reports.append(report.to_dict())
        state.timing.append(timing)
        if folder is not None:
            save(folder, state, model, strategy, evaluator)
        for logger in loggers:
            logger.log_report(report)
    for logger in loggers:
        logger.close()
    return state.results()


def _run_experience(
    stream: Stream, index: int, model: nn.Module, strategy: Strategy, evaluator: Evaluator, config: TrainConfig
) -> tuple[EvalReport, dict[str, float]]:
    experience = stream[index]
    seed_everything(config.seed, index)
    start = time.perf_counter()
    with autocast(config.precision):
        strategy.before_experience(model, experience)
        stats = train_experience(model, strategy, stream, experience, config)
        strategy.after_experience(model, experience)
        train_seconds = time.perf_counter() - start
        report = evaluator.evaluate(model, stream, index)
    timing = {
        "train_seconds": train_seconds,
        "loop_seconds": stats["train_seconds"],
        "eval_seconds": report.eval_seconds,
        "samples": stats["samples"],
        "samples_per_second": stats["samples"] / max(stats["train_seconds"], 1e-9),
    }
    return report, timing
