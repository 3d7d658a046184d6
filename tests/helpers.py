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


def fails_cleanly(capsys, argv: list[str]) -> str:
    """Run ``lifelong-kd ARGV``; check it exits 2 with a one-paragraph error and no traceback; the error."""
    from lifelong_kd.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1  # one paragraph
    return err
