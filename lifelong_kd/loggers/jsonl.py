"""JSON-lines logger: the config, then one line per report, in a ``metrics.jsonl`` of your choice.

Run folders get their ``metrics.jsonl`` from :mod:`lifelong_kd.run_folder` (derived from the
checkpoint); this logger writes the same format anywhere else, e.g. next to a custom loop.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.continual import continual_rows
from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.files import write_atomic


class JsonlLogger:
    """Keeps ``<folder>/metrics.jsonl`` as the config line plus one line per report.

    The file is rewritten whole and atomically after each report, so it is never torn,
    and a resumed run (``first_step`` > 0) keeps the rows before ``first_step`` and
    replaces the rest: exactly one row per experience.

    Args:
        folder: Folder of the file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.lines_: list[dict[str, Any]] = []

    @property
    def path(self) -> Path:
        """The file written."""
        return self.folder / "metrics.jsonl"

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Start the file with the config; keep earlier rows when continuing at ``first_step``."""
        kept = [line for line in self._read() if "step" in line and line["step"] < first_step] if first_step else []
        self.lines_ = [{"config": json_safe(dict(config))}, *kept]
        self._write()

    def log_report(self, report: EvalReport) -> None:
        """Add (or replace) the report's row, after its continual-evaluation rows (``step`` = the experience being trained)."""
        row = report.to_dict()
        self.lines_ = [line for line in self.lines_ if line.get("step", -1) < report.step] + [*continual_rows(row), row]
        self._write()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = []
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return lines

    def _write(self) -> None:
        write_atomic(self.path, "".join(json.dumps(line) + "\n" for line in self.lines_).encode())

    def close(self) -> None:
        """Nothing is held open."""
