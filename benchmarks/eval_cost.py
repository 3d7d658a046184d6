"""Evaluation against training in the default run of every benchmark (issue 18: evaluation at most 25% of training).

For each benchmark, the run ``lifelong-kd run --benchmark B`` makes with nothing else (default
model, epochs, scenario, robustness suite and its schedule, instruments) is composed as the
command line composes it and run in this process without loggers (they are not evaluation).
It prints, per benchmark: training seconds (the loop's, summed over experiences), evaluation
seconds split into initial (the randomly initialised model's row), clean (the accuracy rows),
instruments, robustness (building the corrupted sets included), compression and continual,
and evaluation / training. One JSON line per invocation is appended to
``benchmarks/output/eval_cost.jsonl``.

    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --data-root ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --data-root ../shared/data --benchmarks split-mnist --robustness-every 1
    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --data-root ../shared/data --test-size 1000   # a seeded test subset
    OMP_NUM_THREADS=1 python benchmarks/eval_cost.py --data-root ../shared/data --quick   # CI: small subsets, seconds

``--quick`` keeps the default model and suite but trains on a few hundred samples per
experience (split-digits and split-mnist only): it checks that the script runs; its ratios
are not those of the default runs. Timings on a shared machine are not evidence: run it on a
quiet machine (``docs/results.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from lifelong_kd import pipeline
from lifelong_kd.cli.compose import compose_run
from lifelong_kd.config import RunConfig
from lifelong_kd.data.sources import DataNotFoundError
from lifelong_kd.evaluation.evaluator import EVALUATION_PARTS

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output" / "eval_cost.jsonl"
DEFAULT_BENCHMARKS = ("split-digits", "split-mnist", "permuted-mnist", "split-fashion-mnist", "split-cifar10", "split-cifar100")
QUICK_BENCHMARKS = ("split-digits", "split-mnist")
TARGET = 0.25  # issue 18, deliverable 2: all evaluation at most 25% of training
QUICK_SIZES = {"train_size": 600, "test_size": 200}


def default_config(benchmark: str, data_root: str, quick: bool, robustness_every: str | None, test_size: int | None = None) -> RunConfig:
    """``lifelong-kd run --benchmark B`` (with ``--quiet``, no run folder needed); ``quick``: small subsets; ``test_size``: ``--test-size``."""
    config = RunConfig(benchmark=benchmark, data_root=data_root, quiet=True, tensorboard=False, out=str(REPO / "runs" / "eval_cost"))
    if robustness_every is not None:
        config = replace(config, robustness_every=robustness_every)
    if test_size is not None:
        config = replace(config, test_size=test_size)
    return replace(config, **QUICK_SIZES) if quick else config


def measure(config: RunConfig) -> dict[str, Any]:
    """Run the composed default run without loggers; training seconds and each evaluation part's seconds."""
    config, stream, strategy, model, evaluator = compose_run(config)
    start = time.perf_counter()
    document = pipeline.run(stream, model, strategy, evaluator, (), config.train_config())
    wall = time.perf_counter() - start
    train = sum(float(row.get("loop_seconds") or row.get("train_seconds") or 0.0) for row in document["timing"]["per_experience"])
    parts = {part: evaluator.seconds_[part] for part in EVALUATION_PARTS}
    evaluation = sum(parts.values())
    return {
        "benchmark": config.benchmark, "model": config.model, "experiences": len(stream), "epochs": config.epochs,
        "train_samples": sum(len(e.train) for e in stream) * config.epochs, "test_samples": sum(len(e.test) for e in stream),
        "shifts": list(evaluator.shifts), "severities": list(evaluator.severities), "robustness_samples": evaluator.robustness_samples,
        "robustness_every": evaluator.robustness_every, "train_seconds": train, "eval_seconds": evaluation,
        "eval_parts": parts, "eval_over_train": evaluation / max(train, 1e-9), "wall_seconds": wall,
    }


def print_row(row: dict[str, Any]) -> None:
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in row["eval_parts"].items() if seconds > 0)
    schedule = "none" if not row["shifts"] else ("final" if row["robustness_every"] is None else f"every {row['robustness_every']}")
    verdict = "ok" if row["eval_over_train"] <= TARGET else f"over {TARGET:.0%}"
    print(f"{row['benchmark']:20s} {row['model']:14s} train {row['train_seconds']:7.2f} s  eval {row['eval_seconds']:6.2f} s "
          f"({parts})  eval/train {row['eval_over_train']:.3f} [{verdict}]  suite: {len(row['shifts'])} x {len(row['severities'])} x {row['robustness_samples']}, {schedule}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--benchmarks", default=None, help=f"comma-separated (default: {', '.join(DEFAULT_BENCHMARKS)}; --quick: {', '.join(QUICK_BENCHMARKS)})")
    parser.add_argument("--robustness-every", default=None, help="override the default schedule: auto | final | K")
    parser.add_argument("--test-size", type=int, default=None, help="lifelong-kd run's --test-size (a seeded subset of each test set): the cost of a cheaper, still exact-by-definition matrix")
    parser.add_argument("--quick", action="store_true", help="CI: small subsets of split-digits and split-mnist")
    parser.add_argument("--out", default=str(OUTPUT), help="JSON lines file to append the record to")
    args = parser.parse_args()
    names = args.benchmarks.split(",") if args.benchmarks else (QUICK_BENCHMARKS if args.quick else DEFAULT_BENCHMARKS)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; default run of each benchmark (evaluation parts in seconds)")
    rows = []
    for name in names:
        try:
            rows.append(measure(default_config(name.strip(), str(Path(args.data_root).expanduser().resolve()), args.quick, args.robustness_every, args.test_size)))
        except DataNotFoundError as missing:  # e.g. split-CIFAR-100 on a machine without it: the other rows still count
            print(f"{name.strip():20s} skipped: {missing}")
            continue
        print_row(rows[-1])
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "target": TARGET, "test_size": args.test_size, "runs": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
