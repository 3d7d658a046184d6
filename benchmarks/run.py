"""One entry point for every benchmark suite.

    python benchmarks/run.py SUITE [--quick] [suite options...]
    python benchmarks/run.py --list

Suites (each prints a Markdown table; full mode with ``--write-results`` rewrites its section
of ``docs/results.md``; ``--quick`` is the minutes-long smoke run used in CI):

* ``vandeven2019``: van de Ven et al. 2019 reproduction (split/permuted-MNIST, three scenarios)
* ``speed``: our trainer vs Avalanche's LwF, side by side in one process
* ``compression``: lifelong compression into a smaller student; pruning and quantisation
* ``split-cifar10``: the methods on split-CIFAR-10 (task scenario, JPEG copy), reduced budget
* ``split-cifar10-full``: the same on all 50,000 training images with ``convnet:32``
* ``permuted-mnist``: the same six methods on permuted-MNIST
* ``robustness``: every method under the default corruption suite, both benchmarks
* ``eval-cost``: what the default robustness suite adds next to one experience of training
* ``shifts-speed``: seconds per corruption on 10k-image batches
* ``ewc-fisher``: EWC's Fisher, the linear-layer matmul path against per-sample gradients
* ``layout-and-batch``: inference batch sizes and channels-last vs NCHW convolutions
* ``class-il``: Buzzega et al. 2020 (DER) Table 2 on split-MNIST and split-CIFAR-10: ER, DER, DER++, iCaRL, LUCIR, BiC, buffers 200/500; buffer-size sweep
* ``stability-gap``: the stability gap (De Lange et al. 2023) of finetune, LwF, EWC, ER, DER++ on split-MNIST and split-CIFAR-10 (continual evaluation every K iterations)
* ``profile``: full permuted-MNIST and split-CIFAR-10 runs against their hardware floors, phase by phase, before/after the fast path

Extra arguments are passed to the suite's script unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

HERE = Path(__file__).resolve().parent
SUITES = MappingProxyType(
    {
        "vandeven2019": ["vandeven2019.py"],
        "speed": ["speed_vs_avalanche.py"],
        "compression": ["compression.py"],
        "split-cifar10": ["method_suites.py", "split-cifar10"],
        "split-cifar10-full": ["method_suites.py", "split-cifar10-full"],
        "permuted-mnist": ["method_suites.py", "permuted-mnist"],
        "robustness": ["method_suites.py", "robustness"],
        "eval-cost": ["eval_cost.py"],
        "shifts-speed": ["shifts_speed.py"],
        "profile": ["profile_runs.py"],
        "ewc-fisher": ["ewc_fisher_speed.py"],
        "layout-and-batch": ["layout_and_batch.py"],
        "class-il": ["class_il.py"],
        "stability-gap": ["stability_gap.py"],
    }
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(__doc__)
        return 0 if argv else 2
    suite, rest = argv[0], argv[1:]
    if suite not in SUITES:
        print(f"run.py: unknown suite {suite!r}; choose one of: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    script, *fixed = SUITES[suite]
    return subprocess.call([sys.executable, str(HERE / script), *fixed, *rest])


if __name__ == "__main__":
    sys.exit(main())
