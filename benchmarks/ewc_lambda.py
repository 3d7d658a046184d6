"""Choose EWC's lambda per benchmark and scenario on a validation split, never the test set (issue 16).

Each candidate lambda is trained with the van de Ven et al. 2019 protocol of
``benchmarks/vandeven2019.py`` (same model, optimiser, iterations, Fisher settings), but a
seeded share of every experience's training data is held out (``--validation-split``,
``lifelong-kd run --validation-split``) and the run is evaluated on it instead of the test
set. The lambda with the best mean final validation accuracy over the seeds is chosen; the
test-set runs of ``vandeven2019.py`` then use it (``--ewc-lambda SCENARIO=VALUE``).

Runs are resumable run folders (``benchmarks/output/ewc_lambda_runs/<cell>-lambda<L>/``): a
killed search continues with the same command, finished runs (in the JSONL log) are skipped.

Run from the repository root (one thread per process on the shared machine)::

    python benchmarks/ewc_lambda.py --quick                                        # smoke: 20 iterations, 1 seed
    OMP_NUM_THREADS=1 python benchmarks/ewc_lambda.py --experiment split --seeds 1,2,3
    OMP_NUM_THREADS=1 python benchmarks/ewc_lambda.py --experiment permuted --scenarios domain --lambdas 100,1000,10000 --seeds 1,2,3
    python benchmarks/ewc_lambda.py --table-only                                   # the table and the chosen lambdas
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vandeven2019 as vdv  # noqa: E402 - the protocol and the resumable runner

ROOT = vdv.ROOT
RUNS_LOG = ROOT / "benchmarks" / "output" / "ewc_lambda_runs.jsonl"
RUNS_DIR = ROOT / "benchmarks" / "output" / "ewc_lambda_runs"
PROGRESS_LOG = ROOT / "benchmarks" / "output" / "ewc_lambda_progress.log"
# Candidates, a factor 100 (split) or 10 (permuted) apart, around the values of the authors'
# grids (their param_values.py: split 1e5-1e10; permuted 1-500 in 2019, 100 later).
CANDIDATES = {
    "split": (1e3, 1e5, 1e7, 1e9, 1e11),
    "permuted": (1.0, 10.0, 100.0, 1e3, 1e4, 1e5),
}
VALIDATION_SPLIT = 0.1  # 6,000 of MNIST's 60,000 training images per experience


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", choices=tuple(vdv.PROTOCOL), default="split")
    parser.add_argument("--scenarios", default="task,domain,class")
    parser.add_argument("--lambdas", default=None, help="comma-separated candidates (default: CANDIDATES of the experiment)")
    parser.add_argument("--seeds", default="1,2,3", help="at least 3 for a choice that is not one seed's noise")
    parser.add_argument("--validation-split", type=float, default=VALIDATION_SPLIT, help="share of each experience's training data held out for the choice")
    vdv.add_run_arguments(parser)
    parser.add_argument("--log", type=Path, default=RUNS_LOG, help="JSONL file the finished runs are appended to")
    parser.add_argument("--table-only", action="store_true", help="print the table from --log without running")
    args = parser.parse_args(argv)
    if not 0 < args.validation_split < 1:
        parser.error(f"--validation-split must be a share between 0 and 1 (e.g. {VALIDATION_SPLIT}), got {args.validation_split}")
    quick = "_quick" if args.quick else ""
    args.out_dir = args.out_dir or RUNS_DIR.with_name(RUNS_DIR.name + quick)
    args.progress_log = args.progress_log or PROGRESS_LOG.with_name(f"ewc_lambda{quick}_progress.log")
    if args.quick:
        args.seeds = "1"
        args.log = RUNS_LOG.with_name("ewc_lambda_quick.jsonl") if args.log == RUNS_LOG else args.log
    vdv.finish_run_arguments(args)
    args.lambdas = [float(value) for value in args.lambdas.split(",")] if args.lambdas else list(CANDIDATES[args.experiment])
    return args


def load_runs(path: Path, quick: bool) -> list[dict]:
    """Finished search runs (quick ones only when ``quick``)."""
    if not path.is_file():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [run for run in runs if bool(run.get("quick")) == quick]


def search(args: argparse.Namespace) -> None:
    """Train every (scenario, lambda, seed) not yet in the log; seeds outermost, so each seed completes a curve."""
    done = vdv.finished_commands(args.log, args.quick)
    iterations = args.iterations or vdv.PROTOCOL[args.experiment]["iterations"]
    args.log.parent.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        for scenario in args.scenarios.split(","):
            for ewc_lambda in args.lambdas:
                cell = vdv.Cell(args.experiment, scenario, "ewc", seed)
                config = vdv.run_config(args.experiment, scenario, "ewc", seed, iterations, args, ewc_lambda=ewc_lambda)
                if vdv.command_key(vdv.command_line(config)) in done:
                    continue
                record = vdv.run_one(cell, iterations, args, ewc_lambda=ewc_lambda)
                if record is None:
                    continue
                record["ewc_lambda"] = ewc_lambda
                with args.log.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                vdv.log.info(f"lambda {ewc_lambda:g}, {scenario}, seed {seed}: validation accuracy {record['average_accuracy']:.2f}%")


def choose(runs: list[dict]) -> dict[tuple[str, str], float]:
    """The lambda with the best mean final validation accuracy per (experiment, scenario)."""
    accuracies: dict[tuple[str, str], dict[float, list[float]]] = {}
    for run in runs:
        per_lambda = accuracies.setdefault((run["experiment"], run["scenario"]), {})
        per_lambda.setdefault(run["ewc_lambda"], []).append(run["average_accuracy"])
    return {key: max(per_lambda, key=lambda value: statistics.mean(per_lambda[value])) for key, per_lambda in accuracies.items()}


def table(runs: list[dict]) -> str:
    """Markdown table: final validation accuracy (mean ± std over seeds) per lambda and scenario; the chosen one in bold."""
    chosen = choose(runs)
    lines = ["| experiment | scenario | lambda | validation accuracy (%) | iterations/exp |", "|---|---|---|---|---|"]
    for key in sorted({(r["experiment"], r["scenario"]) for r in runs}):
        for ewc_lambda in sorted({r["ewc_lambda"] for r in runs if (r["experiment"], r["scenario"]) == key}):
            values = [r for r in runs if (r["experiment"], r["scenario"], r["ewc_lambda"]) == (*key, ewc_lambda)]
            mark = "**" if chosen[key] == ewc_lambda else ""
            iterations = "/".join(str(i) for i in sorted({r["iterations"] for r in values}))
            lines.append(f"| {key[0]}-MNIST | {key[1]} | {mark}{ewc_lambda:g}{mark} | {vdv._cell([r['average_accuracy'] for r in values])} | {iterations} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Search, then print the table and the chosen lambdas with the vandeven2019.py option that uses them."""
    from lifelong_kd.cli import sigterm_as_interrupt

    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if not args.table_only:
        vdv.setup_logging(args.progress_log)
        try:
            with sigterm_as_interrupt():
                search(args)
        except KeyboardInterrupt:
            vdv.log.error("stopped; finished experiences are kept: run the same command again to continue")
            return 130
    runs = load_runs(args.log, args.quick)
    print(table(runs))
    for experiment in vdv.PROTOCOL:
        picked = {scenario: value for (name, scenario), value in choose(runs).items() if name == experiment}
        if picked:
            print(f"{experiment}: --ewc-lambda " + ",".join(f"{scenario}={value:g}" for scenario, value in sorted(picked.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
