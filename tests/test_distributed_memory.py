"""Replay-memory strategies on any device and with several processes (torch.distributed, gloo).

One process: the arithmetic that makes a data-parallel step equal a single-process step
(each process's part of a replayed minibatch, and the weights of its terms), every process
drawing the same replayed minibatch and keeping its part, the exact packing of the gathered
samples, and the device paths (on PyTorch's ``meta`` device, where a tensor left on the CPU
is an error).

Two real processes started by torchrun (``tests/ddp_worker.py check``, 2 gloo processes, one
thread each) on class-incremental split-digits whose minibatches split unevenly and whose last
minibatch of each epoch has one row (a stand-in row of weight 0 for one process): after every
experience both processes hold bit-identical parameters, strategy states and memories; the
memories hold the samples one process would store, the parameters equal one process's to
float rounding (1e-5 relative), so do the losses, and the accuracy matrices agree within 0.5
points (on this stream they are equal). DER++ runs by default; the other five, the CLI under
torchrun and a killed 2-process run resumed are marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lifelong_kd import distributed
from lifelong_kd.cli import main
from lifelong_kd.data.stream import Batch
from lifelong_kd.models import build_model
from lifelong_kd.strategies.icarl import NearestMeanOfExemplars
from lifelong_kd.strategies.rehearsal import Rehearsal, Share, gather_samples, locate, training_features
from tests import ddp_worker
from tests.strategies.helpers import digits
from tests.test_distributed import ENV, REPO, TIMEOUT, TORCHRUN, numbers

META = torch.device("meta")
# Tiny class-incremental CLI run: 51 training samples per experience in minibatches of 25
# (25, 25, 1), so each epoch ends with a one-row minibatch (a stand-in row for one process).
CLI = ["--benchmark", "split-digits", "--scenario", "class", "--train-size", "51", "--test-size", "40", "--epochs", "2",
       "--batch-size", "25", "--model", "mlp:16", "--shifts", "none", "--quiet", "--device", "cpu", "--buffer-size", "40"]
# Training steps of that run: 5 experiences x 2 epochs x 3 minibatches.
CLI_STEPS = 30


def shares(size: int, processes: int) -> list[Share]:
    """Every process's :class:`Share` of a global minibatch of ``size`` rows, as :func:`locate` finds them."""
    return [Share(size, *distributed.shard_bounds(size, index, processes), processes) for index in range(processes)]


# ---------------------------------------------------------------------- one process: the arithmetic


@pytest.mark.parametrize("processes", [2, 3, 4])
def test_weighted_parts_of_the_batch_and_the_replay_give_the_single_process_means(processes):
    """What the loop's weights and DistributedDataParallel's average make of each process's terms."""
    generator = torch.Generator().manual_seed(0)
    for size in range(1, 10):
        for replayed in range(1, 12):
            current, replay = torch.rand(size, generator=generator, dtype=torch.float64), torch.rand(replayed, generator=generator, dtype=torch.float64)
            replay_term = union_term = 0.0
            covered = []
            for index, share in enumerate(shares(size, processes)):
                rows, weight = distributed.shard_rows(size, index, processes)  # what the loop trains this process on
                if share.rows:
                    assert share.part(size) == rows  # a replay of the batch's size splits like the batch
                part = share.part(replayed)
                covered += list(range(replayed))[part]
                mine, theirs = current[rows], replay[part]
                if len(theirs) and share.rows:
                    replay_term += weight / processes * share.weigh(theirs.mean(), len(theirs), replayed)
                union = torch.cat([mine, theirs])
                union_term += weight / processes * share.weigh(union.mean(), len(union), size + replayed)
            assert covered == list(range(replayed))  # contiguous parts, in order, each row once
            assert float(replay_term) == pytest.approx(float(replay.mean()), rel=1e-12)
            assert float(union_term) == pytest.approx(float(torch.cat([current, replay]).mean()), rel=1e-12)


def test_a_process_with_a_stand_in_row_gets_no_replayed_rows_and_weight_zero():
    first, second = shares(1, 2)
    assert (first.rows, second.rows) == (0, 1)
    assert first.part(7) == slice(0, 0) and second.part(7) == slice(0, 7)
    assert first.scale(3, 8) == 0.0


