"""What continual evaluation (--eval-every K) and the forgetting instruments cost, next to training.

For each benchmark (split-MNIST with an MLP 784-400-400-10, split-CIFAR-10 with the reduced
ResNet-18; class scenario, real data) the same seeded run is trained three times through the one
loop (`pipeline.run`), so the three see the same minibatches:

1. plain: evaluation after each experience, no instruments, no continual evaluation;
2. continual: the same with continual evaluation every K iterations (default K = 50, the
   default the docs use) on a probe of 256 test samples per seen experience;
3. instruments: the same as 1 with the instruments on (per-class accuracy, confusion matrix,
   negative flips from the evaluation's own predictions; linear CKA on a 512-sample probe).

It prints the training time of each, the seconds spent inside the continual evaluations (timed
where they run), their share of the training time, and the evaluation time with and without the
instruments. Run it on a quiet machine; a loaded one gives meaningless ratios.

    python benchmarks/stability_cost.py --data-root ../shared/data [--eval-every 50] [--benchmarks split-mnist,split-cifar10]
    python benchmarks/stability_cost.py --quick   # tiny subsets: checks the script runs, timings mean nothing
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from lifelong_kd import Evaluator, Finetune, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.evaluation.continual import DEFAULT_EVAL_EVERY, PROBE_SAMPLES

# Model per benchmark: the library's defaults for grayscale (van de Ven et al. 2019) and colour images.
MODELS = {"split-mnist": "mlp:400,400", "split-cifar10": "resnet18:20"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder with the MNIST and CIFAR-10 data (default ../shared/data)")
    parser.add_argument("--benchmarks", default="split-mnist,split-cifar10", help="comma-separated, from: " + ", ".join(MODELS))
    parser.add_argument("--eval-every", type=int, default=DEFAULT_EVAL_EVERY, help=f"K of continual evaluation (default {DEFAULT_EVAL_EVERY})")
    parser.add_argument("--probe-samples", type=int, default=PROBE_SAMPLES, help=f"test samples per experience in the probe (default {PROBE_SAMPLES})")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per experience (default 1)")
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", help="append one JSON line per benchmark to this file")
    parser.add_argument("--quick", action="store_true", help="tiny subsets (300 training, 100 test samples per experience): checks the script, not the cost")
    return parser.parse_args(argv)


def measure(benchmark: str, evaluator: Evaluator, args: argparse.Namespace) -> dict[str, Any]:
    """One seeded run of ``benchmark``; its training, evaluation and continual-evaluation seconds."""
    sizes = {"train_size": 300, "test_size": 100} if args.quick else {}
    stream = build_stream(benchmark, StreamOptions(scenario="class", seed=args.seed, data_root=args.data_root, **sizes))
    model = build_model(MODELS[benchmark], stream.input_shape, stream.n_heads, stream.n_outputs, seed=args.seed)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.01, seed=args.seed, progress=False)
    start = time.perf_counter()
    results = run(stream, model, Finetune(), evaluator, config=config)
    curve = results["reports"][-1].get("continual") or {}
    return {
        "wall_seconds": time.perf_counter() - start,
        "train_seconds": results["timing"]["train_seconds"],
        "eval_seconds": results["timing"]["eval_seconds"],
        "continual_seconds": sum(curve.get("seconds", [])),
        "continual_points": len(curve.get("iterations", [])),
        "iterations": sum(t.get("iterations") or 0 for t in results["timing"]["per_experience"]),
        "average_accuracy": results["metrics"]["average_accuracy"],
        "stability": results.get("stability"),
    }


def report(benchmark: str, args: argparse.Namespace) -> dict[str, Any]:
    """The three runs of one benchmark, printed and returned as a record."""
    plain = measure(benchmark, Evaluator(instruments=False, compression=False), args)
    watched = measure(benchmark, Evaluator(instruments=False, compression=False, eval_every=args.eval_every, probe_samples=args.probe_samples), args)
    instrumented = measure(benchmark, Evaluator(instruments=True, compression=False), args)
    training_only = watched["train_seconds"] - watched["continual_seconds"]
    share = watched["continual_seconds"] / max(training_only, 1e-9)
    print(f"\n{benchmark} ({MODELS[benchmark]}, class scenario, {plain['iterations']} iterations, batch {args.batch_size}, {torch.get_num_threads()} threads)")
    print(f"  train, plain:                           {plain['train_seconds']:8.1f} s")
    print(f"  train, --eval-every {args.eval_every:<4}               {watched['train_seconds']:8.1f} s ({watched['train_seconds'] / plain['train_seconds'] - 1:+.1%} end to end)")
    print(f"  inside continual evaluations:           {watched['continual_seconds']:8.1f} s over {watched['continual_points']} points = {share:.1%} of training")
    print(f"  evaluate after each experience, plain:  {plain['eval_seconds']:8.1f} s")
    print(f"  evaluate with the instruments:          {instrumented['eval_seconds']:8.1f} s (+{instrumented['eval_seconds'] - plain['eval_seconds']:.1f} s = "
          f"{(instrumented['eval_seconds'] - plain['eval_seconds']) / plain['train_seconds']:.1%} of training)")
    same = plain["average_accuracy"] == watched["average_accuracy"] == instrumented["average_accuracy"]
    print(f"  same accuracy in the three runs: {same} ({plain['average_accuracy']:.4f})")
    return {"benchmark": benchmark, "model": MODELS[benchmark], "eval_every": args.eval_every, "probe_samples": args.probe_samples, "quick": args.quick,
            "threads": torch.get_num_threads(), "machine": platform.platform(), "processor": platform.processor(),
            "plain": plain, "continual": watched, "instruments": instrumented, "continual_share_of_training": share}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for benchmark in [name.strip() for name in args.benchmarks.split(",") if name.strip()]:
        if benchmark not in MODELS:
            raise SystemExit(f"unknown benchmark {benchmark!r}; choose from {', '.join(MODELS)}")
        record = report(benchmark, args)
        if args.record:
            with Path(args.record).open("a") as handle:
                handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
