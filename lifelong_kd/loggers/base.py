"""The logger contract: loggers see reports and the run's config, never models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from lifelong_kd.evaluation.report import EvalReport


def run_label(config: Mapping[str, Any]) -> str:
    """What a run is, for figure titles and run names: ``split-mnist (class scenario), lwf, seed 0``.

    Built from the config's ``benchmark``, ``scenario``, ``strategy`` and ``seed`` (and
    ``student`` for lifelong compression); the parts a config lacks (an API run's record)
    are left out, so an empty config gives an empty label.
    """
    parts = []
    if config.get("benchmark"):
        parts.append(f"{config['benchmark']}" + (f" ({config['scenario']} scenario)" if config.get("scenario") else ""))
    elif config.get("scenario"):
        parts.append(f"{config['scenario']} scenario")
    if config.get("strategy"):
        parts.append(str(config["strategy"]) + (f" -> student {config['student']}" if config.get("student") else ""))
    if config.get("seed") is not None:
        parts.append(f"seed {config['seed']}")
    return ", ".join(parts)


class Logger(Protocol):
    """Receives the run's config once, one report per experience, then ``close``.

    A resumed run starts its loggers with ``first_step`` = the last finished experience
    and sends that experience's report again, then the new ones: a logger forgets (or
    hides) whatever it recorded at ``first_step`` and later, so it ends with exactly one
    entry per experience however often the run was interrupted.
    """

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Record the run's configuration; reports from ``first_step`` on follow."""

    def log_report(self, report: EvalReport) -> None:
        """Record one experience's evaluation."""

    def close(self) -> None:
        """Flush and release files."""
