"""Why EWC diverged on split-CIFAR-10 at its default lambda (issue 16): the penalty's curvature against SGD's stability limit.

EWC's penalty ``0.5 * lambda * sum_j F_j * (theta - theta_j)^2`` is a quadratic whose curvature along
parameter ``i`` is ``h_i = lambda * sum_j F_j[i]`` (the Fishers of the experiences trained so far).
Gradient descent with momentum (learning rate ``lr``, momentum ``m``, PyTorch's heavy ball) on a
quadratic of curvature ``h`` converges only if ``lr * h < 2 * (1 + m)`` (the roots of
``z^2 - (1 + m - lr * h) z + m`` leave the unit circle at ``lr * h = 2 (1 + m)``; ``lr * h < 2``
without momentum); beyond it that parameter oscillates with a growing amplitude whatever the data
loss does, and the loss becomes infinite.

For each EWC run folder the script prints, after every finished experience k, the largest
``lr * h_i`` the next experience trains under, the limit, and what the next experience did
(finished, diverged, not run). ``--rerun`` then trains a run again with only ``--ewc-lambda``
changed, to a value its first Fishers put below the limit (the prediction: it finishes), and
prints the same lines for it; records go to ``benchmarks/output/ewc_divergence.jsonl``, run
folders to ``benchmarks/output/ewc_divergence_runs/`` (not in git).

    python benchmarks/ewc_divergence.py                      # the stability-gap split-CIFAR-10 EWC runs
    OMP_NUM_THREADS=1 python benchmarks/ewc_divergence.py --rerun 0,1 --ewc-lambda 50 --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from lifelong_kd.strategies.ewc import EWC

ROOT = Path(__file__).resolve().parent.parent
SWEEP = ROOT / "benchmarks" / "output" / "stability" / "split-cifar10-class-k10"
RUNS = ROOT / "benchmarks" / "output" / "ewc_divergence_runs"
LOG = ROOT / "benchmarks" / "output" / "ewc_divergence.jsonl"
# The stability-gap sweep's split-CIFAR-10 command (benchmarks/stability_gap.py), EWC at its defaults.
COMMAND = ["--benchmark", "split-cifar10", "--scenario", "class", "--eval-every", "10", "--shifts", "none", "--model", "convnet:32", "--strategy", "ewc"]
DIVERGED = "non-finite"  # what lifelong-kd prints when the loss became inf or nan


def curvatures(folder: Path) -> list[dict[str, Any]]:
    """For every finished experience of an EWC run: ``lr * lambda * max_i sum_j F_j[i]`` (the next experience's), the limit, the parameter."""
    document = json.loads((folder / "results.json").read_text())
    config = document["config"]
    lr, momentum = float(config["lr"]), float(config.get("momentum") or 0.0)
    ewc_lambda = float(config["strategy_options"].get("ewc_lambda", 100.0))  # lifelong_kd.strategies.ewc.EWC's default
    fishers = torch.load(folder / "checkpoint.pt", weights_only=True, map_location="cpu")["members"]["model"]["strategy"]["fishers"]
    strategy, rows = EWC(ewc_lambda=ewc_lambda), []
    for experience in range(len(fishers)):
        strategy.fishers_ = fishers[: experience + 1]  # the penalty the next experience trains under
        curvature, name = strategy.penalty_curvature()
        rows.append({
            "after_experience": experience, "lr": lr, "momentum": momentum, "ewc_lambda": ewc_lambda,
            "max_fisher_sum": curvature / ewc_lambda if ewc_lambda else 0.0, "parameter": name,
            "lr_times_curvature": lr * curvature, "limit": 2 * (1 + momentum),
        })
    return rows


def outcome(folder: Path, log: Path | None, experiences: int) -> str:
    """What the experience after the last finished one did: ``finished`` (all done), ``diverged``, ``stopped`` or ``running``."""
    finished = len(json.loads((folder / "results.json").read_text())["accuracy_matrix"])
    if finished >= experiences:
        return "finished"
    text = log.read_text() if log is not None and log.is_file() else ""
    return "diverged" if DIVERGED in text else ("stopped" if "SIGTERM" in text or "interrupted" in text else "running")


def report(name: str, folder: Path, log: Path | None, experiences: int = 5) -> dict[str, Any]:
    """Print and return one run's curvature lines and outcome."""
    rows, result = curvatures(folder), outcome(folder, log, experiences)
    print(f"{name}: {len(rows)} experience(s) finished; next: {result}")
    for row in rows:
        verdict = "above" if row["lr_times_curvature"] >= row["limit"] else "below"
        print(f"  after experience {row['after_experience'] + 1}: lr x lambda x max F = {row['lr']} x {row['ewc_lambda']:g} x "
              f"{row['max_fisher_sum']:.3f} = {row['lr_times_curvature']:.2f} ({verdict} the limit 2(1+m) = {row['limit']:.1f}; {row['parameter']})")
    return {"run": name, "folder": str(folder.relative_to(ROOT)), "finished": len(rows), "next": result, "curvatures": rows}


def rerun(seed: int, ewc_lambda: float, data_root: str) -> tuple[Path, Path]:
    """The sweep's command for ``seed`` with only ``--ewc-lambda`` changed; its run folder and log."""
    folder = RUNS / f"ewc-lambda{ewc_lambda:g}-seed{seed}"
    log = RUNS / f"ewc-lambda{ewc_lambda:g}-seed{seed}.log"
    RUNS.mkdir(parents=True, exist_ok=True)
    resume = ["--resume"] if (folder / "checkpoint.pt").is_file() else []
    command = [sys.executable, "-m", "lifelong_kd", "run", *COMMAND, "--seed", str(seed), "--ewc-lambda", str(ewc_lambda),
               "--data-root", data_root, "--quiet", "--out", str(folder), *resume]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    return folder, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=SWEEP, help="a stability-gap sweep folder holding runs/strategy=ewc_seed=S")
    parser.add_argument("--rerun", default="", help="comma-separated seeds to train again with only --ewc-lambda changed")
    parser.add_argument("--ewc-lambda", type=float, default=50.0, help="the lambda of --rerun")
    parser.add_argument("--data-root", default="../shared/data")
    args = parser.parse_args(argv)
    records = []
    for folder in sorted((args.sweep / "runs").glob("strategy=ewc_seed=*")):
        records.append(report(f"lambda 100 (default), {folder.name}", folder, args.sweep / "logs" / f"{folder.name}.log"))
    for seed in [int(s) for s in args.rerun.split(",") if s]:
        folder, log = rerun(seed, args.ewc_lambda, str(Path(args.data_root).expanduser().resolve()))
        records.append(report(f"lambda {args.ewc_lambda:g}, seed {seed}", folder, log))
    if args.rerun:
        with open(LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"ewc_lambda": args.ewc_lambda, "runs": records}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
