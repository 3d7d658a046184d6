"""Our training loop against a bare PyTorch loop: same model, same minibatches, same process.

Split-MNIST (real MNIST, class scenario: one 10-way head), MLP 784-256-10, SGD lr 0.01
momentum 0.9, batch 128, fine-tuning (cross-entropy only). Both loops start from the same
initial weights and draw the same minibatches (the permutation generator our loop seeds per
experience), so they end with the same weights; the script checks this.

* **bare**: ``x.index_select(0, index).float() / 255``, normalise, forward, cross-entropy,
  ``zero_grad``, ``backward``, ``step``: what a careful user writes by hand (no loss read back,
  no bookkeeping; ``index_select`` rather than ``x[index]``, several times faster on ``uint8``
  images, so the reference is the faster of the two).
* **ours**: :class:`lifelong_kd.pipeline.LoopTrainer` as :func:`lifelong_kd.pipeline.run` drives
  it: seeding, the precision scope, the strategy's hooks, ``train_experience`` with its
  progress, loss curve, loss terms and non-finite check (the default run's settings).

The two alternate ``--rounds`` times (the order flips each round, so a change of machine load
hits both alike); each prints samples/s, and the ratio ours/bare is taken per round; the
median ratio is the result (issue 18's target: at least 0.85). The ratio of samples per CPU
second of the process is printed too: with one thread it moves less than wall time when other
jobs share the cores (the wall-time ratio on a quiet machine is the one to quote). One JSON line per invocation
is appended to ``benchmarks/output/loop_overhead.jsonl``.

    OMP_NUM_THREADS=1 python benchmarks/loop_overhead.py --data-root ../shared/data
    OMP_NUM_THREADS=1 python benchmarks/loop_overhead.py --data-root ../shared/data --quick   # CI: seconds

``--profile`` instead runs our loop once under cProfile and prints the functions that take
the largest shares of its time (the shares, not the absolute times, are meaningful on a
loaded machine).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import datetime
import io
import json
import os
import platform
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lifelong_kd import Finetune, StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.data.stream import Stream
from lifelong_kd.pipeline import LoopTrainer, precision_scope, seed_everything

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output" / "loop_overhead.jsonl"
TARGET = 0.85  # issue 18, deliverable 4


def load_stream(data_root: str, quick: bool) -> Stream:
    """Split-MNIST in the class scenario (one head of 10: the MLP is 784-256-10); ``quick``: 2 experiences of 3,000 samples."""
    options = StreamOptions(scenario="class", data_root=data_root, n_experiences=None, train_size=3000 if quick else None)
    stream = build_stream("split-mnist", options)
    if quick:
        stream = Stream(stream.name, stream.scenario, stream.experiences[:2], stream.n_classes, stream.input_shape)
    return stream


def bare_loop(model: nn.Module, stream: Stream, config: TrainConfig) -> int:
    """A hand-written loop over every experience with the batches our loop draws; returns the samples seen."""
    samples = 0
    model.train()
    for experience in stream:
        x_all, y_all = experience.train.x, experience.train.y
        mean, std = experience.transform.mean[0], experience.transform.std[0]
        generator = torch.Generator().manual_seed(config.seed * 7919 + experience.index)  # as train_experience
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)  # fresh per experience, as ours
        for _ in range(config.epochs):
            permutation = torch.randperm(len(y_all), generator=generator)
            for start in range(0, len(y_all), config.batch_size):
                index = permutation[start : start + config.batch_size]
                x = (x_all.index_select(0, index).float() / 255.0 - mean) / std  # index_select: ~10x faster than x_all[index] on uint8 images
                loss = F.cross_entropy(model(x), y_all.index_select(0, index))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                samples += len(index)
    return samples


def our_loop(model: nn.Module, stream: Stream, config: TrainConfig) -> int:
    """Our trainer over every experience, as the pipeline drives it (seed, precision scope, hooks); returns the samples seen."""
    trainer, strategy, samples = LoopTrainer(), Finetune(), 0
    for experience in stream:
        seed_everything(config.seed, experience.index)
        with precision_scope(config.precision):
            samples += int(trainer.train(model, strategy, stream, experience, config)["samples"])
    return samples


def bare_model(ours: nn.Module) -> nn.Sequential:
    """The same network as plain ``nn.Sequential`` modules, with ``ours``'s weights."""
    first, second = ours.backbone[1], ours.head
    model = nn.Sequential(nn.Flatten(), nn.Linear(first.in_features, first.out_features), nn.ReLU(), nn.Linear(second.in_features, second.out_features))
    model[1].load_state_dict(first.state_dict())
    model[3].load_state_dict(second.state_dict())
    return model


