"""EWC's Fisher: the linear-layer matmul path against per-sample gradients for every parameter.

Side by side in one process, on real data: permuted-MNIST's first experience with the MLP
784-400-400-10 of the permuted-MNIST method suite, and split-CIFAR-10's with ``convnet:16``
(where only the linear layers take the fast path); the true Fisher over 1,000 training
samples (EWC's default). Prints seconds per Fisher for both paths, the speed-up, and the
largest relative difference between the two results. Run from the repository root::

    python benchmarks/ewc_fisher_speed.py [--data-root ../shared/data] [--samples 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import DEFAULT_DATA, hardware  # noqa: E402

from lifelong_kd import StreamOptions, build_model, build_stream  # noqa: E402
from lifelong_kd.pipeline import seed_everything  # noqa: E402
from lifelong_kd.strategies.ewc import diagonal_fisher  # noqa: E402

CASES = (("permuted-mnist", "domain", "mlp:400,400"), ("split-cifar10", "task", "convnet:16"))


def main() -> None:
    """Time both paths on each case and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DEFAULT_DATA))
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args()
    print(hardware())
    print("| benchmark | model | per-sample s | matmul path s | speed-up | max relative difference |")
    print("|---|---|---:|---:|---:|---:|")
    for benchmark, scenario, spec in CASES:
        stream = build_stream(benchmark, StreamOptions(scenario=scenario, train_size=args.samples, test_size=100, data_root=args.data_root))
        seed_everything(0)
        model = build_model(spec, stream.input_shape, stream.n_heads, stream.n_outputs)
        seconds, results = {}, {}
        for per_sample_only in (True, False):
            torch.manual_seed(0)
            start = time.perf_counter()
            results[per_sample_only] = diagonal_fisher(model, stream[0], "true", args.samples, per_sample_only=per_sample_only)
            seconds[per_sample_only] = time.perf_counter() - start
        difference = max(
            float(((results[False][n] - results[True][n]).abs() / results[True][n].abs().clamp_min(1e-12)).max()) for n in results[True]
        )
        print(f"| {benchmark} | {spec} | {seconds[True]:.2f} | {seconds[False]:.2f} | {seconds[True] / seconds[False]:.1f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
