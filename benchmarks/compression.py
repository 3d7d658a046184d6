"""Lifelong compression benchmark: teacher vs distilled student vs student alone vs pruned vs quantised.

Each setting is one ``lifelong-kd run --student ...`` (the same code path as the CLI): the
teacher trains with LwF along the stream, the student with ``compress`` from a frozen
snapshot of the teacher, the student alone with ``compress`` and no teacher (LwF
self-distillation + labels, same initialisation), and the teacher's pruned and int8
copies are evaluated after every experience. The script prints and writes
``benchmarks/output/compression_<setting><tag>.md`` with the summary tables, and checks the
issue's target on permuted-MNIST (student with >= 10x fewer parameters keeps >= 95% of the
teacher's average accuracy and beats the student alone).

Usage (from the repository root)::

    python benchmarks/compression.py --setting permuted-mnist --data-root ../shared/data
    python benchmarks/compression.py --setting split-cifar10 --data-root ../shared/data
    python benchmarks/compression.py --setting permuted-mnist --seeds 0,1,2   # several seeds
    python benchmarks/compression.py --setting all --quick                     # CI smoke
    # extra flags go to `lifelong-kd run` (the last occurrence wins), e.g. all 60,000 images:
    python benchmarks/compression.py --setting permuted-mnist --tag=-full --train-size 60000
    # rebuild the tables from the records alone (no training, no run folders needed):
    python benchmarks/compression.py --setting permuted-mnist --tag=-full --table-only

Run folders go to ``benchmarks/output/compression_runs/<setting><tag>-s<seed>`` (resumable with
``--resume``; not kept in git). Each finished run leaves one small record in
``benchmarks/output/compression_runs.jsonl``, keyed by setting, tag and seed (a later run of
the same key replaces it): the run's ``summary`` rows, each model's metrics and accuracy
matrix, and its configuration. The tables are built from these records only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong_kd.cli.report import format_summary

OUTPUT = Path(__file__).resolve().parent / "output"
RECORDS = OUTPUT / "compression_runs.jsonl"
# Configuration keys that only say where or how a run was written, not what it computed.
PLUMBING_KEYS = frozenset({"out", "resume", "overwrite", "quiet", "data_root", "download", "tensorboard"})
# The models the docs compare across seeds: the student, its two baselines at about 10x fewer
# parameters (student alone, 90%-pruned teacher), and the teacher with its int8 copy.
SEED_TABLE_MODELS = ("teacher", "student", "student_alone", "pruned_0.9", "quantized")

# name -> CLI flags. Budgets are sized for a loaded 2-core CPU.
SETTINGS: dict[str, list[str]] = {
    # van de Ven et al. 2019's MLP widened to 1000 units as the teacher (1,836,050 parameters)
    # vs an mlp:100,100 student (93,650: 19.6x fewer). One epoch per experience on 20,000 of
    # the 60,000 training images, 2,000 test images per experience, the default corruption
    # suite at severities 1/3/5 on 128 test images per experience.
    "permuted-mnist": [
        "--benchmark", "permuted-mnist", "--scenario", "task", "--n-experiences", "5", "--epochs", "1",
        "--train-size", "20000", "--test-size", "2000", "--severities", "1,3,5", "--robustness-samples", "128",
        "--strategy", "lwf", "--model", "mlp:1000,1000", "--student", "mlp:100,100", "--student-alone",
    ],
    # ConvNet teacher (convnet:16, 34,554 parameters) vs convnet:4 student (2,550: 13.6x fewer); 2,500 of
    # the 10,000 training images per experience, 3 epochs, 500 test images per experience,
    # the default corruption suite at severities 1/3/5 on 128 test images per experience.
    "split-cifar10": [
        "--benchmark", "split-cifar10", "--scenario", "task", "--epochs", "3", "--train-size", "2500",
        "--test-size", "500", "--severities", "1,3,5", "--robustness-samples", "128", "--strategy", "lwf",
        "--model", "convnet:16", "--student", "convnet:4", "--student-alone",
    ],
}


def record_of(setting: str, tag: str, seed: int, document: Mapping[str, Any], command: str | None) -> dict[str, Any]:
    """The small record a finished run leaves: everything the tables need, without the run folder.

    Args:
        setting: Name in :data:`SETTINGS`.
        tag: Suffix of the run folder and of the output table (``""``, ``"-full"``, ...).
        seed: The run's seed.
        document: The run's ``results.json`` document (with ``summary`` rows).
        command: The ``lifelong-kd`` command line that produced it (None when unknown).

    Returns:
        ``{"setting", "tag", "seed", "command", "config", "summary", "models"}``; ``models`` maps
        each model to its ``metrics`` and ``accuracy_matrix``.
    """
    config = {key: value for key, value in document.get("config", {}).items() if key not in PLUMBING_KEYS}
    models = {
        name: {"metrics": section.get("metrics"), "accuracy_matrix": section.get("accuracy_matrix")}
        for name, section in document.get("models", {}).items()
    }
    return {"setting": setting, "tag": tag, "seed": seed, "command": command, "config": config,
            "summary": document["summary"], "models": models}


def read_records(path: Path = RECORDS) -> list[dict[str, Any]]:
    """Every record of the JSON-lines file (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    """What identifies a run: setting, tag and seed."""
    return record["setting"], record["tag"], record["seed"]


def upsert_record(record: Mapping[str, Any], path: Path = RECORDS) -> None:
    """Replace the record with the same key (or append it), rewriting the file atomically."""
    records = read_records(path)
    keys = [record_key(old) for old in records]
    if record_key(record) in keys:
        records[keys.index(record_key(record))] = dict(record)
    else:
        records.append(dict(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text("".join(json.dumps(old) + "\n" for old in records))
    os.replace(temporary, path)


def run_setting(setting: str, seed: int, data_root: str, resume: bool, extra: list[str], tag: str = "") -> dict[str, Any]:
    """One compression run through the CLI; stores and returns its record.

    ``resume`` continues the run folder when it holds a checkpoint and starts it otherwise; a
    folder holding a run is replaced only when ``extra`` has ``--overwrite``.
    """
    from lifelong_kd import cli
    from lifelong_kd.run_folder import CHECKPOINT

    out = OUTPUT / "compression_runs" / f"{setting}{tag}-s{seed}"
    argv = ["run", *SETTINGS[setting], "--seed", str(seed), "--data-root", data_root, "--out", str(out), "--quiet", *extra]
    if resume and (out / CHECKPOINT).is_file():
        argv.append("--resume")
    print("lifelong-kd " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"run failed with exit code {code}")
    print(f"wall time {time.perf_counter() - start:.0f} s", flush=True)
    command = "lifelong-kd " + " ".join(part for part in argv if part not in ("--resume",))
    record = record_of(setting, tag, seed, json.loads((out / "results.json").read_text()), command)
    upsert_record(record)
    return record


def recorded_runs(setting: str, tag: str, seeds: Sequence[int] | None, path: Path = RECORDS) -> list[dict[str, Any]]:
    """The records of ``setting`` + ``tag``, one per seed (``seeds`` None: every recorded seed, sorted)."""
    found = {record["seed"]: record for record in read_records(path) if (record["setting"], record["tag"]) == (setting, tag)}
    if seeds is None:
        return [found[seed] for seed in sorted(found)]
    missing = [seed for seed in seeds if seed not in found]
    if missing:
        raise SystemExit(
            f"compression.py: no record of setting {setting!r}, tag {tag!r}, seed(s) {missing} in {path}. "
            f"Run them first (the same command without --table-only), or leave out --seeds to use the recorded ones."
        )
    return [found[seed] for seed in seeds]


def target_check(summary: list[dict]) -> str:
    """The issue's target: >= 10x fewer parameters, >= 95% of the teacher's accuracy, beats alone."""
    rows = {row["model"]: row for row in summary}
    student, alone = rows["student"], rows.get("student_alone")
    ratio, kept = student["parameter_ratio"], student["accuracy_kept"]
    margin = student["average_accuracy"] - alone["average_accuracy"] if alone else float("nan")
    ok = ratio >= 10 and kept >= 0.95 and margin > 0
    return (
        f"target {'MET' if ok else 'NOT MET'}: parameter ratio {ratio:.1f}x (>= 10), accuracy kept "
        f"{100 * kept:.1f}% (>= 95), student - student alone = {100 * margin:+.2f} points (> 0)"
    )


def accuracies_by_model(records: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Average accuracy of each model in each record (record order), keyed by model name."""
    by_model: dict[str, list[float]] = {}
    for record in records:
        for row in record["summary"]:
            by_model.setdefault(row["model"], []).append(row["average_accuracy"])
    return by_model


def seed_table(setting: str, records: Sequence[Mapping[str, Any]]) -> str:
    """Mean and spread over seeds of average accuracy per model."""
    lines = [f"{setting}: average accuracy over {len(records)} seeds", "| model | mean % | min % | max % |", "|---|---|---|---|"]
    for model, values in accuracies_by_model(records).items():
        lines.append(f"| {model} | {100 * statistics.mean(values):.2f} | {100 * min(values):.2f} | {100 * max(values):.2f} |")
    return "\n".join(lines)


def seed_columns_table(setting: str, records: Sequence[Mapping[str, Any]]) -> str:
    """Average accuracy per seed and its mean, for the models of :data:`SEED_TABLE_MODELS` (the docs' table)."""
    seeds = [record["seed"] for record in records]
    lines = [f"{setting}: average accuracy per seed ({', '.join(SEED_TABLE_MODELS)})",
             "| model | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean |", "|---|" + "---|" * (len(seeds) + 1)]
    for model, values in accuracies_by_model(records).items():
        if model in SEED_TABLE_MODELS and len(values) == len(seeds):
            cells = [f"{100 * value:.2f}" for value in values] + [f"{100 * statistics.mean(values):.2f}"]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(setting: str, records: Sequence[Mapping[str, Any]]) -> str:
    """The ``compression_<setting><tag>.md`` text: one summary table per seed, then the seed tables."""
    lines: list[str] = []
    for record in records:
        summary = record["summary"]
        lines += [f"### {setting}, seed {record['seed']}", "", format_summary(summary), "", target_check(summary), ""]
        timing = {row["model"]: row["train_seconds"] for row in summary if row["train_seconds"]}
        lines += ["train seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()), ""]
    if len(records) > 1:
        lines += [seed_table(setting, records), "", seed_columns_table(setting, records), ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the rest (passed to ``lifelong-kd run``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="permuted-mnist")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0; with --table-only: every recorded seed)")
    parser.add_argument("--resume", action="store_true", help="continue run folders that hold a checkpoint (others start)")
    parser.add_argument("--tag", default="", help="suffix of run folders and of the output table (e.g. -full)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1,000 training images per experience, 1 epoch")
    parser.add_argument("--table-only", action="store_true", help=f"rebuild the tables from {RECORDS.name} without running")
    args, extra = parser.parse_known_args(argv)
    if args.table_only and extra:
        parser.error(f"--table-only runs nothing, so these run options have no effect: {' '.join(extra)}")
    if args.quick:  # a smoke run: its folder is disposable, so a repeated smoke run replaces it
        replace = [] if args.resume or args.table_only else ["--overwrite"]
        extra = ["--train-size", "1000", "--test-size", "200", "--epochs", "1", "--robustness-samples", "16", *replace, *extra]
        args.tag = args.tag or "-quick"
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    seeds = None if args.seeds is None else [int(seed) for seed in args.seeds.split(",")]
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    for setting in settings:
        if not args.table_only:
            for seed in seeds or [0]:
                run_setting(setting, seed, args.data_root, args.resume, extra, args.tag)
        records = recorded_runs(setting, args.tag, seeds or (None if args.table_only else [0]))
        if not records:
            print(f"no record of {setting}{args.tag} in {RECORDS}", flush=True)
            continue
        text = markdown(setting, records)
        print(text, flush=True)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / f"compression_{setting}{args.tag}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
