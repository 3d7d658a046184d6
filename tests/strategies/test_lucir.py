"""LUCIR: the cosine head, margin ranking by hand, the one-batch objective, frozen old-class weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd import build_model
from lifelong_kd.models import CosineLinear, inverse_softplus
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.strategies.lucir import LUCIR, margin_ranking
from lifelong_kd.strategies.rehearsal import UNSEEN_CLASS_SCORE
from lifelong_kd.train import forward, train_experience
from tests.strategies.helpers import FAST, digits, first_batch, small_model, train_through


def _cosine_model(stream, seed: int = 0):
    seed_everything(seed)
    return build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs, head="cosine")


def test_cosine_head_is_sigma_times_the_cosine_and_the_last_relu_is_gone():
    head = CosineLinear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        head.sigma_raw.copy_(inverse_softplus(torch.tensor([3.0])))
    features = torch.tensor([[0.0, 5.0]])
    assert head(features)[0].tolist() == pytest.approx([0.0, 3.0 / 2**0.5])
    stream = digits("class")
    linear, cosine = small_model(stream), _cosine_model(stream)
    assert isinstance(linear.backbone[-1], torch.nn.ReLU) and not isinstance(cosine.backbone[-1], torch.nn.ReLU)
    assert set(cosine.state_dict()) - set(linear.state_dict()) == {"head.sigma_raw"}
    with torch.no_grad():
        assert (cosine.features(stream[0].transform(stream[0].train.x)) < 0).any()


def test_sigma_starts_at_one_and_stays_positive_when_gradient_steps_push_it_below_zero():
    head = CosineLinear(2, 2)
    assert head.sigma.item() == pytest.approx(1.0, abs=1e-6)
    features, labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 0])
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))  # every sample is nearest the wrong class: a smaller sigma lowers the loss
    optimizer = torch.optim.SGD(head.parameters(), lr=1.0)
    for _ in range(20):  # a parameter holding sigma itself ends below -1 after these 20 steps (its gradient is sigmoid(sigma))
        optimizer.zero_grad()
        F.cross_entropy(head(features), labels).backward()
        head.weight.grad = None  # only the scale learns
        optimizer.step()
    assert 0 < head.sigma.item() < 0.5
    assert (head(features).argmax(1) == torch.tensor([0, 1])).all()  # scores keep their order


def test_state_dict_with_the_earlier_sigma_key_loads_and_a_negative_one_is_refused():
    head = CosineLinear(2, 3)
    state = {"weight": torch.ones(3, 2), "sigma": torch.tensor([2.5])}
    head.load_state_dict(state)
    assert head.sigma.item() == pytest.approx(2.5)
    with pytest.raises(ValueError, match="is not positive"):
        head.load_state_dict({"weight": torch.ones(3, 2), "sigma": torch.tensor([-2.75])})


def test_margin_ranking_hand_example():
    cosines = torch.tensor([[0.9, 0.1, 0.95, 0.2], [0.3, 0.8, 0.1, 0.5], [0.1, 0.2, 0.7, 0.3]])
    labels = torch.tensor([0, 1, 2])  # the third sample is of a new class: not ranked
    # sample 0: max(0, 0.5 - 0.9 + 0.95) = 0.55 and max(0, 0.5 - 0.9 + 0.2) = 0
    # sample 1: max(0, 0.5 - 0.8 + 0.5) = 0.2 and max(0, 0.5 - 0.8 + 0.1) = 0
    assert margin_ranking(cosines, labels, old=2, margin=0.5, hard_negatives=2).item() == pytest.approx(0.75 / 4)
    assert margin_ranking(cosines, torch.tensor([2, 3, 2]), old=2, margin=0.5, hard_negatives=2).item() == 0.0


def test_needs_a_cosine_head():
    stream = digits("class")
    strategy = LUCIR()
    strategy.check_stream(stream)
    with pytest.raises(ValueError, match="head='cosine'"):
        strategy.before_experience(small_model(stream), stream[0])
    assert LUCIR.model_head == "cosine"


def test_one_batch_objective_is_ce_on_seen_classes_plus_less_forget_plus_ranking():
    stream = digits("class")
    model = _cosine_model(stream)
    strategy = LUCIR(buffer_size=40, lambda_base=5.0, replay_batch_size=8)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    with torch.no_grad():
        for parameter in model.backbone.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # move away from the teacher
    output = forward(model, batch)
    generator = torch.Generator()
    generator.set_state(strategy.rehearsal_.generator.get_state())
    stored = strategy.memory_.sample(8, generator)
    x = torch.cat([batch.x, strategy.rehearsal_.inputs(stored)])
    labels = torch.cat([batch.y, stored.y])
    features = model.features(x)
    cross_entropy = F.cross_entropy(model.head(features)[:, :6], labels)
    less_forget = (1 - F.cosine_similarity(features, strategy.teacher_.features(x))).mean()
    ranking = margin_ranking(model.head.cosine(features)[:, :6], labels, old=4, margin=0.5, hard_negatives=2)
    expected = cross_entropy + 5.0 * (4 / 2) ** 0.5 * less_forget + ranking
    total = F.cross_entropy(output.logits, batch.y) + strategy.loss(model, batch, output)
    assert less_forget.item() > 0 and ranking.item() > 0
    assert total.item() == pytest.approx(expected.item(), abs=1e-5)


def test_old_class_weights_are_frozen_during_an_experience_and_free_afterwards():
    stream = digits("class")
    model = _cosine_model(stream)
    strategy = LUCIR(buffer_size=40)
    train_through(model, strategy, stream, last=0)
    before = model.head.weight.detach().clone()
    sigma = model.head.sigma.item()
    strategy.before_experience(model, stream[1])
    train_experience(model, strategy, stream, stream[1], FAST)
    after = model.head.weight.detach()
    assert torch.equal(after[:2], before[:2])  # old classes 0, 1
    assert not torch.equal(after[2:4], before[2:4]) and model.head.sigma.item() != sigma
    strategy.after_experience(model, stream[1])
    model.head(torch.randn(3, 32)).sum().backward()
    assert model.head.weight.grad[:2].abs().sum() > 0  # the hook is gone


def test_evaluates_the_cosine_classifier_over_the_seen_classes():
    stream = digits("class")
    model = _cosine_model(stream)
    strategy = LUCIR(buffer_size=40)
    train_through(model, strategy, stream, last=1)
    x = stream[0].transform(stream[0].test.x[:7])
    with torch.no_grad():
        scores, logits = strategy.evaluation_model(model)(x), model(x)
    assert torch.equal(scores[:, :4], logits[:, :4])
    assert (scores[:, 4:] == UNSEEN_CLASS_SCORE).all()
