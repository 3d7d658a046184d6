"""ER: nothing to replay at first, the union-mean cross-entropy afterwards, reservoir insertion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd.strategies.er import ER
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through


def _replayed_copy(strategy: ER, size: int):
    """The samples the strategy's next replay will draw (same generator state, same memory)."""
    generator = torch.Generator()
    generator.set_state(strategy.rehearsal_.generator.get_state())
    stored = strategy.memory_.sample(size, generator)
    return strategy.rehearsal_.inputs(stored), stored


def test_adds_exactly_zero_while_the_memory_is_empty_then_stores_the_batch():
    stream = digits("class")
    model = small_model(stream)
    strategy = ER(buffer_size=50)
    strategy.check_stream(stream)
    strategy.before_experience(model, stream[0])
    batch = first_batch(stream, 0)
    loss = strategy.loss(model, batch, forward(model, batch))
    assert loss.item() == 0.0 and loss.shape == ()
    assert len(strategy.memory_) == len(batch.y)
    assert torch.equal(strategy.memory_.x_, stream[0].train.x[batch.index])
    assert torch.equal(strategy.memory_.y_, batch.y)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
@pytest.mark.parametrize("replay_batch_size", [None, 5])
def test_loop_cross_entropy_plus_er_term_is_the_mean_over_the_union(scenario, replay_batch_size):
    stream = digits(scenario)
    model = small_model(stream)
    strategy = ER(buffer_size=40, replay_batch_size=replay_batch_size)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    output = forward(model, batch)
    x_memory, stored = _replayed_copy(strategy, replay_batch_size or len(batch.y))
    union_logits = torch.cat([output.logits, model(x_memory, stored.task_id)])
    expected = F.cross_entropy(union_logits, torch.cat([batch.y, stored.y]))
    total = F.cross_entropy(output.logits, batch.y) + strategy.loss(model, batch, output)
    assert len(stored) == (replay_batch_size or len(batch.y))
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_memory_is_a_reservoir_over_all_experiences():
    stream = digits("class")
    model = small_model(stream)
    strategy = ER(buffer_size=60)
    train_through(model, strategy, stream, last=4)
    memory = strategy.memory_
    assert len(memory) == 60
    assert memory.seen_ == 2 * sum(len(e.train) for e in stream)  # FAST trains 2 epochs: each sample offered twice
    assert set(memory.experience_.tolist()) == {0, 1, 2, 3, 4}  # every experience is represented


def test_bad_replay_batch_size_is_a_clear_error():
    with pytest.raises(ValueError, match="replay_batch_size must be a positive integer"):
        ER(replay_batch_size=0).check_stream(digits("class"))
    with pytest.raises(ValueError, match="buffer_size must be a positive integer"):
        ER(buffer_size=-3)


def test_replayed_samples_get_their_own_experiences_transform():
    """permuted-digits: each experience permutes pixels differently; a replayed sample is permuted as it was seen."""
    from lifelong_kd import StreamOptions, build_stream

    stream = build_stream("permuted-digits", StreamOptions(scenario="domain", train_size=60))
    model = small_model(stream)
    strategy = ER(buffer_size=40)
    train_through(model, strategy, stream, last=2)
    stored = strategy.memory_.read()
    assert set(stored.experience.tolist()) == {0, 1, 2}
    replayed = strategy.rehearsal_.inputs(stored)
    for row in range(len(stored)):
        own = stream[int(stored.experience[row])].transform(stored.x[row : row + 1])
        assert torch.equal(replayed[row : row + 1], own)
    later = stored.experience > 0
    assert not torch.equal(replayed[later], stream[0].transform(stored.x[later]))