def test_one_process_holds_the_whole_minibatch_and_weighs_nothing():
    batch = Batch(torch.zeros(6, 1, 8, 8), torch.arange(6), torch.zeros(6, dtype=torch.long), torch.arange(6))
    share = locate(batch, [4])
    assert (share.size, share.start, share.stop, share.processes, share.totals) == (6, 0, 6, 1, (4,))
    assert share.part(9) == slice(0, 9)
    term = torch.tensor(2.5)
    assert share.weigh(term, 15, 15) is term  # the single-process computation is untouched
    rows = torch.arange(12.0).view(6, 2)
    assert share.gather(rows) is rows


@pytest.mark.parametrize("augment", [False, True])
def test_every_process_draws_the_same_replay_and_keeps_its_part(augment):
    """The parts of 3 processes, each drawing from the same generator state, are the single-process replay, crops included."""
    stream = digits("class")
    rehearsal = Rehearsal(60, "reservoir")
    rehearsal.check_stream(stream)
    rehearsal.generator.manual_seed(1)
    for experience in (stream[0], stream[1]):
        train = experience.train
        rehearsal.memory.add(train.x, train.y, torch.zeros_like(train.y), experience.index, rehearsal.generator)
    state = rehearsal.generator.get_state()
    whole = rehearsal.replay(17, augment)
    after = rehearsal.generator.get_state()
    parts = []
    for share in shares(25, 3):
        rehearsal.generator.set_state(state)
        parts.append(rehearsal.replay(17, augment, share=share))
        assert torch.equal(rehearsal.generator.get_state(), after)  # every process's generator stays in step
        assert torch.equal(parts[-1].drawn.slot, whole.drawn.slot)
    for field in ("x", "y", "task_id", "index"):
        assert torch.equal(torch.cat([getattr(part.batch, field) for part in parts]), getattr(whole.batch, field)), field
    assert [len(part.batch.y) for part in parts] == [5, 5, 7]  # 17 rows split at 17 * 8 // 25 and 17 * 16 // 25


def test_gathered_samples_are_packed_exactly():
    """Positions, labels, task ids and float32 logits survive the float64 packing of the all-gather bit for bit."""
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)) * 1e3
    batch = Batch(torch.zeros(5, 1, 8, 8), torch.tensor([9, 0, 3, 3, 1]), torch.tensor([0, 4, 2, 2, 1]), torch.tensor([123456789, 0, 5, 6, 7]))
    index, labels, task_ids, extras = gather_samples(locate(batch), batch, {"logits": logits})
    assert torch.equal(index, batch.index) and torch.equal(labels, batch.y) and torch.equal(task_ids, batch.task_id)
    assert extras["logits"].dtype == torch.float32 and torch.equal(extras["logits"], logits)


# ---------------------------------------------------------------------- devices (meta: nothing may stay on the CPU)


def test_replayed_samples_go_to_the_device_and_the_memory_stays_on_the_host():
    stream = digits("class")
    rehearsal = Rehearsal(30, "reservoir")
    rehearsal.check_stream(stream)
    train = stream[0].train
    rehearsal.memory.add(train.x, train.y, torch.zeros_like(train.y), 0, rehearsal.generator, {"logits": torch.zeros(len(train.y), 10)})
    replayed = rehearsal.replay(8, augment=True, device=META)
    assert {replayed.batch.x.device, replayed.batch.y.device, replayed.batch.task_id.device} == {META}
    assert replayed.batch.x.dtype == torch.float32 and replayed.batch.index.device.type == "cpu"  # slots index the host memory
    assert rehearsal.inputs(rehearsal.memory.read(), device=META).device == META
    state = rehearsal.memory.state_dict()
    assert state["x"].dtype == torch.uint8
    assert all(value.device.type == "cpu" for value in (state["x"], state["y"], state["task_id"], state["experience"], *state["extras"].values()))


def test_herding_features_and_the_nearest_mean_classifier_run_on_the_models_device():
    stream = digits("class")
    model = build_model("mlp:32", stream.input_shape, 1, 10).to(META)  # a CPU input would raise
    features = training_features(model, stream[0])
    assert features.device == META and features.shape == (len(stream[0].train), 32)
    classifier = NearestMeanOfExemplars(model, torch.rand(4, 32), 10)
    assert classifier.means.device == META
    scores = classifier(stream[0].transform(stream[0].test.x[:3]).to(META))
    assert scores.device == META and scores.shape == (3, 10)


# ---------------------------------------------------------------------- two processes


