"""Reproduce van de Ven & Tolias 2019, "Three scenarios for continual learning" (Table 2 rows).

Runs None (fine-tuning), Joint, EWC and LwF on split-MNIST and permuted-MNIST in the task,
domain and class scenarios with the paper's protocol, and prints the final average
accuracy (mean ± std over seeds) beside the published numbers. Every finished run is
appended to ``benchmarks/output/vandeven2019_runs.jsonl`` so long sweeps can be split
over several processes and the table rebuilt at any time (``--table-only``).

Protocol (van de Ven et al. 2019): split-MNIST 5 experiences, MLP 784-400-400, Adam lr 1e-3,
2000 iterations per experience; permuted-MNIST 10 experiences, MLP 784-1000-1000, Adam
lr 1e-4, 5000 iterations per experience; batch 128; T = 2; multi-head in the task scenario.
LwF weighs cross-entropy by 1/k and distillation by 1-1/k on task k, with the T^2 factor:
with Adam (invariant to the loss scale) that is ``alpha = [0, 1, 2, ...]``, ``scale_t2=True``;
in the class scenario their student softmax also covers the new classes with zero teacher
probability (``zero_new_classes=True``).
EWC: lambda from the authors' grid (their repository's ``param_values.py``), Fisher from the
model's predicted label (their 2019 code) on every training sample (split) or 1000 samples
(permuted, as their later runs).

Run from the repository root::

    python benchmarks/vandeven2019.py --quick                        # CI smoke: a few iterations, one seed
    python benchmarks/vandeven2019.py --experiments split --seeds 1,2,3
    python benchmarks/vandeven2019.py --experiments permuted --scenarios domain --iterations 1000
    python benchmarks/vandeven2019.py --table-only --write-results   # table from the JSONL log
"""

from __future__ import annotations

import argparse
import json
import math
import inspect
import itertools
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RUNS_LOG = ROOT / "benchmarks" / "output" / "vandeven2019_runs.jsonl"
RESULTS_MD = ROOT / "docs" / "results.md"
SECTION = "## van de Ven et al. 2019 reproduction"
NOTES_BEGIN, NOTES_END = "<!-- vandeven2019 notes -->", "<!-- /vandeven2019 notes -->"
SCENARIOS = ("task", "domain", "class")
METHODS = ("none", "joint", "ewc", "lwf", "lwf-seen")
STRATEGY = {"none": "finetune", "joint": "joint", "ewc": "ewc", "lwf": "lwf", "lwf-seen": "lwf"}

# Final average accuracy (%) in van de Ven & Tolias 2019, Table 2 (mean over seeds).
PUBLISHED = {
    ("split", "task"): {"none": 87.19, "ewc": 98.64, "lwf": 99.57},
    ("split", "domain"): {"none": 59.21, "ewc": 63.95, "lwf": 71.50},
    ("split", "class"): {"none": 19.90, "ewc": 20.01, "lwf": 23.85},
    ("permuted", "task"): {"none": 81.79, "ewc": 94.74, "lwf": 69.84},
    ("permuted", "domain"): {"none": 78.51, "ewc": 94.31, "lwf": 72.64},
    ("permuted", "class"): {"none": 17.26, "ewc": 25.04, "lwf": 22.64},
}
PROTOCOL = {
    "split": {"benchmark": "split-mnist", "model": "mlp:400,400", "lr": 1e-3, "iterations": 2000, "n_experiences": 5},
    "permuted": {"benchmark": "permuted-mnist", "model": "mlp:1000,1000", "lr": 1e-4, "iterations": 5000, "n_experiences": 10},
}
# EWC lambda per (experiment, scenario): the authors' grid (param_values.py of
# GMvandeVen/continual-learning); Fisher = mean over samples of squared gradients.
EWC_LAMBDA = {
    ("split", "task"): 1e5,
    ("split", "domain"): 1e10,
    ("split", "class"): 1e9,
    ("permuted", "task"): 100.0,
    ("permuted", "domain"): 100.0,
    ("permuted", "class"): 100.0,
}


def strategy_options(method: str, experiment: str, scenario: str, quick: bool) -> dict[str, object]:
    """The strategy options reproducing the paper's method."""
    n = PROTOCOL[experiment]["n_experiences"]
    if method in ("lwf", "lwf-seen"):  # lwf-seen: our default class-scenario LwF, seen classes only
        options = {"temperature": 2.0, "alpha": [float(k) for k in range(n)], "scale_t2": True}
        return {**options, "zero_new_classes": True} if scenario == "class" and method == "lwf" else options
    if method == "ewc":
        samples = 200 if quick else (0 if experiment == "split" else 1000)
        return {"ewc_lambda": EWC_LAMBDA[(experiment, scenario)], "fisher_kind": "predicted", "fisher_samples": samples}
    return {}