def timed(loop: Any, model: nn.Module, stream: Stream, config: TrainConfig) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process and samples of one call of ``loop``."""
    start, cpu_start = time.perf_counter(), time.process_time()
    samples = loop(model, stream, config)
    return time.perf_counter() - start, time.process_time() - cpu_start, samples


def largest_difference(ours: nn.Module, bare: nn.Sequential) -> float:
    """Largest absolute difference between the two loops' final weights (0: the same updates)."""
    pairs = [(ours.backbone[1].weight, bare[1].weight), (ours.backbone[1].bias, bare[1].bias), (ours.head.weight, bare[3].weight), (ours.head.bias, bare[3].bias)]
    return max(float((a - b).detach().abs().max()) for a, b in pairs)


def measure(stream: Stream, config: TrainConfig, rounds: int) -> dict[str, Any]:
    """Alternate the two loops ``rounds`` times from the same initial weights; samples/s of each and their ratio."""
    initial = build_model("mlp:256", stream.input_shape, stream.n_heads, stream.n_outputs, seed=config.seed)
    timed(bare_loop, bare_model(initial), stream, config)  # warm-up: allocator, kernels, first-touch of the data
    rows, difference = [], 0.0
    for round_index in range(rounds):
        ours, bare = copy.deepcopy(initial), bare_model(initial)
        order = [("bare", bare_loop, bare), ("ours", our_loop, ours)]
        results, cpu = {}, {}
        for name, loop, model in order if round_index % 2 == 0 else order[::-1]:
            seconds, cpu_seconds, samples = timed(loop, model, stream, config)
            results[name], cpu[name] = samples / seconds, samples / cpu_seconds
        difference = max(difference, largest_difference(ours, bare))
        rows.append({"bare": results["bare"], "ours": results["ours"], "ratio": results["ours"] / results["bare"], "cpu_ratio": cpu["ours"] / cpu["bare"]})
        print(f"round {round_index + 1}/{rounds}: bare {results['bare']:,.0f} samples/s, ours {results['ours']:,.0f} samples/s, "
              f"ratio {rows[-1]['ratio']:.3f} (per CPU second: {rows[-1]['cpu_ratio']:.3f})")
    return {
        "rounds": rows,
        "median_bare_samples_per_second": statistics.median(r["bare"] for r in rows),
        "median_ours_samples_per_second": statistics.median(r["ours"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rows),
        "largest_weight_difference": difference,
    }


def profile(stream: Stream, config: TrainConfig, top: int) -> None:
    """Our loop under cProfile: the functions with the largest cumulative and own shares of its time."""
    model = build_model("mlp:256", stream.input_shape, stream.n_heads, stream.n_outputs, seed=config.seed)
    profiler = cProfile.Profile()
    profiler.enable()
    our_loop(model, stream, config)
    profiler.disable()
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(top)
        print(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of bare and ours (default 5; --quick: 3)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="CI: 2 experiences of 3,000 samples, 3 rounds")
    parser.add_argument("--profile", action="store_true", help="profile our loop with cProfile instead of timing")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile (default 30)")
    parser.add_argument("--out", default=str(OUTPUT), help="JSON lines file to append the record to")
    args = parser.parse_args()
    stream = load_stream(args.data_root, args.quick)
    # progress on (the default run's setting: without a terminal, a log line every 30 s)
    config = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.01, momentum=0.9, device="cpu")
    if args.profile:
        profile(stream, config, args.top)
        return
    rounds = 3 if args.quick and args.rounds == 5 else args.rounds
    print(f"split-mnist (class), MLP 784-256-10, batch 128, {len(stream)} experiences, {sum(len(e.train) for e in stream):,} samples per pass; torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = measure(stream, config, rounds)
    verdict = "meets" if result["median_ratio"] >= TARGET else "misses"
    print(f"median: bare {result['median_bare_samples_per_second']:,.0f} samples/s, ours {result['median_ours_samples_per_second']:,.0f} samples/s, "
          f"ratio {result['median_ratio']:.3f} ({verdict} the {TARGET} target; per CPU second {result['median_cpu_ratio']:.3f}); "
          f"largest weight difference {result['largest_weight_difference']:.2e}")
    record = {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "epochs": args.epochs, "experiences": len(stream), "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "target": TARGET, **result,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
