"""Fixtures of the Avalanche integration tests: skip without Avalanche, one torch thread."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("avalanche", reason="avalanche-lib is not installed")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one thread avoids spinning contention (10x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No loggers specified")
        warnings.filterwarnings("ignore", message="no QP solver")
        warnings.filterwarnings("ignore", message="Call to deprecated function update")
        yield
    torch.set_num_threads(threads)