def run_config(experiment: str, scenario: str, method: str, seed: int, iterations: int, args: argparse.Namespace):  # noqa: ANN201
    """The ``lifelong-kd run`` configuration of one run."""
    from lifelong_kd.config import RunConfig

    protocol = PROTOCOL[experiment]
    return RunConfig(
        benchmark=protocol["benchmark"],
        scenario=scenario,
        n_experiences=protocol["n_experiences"],
        strategy=STRATEGY[method],
        model=protocol["model"],
        iterations=iterations,
        batch_size=128,
        lr=protocol["lr"],
        optimizer="adam",
        seed=seed,
        train_size=args.train_size,
        test_size=args.test_size,
        data_root=str(args.data_root),
        quiet=True,
        strategy_options=strategy_options(method, experiment, scenario, args.quick),
    )


def command_line(config) -> str:  # noqa: ANN001
    """The equivalent ``lifelong-kd run`` command."""
    parts = ["lifelong-kd run"]
    for key in ("benchmark", "scenario", "n_experiences", "strategy", "model", "iterations", "batch_size", "lr", "optimizer", "seed", "train_size", "test_size"):
        value = getattr(config, key)
        if value is not None:
            parts.append(f"--{key.replace('_', '-')} {value}")
    for key, value in config.strategy_options.items():
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"--{key.replace('_', '-')} {text}")
    return " ".join(parts) + " --shifts none --data-root ../shared/data"  # results_doc.DOCUMENTED_DATA_ROOT


def make_evaluator():  # noqa: ANN201
    """Accuracy matrix only: no robustness suite, no compression measurements (not in the paper)."""
    from lifelong_kd.evaluation.evaluator import Evaluator

    wanted = {"batch_size": 1024, "shifts": (), "compression": False}
    accepted = inspect.signature(Evaluator).parameters
    return Evaluator(**{key: value for key, value in wanted.items() if key in accepted})


def run_one(experiment: str, scenario: str, method: str, seed: int, iterations: int, args: argparse.Namespace) -> dict:
    """Build the run exactly as ``lifelong-kd run`` does and train it (no run folder)."""
    from lifelong_kd import pipeline
    from lifelong_kd.cli import build_strategy
    from lifelong_kd.data.benchmarks import build_stream
    from lifelong_kd.models import build_model

    config = run_config(experiment, scenario, method, seed, iterations, args)
    start = time.perf_counter()
    strategy = build_strategy(config.strategy, config.strategy_options)
    stream = build_stream(config.benchmark, config.stream_options())
    strategy.check_stream(stream)
    pipeline.seed_everything(config.seed)
    model = build_model(config.model, stream.input_shape, stream.n_heads, stream.n_outputs)
    results = pipeline.run(stream, model, strategy, make_evaluator(), [], replace(config.train_config(), progress=False))
    return {
        "experiment": experiment,
        "scenario": scenario,
        "method": method,
        "seed": seed,
        "iterations": iterations,
        "full_iterations": PROTOCOL[experiment]["iterations"],
        "quick": args.quick,
        "train_size": args.train_size,
        "average_accuracy": 100 * results["metrics"]["average_accuracy"],
        "accuracy_matrix": results["accuracy_matrix"],
        "wall_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "command": command_line(config),
    }