def check_processes(tmp_path: Path, names: list[str]) -> None:
    """Run ``names`` in 2 processes (tests/ddp_worker.py check) and in this one; compare as the module docstring says."""
    done = subprocess.run([*TORCHRUN, "tests/ddp_worker.py", "check", str(tmp_path), *names], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        ranks = [torch.load(tmp_path / f"{name}-rank{rank}.pt", weights_only=False) for rank in (0, 1)]
        single = ddp_worker.experiment(name, None)
        assert ranks[0]["world_size"] == 2
        assert ranks[0]["strategy_hashes"] == ranks[1]["strategy_hashes"]  # teacher, memory, means, correction ...
        assert ranks[0]["memory_hashes"] == ranks[1]["memory_hashes"] and len(ranks[0]["memory_hashes"]) == 5
        for after_0, after_1, after_single in zip(ranks[0]["after_experience"], ranks[1]["after_experience"], single["after_experience"], strict=True):
            for key, value in after_0.items():
                assert torch.equal(value, after_1[key]), (name, key)
                torch.testing.assert_close(value, after_single[key], rtol=1e-5, atol=1e-6)
        for memory, single_memory in zip(ranks[0]["memories"], single["memories"], strict=True):
            # The reservoir depends on positions and the generator only; herding on features, which
            # differ from one process's by float rounding (a near-tie could flip a choice: not on this stream).
            for key in ("x", "y", "task_id", "experience", "seen"):
                assert torch.equal(torch.as_tensor(memory[key]), torch.as_tensor(single_memory[key])), (name, key)
            for key, value in memory["extras"].items():  # DER's logits: computed on each process's rows
                torch.testing.assert_close(value, single_memory["extras"][key], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ranks[0]["accuracy_matrix"], single["accuracy_matrix"], atol=0.005)
        np.testing.assert_allclose(ranks[0]["mean_loss"], single["mean_loss"], rtol=1e-5)


def test_derpp_memories_are_identical_on_both_processes_and_equal_one_process(tmp_path):
    """DER++: reservoir offered the gathered minibatch with its logits, two replayed draws split over the processes."""
    check_processes(tmp_path, ["derpp"])


@pytest.mark.slow
def test_every_memory_strategy_is_identical_on_both_processes_and_equals_one_process(tmp_path):
    check_processes(tmp_path, ["er", "der", "icarl", "lucir", "bic"])


@pytest.fixture(scope="module")
def two_process_icarl(tmp_path_factory) -> Path:
    """An uninterrupted 2-process CLI run of iCaRL."""
    folder = tmp_path_factory.mktemp("ddp-memory") / "run"
    done = subprocess.run([*TORCHRUN, "-m", "lifelong_kd", "run", *CLI, "--strategy", "icarl", "--out", str(folder)],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


@pytest.mark.slow
def test_a_two_process_cli_run_matches_one_process(two_process_icarl, tmp_path):
    single = tmp_path / "single"
    assert main(["run", *CLI, "--strategy", "icarl", "--out", str(single)]) == 0
    (matrix, metrics), (single_matrix, single_metrics) = numbers(two_process_icarl), numbers(single)
    np.testing.assert_allclose(np.array(matrix), np.array(single_matrix), atol=0.005)
    documents = [json.loads((folder / "results.json").read_text()) for folder in (two_process_icarl, single)]
    assert documents[0]["setup"]["hardware"]["processes"] == 2
    losses = [[row["mean_loss"] for row in document["timing"]["per_experience"]] for document in documents]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    assert documents[0]["memory_bytes"] == documents[1]["memory_bytes"] > 0


@pytest.mark.slow
def test_a_killed_two_process_memory_run_resumes_to_the_same_numbers(two_process_icarl, tmp_path):
    folder = tmp_path / "run"
    killed = subprocess.run([*TORCHRUN, "tests/ddp_worker.py", "kill", str(CLI_STEPS // 2 + 1), "run", *CLI, "--strategy", "icarl", "--out", str(folder)],
                            capture_output=True, text=True, env=ENV, cwd=REPO, timeout=TIMEOUT, check=False)
    assert killed.returncode != 0
    assert 0 < json.loads((folder / "results.json").read_text())["finished_experiences"] < 5
    resumed = subprocess.run([*TORCHRUN, "-m", "lifelong_kd", "run", *CLI, "--strategy", "icarl", "--out", str(folder), "--resume"],
                             capture_output=True, text=True, env=ENV, cwd=REPO, timeout=TIMEOUT, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert numbers(folder) == numbers(two_process_icarl)
