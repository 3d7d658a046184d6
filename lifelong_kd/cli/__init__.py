"""``lifelong-kd``: run a stream, list what exists, compare finished runs, sweep seeds and options.

The command line is split by job: :mod:`~lifelong_kd.cli.arguments` (parser, config files,
:class:`~lifelong_kd.config.RunConfig`), :mod:`~lifelong_kd.cli.compose` (the strategy map
and the composition of a run), :mod:`~lifelong_kd.cli.report` (tables). This module holds
the commands and the entry point, which turns bad input into a one-paragraph message and
exit code 2.

Output goes through :mod:`logging` (logger ``lifelong_kd``), configured by :func:`main` only:
plain lines, results and progress on stdout, notes and errors on stderr (``-v``: also debug
messages; ``--quiet``: no banner and no progress). SIGTERM (Slurm, ``timeout``, ``kill``) stops
a run like Ctrl-C: finished experiences are kept, exit code 143 (130 for Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from lifelong_kd.cli.arguments import config_from_args, make_parser, parse_arguments
from lifelong_kd.cli.compose import STRATEGIES, build_strategy, execute
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.options import markdown_table
from lifelong_kd.cli.report import command_report, format_matrix, format_metrics, format_summary
from lifelong_kd.logs import PROGRESS_LOGGER, command_line_logging
from lifelong_kd.threads import apply_threads

__all__ = ["STRATEGIES", "Terminated", "UsageError", "build_strategy", "execute", "main", "make_parser"]

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM; handled like Ctrl-C (exit code 128 + 15)."""

    signal_number = signal.SIGTERM


def _raise_terminated(signal_number: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM while stopping changes nothing
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` (a KeyboardInterrupt) while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def command_run(args: argparse.Namespace) -> int:
    """``lifelong-kd run`` (under torchrun, only rank 0 prints the results)."""
    from lifelong_kd import distributed

    from lifelong_kd.cli.compose import default_out

    config = config_from_args(args)
    apply_threads(config.threads)  # the wait policy was set before torch loaded (lifelong_kd.__main__)
    if config.quiet:
        logging.getLogger(PROGRESS_LOGGER).setLevel(logging.WARNING)
    if config.out is None and not config.resume:
        config = replace(config, out=default_out(config))  # named now, so that an interruption can name it
    try:
        results = execute(config)
    except KeyboardInterrupt as stop:
        stop.run_folder = config.out  # type: ignore[attr-defined] - read by main's message
        raise
    main_process = distributed.is_main()
    distributed.end()  # every process finished: the group ends now, not during interpreter exit
    if not main_process:
        return 0
    log.info("accuracy matrix (%):")
    log.info(format_matrix(results["accuracy_matrix"]))
    log.info(format_metrics(results["metrics"]))
    robustness = results.get("robustness")
    if robustness:
        keys = ("clean_accuracy", "mean_corrupted_accuracy", "relative_robustness", "corrupted_forgetting")
        log.info("robustness: " + format_metrics({k: robustness.get(k) for k in keys}))
    if "summary" in results:
        log.info(format_summary(results["summary"]))
    timing = results["timing"]
    log.info(f"train {timing['train_seconds']:.1f} s, eval {timing['eval_seconds']:.1f} s; results in {results['config']['out']}")
    return 0


def _command_sweep(args: argparse.Namespace) -> int:
    """``lifelong-kd sweep`` (:mod:`lifelong_kd.cli.sweep`)."""
    from lifelong_kd.cli.sweep import command_sweep

    return command_sweep(args)


def _first_line(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").splitlines()[0] if inspect.getdoc(obj) else ""


def command_list(args: argparse.Namespace) -> int:
    """``lifelong-kd list`` (``--options``: the strategy options as a Markdown table)."""
    from lifelong_kd.data.benchmarks import BENCHMARKS
    from lifelong_kd.models import MODEL_DESCRIPTIONS

    if args.options:
        log.info(markdown_table(STRATEGIES))
        return 0

    log.info("benchmarks:")
    for name, builder in BENCHMARKS.items():
        log.info(f"  {name:<22} {_first_line(builder)}")
    log.info("strategies:")
    for name, cls in STRATEGIES.items():
        log.info(f"  {name:<22} {_first_line(cls)} [{', '.join(sorted(cls.scenarios))}]")
    log.info("models:")
    for name, description in MODEL_DESCRIPTIONS.items():
        log.info(f"  {name:<22} {description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code.

    ``0`` success (``--help`` and ``--version`` too); ``2`` bad input: a one-paragraph message
    on stderr that names the problem and the fix, never a traceback; ``1`` the run stopped on
    a non-finite loss; ``130`` interrupted (Ctrl-C), ``143`` stopped by SIGTERM: finished
    experiences are kept and ``--resume`` continues.
    """
    with command_line_logging(), sigterm_as_interrupt():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    """:func:`main` inside its logging configuration and SIGTERM handler."""
    from lifelong_kd.data.sources import DataNotFoundError
    from lifelong_kd.distributed import DeviceError, is_main, rank
    from lifelong_kd.run_folder import RunFolderError
    from lifelong_kd.train import NonFiniteLossError

    handlers = {"run": command_run, "list": command_list, "report": command_report, "sweep": _command_sweep}
    try:
        args = parse_arguments(argv)
        if args.verbose:
            logging.getLogger("lifelong_kd").setLevel(logging.DEBUG)
        return handlers[args.command](args)
    except SystemExit as stop:  # --help, --version
        return stop.code if isinstance(stop.code, int) else 0
    except (UsageError, ValueError, DataNotFoundError, FileNotFoundError, RunFolderError) as error:
        # Under torchrun every process meets the same bad input: rank 0 says it once. A device
        # error may concern one process only (its GPU), so every process reports its own.
        if is_main() or isinstance(error, DeviceError):
            log.error(f"error: {'' if is_main() else f'(rank {rank()}) '}{error}")
        return 2
    except NonFiniteLossError as error:
        log.error(f"run stopped: {'' if is_main() else f'(rank {rank()}) '}{error}")
        return 1
    except KeyboardInterrupt as stop:
        log.error(_stopped_message(stop))
        return 128 + getattr(stop, "signal_number", signal.SIGINT)
    except BrokenPipeError:  # output piped into a command that stopped reading (`| head`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python closes stdout at exit and must not fail on it
        return 0


def _stopped_message(stop: KeyboardInterrupt) -> str:
    """What an interrupted run says: how it stopped, where its finished experiences are, how to continue."""
    how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
    folder = getattr(stop, "run_folder", None)
    if folder is None:
        return f"{how}; finished experiences are in the run folder (--resume continues)."
    return f"{how}; finished experiences are kept in {folder} (resume with --resume: `lifelong-kd run --out {folder} --resume`)."
