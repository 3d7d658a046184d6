"""Training speed on a shared machine: idle, and next to one competing CPU-bound process.

Issue 18: a run next to one other CPU-bound process should keep at least 40% of its idle
throughput (a fair share of the cores is 50%) without losing more than 5% on an idle machine.
For each model (an MLP 784-256-10 and the library's ConvNet, ``convnet:32``) and each thread
policy, a fresh worker process trains on real MNIST (permuted-MNIST, one experience, batch 128,
SGD, fine-tuning) through our loop (:func:`lifelong_kd.pipeline.run`) and reports samples/s:

* **idle**: nothing else runs (as far as this script controls the machine);
* **loaded**: a competing process runs a 1024x1024 matrix-product loop with torch's defaults
  (one thread per core, the OpenMP wait policy unset), started before the worker and stopped after.

Thread policies (``--policies``; each worker starts with no OpenMP variable in its environment,
then applies its policy before it imports torch, as the command line does):

* ``old``: torch's defaults (one thread per core; libgomp's wait: spin ~300,000 iterations, then sleep);
* ``new``: the library's default (:func:`lifelong_kd.threads.prepare_environment`: ``OMP_WAIT_POLICY=PASSIVE``
  when other processes keep a core busy at start, libgomp's default otherwise);
* candidates to compare: ``one-thread`` (the new default with ``--threads 1``), ``short-spin``
  (``GOMP_SPINCOUNT=10000``: spin ~0.1 ms, then sleep), ``active`` (``OMP_WAIT_POLICY=ACTIVE``).

Worker processes run one after the other, ``--rounds`` times in turn (so a drift of the
machine's load hits every policy alike); each figure is the median over the rounds. Printed per
model and policy: idle and loaded samples/s, ``loaded_over_idle`` (target >= 0.40) and
``idle_change`` (idle samples/s against the old default's, minus 1; target >= -0.05). One JSON
line per invocation is appended to ``benchmarks/output/shared_machine.jsonl``.

Run it on an otherwise quiet machine (the competitor is the only load it means to measure):

    python benchmarks/shared_machine.py --data-root ../shared/data
    python benchmarks/shared_machine.py --data-root ../shared/data --policies old,new,one-thread,short-spin --rounds 5
    python benchmarks/shared_machine.py --quick   # checks the script runs (3 minibatches per worker); its numbers mean nothing
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "benchmarks" / "output" / "shared_machine.jsonl"
# Model specs: the MLP 784-256-10 and the library's ConvNet at its default width.
MODELS = {"mlp": "mlp:256", "convnet": "convnet:32"}
# Environment variables that decide threads and waiting; removed before a policy is applied.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# Issue 18's targets.
TARGET_LOADED_OVER_IDLE = 0.40
TARGET_IDLE_CHANGE = -0.05
# Minibatch size of the measurements (van de Ven et al. 2019; the library's default).
BATCH_SIZE = 128
# Minibatches that warm a worker up (allocations, caches) and estimate its speed; --quick trains this many twice.
WARMUP_ITERATIONS = 20
QUICK_ITERATIONS = 3
# Seconds the competitor runs before a loaded measurement starts (its threads and caches settle).
COMPETITOR_WARMUP_SECONDS = 1.0
# The competitor: torch's defaults, a 1024x1024 matrix product in a loop (issue 18's load).
COMPETITOR_CODE = "import torch\na = torch.randn(1024, 1024)\nprint('ready', flush=True)\nwhile True:\n    a @ a\n"


@dataclass(frozen=True)
class Policy:
    """A thread policy: extra environment, whether the library prepares the environment, and --threads."""

    description: str
    environment: Mapping[str, str]
    library_default: bool
    threads: int | None = None


POLICIES = {
    "old": Policy("torch defaults: one thread per core, wait policy unset (spin, then sleep)", {}, False),
    "new": Policy("lifelong-kd default: torch's threads, OMP_WAIT_POLICY=PASSIVE when the machine is busy at start (lifelong_kd.threads)", {}, True),
    "one-thread": Policy("lifelong-kd default with --threads 1", {}, True, 1),
    "short-spin": Policy("torch's threads, GOMP_SPINCOUNT=10000 (spin ~0.1 ms, then sleep)", {"GOMP_SPINCOUNT": "10000"}, False),
    "active": Policy("torch's threads, OMP_WAIT_POLICY=ACTIVE (spin until work comes)", {"OMP_WAIT_POLICY": "ACTIVE"}, False),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder with MNIST (default ../shared/data)")
    parser.add_argument("--models", default="mlp,convnet", help=f"comma-separated, from: {', '.join(MODELS)}")
    parser.add_argument("--policies", default="old,new", help=f"comma-separated, from: {', '.join(POLICIES)}; 'old' is the reference of idle_change")
    parser.add_argument("--seconds", type=float, default=15.0, help="training seconds per measurement, after a warm-up (default 15)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per cell; the median is reported (default 3)")
    parser.add_argument("--record", default=str(OUTPUT), help=f"append the JSON record to this file (default {OUTPUT.relative_to(REPO)})")
    parser.add_argument("--quick", action="store_true", help="3 minibatches per worker, one round, 2,000 training images: checks the script, not the speed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: MODEL,POLICY of one measurement
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
    return args


# ---------------------------------------------------------------- the worker (a fresh process)


def worker(model_name: str, policy_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``model_name`` under ``policy_name`` for about ``args.seconds``; samples/s of our loop."""
    policy = POLICIES[policy_name]
    if policy.library_default:
        from lifelong_kd.threads import prepare_environment

        prepare_environment()  # before torch loads, as lifelong_kd.__main__ does
    from lifelong_kd import StreamOptions, build_stream
    from lifelong_kd.threads import apply_threads, describe

    apply_threads(policy.threads)
    sizes = {"train_size": 2000, "test_size": 100} if args.quick else {"test_size": 1000}
    stream = build_stream("permuted-mnist", StreamOptions(n_experiences=1, data_root=args.data_root, **sizes))
    warmup = train(stream, model_name, QUICK_ITERATIONS if args.quick else WARMUP_ITERATIONS)
    iterations = QUICK_ITERATIONS if args.quick else max(WARMUP_ITERATIONS, round(args.seconds * warmup / BATCH_SIZE))
    return {"samples_per_second": train(stream, model_name, iterations), "iterations": iterations, **describe()}


