"""``python -m lifelong_kd`` and the ``lifelong-kd`` command: the process's entry point.

The OpenMP wait policy is set here, before anything imports torch (libgomp reads it once, when
``import torch`` loads it; :mod:`lifelong_kd.threads`). So this module imports the command line
only inside :func:`main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Set the thread environment (:func:`lifelong_kd.threads.prepare_environment`), then run :func:`lifelong_kd.cli.main`."""
    from lifelong_kd.threads import prepare_environment

    prepare_environment()
    from lifelong_kd.cli import main as command_line

    return command_line(argv)


if __name__ == "__main__":  # pragma: no cover - run as a process in the tests
    sys.exit(main())
