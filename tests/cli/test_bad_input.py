"""Bad input ends in a one-paragraph message and exit code 2, never a traceback (through main and real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lifelong_kd.cli import main
from lifelong_kd.data.sources import idx_problem
from tests.helpers import fails_cleanly as _fails_cleanly

QUICK = ["--epochs", "1", "--train-size", "40", "--quiet", "--shifts", "none", "--no-tensorboard"]


def _write_idx(path: Path, values: torch.Tensor) -> None:
    """An idx file as MNIST ships it: 00 00 08 <dims>, big-endian sizes, uint8 data."""
    header = bytes([0, 0, 0x08, values.dim()]) + b"".join(size.to_bytes(4, "big") for size in values.shape)
    path.write_bytes(header + values.to(torch.uint8).numpy().tobytes())


def _small_mnist(root: Path) -> Path:
    """A 20-image MNIST in torchvision's layout (two images per class), intact."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    labels = torch.arange(10).repeat(2)
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (20, 28, 28), generator=torch.Generator().manual_seed(0)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    assert [idx_problem(path) for path in sorted(raw.iterdir())] == [None] * 4
    return raw


def test_the_small_mnist_copy_runs(tmp_path):
    _small_mnist(tmp_path / "data")
    assert main(["run", "--benchmark", "split-mnist", "--data-root", str(tmp_path / "data"), *QUICK, "--out", str(tmp_path / "r")]) == 0


def test_a_damaged_mnist_header_names_the_file_and_the_fix(tmp_path, capsys):
    raw = _small_mnist(tmp_path / "data")
    labels = raw / "train-labels-idx1-ubyte"
    damaged = bytearray(labels.read_bytes())
    damaged[2] = 0x99
    labels.write_bytes(bytes(damaged))
    err = _fails_cleanly(capsys, ["run", "--benchmark", "split-mnist", "--data-root", str(tmp_path / "data"), *QUICK, "--out", str(tmp_path / "r")])
    assert f"{labels} is damaged: its header '00 00 99 01' is not an idx header" in err
    assert "fetch MNIST again" in err


def test_a_truncated_mnist_file_is_named_in_a_real_process(tmp_path):
    raw = _small_mnist(tmp_path / "data")
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    argv = ["run", "--benchmark", "split-mnist", "--data-root", str(tmp_path / "data"), *QUICK, "--out", str(tmp_path / "r")]
    done = subprocess.run([sys.executable, "-m", "lifelong_kd", *argv], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{images} is damaged: it has 15,596 bytes where its header announces 15,696" in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--n-experiences", "0"], "n_experiences must be an integer of at least 1"),
        (["--benchmark", "permuted-digits", "--n-experiences", "-2"], "n_experiences must be an integer of at least 1"),
        (["--n-experiences", "20"], "Cannot split 10 classes into 20 equal experiences"),
        (["--test-size", "0"], "test_size must be a positive number of samples"),
        (["--class-order", "0,1,2"], "class_order must be a permutation of 0..9"),
        (["--n-experiences", "two"], "argument --n-experiences: expected an integer, got 'two'"),
    ],
)
def test_out_of_range_stream_options(tmp_path, capsys, flags, message):
    argv = ["run", *QUICK, "--out", str(tmp_path / "r"), *flags]
    assert message in _fails_cleanly(capsys, argv)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--strategy", "lwf", "--temperature", "1e30"], "temperature must be a number from 0.1 to 100"),
        (["--strategy", "multi-teacher", "--temperature", "0"], "temperature must be a number from 0.1 to 100"),
        (["--strategy", "lwf", "--temperature", "nan"], "temperature must be a number from 0.1 to 100"),
        (["--strategy", "lwf", "--alpha", "-1"], "alpha must be a non-negative number"),
        (["--strategy", "lwf", "--feature-weight", "inf"], "feature_weight must be a finite number >= 0"),
        (["--strategy", "ewc", "--ewc-lambda", "-5"], "ewc_lambda must be a finite number >= 0"),
        (["--strategy", "lwf", "--student", "mlp:8", "--teacher-weight", "-1"], "teacher_weight must be a finite number >= 0"),
        (["--strategy", "lwf", "--temperature", "warm"], "argument --temperature: expected a number, got 'warm'"),
    ],
)
def test_strategy_options_out_of_range_name_the_option(tmp_path, capsys, flags, message):
    err = _fails_cleanly(capsys, ["run", *QUICK, "--out", str(tmp_path / "r"), *flags])
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", ["1234567890123456789012345", "-1", "2147483648"])
def test_a_seed_out_of_range_names_the_flag_and_the_range(tmp_path, capsys, seed):
    err = _fails_cleanly(capsys, ["run", *QUICK, "--out", str(tmp_path / "r"), "--seed", seed])
    assert "--seed must be an integer from 0 to 2147483647" in err and seed in err


def test_the_largest_seed_runs(tmp_path):
    assert main(["run", *QUICK, "--out", str(tmp_path / "r"), "--seed", "2147483647"]) == 0


@pytest.mark.parametrize("flag", ["--teacher", "--reference-model"])
def test_a_missing_reference_run_names_the_flag_given(tmp_path, capsys, flag):
    student = ["--student", "mlp:4"] if flag == "--teacher" else []
    err = _fails_cleanly(capsys, ["run", *QUICK, "--out", str(tmp_path / "r"), flag, str(tmp_path / "nowhere"), *student])
    assert f"{flag} {tmp_path / 'nowhere'}" in err
    other = "--reference-model" if flag == "--teacher" else "--teacher"
    assert other not in err


def test_unknown_flags_are_one_paragraph_without_a_usage_dump(capsys):
    err = _fails_cleanly(capsys, ["run", "--temprature", "2"])
    assert "unrecognized arguments: --temprature 2. Did you mean --temperature? See `lifelong-kd run --help`." in err
