"""Shared fixtures: where the real data sets live, and skips when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LIFELONG_KD_TEST_DATA", REPO.parent / "shared" / "data"))


def has_mnist() -> bool:
    return (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()


def has_fashion() -> bool:
    return (SHARED_DATA / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").exists()


def has_cifar10() -> bool:
    return (SHARED_DATA / "cifar10-jpeg" / "cifar10-jpeg.tar.gz").exists()


requires_mnist = pytest.mark.skipif(not has_mnist(), reason=f"real MNIST not found under {SHARED_DATA}")
requires_fashion = pytest.mark.skipif(not has_fashion(), reason=f"Fashion-MNIST not found under {SHARED_DATA}")
requires_cifar10 = pytest.mark.skipif(not has_cifar10(), reason=f"CIFAR-10 JPEG copy not found under {SHARED_DATA}")


@pytest.fixture
def data_root() -> str:
    return str(SHARED_DATA)
