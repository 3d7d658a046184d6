"""JSON-lines logger: one line per report in ``metrics.jsonl``, easy to read with pandas."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.report import EvalReport, json_safe


class JsonlLogger:
    """Appends every report as one JSON line to ``<folder>/metrics.jsonl``.

    Args:
        folder: Run folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @property
    def path(self) -> Path:
        """The file written."""
        return self.folder / "metrics.jsonl"

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Write the config as the first line (``{"config": ...}``) when the file is new."""
        if not self.path.exists():
            self._append({"config": json_safe(dict(config))})

    def log_report(self, report: EvalReport) -> None:
        """Append the report."""
        self._append(report.to_dict())

    def _append(self, record: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def close(self) -> None:
        """Nothing is held open."""
