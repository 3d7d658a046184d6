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

Resumable runs: every run is a normal run folder (``lifelong-kd run --out FOLDER --resume``)
under ``benchmarks/output/vandeven2019_runs/<cell>/`` (git-ignored checkpoints). A killed
process (SIGKILL, the end of a session) is restarted with the same command: finished runs (in
the JSONL log) are skipped, an interrupted one continues from its last finished experience
and ends with the numbers of an uninterrupted run. ``--order`` runs cells in a given order
(``--order issue16``: the issue-16 queue, most informative first); progress goes to
``--progress-log`` (a line per experience, and every 30 s during training).

Hypotheses (``--variant``, ``+``-joined factors, each changing one thing; see VARIANTS):
``raw32`` 32x32 zero-padded raw pixels, ``keep-adam`` Adam state kept across tasks,
``active-classes`` class-IL cross-entropy over the classes seen so far, ``convex`` LwF's
CE/k + (1-1/k) KD weighting; ``paper`` = these four. ``kd-mean``: LwF's KD averaged over the
classes as well (divided by their number), as the authors' code computed it until 2019-05-17.

Run from the repository root::

    python benchmarks/vandeven2019.py --quick                        # CI smoke: a few iterations, one seed
    python benchmarks/vandeven2019.py --experiments split --seeds 1,2,3
    python benchmarks/vandeven2019.py --experiments split --scenarios class --methods lwf --variant keep-adam+convex
    OMP_NUM_THREADS=1 nohup python benchmarks/vandeven2019.py --order issue16 > /dev/null 2>&1 &   # the long queue
    python benchmarks/vandeven2019.py --table-only --write-results   # table from the JSONL log
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import re
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RUNS_LOG = ROOT / "benchmarks" / "output" / "vandeven2019_runs.jsonl"
RUNS_DIR = ROOT / "benchmarks" / "output" / "vandeven2019_runs"  # run folders (checkpoints git-ignored)
PROGRESS_LOG = ROOT / "benchmarks" / "output" / "vandeven2019_progress.log"
log = logging.getLogger("vandeven2019")
RESULTS_MD = ROOT / "docs" / "results.md"
SECTION = "## van de Ven et al. 2019 reproduction"
NOTES_BEGIN, NOTES_END = "<!-- vandeven2019 notes -->", "<!-- /vandeven2019 notes -->"
SCENARIOS = ("task", "domain", "class")
METHODS = ("none", "joint", "ewc", "lwf", "lwf-seen")
STRATEGY = {"none": "finetune", "joint": "joint", "ewc": "ewc", "lwf": "lwf", "lwf-seen": "lwf"}

# Final average accuracy (%) in van de Ven & Tolias 2019, Table 2 (mean over seeds). Their
# upper bound "Offline" trains on all data so far; our "joint" row (experience k trains on
# experiences 0..k) is the same idea, so it is shown beside it.
PUBLISHED = {
    ("split", "task"): {"none": 87.19, "ewc": 98.64, "lwf": 99.57, "joint": 99.66},
    ("split", "domain"): {"none": 59.21, "ewc": 63.95, "lwf": 71.50, "joint": 98.42},
    ("split", "class"): {"none": 19.90, "ewc": 20.01, "lwf": 23.85, "joint": 97.94},
    ("permuted", "task"): {"none": 81.79, "ewc": 94.74, "lwf": 69.84, "joint": 97.68},
    ("permuted", "domain"): {"none": 78.51, "ewc": 94.31, "lwf": 72.64, "joint": 97.59},
    ("permuted", "class"): {"none": 17.26, "ewc": 25.04, "lwf": 22.64, "joint": 97.59},
}
# The factors in which the authors' code (GMvandeVen/continual-learning, 2019 version) differs
# from our defaults; each variant changes one (RunConfig fields; "strategy" for LwF's options).
FACTORS: dict[str, dict[str, Any]] = {
    "raw32": {"input_format": "raw32"},  # their transforms.Pad(2) + ToTensor(); ours 28x28 normalised
    "keep-adam": {"keep_optimizer": True},  # their --optimizer adam (one Adam for all tasks); ours adam_reset
    "active-classes": {"cross_entropy_classes": "seen"},  # their class-IL CE over active classes; ours all outputs
    "convex": {"strategy": {"weighting": "convex", "alpha": 1.0}},  # their LwF: CE/k + (1-1/k) KD; ours CE + (k-1) KD
    # their loss_fn_kd until 2019-05-17 (commit 26f00db, a month after the paper's arXiv v1): KD averaged over classes too
    "kd-mean": {"strategy": {"kd_reduction": "mean"}},
}
# named combinations; any "+"-joined list of FACTORS works too ("paper": the four factors of the code's later version)
VARIANTS = {"paper": ("raw32", "keep-adam", "active-classes", "convex")}
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


