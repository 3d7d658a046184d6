"""Data-parallel training with the real torch.distributed: 2 gloo processes started by torchrun.

The multi-process tests start ``python -m torch.distributed.run --standalone --nproc-per-node 2``
on the real CLI (``-m lifelong_kd``) or on ``tests/ddp_worker.py``, with one thread per
process, on tiny split-digits streams. They check that the two processes end with identical
parameters and strategy state, equal (to float rounding) to one process with the same
global minibatch; that sharded evaluation equals unsharded; that only rank 0 writes the run
folder and feeds the loggers; that a 2-process run killed mid-run resumes to the numbers of an
uninterrupted one; and that a failure on rank 0 stops every process with one message. The
unit tests check the sharding arithmetic in one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong_kd import distributed
from lifelong_kd.cli import main
from lifelong_kd.data.benchmarks import StreamOptions, build_stream
from lifelong_kd.train import TrainingSet

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# A multi-process test that hangs fails instead of blocking the suite.
TIMEOUT = 600
# Minibatches of 32 on 60 samples (32 + 28): each splits over 2 processes.
BASE = ["--benchmark", "split-digits", "--train-size", "60", "--test-size", "40", "--epochs", "2", "--batch-size", "32",
        "--model", "mlp:16", "--shifts", "none", "--quiet", "--device", "cpu"]
COMMON = [*BASE, "--strategy", "lwf"]
# Training steps of that run: 5 experiences x 2 epochs x 2 minibatches.
STEPS = 20


def torchrun(*arguments: str) -> subprocess.CompletedProcess:
    """A 2-process torchrun launch of ``arguments`` (a script or ``-m module``), output captured."""
    return subprocess.run([*TORCHRUN, *arguments], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=TIMEOUT, check=False)


def numbers(folder: Path) -> tuple:
    document = json.loads((folder / "results.json").read_text())
    return document["accuracy_matrix"], document["metrics"]


# ---------------------------------------------------------------------- one process: the arithmetic


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shard_bounds_cover_every_row_once(count):
    for total in range(0, 12):
        bounds = [distributed.shard_bounds(total, index, count) for index in range(count)]
        rows = [row for start, stop in bounds for row in range(start, stop)]
        assert rows == list(range(total))
        assert max(stop - start for start, stop in bounds) - min(stop - start for start, stop in bounds) <= 1


@pytest.mark.parametrize("count", [2, 3, 4])
def test_weighted_shard_means_average_to_the_global_mean(count):
    losses = torch.rand(10, dtype=torch.float64)
    for size in range(1, 11):
        values = losses[:size]
        parts = [distributed.shard_rows(size, index, count) for index in range(count)]
        averaged = sum(weight * values[rows].mean() for rows, weight in parts) / count
        assert float(averaged) == pytest.approx(float(values.mean()), rel=1e-12)
        assert all(len(values[rows]) >= 1 for rows, _ in parts)  # no process is ever without a row


def _two_sets(augment: bool, experiences):
    return [TrainingSet(list(experiences), augment, torch.Generator().manual_seed(3)) for _ in range(2)]


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("stream_name", ["split-digits", "permuted-digits"])
def test_a_process_gets_the_rows_one_process_gives_them(augment, stream_name):
    """Rows of a shard equal those rows of the whole minibatch (same crops and flips), and generators stay in step."""
    stream = build_stream(stream_name, StreamOptions(train_size=40, test_size=10))
    for experiences in ([stream[0]], [stream[0], stream[1], stream[2]]):
        whole_set, shard_set = _two_sets(augment, experiences)
        for index, same_index in zip(whole_set.positions(17, 4), shard_set.positions(17, 4), strict=True):
            assert torch.equal(index, same_index)  # every process draws the same permutation
            rows = slice(5, 12)
            whole, part = whole_set.batch(index), shard_set.batch(same_index, rows)
            for field in ("x", "y", "task_id", "index"):
                assert torch.equal(getattr(whole, field)[rows], getattr(part, field)), field
        assert torch.equal(whole_set.generator.get_state(), shard_set.generator.get_state())


def test_collectives_are_the_identity_in_one_process():
    values = torch.arange(6.0).view(3, 2)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert torch.equal(distributed.all_reduce_sum(values), values)
    assert torch.equal(distributed.all_gather_rows(values, 3), values)
    assert distributed.shard(7) == slice(0, 7)
    assert distributed.share({"a": 1}) == {"a": 1}
    module = torch.nn.Linear(2, 2)
    assert distributed.data_parallel(module) is module
    distributed.end()  # nothing started: nothing to end, and a later run still works
    with distributed.session("cpu") as placement:
        assert placement.world_size == 1


# ---------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """An uninterrupted 2-process CLI run (``torchrun ... -m lifelong_kd run``)."""
    folder = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun("-m", "lifelong_kd", "run", *COMMON, "--out", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    folder.joinpath("stdout.txt").write_text(done.stdout)
    return folder


def test_two_processes_match_one_process_and_write_one_folder(two_process_run, tmp_path):
    single = tmp_path / "single"
    assert main(["run", *COMMON, "--out", str(single)]) == 0
    ddp_matrix, ddp_metrics = numbers(two_process_run)
    matrix, metrics = numbers(single)
    np.testing.assert_allclose(np.array(ddp_matrix), np.array(matrix), atol=0.005)  # within 0.5 points
    assert ddp_metrics["average_accuracy"] == pytest.approx(metrics["average_accuracy"], abs=0.005)
    document = json.loads((two_process_run / "results.json").read_text())
    assert document["setup"]["hardware"] == {"device": "cpu", "processes": 2, "backend": "gloo"}
    losses = [row["mean_loss"] for row in document["timing"]["per_experience"]]
    single_losses = [row["mean_loss"] for row in json.loads((single / "results.json").read_text())["timing"]["per_experience"]]
    np.testing.assert_allclose(losses, single_losses, rtol=1e-4)
    # Written once, by rank 0: one row per experience, TensorBoard files of one process, the results printed once.
    steps = [json.loads(line).get("step") for line in (two_process_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [None, 0, 1, 2, 3, 4]
    writers = {path.name.split(".")[-2] for path in (two_process_run / "tensorboard").rglob("events.out.tfevents.*")}
    assert len(writers) == 1  # event file names end with <pid>.<n>
    assert (two_process_run / "stdout.txt").read_text().count("accuracy matrix") == 1


@pytest.mark.slow
def test_processes_hold_identical_state_equal_to_one_process(tmp_path):
    """LwF (sharded teacher cache) and EWC (sharded Fisher): parameters and strategy state after every experience."""
    from tests import ddp_worker

    done = torchrun("tests/ddp_worker.py", "check", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ddp_worker.STRATEGIES:
        ranks = [torch.load(tmp_path / f"{name}-rank{rank}.pt", weights_only=False) for rank in (0, 1)]
        single = ddp_worker.experiment(name, None)
        assert ranks[0]["world_size"] == 2
        for after_0, after_1, after_single in zip(ranks[0]["after_experience"], ranks[1]["after_experience"], single["after_experience"], strict=True):
            for key, value in after_0.items():
                assert torch.equal(value, after_1[key]), (name, key)  # bit for bit across processes
                torch.testing.assert_close(value, after_single[key], rtol=1e-5, atol=1e-6)  # float rounding from one process
        assert ranks[0]["strategy_hashes"] == ranks[1]["strategy_hashes"]
        np.testing.assert_allclose(ranks[0]["accuracy_matrix"], single["accuracy_matrix"], atol=0.005)
        np.testing.assert_allclose(ranks[0]["mean_loss"], single["mean_loss"], rtol=1e-5)
        assert ranks[0]["sharded_row"] == ranks[0]["local_row"] == ranks[1]["sharded_row"]
        assert ranks[0]["logger_calls"] == single["logger_calls"] > 0 and ranks[1]["logger_calls"] == 0
        assert sorted(path.name for path in (tmp_path / f"run-{name}").iterdir()) == [".lock", "checkpoint.pt", "metrics.jsonl", "results.json"]


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_numbers(two_process_run, tmp_path):
    folder = tmp_path / "run"
    killed = torchrun("tests/ddp_worker.py", "kill", str(STEPS // 2 + 1), "run", *COMMON, "--out", str(folder))
    assert killed.returncode != 0
    finished = json.loads((folder / "results.json").read_text())["finished_experiences"]
    assert 0 < finished < 5
    resumed = torchrun("-m", "lifelong_kd", "run", *COMMON, "--out", str(folder), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert numbers(folder) == numbers(two_process_run)
    steps = [json.loads(line).get("step") for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == [None, 0, 1, 2, 3, 4]
    assert not list(folder.rglob(".*.tmp*"))


@pytest.mark.slow
def test_a_failure_on_rank_0_stops_every_process_with_one_message(two_process_run):
    refused = torchrun("-m", "lifelong_kd", "run", *COMMON, "--out", str(two_process_run))
    assert refused.returncode != 0
    assert refused.stderr.count("already holds a run") == 1, refused.stderr[-3000:]
