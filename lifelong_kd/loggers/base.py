"""The logger contract: loggers see reports and the run's config, never models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from lifelong_kd.evaluation.report import EvalReport


class Logger(Protocol):
    """Receives the run's config once, one report per experience, then ``close``."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the run's configuration."""

    def log_report(self, report: EvalReport) -> None:
        """Record one experience's evaluation."""

    def close(self) -> None:
        """Flush and release files."""