def variant_factors(variant: str) -> tuple[str, ...]:
    """The factors of a variant name (``""``: ours; ``paper``; or ``raw32+keep-adam`` ...), checked."""
    if not variant:
        return ()
    names = [factor for part in variant.split("+") for factor in VARIANTS.get(part, (part,))]
    unknown = [name for name in names if name not in FACTORS]
    if unknown:
        raise SystemExit(f"Unknown variant factor(s) {', '.join(unknown)}: use {', '.join(FACTORS)} joined by '+', or {', '.join(VARIANTS)}.")
    return tuple(dict.fromkeys(names))


def apply_variant(config, method: str, variant: str):  # noqa: ANN001, ANN201
    """``config`` with the variant's factors applied (``convex`` changes LwF runs only)."""
    for factor in variant_factors(variant):
        change = dict(FACTORS[factor])
        strategy = change.pop("strategy", None)
        if strategy and method in ("lwf", "lwf-seen"):
            change["strategy_options"] = {**config.strategy_options, **strategy}
        config = replace(config, **change)
    return config


@dataclass(frozen=True)
class Cell:
    """One run of the grid: experiment, scenario, method, seed and the hypothesis variant (``""``: ours)."""

    experiment: str
    scenario: str
    method: str
    seed: int
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> "Cell":
        """``permuted/domain/lwf/1`` or ``split/class/lwf/2/keep-adam+convex``."""
        parts = text.strip().split("/")
        if len(parts) not in (4, 5) or parts[0] not in PROTOCOL or parts[1] not in SCENARIOS or parts[2] not in METHODS or not parts[3].isdigit():
            raise SystemExit(f"Bad cell {text!r}: write EXPERIMENT/SCENARIO/METHOD/SEED[/VARIANT], e.g. permuted/domain/lwf/1 "
                             f"(experiments {', '.join(PROTOCOL)}; methods {', '.join(METHODS)}).")
        variant = parts[4] if len(parts) == 5 else ""
        variant_factors(variant)
        return cls(parts[0], parts[1], parts[2], int(parts[3]), variant)

    def name(self, iterations: int) -> str:
        """The run folder's name."""
        return f"{self.experiment}-{self.scenario}-{self.method}-s{self.seed}-i{iterations}" + (f"-{self.variant}" if self.variant else "")


def issue16_order() -> list[Cell]:
    """The issue-16 queue, most informative first.

    Permuted-MNIST at full length, seed 1 (domain, task, class; None, EWC, LwF, Joint), then
    seed 2; then the hypothesis runs (each changes one factor; split-MNIST cells, which are
    short, on seeds 1-2 beside our setting on the same seeds; permuted-MNIST on seed 1);
    then permuted seed 3.
    """
    main = ("none", "ewc", "lwf", "joint")
    permuted = [Cell("permuted", scenario, method, seed) for seed in (1, 2) for scenario in ("domain", "task", "class") for method in main]
    single = ("", "raw32", "keep-adam", "paper")  # "": our setting on the same seed (skipped when already in the log)
    hypotheses = [Cell("split", scenario, method, seed, variant) for seed in (1, 2)
                  for scenario, method in (("task", "none"), ("domain", "none"), ("domain", "ewc")) for variant in single]
    hypotheses += [Cell("split", "class", "lwf", seed, variant) for seed in (1, 2)
                   for variant in ("", "raw32", "keep-adam", "active-classes", "convex", "keep-adam+convex", "paper")]
    hypotheses += [Cell("permuted", "domain", "lwf", 1, variant) for variant in ("keep-adam", "convex", "keep-adam+convex", "raw32", "paper")]
    hypotheses += [Cell("permuted", "domain", method, 1, variant) for method in ("none", "ewc") for variant in ("raw32", "keep-adam", "paper")]
    hypotheses += [Cell("permuted", "class", "lwf", 1, variant) for variant in ("active-classes", "paper")]
    hypotheses += [Cell(experiment, scenario, "lwf", seed, variant) for experiment, seeds in (("split", (1, 2)), ("permuted", (1,)))
                   for scenario in ("domain", "class", "task") for seed in seeds for variant in ("", "kd-mean", "raw32+kd-mean", "paper+kd-mean")]
    seed3 = [Cell("permuted", scenario, method, 3) for scenario in ("domain", "task", "class") for method in main]
    return list(dict.fromkeys(permuted + hypotheses + seed3))  # each cell once, where it first appears


