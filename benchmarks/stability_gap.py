"""The stability gap (De Lange et al., ICLR 2023) of finetune, LwF, EWC, ER and DER++.

Each (benchmark, scenario) is one ``lifelong-kd sweep`` (strategies x seeds, every run a normal,
resumable run folder under ``benchmarks/output/stability/<benchmark>-<scenario>-k<K>/``) with
continual evaluation every K iterations (``--eval-every K``) on the library's default probe (256
test samples of every seen experience). The finished runs are collected into
``benchmarks/output/stability_runs.jsonl`` (one small record per run: the accuracy matrix, the
``stability`` block of results.json and the probe curve), and the table is built from that file.

Columns (mean ± std over seeds, in %):

* final accuracy: average accuracy over all experiences after the last one (full test sets);
* min-ACC, WC-ACC and WF^w: the paper's metrics as ``results.json`` reports them
  (``docs/metrics.md``);
* dip: for every old experience j and every later experience t, its probe accuracy at the end of
  experience t-1 minus the lowest probe accuracy seen during experience t, averaged over the (j, t)
  pairs: how far old accuracy falls inside an experience, which boundary-only evaluation hides;
* recovered: the probe accuracy at the end of experience t minus that lowest value, averaged the
  same way: how much of the fall comes back before the boundary.

    python benchmarks/stability_gap.py --data-root ../shared/data            # both benchmarks, class and task
    python benchmarks/stability_gap.py --benchmarks split-mnist --scenarios class --eval-every 50
    python benchmarks/stability_gap.py --table-only --write-results          # rebuild the results-page section
    python benchmarks/stability_gap.py --quick                               # CI smoke (embedded digits, 1 seed)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_doc import DOCUMENTED_DATA_ROOT, OUTPUT, ROOT, markdown_table, mean_std, read_jsonl, write_section  # noqa: E402

RECORDS = OUTPUT / "stability_runs.jsonl"
QUICK_RECORDS = OUTPUT / "stability_runs_quick.jsonl"
SWEEPS = OUTPUT / "stability"
HEADING = "## The stability gap (De Lange et al. 2023)"
STRATEGIES = "finetune,lwf,ewc,er,derpp"
# K per benchmark: about ten evaluations inside each experience (split-MNIST: ~95 iterations per
# class-IL experience at batch 128; split-CIFAR-10: 78), so the fall in the first iterations is seen.
EVAL_EVERY = {"split-mnist": 10, "split-cifar10": 10, "split-digits": 2}
# The run budget per benchmark: the library's defaults (1 epoch), except that split-CIFAR-10 uses
# the ConvNet so that 30 runs fit a background job on 2 CPU cores.
RUN_OPTIONS = {"split-mnist": [], "split-cifar10": ["--model", "convnet:32"], "split-digits": []}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default="split-mnist,split-cifar10")
    parser.add_argument("--scenarios", default="class,task")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eval-every", type=int, default=None, help="K (default: per benchmark, about ten evaluations per experience)")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--table-only", action="store_true", help="build the table from the records without running")
    parser.add_argument("--write-results", action="store_true", help="rewrite this section of docs/results.md")
    parser.add_argument("--quick", action="store_true", help="CI smoke: split-digits, finetune and ER, one seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.benchmarks, args.scenarios, args.strategies, args.seeds = "split-digits", "class", "finetune,er", "0"
    return args


def sweep_folder(benchmark: str, scenario: str, eval_every: int, quick: bool) -> Path:
    """Where the sweep of one (benchmark, scenario, K) keeps its run folders."""
    return (SWEEPS / "quick" if quick else SWEEPS) / f"{benchmark}-{scenario}-k{eval_every}"


def sweep_command(benchmark: str, scenario: str, eval_every: int, args: argparse.Namespace) -> list[str]:
    """The ``lifelong-kd sweep`` command of one (benchmark, scenario)."""
    run_options = ["--benchmark", benchmark, "--scenario", scenario, "--eval-every", str(eval_every), "--shifts", "none"]
    run_options += RUN_OPTIONS.get(benchmark, [])
    if benchmark != "split-digits":
        run_options += ["--data-root", args.data_root]
    folder = sweep_folder(benchmark, scenario, eval_every, args.quick)
    return [sys.executable, "-m", "lifelong_kd", "sweep", "--out", str(folder), "--grid", f"strategy={args.strategies}",
            "--seeds", args.seeds, "--jobs", "1", "--", *run_options]


def documented(command: list[str]) -> str:
    """The command as the docs print it (``lifelong-kd``, the documented data folder, relative paths)."""
    words = ["lifelong-kd", *command[3:]]
    text = " ".join(word if " " not in word else f"'{word}'" for word in words)
    return text.replace(str(ROOT) + "/", "").replace(words[words.index("--data-root") + 1] if "--data-root" in words else "\0", DOCUMENTED_DATA_ROOT)


def probe_dips(continual: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(dip, recovered) for every (old experience j, later experience t) pair of a probe curve.

    ``continual`` is the ``continual`` block of a report: ``iterations``, the ``experience`` being
    trained at each evaluation, the probe ``accuracy`` rows (one entry per experience, None before it
    is seen) and the ``ends`` (iteration of each experience's last step, evaluated there).
    """
    experience, accuracy, iterations, ends = continual["experience"], continual["accuracy"], continual["iterations"], continual["ends"]
    at_end = {end: row for end, row in zip(iterations, accuracy) if end in ends}
    dips, recovered = [], []
    for t in range(1, len(ends)):
        before, after = at_end.get(ends[t - 1]), at_end.get(ends[t])
        rows = [row for row, e in zip(accuracy, experience) if e == t]
        if before is None or after is None or not rows:
            continue
        for j in range(t):
            lowest = min(row[j] for row in rows)
            dips.append(before[j] - lowest)
            recovered.append(after[j] - lowest)
    return dips, recovered


