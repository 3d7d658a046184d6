"""Test helpers shared across test modules."""

from __future__ import annotations


class CrashAfter:
    """A logger that kills the run (KeyboardInterrupt) after a given experience was saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_config(self, config, first_step=0):
        pass

    def log_report(self, report):
        if report.step == self.step:
            raise KeyboardInterrupt

    def close(self):
        pass