ORDERS = {"issue16": issue16_order}


def run_config(experiment: str, scenario: str, method: str, seed: int, iterations: int, args: argparse.Namespace, variant: str = "", ewc_lambda: float | None = None):  # noqa: ANN201
    """The ``lifelong-kd run`` configuration of one run (``ewc_lambda`` overrides the table's)."""
    from lifelong_kd.config import RunConfig

    protocol = PROTOCOL[experiment]
    options = strategy_options(method, experiment, scenario, args.quick)
    if ewc_lambda is not None and method == "ewc":
        options["ewc_lambda"] = ewc_lambda
    config = RunConfig(
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
        validation_split=getattr(args, "validation_split", 0.0),
        shifts="none",  # accuracy matrix only: no robustness suite (not in the paper)
        instruments=False,
        drift_samples=0,
        eval_batch_size=1024,
        tensorboard=False,
        quiet=False,  # progress lines every 30 s into --progress-log
        strategy_options=options,
    )
    return apply_variant(config, method, variant)


# Options shown in a run's command only when they differ from these defaults (older records omit them).
OPTIONAL_FLAGS = {"input_format": "normalised", "keep_optimizer": False, "cross_entropy_classes": "all", "validation_split": 0.0}


def command_line(config) -> str:  # noqa: ANN001
    """The equivalent ``lifelong-kd run`` command (also the key finished runs are recognised by)."""
    parts = ["lifelong-kd run"]
    for key in ("benchmark", "scenario", "n_experiences", "strategy", "model", "iterations", "batch_size", "lr", "optimizer", "seed", "train_size", "test_size"):
        value = getattr(config, key)
        if value is not None:
            parts.append(f"--{key.replace('_', '-')} {value}")
    for key, default in OPTIONAL_FLAGS.items():
        value = getattr(config, key)
        if value != default:
            parts.append(f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}"))
    for key, value in config.strategy_options.items():
        text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"--{key.replace('_', '-')} {text}")
    return " ".join(parts) + " --shifts none --data-root ../shared/data"  # results_doc.DOCUMENTED_DATA_ROOT


def run_one(cell: Cell, iterations: int, args: argparse.Namespace, ewc_lambda: float | None = None) -> dict | None:
    """Train one cell as ``lifelong-kd run --out FOLDER [--resume]`` does; its JSONL record (None: it could not run).

    A folder with a checkpoint is resumed from its last finished experience; a folder holding
    only the remains of a run killed before its first checkpoint is started anew; one being
    written by another process, or holding another configuration, is reported and skipped.
    """
    from lifelong_kd.cli.compose import execute
    from lifelong_kd.run_folder import CHECKPOINT, RunFolderError

    base = run_config(cell.experiment, cell.scenario, cell.method, cell.seed, iterations, args, cell.variant, ewc_lambda)
    folder = args.out_dir / (cell.name(iterations) + (f"-lambda{ewc_lambda:g}" if ewc_lambda is not None and cell.method == "ewc" else "")
                             + (f"-val{base.validation_split:g}" if base.validation_split else ""))
    resume = (folder / CHECKPOINT).is_file()
    config = replace(base, out=str(folder), resume=resume, overwrite=not resume and folder.is_dir())
    log.info(f"{'resuming' if resume else 'starting'} {folder.name}: {command_line(base)}")
    try:
        results = execute(config)
    except RunFolderError as error:
        log.error(f"skipped {folder.name}: {error}")
        return None
    timing = results["timing"]
    return {
        "experiment": cell.experiment,
        "scenario": cell.scenario,
        "method": cell.method,
        "seed": cell.seed,
        "variant": cell.variant,
        "iterations": iterations,
        "full_iterations": PROTOCOL[cell.experiment]["iterations"],
        "quick": args.quick,
        "train_size": args.train_size,
        "validation_split": base.validation_split,
        "ewc_lambda_override": ewc_lambda if cell.method == "ewc" else None,
        "strategy_options": dict(base.strategy_options),
        "average_accuracy": 100 * results["metrics"]["average_accuracy"],
        "accuracy_matrix": results["accuracy_matrix"],
        "wall_seconds": timing["train_seconds"] + timing["eval_seconds"],
        "threads": torch.get_num_threads(),
        "run_folder": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
        "command": command_line(base),
    }


