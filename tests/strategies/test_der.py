"""DER and DER++: logits stored at insertion, MSE on them, DER++'s second draw with labels."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd.strategies.der import DER, DERpp
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through


def _next_draws(strategy, size: int, count: int):
    """The next ``count`` replayed minibatches (model inputs and stored samples), without drawing them."""
    generator = torch.Generator()
    generator.set_state(strategy.rehearsal_.generator.get_state())
    draws = []
    for _ in range(count):
        stored = strategy.memory_.sample(size, generator)
        draws.append((strategy.rehearsal_.inputs(stored), stored))
    return draws


@pytest.mark.parametrize("strategy", [DER(buffer_size=50), DERpp(buffer_size=50)], ids=["der", "derpp"])
def test_stored_logits_are_the_models_logits_at_insertion(strategy):
    stream = digits("class")
    model = small_model(stream)
    strategy.check_stream(stream)
    strategy.before_experience(model, stream[0])
    batch = first_batch(stream, 0)
    output = forward(model, batch)
    assert strategy.loss(model, batch, output).item() == 0.0  # empty memory: nothing to replay
    assert torch.equal(strategy.memory_.extras_["logits"], output.logits.detach())
    with torch.no_grad():
        model.head.weight.add_(1.0)  # the model moves on; what was stored does not
    assert torch.equal(strategy.memory_.extras_["logits"], output.logits.detach())


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_der_loss_is_alpha_times_mse_to_the_stored_logits(scenario):
    stream = digits(scenario)
    model = small_model(stream)
    strategy = DER(buffer_size=40, alpha=0.7)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    [(x, stored)] = _next_draws(strategy, len(batch.y), 1)
    expected = 0.7 * ((model(x, stored.task_id) - stored.extras["logits"]) ** 2).mean()
    assert expected.item() > 0
    assert strategy.loss(model, batch, forward(model, batch)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_derpp_adds_beta_times_cross_entropy_on_a_second_independent_draw():
    stream = digits("class")
    model = small_model(stream)
    strategy = DERpp(buffer_size=40, alpha=0.3, beta=0.6, replay_batch_size=8)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    (x1, first), (x2, second) = _next_draws(strategy, 8, 2)
    assert not torch.equal(first.slot, second.slot)
    mse = F.mse_loss(model(x1, first.task_id), first.extras["logits"])
    cross_entropy = F.cross_entropy(model(x2, second.task_id), second.y)
    expected = 0.3 * mse + 0.6 * cross_entropy
    assert strategy.loss(model, batch, forward(model, batch)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_derpp_with_zero_weights_adds_zero_and_der_has_no_beta():
    stream = digits("class")
    model = small_model(stream)
    strategy = DERpp(buffer_size=40, alpha=0.0, beta=0.0)
    train_through(model, strategy, stream, last=0)
    strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    assert strategy.loss(model, batch, forward(model, batch)).item() == 0.0
    assert "beta" not in DER().options() and DERpp().options()["beta"] == 0.5


def test_negative_weights_are_clear_errors():
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        DER(alpha=-1.0).check_stream(digits("class"))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        DERpp(beta=float("nan")).check_stream(digits("class"))