def train(stream: Any, model_name: str, iterations: int) -> float:
    """``iterations`` minibatches of ``stream``'s one experience through pipeline.run (fine-tuning, SGD); the loop's samples/s."""
    from lifelong_kd import Evaluator, Finetune, TrainConfig, build_model, run

    model = build_model(MODELS[model_name], stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    config = TrainConfig(iterations=iterations, batch_size=BATCH_SIZE, lr=0.01, progress=False)
    results = run(stream, model, Finetune(), Evaluator(instruments=False, compression=False, drift_samples=0), config=config)
    return float(results["timing"]["per_experience"][0]["samples_per_second"])


# ---------------------------------------------------------------- the parent


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without thread variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}, **dict(extra or {})}


def measure(model_name: str, policy_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one worker process; its JSON result."""
    command = [sys.executable, __file__, "--worker", f"{model_name},{policy_name}", "--data-root", args.data_root, "--seconds", str(args.seconds)]
    done = subprocess.run([*command, *(["--quick"] if args.quick else [])], capture_output=True, text=True, cwd=REPO,
                          env=clean_environment(POLICIES[policy_name].environment), check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker {model_name}/{policy_name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_competitor() -> subprocess.Popen:
    """The competing CPU-bound process (torch defaults), once it computes."""
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR_CODE], stdout=subprocess.PIPE, text=True, env=clean_environment())
    if competitor.stdout.readline().strip() != "ready":
        competitor.kill()
        raise SystemExit("the competing process did not start (python -c with torch); check that torch imports.")
    time.sleep(COMPETITOR_WARMUP_SECONDS)
    return competitor


def measure_loaded(model_name: str, policy_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One worker next to the competitor, which is stopped afterwards."""
    competitor = start_competitor()
    try:
        return measure(model_name, policy_name, args)
    finally:
        competitor.kill()
        competitor.wait()


def collect(models: Sequence[str], policies: Sequence[str], args: argparse.Namespace) -> dict[str, dict[str, dict[str, list[dict[str, Any]]]]]:
    """Every measurement: ``raw[model][policy]["idle" | "loaded"]``, one entry per round."""
    raw = {m: {p: {"idle": [], "loaded": []} for p in policies} for m in models}
    for round_index in range(args.rounds):
        order = policies if round_index % 2 == 0 else list(reversed(policies))
        for model_name in models:
            for policy_name in order:
                raw[model_name][policy_name]["idle"].append(measure(model_name, policy_name, args))
                raw[model_name][policy_name]["loaded"].append(measure_loaded(model_name, policy_name, args))
                print(f"round {round_index + 1}/{args.rounds} {model_name} {policy_name}: idle "
                      f"{raw[model_name][policy_name]['idle'][-1]['samples_per_second']:,.0f}, loaded "
                      f"{raw[model_name][policy_name]['loaded'][-1]['samples_per_second']:,.0f} samples/s", flush=True)
    return raw


def summarise(raw: Mapping[str, Mapping[str, Mapping[str, list[dict[str, Any]]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per model and policy: median idle and loaded samples/s, loaded_over_idle, idle_change (against 'old')."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for model_name, by_policy in raw.items():
        medians = {p: {c: statistics.median(r["samples_per_second"] for r in runs) for c, runs in cells.items()} for p, cells in by_policy.items()}
        reference = medians.get("old", {}).get("idle")
        summary[model_name] = {}
        for policy_name, cell in medians.items():
            first, loaded = by_policy[policy_name]["idle"][0], by_policy[policy_name]["loaded"][0]
            summary[model_name][policy_name] = {
                "idle_samples_per_second": cell["idle"],
                "loaded_samples_per_second": cell["loaded"],
                "loaded_over_idle": cell["loaded"] / cell["idle"],
                "idle_change": None if reference is None else cell["idle"] / reference - 1,
                "threads": first["threads"],
                "wait_policy": first["wait_policy"],  # idle; the library's default decides at start
                "loaded_wait_policy": loaded["wait_policy"],
            }
    return summary


def print_table(summary: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> None:
    """The side-by-side table, with each figure's verdict against the targets."""
    print(f"\n{'model':<8} {'policy':<11} {'threads':>7} {'wait idle/loaded':<17} {'idle/s':>9} {'loaded/s':>9} {'loaded_over_idle':>16} {'idle_change':>11}")
    for model_name, by_policy in summary.items():
        for policy_name, row in by_policy.items():
            ratio_ok = "ok" if row["loaded_over_idle"] >= TARGET_LOADED_OVER_IDLE else "LOW"
            change = row["idle_change"]
            change_text = "-" if change is None or policy_name == "old" else f"{change:+.1%} {'ok' if change >= TARGET_IDLE_CHANGE else 'LOW'}"
            wait = str(row["wait_policy"]).split(" ")[0] + "/" + str(row.get("loaded_wait_policy", row["wait_policy"])).split(" ")[0]
            print(f"{model_name:<8} {policy_name:<11} {row['threads']:>7} {wait:<17} {row['idle_samples_per_second']:>9,.0f} "
                  f"{row['loaded_samples_per_second']:>9,.0f} {row['loaded_over_idle']:>12.2f} {ratio_ok:<3} {change_text:>11}")
    print(f"targets (issue 18): loaded_over_idle >= {TARGET_LOADED_OVER_IDLE:.2f}; idle_change >= {TARGET_IDLE_CHANGE:+.0%} (against 'old')")


def machine() -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, load when the script started."""
    from lifelong_kd.run_folder import cpu_model
    from lifelong_kd.threads import available_cores

    return {"cpu": cpu_model(), "cores": available_cores(), "platform": platform.platform(), "load_average_at_start": os.getloadavg()}


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        model_name, policy_name = args.worker.split(",")
        print(json.dumps(worker(model_name, policy_name, args)))
        return
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    policies = [name.strip() for name in args.policies.split(",") if name.strip()]
    unknown = [name for name in models if name not in MODELS] + [name for name in policies if name not in POLICIES]
    if unknown:
        raise SystemExit(f"unknown model or policy {', '.join(unknown)}; models: {', '.join(MODELS)}; policies: {', '.join(POLICIES)}")
    started, context = time.perf_counter(), machine()
    raw = collect(models, policies, args)
    summary = summarise(raw)
    print_table(summary)
    record = {
        "benchmark": "shared_machine", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "seconds": args.seconds, "rounds": args.rounds, "machine": context,
        "policies": {name: asdict(POLICIES[name]) | {"environment": dict(POLICIES[name].environment)} for name in policies},
        "summary": summary, "raw": raw, "wall_seconds": time.perf_counter() - started,
    }
    Path(args.record).parent.mkdir(parents=True, exist_ok=True)
    with Path(args.record).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(f"record appended to {args.record}")


if __name__ == "__main__":
    main()
