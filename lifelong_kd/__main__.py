"""``python -m lifelong_kd``: the ``lifelong-kd`` command."""

import sys

from lifelong_kd.cli import main

if __name__ == "__main__":  # pragma: no cover - run as a process in the tests
    sys.exit(main())
