"""``lifelong-kd``: run a stream, list what exists, compare finished runs.

The command line is split by job: :mod:`~lifelong_kd.cli.arguments` (parser, config files,
:class:`~lifelong_kd.config.RunConfig`), :mod:`~lifelong_kd.cli.compose` (the strategy map
and the composition of a run), :mod:`~lifelong_kd.cli.report` (tables). This module holds
the commands and the entry point, which turns bad input into a one-paragraph message and
exit code 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

from lifelong_kd.cli.arguments import config_from_args, make_parser, parse_arguments
from lifelong_kd.cli.compose import STRATEGIES, build_strategy, execute
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.options import markdown_table
from lifelong_kd.cli.report import command_report, format_matrix, format_metrics, format_summary

__all__ = ["STRATEGIES", "UsageError", "build_strategy", "execute", "main", "make_parser"]


def command_run(args: argparse.Namespace) -> int:
    """``lifelong-kd run`` (under torchrun, only rank 0 prints the results)."""
    from lifelong_kd import distributed

    results = execute(config_from_args(args))
    if not distributed.is_main():
        return 0
    print("accuracy matrix (%):")
    print(format_matrix(results["accuracy_matrix"]))
    print(format_metrics(results["metrics"]))
    robustness = results.get("robustness")
    if robustness:
        keys = ("clean_accuracy", "mean_corrupted_accuracy", "relative_robustness", "corrupted_forgetting")
        print("robustness: " + format_metrics({k: robustness.get(k) for k in keys}))
    if "summary" in results:
        print(format_summary(results["summary"]))
    timing = results["timing"]
    print(f"train {timing['train_seconds']:.1f} s, eval {timing['eval_seconds']:.1f} s; results in {results['config']['out']}")
    return 0


def _first_line(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").splitlines()[0] if inspect.getdoc(obj) else ""


def command_list(args: argparse.Namespace) -> int:
    """``lifelong-kd list`` (``--options``: the strategy options as a Markdown table)."""
    from lifelong_kd.data.benchmarks import BENCHMARKS
    from lifelong_kd.models import MODEL_DESCRIPTIONS

    if args.options:
        print(markdown_table(STRATEGIES))
        return 0

    print("benchmarks:")
    for name, builder in BENCHMARKS.items():
        print(f"  {name:<22} {_first_line(builder)}")
    print("strategies:")
    for name, cls in STRATEGIES.items():
        print(f"  {name:<22} {_first_line(cls)} [{', '.join(sorted(cls.scenarios))}]")
    print("models:")
    for name, description in MODEL_DESCRIPTIONS.items():
        print(f"  {name:<22} {description}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code.

    ``0`` success (``--help`` and ``--version`` too); ``2`` bad input: a one-paragraph message
    on stderr that names the problem and the fix, never a traceback; ``1`` the run stopped on
    a non-finite loss; ``130`` interrupted.
    """
    from lifelong_kd.data.sources import DataNotFoundError
    from lifelong_kd.distributed import DeviceError, is_main, rank
    from lifelong_kd.run_folder import RunFolderError
    from lifelong_kd.train import NonFiniteLossError

    handlers = {"run": command_run, "list": command_list, "report": command_report}
    try:
        args = parse_arguments(argv)
        return handlers[args.command](args)
    except SystemExit as stop:  # --help, --version
        return stop.code if isinstance(stop.code, int) else 0
    except (UsageError, ValueError, DataNotFoundError, FileNotFoundError, RunFolderError) as error:
        # Under torchrun every process meets the same bad input: rank 0 says it once. A device
        # error may concern one process only (its GPU), so every process reports its own.
        if is_main() or isinstance(error, DeviceError):
            print(f"lifelong-kd: error: {'' if is_main() else f'(rank {rank()}) '}{error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"lifelong-kd: run stopped: {'' if is_main() else f'(rank {rank()}) '}{error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lifelong-kd: interrupted; finished experiences are in the run folder (--resume continues).", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (`| head`)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python closes stdout at exit and must not fail on it
        return 0