def command_key(command: str) -> str:
    """A run's command without its ``--data-root`` (records may show the data folder as a placeholder): what identifies a finished cell."""
    return re.sub(r" --data-root \S+", "", command)


def finished_commands(path: Path, quick: bool) -> set[str]:
    """The :func:`command_key` of every run in the JSONL log."""
    return {command_key(run["command"]) for run in load_runs(path, quick)}


def load_runs(path: Path, quick: bool) -> list[dict]:
    """Finished runs from the JSONL log (quick runs only when ``quick``)."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for run in runs:  # class-scenario LwF distilling the seen classes only (our default), not the paper's variant
        if run["method"] == "lwf" and run["scenario"] == "class" and "zero-new-classes" not in run["command"]:
            run["method"] = "lwf-seen"
        if run["method"] == "ewc" and run.get("ewc_lambda_override") is not None:  # lambda chosen on validation data
            run["method"] = "ewc-val"
    return [r for r in runs if bool(r.get("quick")) == quick]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f} (n={len(values)})"


def main_runs(runs: list[dict]) -> list[dict]:
    """Runs of our settings (no hypothesis variant, evaluated on the test set)."""
    return [r for r in runs if not r.get("variant") and not r.get("validation_split")]


def table(runs: list[dict]) -> str:
    """Markdown table: ours (mean ± std, seeds) beside the published number, per scenario.

    One row per experiment, method and iterations per experience (shortened runs get their
    own row); every published method has a row, "-" where nothing has run yet.
    """
    runs = main_runs(runs)
    lines = ["| experiment | method | iterations/exp | " + " | ".join(f"{s} (ours)" + f" | {s} (paper)" for s in SCENARIOS) + " |"]
    lines.append("|" + "---|" * (3 + 2 * len(SCENARIOS)))
    for experiment in PROTOCOL:
        full = PROTOCOL[experiment]["iterations"]
        for method in (*METHODS, "ewc-val"):
            chosen = [r for r in runs if r["experiment"] == experiment and r["method"] == method]
            optional = method in ("lwf-seen", "ewc-val")  # rows shown only once they have runs
            if not chosen and optional:
                continue
            for iterations in sorted({r["iterations"] for r in chosen} | ({full} if not optional else set()), reverse=True):
                same = [r for r in chosen if r["iterations"] == iterations]
                its = str(iterations) + ("" if iterations == full else f" (paper {full})")
                cells = []
                for scenario in SCENARIOS:
                    values = [r["average_accuracy"] for r in same if r["scenario"] == scenario]
                    paper = PUBLISHED[(experiment, scenario)].get(method.removesuffix("-val")) if iterations == full else None
                    cells += [_cell(values), "-" if paper is None else f"{paper:.2f}"]
                lines.append(f"| {experiment}-MNIST | {method} | {its} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hypothesis_table(runs: list[dict]) -> str:
    """Markdown table of the hypothesis runs: each variant beside our settings on the same seeds and the paper."""
    variants = [r for r in runs if r.get("variant") and not r.get("validation_split")]
    base = main_runs(runs)
    lines = ["| experiment | scenario | method | variant | iterations/exp | variant (%) | ours, same seeds (%) | difference | paper |", "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["experiment"], r["scenario"], r["method"], r["variant"], r["iterations"]) for r in variants})
    for experiment, scenario, method, variant, iterations in keys:
        chosen = [r for r in variants if (r["experiment"], r["scenario"], r["method"], r["variant"], r["iterations"]) == (experiment, scenario, method, variant, iterations)]
        seeds = {r["seed"] for r in chosen}
        ours = [r for r in base if (r["experiment"], r["scenario"], r["method"], r["iterations"]) == (experiment, scenario, method, iterations) and r["seed"] in seeds]
        mean = statistics.mean(r["average_accuracy"] for r in chosen)
        difference = f"{mean - statistics.mean(r['average_accuracy'] for r in ours):+.2f}" if ours else "-"
        paper = PUBLISHED[(experiment, scenario)].get(method)
        lines.append(f"| {experiment}-MNIST | {scenario} | {method} | {variant} | {iterations} | {_cell([r['average_accuracy'] for r in chosen])} | "
                     f"{_cell([r['average_accuracy'] for r in ours])} | {difference} | {'-' if paper is None else f'{paper:.2f}'} |")
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
             table(runs), ""]
    if any(r.get("variant") for r in runs):
        lines += ["### Hypotheses: the authors' choices, one factor at a time", "",
                  "Each variant changes one factor (`--variant`, see `benchmarks/vandeven2019.py`: raw32 = 32x32 zero-padded raw pixels,",
                  "keep-adam = Adam state kept across tasks, active-classes = class-IL cross-entropy over the classes seen so far,",
                  "convex = LwF's CE/k + (1-1/k) KD; paper = those four; kd-mean = LwF's KD averaged over classes as well, as the authors' code",
                  "until 2019-05-17); \"ours, same seeds\" is our setting on the variant's seeds.", "",
                  hypothesis_table(runs), ""]
    lines += [NOTES_BEGIN, notes, NOTES_END, "", "### Runs", "",
              "| experiment | scenario | method | variant | seed | iterations/exp | avg acc (%) | wall time (s) | threads |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if r.get("validation_split"):
            continue
        lines.append(f"| {r['experiment']} | {r['scenario']} | {r['method']} | {r.get('variant') or '-'} | {r['seed']} | {r['iterations']} | "
                     f"{r['average_accuracy']:.2f} | {r['wall_seconds']:.0f} | {r['threads']} |")
    commands = sorted({(r["experiment"], r["scenario"], r["method"], r["command"].replace(f"--seed {r['seed']}", "--seed SEED").replace("--data-root DATA", "--data-root ../shared/data")) for r in runs if not r.get("validation_split")})
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


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared with ``benchmarks/ewc_lambda.py``: data, sizes, threads, folders."""
    parser.add_argument("--iterations", type=int, default=None, help="override iterations per experience (shortened runs)")
    parser.add_argument("--train-size", type=int, default=None, help="training samples kept per experience")
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 20 iterations, seed 1 (grid mode), 1000 train/test samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest for these MLPs on a shared 2-core machine; 0: torch default)")
    parser.add_argument("--out-dir", type=Path, default=None, help=f"run folders, one per cell (default {RUNS_DIR.relative_to(ROOT)}/, quick: ..._quick/)")
    parser.add_argument("--progress-log", type=Path, default=None, help=f"progress lines are appended here (default {PROGRESS_LOG.relative_to(ROOT)}; '-': stdout only)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", default="split,permuted", help="comma-separated: split, permuted")
    parser.add_argument("--scenarios", default="task,domain,class")
    parser.add_argument("--methods", default="none,joint,ewc,lwf")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--variant", default="", help=f"hypothesis factors joined by '+': {', '.join(FACTORS)}; or {', '.join(VARIANTS)} (default: ours)")
    parser.add_argument("--order", default=None, help=f"run these cells in this order instead of the grid: {', '.join(ORDERS)}, or EXPERIMENT/SCENARIO/METHOD/SEED[/VARIANT],...")
    add_run_arguments(parser)
    parser.add_argument("--ewc-lambda", default="", help="EWC lambda per scenario chosen on validation data (benchmarks/ewc_lambda.py), e.g. task=1e5,domain=1e9 (default: the authors' grid)")
    parser.add_argument("--log", type=Path, default=RUNS_LOG, help="JSONL file the finished runs are appended to")
    parser.add_argument("--skip-done", action=argparse.BooleanOptionalAction, default=True, help="skip cells already in --log (same command; default on)")
    parser.add_argument("--list", action="store_true", help="print the cells that would run (and whether each is done) and stop")
    parser.add_argument("--table-only", action="store_true", help="print the table from --log without running")
    parser.add_argument("--write-results", action="store_true", help="rewrite our section of docs/results.md from --log")
    args = parser.parse_args(argv)
    finish_run_arguments(args)
    try:
        args.ewc_lambda = {k.strip(): float(v) for k, v in (item.split("=") for item in args.ewc_lambda.split(",") if item.strip())}
    except ValueError:
        parser.error(f"--ewc-lambda takes SCENARIO=VALUE pairs separated by commas (e.g. task=1e5,domain=1e9), got {args.ewc_lambda!r}")
    if set(args.ewc_lambda) - set(SCENARIOS):
        parser.error(f"--ewc-lambda: unknown scenario(s) {', '.join(sorted(set(args.ewc_lambda) - set(SCENARIOS)))}; use {', '.join(SCENARIOS)}")
    if args.quick:
        args.seeds = "1"
        if args.log == RUNS_LOG:
            args.log = RUNS_LOG.with_name("vandeven2019_quick.jsonl")
    return args


