"""CSV logger: one row per finished experience, for a spreadsheet or ``pandas.read_csv``.

Columns (percent for everything accuracy-like, as ``lifelong-kd report``):

* ``step`` (the experience just trained, from 0) and ``experiences_seen``;
* ``accuracy_E{j}_%``: R[step, j] for every experience j of the stream, empty for the
  experiences not trained yet (j > step; their accuracy before training, the baseline of
  forward transfer, is in ``results.json``);
* each headline metric ``{name}_%`` (average accuracy, forgetting, BWT, learning accuracy, FWT);
* with robustness, ``mean_corrupted_accuracy_%``, ``relative_robustness_%`` and
  ``corrupted_forgetting_%``; with continual evaluation, ``min_accuracy_%`` and ``worst_case_accuracy_%``;
* the training loss of the experience, ``loss``, and each of its parts, ``loss_{term}``
  (``loss_cross_entropy``, ``loss_distillation``, ...: :mod:`lifelong_kd.loss_terms`);
* ``eval_seconds``.

The file is rewritten whole and atomically after each report (a run has few experiences), so
it is never torn; a column that appears later (a strategy term from the second experience on)
is added to the header and left empty in earlier rows. A resumed run (``first_step`` > 0) keeps
the rows before ``first_step`` and replaces the others: one row per experience.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.files import write_atomic

# Robustness and stability values copied into a row (fractions, written in percent).
ROBUSTNESS_COLUMNS = ("mean_corrupted_accuracy", "relative_robustness", "corrupted_forgetting")
STABILITY_COLUMNS = ("min_accuracy", "worst_case_accuracy")


def _percent(value: Any) -> float | None:
    """A fraction in percent; None for what is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return 100 * value


def report_row(report: EvalReport) -> dict[str, Any]:
    """The CSV row of one report (see the module docstring for the columns)."""
    row: dict[str, Any] = {"step": report.step, "experiences_seen": report.step + 1}
    row.update({f"accuracy_E{j}_%": _percent(value) if j <= report.step else None for j, value in enumerate(report.accuracy)})
    row.update({f"{name}_%": _percent(value) for name, value in report.metrics.items()})
    robustness = report.robustness or {}
    row.update({f"{name}_%": _percent(robustness.get(name)) for name in ROBUSTNESS_COLUMNS if name in robustness})
    stability = report.stability or {}
    row.update({f"{name}_%": _percent(stability.get(name)) for name in STABILITY_COLUMNS if name in stability})
    training = report.extra.get("training") or {}
    if training:
        row["loss"] = training.get("mean_loss")
        row.update({f"loss_{name}": value for name, value in (training.get("loss_terms") or {}).items()})
    row["eval_seconds"] = report.eval_seconds
    return row


class CSVLogger:
    """Keeps ``<folder>/<name>`` (default ``metrics.csv``) as one row per finished experience.

    Args:
        folder: Folder of the file.
        name: File name.
    """

    def __init__(self, folder: str | Path, name: str = "metrics.csv") -> None:
        self.folder = Path(folder)
        self.name = name
        self.rows_: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        """The file written."""
        return self.folder / self.name

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Start the file; when continuing at ``first_step`` keep the rows of the experiences before it."""
        self.rows_ = [row for row in read_rows(self.path) if _step(row) is not None and _step(row) < first_step] if first_step else []
        self._write()

    def log_report(self, report: EvalReport) -> None:
        """Add (or replace) the report's row."""
        self.rows_ = [row for row in self.rows_ if (_step(row) or 0) < report.step] + [report_row(report)]
        self._write()

    def _write(self) -> None:
        columns: dict[str, None] = {}
        for row in self.rows_:
            columns.update(dict.fromkeys(row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in self.rows_)
        write_atomic(self.path, buffer.getvalue().encode())

    def close(self) -> None:
        """Nothing is held open."""


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV file this logger wrote (values as text; empty cells as None); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [{key: (value if value != "" else None) for key, value in row.items()} for row in csv.DictReader(handle)]


def _step(row: Mapping[str, Any]) -> int | None:
    try:
        return int(row["step"])
    except (KeyError, TypeError, ValueError):
        return None