def load_runs(path: Path, quick: bool) -> list[dict]:
    """Finished runs from the JSONL log (quick runs only when ``quick``)."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for run in runs:  # class-scenario LwF distilling the seen classes only (our default), not the paper's variant
        if run["method"] == "lwf" and run["scenario"] == "class" and "zero-new-classes" not in run["command"]:
            run["method"] = "lwf-seen"
    return [r for r in runs if bool(r.get("quick")) == quick]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f} (n={len(values)})"


def table(runs: list[dict]) -> str:
    """Markdown table: ours (mean ± std, seeds) beside the published number, per scenario."""
    lines = ["| experiment | method | iterations/exp | " + " | ".join(f"{s} (ours)" + f" | {s} (paper)" for s in SCENARIOS) + " |"]
    lines.append("|" + "---|" * (3 + 2 * len(SCENARIOS)))
    for experiment in PROTOCOL:
        for method in METHODS:
            chosen = [r for r in runs if r["experiment"] == experiment and r["method"] == method]
            if not chosen:
                continue
            iterations = sorted({r["iterations"] for r in chosen})
            full = PROTOCOL[experiment]["iterations"]
            its = "/".join(str(i) for i in iterations) + ("" if iterations == [full] else f" (paper {full})")
            cells = []
            for scenario in SCENARIOS:
                values = [r["average_accuracy"] for r in chosen if r["scenario"] == scenario]
                paper = PUBLISHED[(experiment, scenario)].get(method)
                cells += [_cell(values), "-" if paper is None else f"{paper:.2f}"]
            lines.append(f"| {experiment}-MNIST | {method} | {its} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def current_notes(path: Path = RESULTS_MD) -> str:
    """The hand-written notes kept between the notes markers of our section (kept on rewrite)."""
    text = path.read_text() if path.is_file() else ""
    start, end = text.find(NOTES_BEGIN), text.find(NOTES_END)
    return text[start + len(NOTES_BEGIN) : end].strip("\n") if 0 <= start < end else ""


def section(runs: list[dict], notes: str) -> str:
    """Our section of docs/results.md: table, notes, and per-run commands, seeds and wall time."""
    lines = [SECTION, "", "Final average accuracy (%) after the last experience; ours: mean ± std over seeds (n).",
             "Generated by `python benchmarks/vandeven2019.py --table-only --write-results` from",
             f"`{RUNS_LOG.relative_to(ROOT)}`; text between the notes markers is hand-written and kept.", "",
             table(runs), "", NOTES_BEGIN, notes, NOTES_END, "", "### Runs", "",
             "| experiment | scenario | method | seed | iterations/exp | avg acc (%) | wall time (s) | threads |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['experiment']} | {r['scenario']} | {r['method']} | {r['seed']} | {r['iterations']} | "
                     f"{r['average_accuracy']:.2f} | {r['wall_seconds']:.0f} | {r['threads']} |")
    commands = sorted({(r["experiment"], r["scenario"], r["method"], r["command"].replace(f"--seed {r['seed']}", "--seed SEED")) for r in runs})
    lines += ["", "Equivalent `lifelong-kd run` command of each configuration (SEED from the table above):", "", "```"]
    lines += [c[3] for c in commands] + ["```"]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) our section of ``docs/results.md``, keeping every other section."""
    old = path.read_text() if path.is_file() else "# Results\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text.rstrip("\n") + "\n" + (old[end:] if end >= 0 else "")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    tmp.replace(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="split,permuted", help="comma-separated: split, permuted")
    parser.add_argument("--scenarios", default="task,domain,class")
    parser.add_argument("--methods", default="none,joint,ewc,lwf")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--iterations", type=int, default=None, help="override iterations per experience (shortened runs)")
    parser.add_argument("--train-size", type=int, default=None, help="training samples kept per experience")
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20 iterations, seed 1, 1000 train/test samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest for these MLPs on a shared 2-core machine; 0: torch default)")
    parser.add_argument("--log", type=Path, default=RUNS_LOG, help="JSONL file the finished runs are appended to")
    parser.add_argument("--skip-done", action="store_true", help="skip configurations already in --log (same command)")
    parser.add_argument("--table-only", action="store_true", help="print the table from --log without running")
    parser.add_argument("--write-results", action="store_true", help="rewrite our section of docs/results.md from --log")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.iterations = "1", args.iterations or 20
        args.train_size, args.test_size = args.train_size or 1000, args.test_size or 1000
        if args.log == RUNS_LOG:
            args.log = RUNS_LOG.with_name("vandeven2019_quick.jsonl")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the requested grid, appending each run to the log; print the table."""
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.table_only:
        args.log.parent.mkdir(parents=True, exist_ok=True)
        done = {run["command"] for run in load_runs(args.log, args.quick)}
        grid = itertools.product(args.seeds.split(","), args.experiments.split(","), args.scenarios.split(","), args.methods.split(","))
        for seed, experiment, scenario, method in grid:  # seed outermost: each seed finishes a whole table
            iterations = args.iterations or PROTOCOL[experiment]["iterations"]
            command = command_line(run_config(experiment, scenario, method, int(seed), iterations, args))
            if args.skip_done and command in done:
                continue
            record = run_one(experiment, scenario, method, int(seed), iterations, args)
            with args.log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(f"{experiment:8s} {scenario:6s} {method:5s} seed {seed}: {record['average_accuracy']:6.2f}% "
                  f"(paper {PUBLISHED[(experiment, scenario)].get(method, math.nan):.2f}), {record['wall_seconds']:.0f} s", flush=True)
    print(table(load_runs(args.log, args.quick)))
    if args.write_results:
        write_section(section(load_runs(args.log, args.quick), current_notes()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