def record_of(folder: Path, benchmark: str, scenario: str, eval_every: int) -> dict[str, Any] | None:
    """The small record of one finished run folder (None when the run has not finished)."""
    results_path = folder / "results.json"
    if not results_path.is_file():
        return None
    results = json.loads(results_path.read_text())
    config = results["config"]
    if results.get("finished_experiences") != config.get("n_experiences"):
        return None
    continual = results["reports"][-1]["continual"]
    dips, recovered = probe_dips(continual)
    return {
        "benchmark": benchmark,
        "scenario": scenario,
        "strategy": config["strategy"],
        "seed": config["seed"],
        "model": config["model"],
        "eval_every": eval_every,
        "run": folder.name,
        "average_accuracy": results["metrics"]["average_accuracy"],
        "stability": results["stability"],
        "dip": statistics.mean(dips) if dips else None,
        "recovered": statistics.mean(recovered) if recovered else None,
        "continual": {key: continual[key] for key in ("iterations", "experience", "accuracy", "ends")},
        "train_seconds": results.get("timing", {}).get("train_seconds"),
    }


def collect(folder: Path, benchmark: str, scenario: str, eval_every: int, records_path: Path) -> int:
    """Replace the records of ``folder``'s sweep in ``records_path`` by its finished runs; their number."""
    runs_folder = folder / "runs"
    fresh = [record_of(run, benchmark, scenario, eval_every) for run in sorted(runs_folder.iterdir())] if runs_folder.is_dir() else []
    fresh = [record for record in fresh if record is not None]
    key = (benchmark, scenario, eval_every)
    kept = [r for r in read_jsonl(records_path) if (r["benchmark"], r["scenario"], r["eval_every"]) != key]
    records_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = records_path.with_name(f".{records_path.name}.tmp{os.getpid()}")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in kept + fresh))
    os.replace(temporary, records_path)
    return len(fresh)


def table(records: Iterable[dict[str, Any]], strategies: Sequence[str]) -> str:
    """One Markdown table: a row per (benchmark, scenario, K, strategy)."""
    records = list(records)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["benchmark"], record["scenario"], record["eval_every"], record["model"], record["strategy"]), []).append(record)
    order = {name: index for index, name in enumerate(strategies)}
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], order.get(k[4], len(order)), k[4])):
        chosen = groups[key]
        windows = sorted({w for r in chosen for w, v in r["stability"]["windowed_forgetting"].items() if v is not None}, key=int)
        window_cells = ", ".join(f"WF^{w} " + mean_std([r["stability"]["windowed_forgetting"][w] for r in chosen]) for w in windows) or "-"
        rows.append([key[0], key[1], key[3], key[2], key[4], len(chosen),
                     mean_std([r["average_accuracy"] for r in chosen]),
                     mean_std([r["stability"]["min_accuracy"] for r in chosen]),
                     mean_std([r["stability"]["worst_case_accuracy"] for r in chosen]),
                     window_cells,
                     mean_std([r["dip"] for r in chosen]),
                     mean_std([r["recovered"] for r in chosen])])
    headers = ["benchmark", "scenario", "model", "K", "strategy", "seeds", "final acc %", "min-ACC %", "WC-ACC %", "WF^w %", "dip %", "recovered %"]
    return markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the sweeps, collect their records and print the table."""
    args = parse_args(argv)
    records_path = QUICK_RECORDS if args.quick else RECORDS
    strategies = args.strategies.split(",")
    commands = []
    for benchmark, scenario in itertools.product(args.benchmarks.split(","), args.scenarios.split(",")):
        eval_every = args.eval_every or EVAL_EVERY.get(benchmark, 10)
        command = sweep_command(benchmark, scenario, eval_every, args)
        commands.append(documented(command))
        if not args.table_only:
            print("$ " + " ".join(command), flush=True)
            finished = subprocess.run(command, cwd=ROOT, check=False)
            if finished.returncode != 0:
                print(f"stability_gap.py: the sweep of {benchmark} {scenario} ended with exit {finished.returncode}; "
                      "run this command again to resume it", file=sys.stderr)
        collect(sweep_folder(benchmark, scenario, eval_every, args.quick), benchmark, scenario, eval_every, records_path)
    text = table(read_jsonl(records_path), strategies)
    print(text)
    if args.write_results:
        write_section(HEADING, section_body(text, read_jsonl(records_path)))
    return 0


def section_body(text: str, records: list[dict[str, Any]]) -> str:
    """The results-page section: commands, table, reading (kept from benchmarks/notes/stability-gap.md)."""
    keys = sorted({(r["benchmark"], r["scenario"], r["eval_every"]) for r in records})
    args = parse_args([])
    lines = ["Commands: one resumable sweep per benchmark, scenario and K (below); "
             "`python benchmarks/stability_gap.py --data-root ../shared/data` runs them all (a killed run resumes), "
             "`python benchmarks/stability_gap.py --table-only --write-results` rebuilds this section from "
             "`benchmarks/output/stability_runs.jsonl`. Split-CIFAR-10 uses `convnet:32` instead of the default "
             "resnet18:20 so that its 15 runs fit a background job on this machine.", "", "```"]
    for benchmark, scenario, eval_every in keys:
        lines.append(documented(sweep_command(benchmark, scenario, eval_every, args)).replace(f"--seeds {args.seeds}", f"--seeds {args.seeds}"))
    lines += ["```", "", text, ""]
    notes = ROOT / "benchmarks" / "notes" / "stability-gap.md"
    if notes.exists():
        lines.append(notes.read_text().strip())
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
