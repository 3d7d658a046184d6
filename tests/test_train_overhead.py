"""The training loop's shortcuts change no number: one-experience minibatches, strategies without an extra loss, profiler labels."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.profiler import profile

from lifelong_kd import Finetune, StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.train import TrainingSet, make_optimizer, phase, train_experience, train_step


@pytest.fixture(scope="module")
def stream():
    return build_stream("split-digits", StreamOptions(scenario="task", train_size=100))


@pytest.mark.parametrize("augment", [False, True])
def test_one_experience_minibatch_equals_the_general_path(stream, augment):
    experience = stream[1]
    shortcut = TrainingSet([experience], augment, torch.Generator().manual_seed(3))
    general = TrainingSet([experience], augment, torch.Generator().manual_seed(3))
    for index, same in zip(shortcut.positions(32, 4), general.positions(32, 4), strict=True):  # each draws from its own generator
        fast, slow = shortcut.batch(index), general.batch(same, rows=slice(0, len(same)))  # rows: the grouped path
        assert torch.equal(fast.x, slow.x) and torch.equal(fast.y, slow.y)
        assert torch.equal(fast.task_id, slow.task_id) and torch.equal(fast.index, slow.index)
        assert fast.x.dtype == slow.x.dtype == torch.float32 and fast.augmented == slow.augmented


class ZeroExtraLoss(Finetune):
    """Fine-tuning whose extra loss is an explicit zero, added like any strategy's term."""

    name = "zero_extra"

    def loss(self, model, batch, output):
        return output.logits.new_zeros(())


def test_a_strategy_without_extra_loss_trains_bit_for_bit_like_one_adding_zero(stream):
    torch.manual_seed(0)
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    twin = copy.deepcopy(model)
    config = TrainConfig(lr=0.05, progress=False)
    data = TrainingSet([stream[0]], False, torch.Generator().manual_seed(0))
    optimizers = make_optimizer(model, config), make_optimizer(twin, config)
    for batch in data.batches(16, 6):
        terms, twin_terms = {}, {}
        value = train_step(model, Finetune(), optimizers[0], batch, terms=terms)
        twin_value = train_step(twin, ZeroExtraLoss(), optimizers[1], batch, terms=twin_terms)
        assert value == twin_value
        assert torch.equal(terms["cross_entropy"], twin_terms["cross_entropy"]) and set(terms) == {"cross_entropy"}
    for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_the_loop_phases_are_labelled_only_while_a_profiler_records(stream):
    assert not isinstance(phase("lkd.forward"), torch.profiler.record_function)
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
    with profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        train_experience(model, Finetune(), stream, stream[0], TrainConfig(iterations=2, batch_size=16, progress=False))
    names = {event.name for event in profiler.events()}
    assert {"lkd.data", "lkd.forward", "lkd.loss", "lkd.backward", "lkd.optimizer"} <= names