def finish_run_arguments(args: argparse.Namespace) -> None:
    """Quick sizes and default folders (quick runs keep their own)."""
    if args.quick:
        args.iterations = args.iterations or 20
        args.train_size, args.test_size = args.train_size or 1000, args.test_size or 1000
    args.out_dir = args.out_dir or (RUNS_DIR.with_name(RUNS_DIR.name + "_quick") if args.quick else RUNS_DIR)
    args.progress_log = args.progress_log or (PROGRESS_LOG.with_name("vandeven2019_quick_progress.log") if args.quick else PROGRESS_LOG)


def cells(args: argparse.Namespace) -> list[Cell]:
    """The cells to run, in order: ``--order``, else the grid (seed outermost: each seed finishes a whole table)."""
    if args.order:
        if args.order in ORDERS:
            return ORDERS[args.order]()
        return [Cell.parse(text) for text in args.order.split(",") if text.strip()]
    variant_factors(args.variant)
    grid = itertools.product(args.seeds.split(","), args.experiments.split(","), args.scenarios.split(","), args.methods.split(","))
    return [Cell.parse(f"{experiment}/{scenario}/{method}/{seed}" + (f"/{args.variant}" if args.variant else "")) for seed, experiment, scenario, method in grid]


def setup_logging(path: Path) -> None:
    """Progress of this script and of the library's loop: plain lines on stdout and, unless ``path`` is '-', appended to ``path``."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if str(path) != "-":
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    for name in ("vandeven2019", "lifelong_kd"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.handlers = handlers
        logger.propagate = False


def run_cells(todo: list[Cell], args: argparse.Namespace) -> int:
    """Run ``todo`` in order, appending each finished run to ``args.log``; the number that could not run."""
    args.log.parent.mkdir(parents=True, exist_ok=True)
    failed = 0
    for position, cell in enumerate(todo, start=1):
        iterations = args.iterations or PROTOCOL[cell.experiment]["iterations"]
        ewc_lambda = args.ewc_lambda.get(cell.scenario) if cell.method == "ewc" else None
        command = command_key(command_line(run_config(cell.experiment, cell.scenario, cell.method, cell.seed, iterations, args, cell.variant, ewc_lambda)))
        # read before every cell: another queue on the same log (one per core) may have finished it since
        if args.skip_done and command in finished_commands(args.log, args.quick):
            continue
        log.info(f"cell {position}/{len(todo)}: {cell.name(iterations)}")
        record = run_one(cell, iterations, args, ewc_lambda)
        if record is None:
            failed += 1
            continue
        with args.log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        paper = PUBLISHED[(cell.experiment, cell.scenario)].get(cell.method, math.nan)
        log.info(f"finished {cell.name(iterations)}: {record['average_accuracy']:.2f}% (paper {paper:.2f}), {record['wall_seconds']:.0f} s")
    return failed


def list_cells(todo: list[Cell], args: argparse.Namespace) -> None:
    """Print each cell with its state: done (in the log), resumable (a checkpoint), or to do."""
    from lifelong_kd.run_folder import CHECKPOINT

    done = finished_commands(args.log, args.quick)
    for position, cell in enumerate(todo, start=1):
        iterations = args.iterations or PROTOCOL[cell.experiment]["iterations"]
        ewc_lambda = args.ewc_lambda.get(cell.scenario) if cell.method == "ewc" else None
        command = command_key(command_line(run_config(cell.experiment, cell.scenario, cell.method, cell.seed, iterations, args, cell.variant, ewc_lambda)))
        folder = cell.name(iterations) + (f"-lambda{ewc_lambda:g}" if ewc_lambda is not None else "")
        state = "done" if command in done else "resumable" if (args.out_dir / folder / CHECKPOINT).is_file() else "to do"
        print(f"{position:3d} {state:9s} {cell.name(iterations)}")


def main(argv: list[str] | None = None) -> int:
    """Run the requested cells (resuming interrupted ones), appending each run to the log; print the table."""
    from lifelong_kd.cli import sigterm_as_interrupt

    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.list:
        list_cells(cells(args), args)
        return 0
    failed = 0
    if not args.table_only:
        setup_logging(args.progress_log)
        try:
            with sigterm_as_interrupt():
                failed = run_cells(cells(args), args)
        except KeyboardInterrupt:
            log.error("stopped; finished experiences are kept: run the same command again to continue")
            return 130
    print(table(load_runs(args.log, args.quick)))
    if args.write_results:
        write_section(section(load_runs(args.log, args.quick), current_notes()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
