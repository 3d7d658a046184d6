"""What a run tells its user while it runs: progress, one line per experience, the loss curve.

The library logs through the standard :mod:`logging` module, under the logger ``lifelong_kd``
(progress under ``lifelong_kd.progress``), and never configures it: no handler, no level. A
script sees the lines after ``logging.basicConfig(level=logging.INFO)``; the command line
configures them with :func:`command_line_logging` (plain lines: information on stdout, warnings
and errors on stderr).

Progress while training: a tqdm bar when stderr is a terminal (and ``TrainConfig.progress``);
otherwise, as in a batch job, a plain line every :func:`progress_seconds` (30 s by default,
``$LIFELONG_KD_PROGRESS_SECONDS``) with the batches done, samples per second and the ETA.
Long evaluations log a line at the same rate (:func:`heartbeat`). After each experience the
loop logs one line per model (:func:`log_experience`): its accuracy on every experience so far,
the average, forgetting, the training loss and the times.

This module imports nothing else from the package.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

import torch
from torch import Tensor

LOGGER = "lifelong_kd"
# Progress lines (banner, per experience, periodic): `--quiet` hides this logger only.
PROGRESS_LOGGER = "lifelong_kd.progress"
progress_logger = logging.getLogger(PROGRESS_LOGGER)
# Seconds between two progress lines without a terminal: often enough to see a batch job move,
# rarely enough that a day-long run logs a few thousand lines.
DEFAULT_PROGRESS_SECONDS = 30.0
PROGRESS_SECONDS_VARIABLE = "LIFELONG_KD_PROGRESS_SECONDS"
# The loss curve keeps the mean loss of every window of this many iterations (at most)...
LOSS_WINDOW = 50
# ... and at least this many points per experience (short experiences get shorter windows).
LOSS_POINTS = 10


def progress_seconds() -> float:
    """Seconds between two progress lines: ``$LIFELONG_KD_PROGRESS_SECONDS``, else 30.

    Raises:
        ValueError: The variable is set but not a non-negative number.
    """
    text = os.environ.get(PROGRESS_SECONDS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_PROGRESS_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"${PROGRESS_SECONDS_VARIABLE} must be a number of seconds (0 or more), got {text!r}; unset it for the default 30.")
    return seconds


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr, where bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # replaced or closed stream
        return False


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Progress of one loop: a tqdm bar on a terminal, else a plain log line every few seconds.

    Args:
        total: Units the loop will run (batches).
        description: What runs (``experience 2/5``).
        enabled: False shows nothing (``TrainConfig.progress=False``, ``--quiet``).
        unit: Name of one unit, for the bar and the lines.
        samples_per_unit: Samples in one unit (the batch size), for samples per second; None: not shown.
    """

    def __init__(self, total: int, description: str, enabled: bool = True, unit: str = "batch", samples_per_unit: int | None = None) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.unit, self.samples_per_unit = unit, samples_per_unit
        self.done = 0
        self.interval = progress_seconds() if enabled else math.inf
        self.start = self.last = time.perf_counter()
        self.bar = self._bar() if enabled and on_terminal() else None

    def _bar(self) -> Any:
        from tqdm.auto import tqdm

        return tqdm(total=self.total, desc=self.description, unit=self.unit, leave=False, dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        """``count`` more units done."""
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        now = time.perf_counter()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            progress_logger.info(self.line(now - self.start))

    def line(self, elapsed: float) -> str:
        """``experience 2/5: 120/400 batches (30%), 2,310 samples/s, ETA 1 min 10 s``."""
        rate = self.done / max(elapsed, 1e-9)
        units = self.unit + ("es" if self.unit.endswith(("ch", "sh", "s", "x")) else "s")
        parts = [f"{self.description}: {self.done}/{self.total} {units} ({100 * self.done / max(self.total, 1):.0f}%)"]
        if self.samples_per_unit:
            parts.append(f"{rate * self.samples_per_unit:,.0f} samples/s")
        parts.append(f"ETA {duration((self.total - self.done) / rate) if rate > 0 else '?'}")
        return ", ".join(parts)

    def close(self) -> None:
        """Remove the bar (the line after each experience says how it went)."""
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def heartbeat(description: str, enabled: bool = True) -> Iterator[None]:
    """Log ``description: running for 1 min 05 s`` every :func:`progress_seconds` while the block runs.

    For long steps whose inner loops are not ours to count (evaluation: clean accuracy,
    robustness, instruments, compression). A short block logs nothing; ``enabled=False`` nothing at all.
    """
    interval = max(progress_seconds(), 0.05)
    if not enabled or not progress_logger.isEnabledFor(logging.INFO):
        yield
        return
    stop, start = threading.Event(), time.perf_counter()

    def beat() -> None:
        while not stop.wait(interval):
            progress_logger.info(f"{description}: running for {duration(time.perf_counter() - start)}")

    thread = threading.Thread(target=beat, name="lifelong_kd-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def loss_window(total: int) -> int:
    """Iterations per loss-curve point: at most :data:`LOSS_WINDOW`, at least :data:`LOSS_POINTS` points."""
    return max(1, min(LOSS_WINDOW, math.ceil(total / LOSS_POINTS)))


class LossCurve:
    """The mean training loss of every window of :func:`loss_window` iterations of one experience.

    Args:
        total: Iterations the experience trains for.
    """

    def __init__(self, total: int) -> None:
        self.window = loss_window(total)
        self.total = total
        self.values: list[float] = []

    def add(self, loss: float) -> None:
        """One more iteration's loss."""
        self.values.append(loss)

    @property
    def sums(self) -> Tensor:
        """Loss sum of each window (float64; to sum over processes before :meth:`points`)."""
        sums = [math.fsum(self.values[start : start + self.window]) for start in range(0, len(self.values), self.window)]
        return torch.tensor(sums, dtype=torch.float64)

    def points(self, sums: Tensor | None = None) -> list[list[float]]:
        """``[[iteration, mean loss], ...]``: one point per window, at its last iteration (1-based).

        Args:
            sums: The window sums to use (default :attr:`sums`; e.g. averaged over processes).
        """
        sums = self.sums if sums is None else sums
        ends = [min(start + self.window, len(self.values)) for start in range(0, len(self.values), self.window)]
        starts = [0, *ends[:-1]]
        return [[end, float(total) / (end - begin)] for begin, end, total in zip(starts, ends, sums.tolist())]


def training_record(timing: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The training part of an experience's report, or None when the trainer kept no loss curve.

    Args:
        timing: This experience's timing row with ``loss_curve`` (iterations counted from 1 within
            the experience), ``iterations`` and ``mean_loss``, as the loop's trainer returned them.
        earlier: The timing rows of the experiences before (checkpointed), whose ``iterations``
            give the global iteration this experience starts from.

    Returns:
        ``{"mean_loss", "iterations", "first_iteration", "loss_curve": [[global iteration, mean loss], ...]}``,
        and when the trainer kept them, ``"loss_terms": {name: mean over the experience}`` and
        ``"loss_terms_curve": {name: [[global iteration, mean], ...]}`` (``cross_entropy`` and each
        strategy term, :mod:`lifelong_kd.loss_terms`).
    """
    curve = timing.get("loss_curve")
    if not curve:
        return None
    offset = sum(int(row.get("iterations") or 0) for row in earlier)
    record = {
        "mean_loss": timing.get("mean_loss"),
        "iterations": timing.get("iterations"),
        "first_iteration": offset + 1,
        "loss_curve": [[offset + int(iteration), loss] for iteration, loss in curve],
    }
    if timing.get("loss_terms_curve"):
        record["loss_terms"] = dict(timing.get("loss_terms") or {})
        record["loss_terms_curve"] = {name: [[offset + int(iteration), value] for iteration, value in points] for name, points in timing["loss_terms_curve"].items()}
    return record


def experience_line(index: int, total: int, name: str | None, report: Any, timing: Mapping[str, Any]) -> str:
    """``experience 2/5 [student]: accuracy 98.1 96.4 (average 97.3%), forgetting 1.2%, loss 0.412, train 3.1 s, eval 0.4 s``."""
    accuracy = " ".join(f"{100 * value:.1f}" for value in report.accuracy[: index + 1])
    metrics = report.metrics
    parts = [f"accuracy {accuracy} (average {_percent(metrics.get('average_accuracy'))})"]
    if index > 0:
        parts.append(f"forgetting {_percent(metrics.get('forgetting'))}")
    loss = timing.get("mean_loss")
    if isinstance(loss, (int, float)) and math.isfinite(loss):
        parts.append(f"loss {loss:.4g}")
    parts.append(f"train {duration(float(timing.get('train_seconds') or 0.0))}, eval {duration(report.eval_seconds)}")
    label = f" [{name}]" if name else ""
    return f"experience {index + 1}/{total}{label}: " + ", ".join(parts)


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def log_experience(index: int, total: int, reports: Mapping[str, Any], timings: Mapping[str, Mapping[str, Any]]) -> None:
    """One progress line per model after experience ``index`` (named when the run has several)."""
    for name, report in reports.items():
        progress_logger.info(experience_line(index, total, name if len(reports) > 1 else None, report, timings.get(name, {})))


# ---------------------------------------------------------------------- the command line's configuration


class PlainLines(logging.Handler):
    """Writes each record's message as a plain line: below WARNING to stdout, else to stderr.

    The streams are looked up when a line is written (so a replaced ``sys.stdout`` is used). A
    closed pipe (``| head``) raises ``BrokenPipeError`` to the caller instead of a logging error.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """Write one line."""
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except BrokenPipeError:
            raise
        except Exception:  # noqa: BLE001 - logging's convention: report, never raise
            self.handleError(record)


class CommandLineFormatter(logging.Formatter):
    """The message alone; warnings and errors prefixed ``lifelong-kd: `` (as the command's own messages)."""

    def format(self, record: logging.LogRecord) -> str:
        """The plain line."""
        message = record.getMessage()
        return f"lifelong-kd: {message}" if record.levelno >= logging.WARNING else message


@contextlib.contextmanager
def command_line_logging() -> Iterator[None]:
    """Configure the ``lifelong_kd`` logger for one command (level INFO, plain lines); restore it afterwards.

    The command line (never the library) calls it. Only the ``lifelong_kd`` loggers are
    touched (a handler of their own, no propagation to the root logger), so a program that
    calls ``main()`` keeps its own logging. Inside, the command may lower the level of
    ``lifelong_kd`` (``-v``: DEBUG) or raise that of ``lifelong_kd.progress`` (``--quiet``:
    WARNING); both are restored too.
    """
    logger, progress = logging.getLogger(LOGGER), logging.getLogger(PROGRESS_LOGGER)
    saved = (logger.level, logger.propagate, list(logger.handlers), progress.level)
    handler = PlainLines()
    handler.setFormatter(CommandLineFormatter())
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    progress.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]
        progress.setLevel(saved[3])
