"""Split-CIFAR-10, task scenario: six methods side by side on one budget.

5 experiences x 2 classes of the **JPEG copy of CIFAR-10** in ``../shared/data`` (lossy:
absolute accuracies run a little below the original data set). Methods: Finetune, Joint,
EWC, LwF, LwF + feature distillation, MultiTeacher; the same model, optimiser, epochs,
augmentation and seeds for all. Every run uses the default corruption suite, so the
``robustness`` suite reads its CIFAR rows from the same runs.

Published anchors (Buzzega et al. 2020, task-IL, full ResNet-18, 50 epochs): SGD 61.02,
LwF 63.29, oEWC 68.29, SI 68.05, JOINT 98.31.

    python benchmarks/split_cifar10.py --quick                 # CI smoke (minutes)
    python benchmarks/split_cifar10.py --seeds 0,1,2 --epochs 5 --write-results
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import DEFAULT_DATA, OUTPUT, append_jsonl, hardware, markdown_table, mean_std, read_jsonl, write_section  # noqa: E402

from lifelong_kd.cli import execute  # noqa: E402
from lifelong_kd.config import RunConfig  # noqa: E402

LOG = OUTPUT / "split_cifar10_runs.jsonl"
HEADING = "## Split-CIFAR-10 (task scenario, JPEG copy)"
METHODS = {
    "Finetune": ("finetune", {}),
    "Joint": ("joint", {}),
    "EWC": ("ewc", {"ewc_lambda": 100.0}),
    "LwF": ("lwf", {"temperature": 2.0, "alpha": 1.0}),
    "LwF + features": ("lwf", {"temperature": 2.0, "alpha": 1.0, "feature_weight": 1.0}),
    "MultiTeacher": ("multi-teacher", {"temperature": 2.0, "alpha": 1.0}),
}
PUBLISHED = {"Finetune": 61.02, "Joint": 98.31, "EWC": 68.29, "LwF": 63.29}


def config_for(method: str, seed: int, args: argparse.Namespace) -> RunConfig:
    """The run config of one method and seed."""
    strategy, options = METHODS[method]
    return RunConfig(
        benchmark="split-cifar10",
        scenario="task",
        strategy=strategy,
        strategy_options=options,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer="sgd",
        momentum=0.9,
        augment=True,
        seed=seed,
        train_size=args.train_size,
        test_size=args.test_size,
        data_root=str(args.data_root),
        out=str(OUTPUT / "runs" / f"cifar-{'quick-' if args.quick else ''}{strategy}{'-feat' if 'feature_weight' in options else ''}-s{seed}"),
        quiet=True,
        shifts="default",
        robustness_samples=args.robustness_samples,
        tensorboard=False,
    )


def command(config: RunConfig) -> str:
    """The equivalent ``lifelong-kd run`` command line."""
    parts = [
        f"--benchmark {config.benchmark} --scenario task --strategy {config.strategy} --model {config.model}",
        f"--epochs {config.epochs} --batch-size {config.batch_size} --lr {config.lr} --augment --seed {config.seed}",
        f"--data-root {config.data_root} --robustness-samples {config.robustness_samples}",
    ]
    parts += [f"--{key.replace('_', '-')} {value}" for key, value in config.strategy_options.items()]
    if config.train_size:
        parts.append(f"--train-size {config.train_size} --test-size {config.test_size}")
    return "lifelong-kd run " + " ".join(parts)


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict:
    """Run one method/seed (resuming its run folder) and log its summary."""
    config = config_for(method, seed, args)
    start = time.perf_counter()
    results = execute(replace(config, resume=True))
    record = {
        "method": method,
        "seed": seed,
        "quick": args.quick,
        "model": args.model,
        "epochs": args.epochs,
        "average_accuracy": results["metrics"]["average_accuracy"],
        "forgetting": results["metrics"]["forgetting"],
        "relative_robustness": (results.get("robustness") or {}).get("relative_robustness"),
        "corrupted_forgetting": (results.get("robustness") or {}).get("corrupted_forgetting"),
        "train_seconds": results["timing"]["train_seconds"],
        "eval_seconds": results["timing"]["eval_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "command": command(config),
        "accuracy_matrix": results["accuracy_matrix"],
    }
    append_jsonl(LOG, record)
    print(f"{method:<16} seed {seed}: avg acc {100 * record['average_accuracy']:.2f}  forgetting {100 * record['forgetting']:.2f}  "
          f"train {record['train_seconds']:.0f} s", flush=True)
    return record


def table(records: list[dict]) -> str:
    """Mean ± std per method over the logged seeds."""
    rows = []
    for method in METHODS:
        mine = [r for r in records if r["method"] == method]
        if not mine:
            continue
        rows.append(
            [
                method,
                PUBLISHED.get(method, "-"),
                mean_std([r["average_accuracy"] for r in mine]),
                mean_std([r["forgetting"] for r in mine]),
                mean_std([r["relative_robustness"] for r in mine], scale=1.0, digits=3),
                mean_std([r["corrupted_forgetting"] for r in mine]),
                f"{sum(r['train_seconds'] for r in mine) / len(mine):.0f}",
                ",".join(str(r["seed"]) for r in mine),
            ]
        )
    headers = ["method", "published (Buzzega 2020)", "avg acc (%)", "forgetting (%)", "rel. robustness", "corrupted forgetting (%)", "train s / seed", "seeds"]
    return markdown_table(headers, rows)


def latest(records: list[dict], quick: bool) -> list[dict]:
    """The newest record of each (method, seed) in the chosen mode."""
    chosen: dict[tuple[str, int], dict] = {}
    for record in records:
        if record["quick"] == quick:
            chosen[(record["method"], record["seed"])] = record
    return list(chosen.values())


def section(records: list[dict], args: argparse.Namespace) -> str:
    """Our section of docs/results.md."""
    commands = "\n".join(sorted({r["command"] for r in records}))
    first = records[0]
    return (
        f"Data: CIFAR-10 **JPEG copy** (`../shared/data/cifar10-jpeg`), 5 experiences x 2 classes, task scenario "
        f"(one head per task). Model `{first['model']}`, {first['epochs']} epoch(s) per experience, SGD lr {args.lr} "
        f"momentum 0.9, batch {args.batch_size}, random crop + flip; the same budget for every method. Relative "
        f"robustness and corrupted forgetting use the default corruption suite (8 corruptions x severities 1-5, "
        f"{args.robustness_samples} test images per experience). Hardware: {hardware()}.\n\n"
        f"{table(records)}\n\nCommands (one per method and seed; `python benchmarks/split_cifar10.py "
        f"--seeds ... --epochs {first['epochs']} --write-results` runs them all):\n\n```\n{commands}\n```\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 500 training images per experience, 1 epoch")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model", default="convnet:32")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--robustness-samples", type=int, default=256)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    args.train_size, args.test_size = (500, 200) if args.quick else (None, None)
    if args.quick:
        args.epochs, args.robustness_samples = 1, 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.table_only:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                run_one(method, seed, args)
    records = latest(read_jsonl(LOG), args.quick)
    print(table(records))
    if args.write_results and records and not args.quick:
        write_section(HEADING, section(records, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
