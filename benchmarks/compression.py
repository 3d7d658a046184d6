"""Lifelong compression benchmark: teacher vs distilled student vs student alone vs pruned vs quantised.

Each setting is one ``lifelong-kd run --student ...`` (the same code path as the CLI): the
teacher trains with LwF along the stream, the student with ``compress`` from a frozen
snapshot of the teacher, the student alone with ``compress`` and no teacher (LwF
self-distillation + labels, same initialisation), and the teacher's pruned and int8
copies are evaluated after every experience. The script prints and writes
``benchmarks/output/compression_<setting>.md`` with the summary table, and checks the
issue's target on permuted-MNIST (student with >= 10x fewer parameters keeps >= 95% of the
teacher's average accuracy and beats the student alone).

Usage (from the repository root)::

    python benchmarks/compression.py --setting permuted-mnist --data-root ../shared/data
    python benchmarks/compression.py --setting split-cifar10 --data-root ../shared/data
    python benchmarks/compression.py --setting permuted-mnist --seeds 0,1,2   # several seeds
    python benchmarks/compression.py --setting all --quick                     # CI smoke
    # extra flags go to `lifelong-kd run` (the last occurrence wins), e.g. all 60,000 images:
    python benchmarks/compression.py --setting permuted-mnist --tag=-full --train-size 60000

Runs go to ``benchmarks/output/compression_runs/<setting>-s<seed>`` and are resumable
(``--resume``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from lifelong_kd import cli
from lifelong_kd.compression_run import format_summary

OUTPUT = Path(__file__).resolve().parent / "output"

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


def run_setting(setting: str, seed: int, data_root: str, resume: bool, extra: list[str], tag: str = "") -> dict:
    """One compression run; returns its results.json document."""
    out = OUTPUT / "compression_runs" / f"{setting}{tag}-s{seed}"
    argv = ["run", *SETTINGS[setting], "--seed", str(seed), "--data-root", data_root, "--out", str(out), "--quiet", *extra]
    if resume:
        argv.append("--resume")
    print("lifelong-kd " + " ".join(argv), flush=True)
    start = time.perf_counter()
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"run failed with exit code {code}")
    print(f"wall time {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads((out / "results.json").read_text())


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


def seed_table(setting: str, documents: list[dict]) -> str:
    """Mean and spread over seeds of average accuracy per model."""
    by_model: dict[str, list[float]] = {}
    for document in documents:
        for row in document["summary"]:
            by_model.setdefault(row["model"], []).append(row["average_accuracy"])
    lines = [f"{setting}: average accuracy over {len(documents)} seeds", "| model | mean % | min % | max % |", "|---|---|---|---|"]
    for model, values in by_model.items():
        lines.append(f"| {model} | {100 * statistics.mean(values):.2f} | {100 * min(values):.2f} | {100 * max(values):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="permuted-mnist")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--tag", default="", help="suffix of run folders and of the output table (e.g. -full)")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1,000 training images per experience, 1 epoch")
    args, extra = parser.parse_known_args(argv)
    if args.quick:
        extra = ["--train-size", "1000", "--test-size", "200", "--epochs", "1", "--robustness-samples", "16", *extra]
        args.tag = args.tag or "-quick"
    settings = list(SETTINGS) if args.setting == "all" else [args.setting]
    for setting in settings:
        documents = [run_setting(setting, int(seed), args.data_root, args.resume, extra, args.tag) for seed in args.seeds.split(",")]
        lines = []
        for seed, document in zip(args.seeds.split(","), documents):
            lines += [f"### {setting}, seed {seed}", "", format_summary(document["summary"]), "", target_check(document["summary"]), ""]
            timing = {row["model"]: row["train_seconds"] for row in document["summary"] if row["train_seconds"]}
            lines += ["train seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()), ""]
        if len(documents) > 1:
            lines += [seed_table(setting, documents), ""]
        text = "\n".join(lines)
        print(text, flush=True)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        (OUTPUT / f"compression_{setting}{args.tag}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
