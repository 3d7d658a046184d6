"""Times every corruption of ``lifelong_kd.data.shifts`` on MNIST- and CIFAR-sized batches.

Prints, for a (N, 1, 28, 28) and a (N, 3, 32, 32) batch, the wall time of each
corruption summed over severities 1..5 and at severity 5 alone, then the total of the
default suite. Run from the repository root::

    python benchmarks/shifts_speed.py            # N = 10000, all torch threads
    python benchmarks/shifts_speed.py --n 2000 --threads 1
"""

import argparse
import time

import torch

from lifelong_kd.data.shifts import DEFAULT_SUITE, SEVERITIES, corrupt, corruption_names


def _time_corruption(x: torch.Tensor, name: str, severity: int) -> float:
    """Seconds taken by one ``corrupt`` call."""
    start = time.perf_counter()
    corrupt(x, name, severity, seed=0)
    return time.perf_counter() - start


def _report(shape: tuple[int, ...]) -> None:
    """Prints per-corruption timings for a uniform random batch of ``shape``."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    corrupt(x[:8], "gaussian_noise", 1)  # warm-up (thread pool, allocator)
    print(f"\nbatch {tuple(shape)}: seconds")
    print(f"{'corruption':16s} {'sev 1..5':>9s} {'sev 5':>7s}  default suite")
    suite_total = 0.0
    for name in corruption_names():
        times = [_time_corruption(x, name, severity) for severity in SEVERITIES]
        in_suite = name in DEFAULT_SUITE
        suite_total += sum(times) if in_suite else 0.0
        print(f"{name:16s} {sum(times):9.3f} {times[-1]:7.3f}  {'yes' if in_suite else ''}")
    print(f"{'default suite':16s} {suite_total:9.3f}  (all 5 severities)")


def main() -> None:
    """Parses arguments and prints the timing tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="images per batch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    _report((args.n, 1, 28, 28))
    _report((args.n, 3, 32, 32))


if __name__ == "__main__":
    main()
