"""What the default robustness suite adds to evaluation, next to one experience of training.

Permuted-MNIST (real MNIST), MLP 784-1000-1000-10, SGD lr 0.01 momentum 0.9, batch 128,
one epoch of experience 0. Then, in the same process: evaluation on every experience
without shifts, and with the default corruption suite (first call builds the corrupted
test sets, later calls reuse them).

    python benchmarks/eval_cost.py --data-root ../shared/data [--n-experiences 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from lifelong_kd import Evaluator, Finetune, StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.data.shifts import DEFAULT_SUITE
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.train import train_experience


def timed(function, *args):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--n-experiences", type=int, default=10)
    parser.add_argument("--robustness-samples", type=int, default=256)
    args = parser.parse_args()
    stream = build_stream("permuted-mnist", StreamOptions(n_experiences=args.n_experiences, scenario="domain", data_root=args.data_root))
    seed_everything(0)
    model = build_model("mlp:1000,1000", stream.input_shape, stream.n_heads, stream.n_outputs)
    config = TrainConfig(epochs=1, batch_size=128, lr=0.01, progress=False)
    stats, _ = timed(train_experience, model, Finetune(), stream, stream[0], config)
    clean = Evaluator(compression=False)
    _, clean_seconds = timed(clean.evaluate, model, stream, 0)
    shifted = Evaluator(shifts=DEFAULT_SUITE, robustness_samples=args.robustness_samples, compression=False)
    report, first_seconds = timed(shifted.evaluate, model, stream, 0)
    _, steady_seconds = timed(shifted.evaluate, model, stream, 0)
    train_seconds = stats["train_seconds"]
    print(f"threads: {torch.get_num_threads()}; experiences: {len(stream)}; suite: {', '.join(DEFAULT_SUITE)} x severities 1-5")
    print(f"train one experience (60,000 samples): {train_seconds:.1f} s ({stats['samples'] / train_seconds:,.0f} samples/s)")
    print(f"evaluate, clean only:                   {clean_seconds:.1f} s")
    print(f"evaluate + default suite, first call:   {first_seconds:.1f} s (builds corrupted sets)")
    print(f"evaluate + default suite, later calls:  {steady_seconds:.1f} s")
    added = steady_seconds - clean_seconds
    print(f"robustness adds per evaluation: {added:.1f} s = {added / train_seconds:.2f} x one experience of training")
    print(f"mean corrupted accuracy {report.robustness['mean_corrupted_accuracy']:.3f}, relative robustness {report.robustness['relative_robustness']:.3f}")


if __name__ == "__main__":
    main()
