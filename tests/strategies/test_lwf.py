"""LwF: zero on the first experience, end-of-experience snapshot, cache == online, options."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lifelong_kd.losses import entropy, feature_distance, kd_kl
from lifelong_kd.strategies.lwf import LwF
from lifelong_kd.teacher import is_frozen
from lifelong_kd.train import forward, train_experience
from tests.strategies.helpers import FAST, digits, first_batch, small_model, train_through


def _loss(strategy: LwF, model, batch):
    return strategy.loss(model, batch, forward(model, strategy.transform_batch(batch)))


def test_adds_exactly_zero_on_first_experience():
    stream = digits("task")
    model = small_model(stream)
    strategy = LwF(feature_weight=1.0, entropy_weight=0.5, noise="gaussian", warmup_iterations=5)
    strategy.check_stream(stream)
    strategy.before_experience(model, stream[0])
    batch = first_batch(stream, 0)
    assert strategy.transform_batch(batch) is batch
    loss = _loss(strategy, model, batch)
    assert loss.item() == 0.0 and loss.shape == ()


def test_teacher_is_the_end_of_previous_experience_snapshot_not_a_moving_one():
    stream = digits("task")
    model = small_model(stream)
    strategy = LwF()
    train_through(model, strategy, stream, last=0)
    end_of_first = {k: v.clone() for k, v in model.state_dict().items()}
    strategy.before_experience(model, stream[1])
    train_experience(model, strategy, stream, stream[1], FAST)
    teacher = strategy.teacher_.state_dict()
    assert all(torch.equal(teacher[k], end_of_first[k]) for k in end_of_first)
    assert not all(torch.equal(model.state_dict()[k], end_of_first[k]) for k in end_of_first)
    assert is_frozen(strategy.teacher_)
    strategy.after_experience(model, stream[1])
    assert all(torch.equal(strategy.teacher_.state_dict()[k], model.state_dict()[k]) for k in end_of_first)


@pytest.mark.parametrize("scenario", ["task", "class", "domain"])
def test_loss_is_kd_on_what_the_teacher_knew(scenario):
    stream = digits(scenario)
    model = small_model(stream)
    strategy = LwF(alpha=[0.0, 0.5, 0.5, 0.5, 0.5], temperature=3.0, scale_t2=True)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    student = model.all_logits(batch.x)
    with torch.no_grad():
        teacher = strategy.teacher_.all_logits(batch.x)
    if scenario == "task":
        student, teacher = student[:, [0, 1]], teacher[:, [0, 1]]
    elif scenario == "class":
        student, teacher = student[:, 0, :4], teacher[:, 0, :4]
    else:
        student, teacher = student[:, 0], teacher[:, 0]
    expected = 0.5 * kd_kl(student, teacher, temperature=3.0, scale_t2=True)
    assert _loss(strategy, model, batch).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("scenario", ["task", "class", "domain"])
@pytest.mark.parametrize("feature_weight", [0.0, 0.7])
def test_cached_and_online_teacher_give_the_same_loss(scenario, feature_weight):
    stream = digits(scenario)
    model = small_model(stream)
    strategy = LwF(feature_weight=feature_weight, feature_distance="cosine", entropy_weight=0.1)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    cached = _loss(strategy, model, batch)
    assert strategy.cache_ is not None
    online = _loss(strategy, model, replace(batch, augmented=True))
    assert cached.item() == pytest.approx(online.item(), abs=1e-6)
    assert cached.item() > 0


def test_cache_holds_only_what_the_loss_needs():
    stream = digits("task")
    model = small_model(stream)
    for feature_weight, n_parts in ((0.0, 1), (1.0, 2)):
        strategy = LwF(feature_weight=feature_weight)
        train_through(model, strategy, stream, last=2)
        strategy.before_experience(model, stream[3])
        _loss(strategy, model, first_batch(stream, 3))
        assert len(strategy.cache_) == n_parts
        assert strategy.cache_[0].shape == (len(stream[3].train), 3, 2)  # old heads 0..2, 2 outputs
        if n_parts == 2:
            assert strategy.cache_[1].shape == (len(stream[3].train), 32)
    class_stream = digits("class")
    strategy = LwF()
    train_through(small_model(class_stream), strategy, class_stream, last=1)
    strategy.before_experience(model, class_stream[2])
    _loss(strategy, small_model(class_stream), first_batch(class_stream, 2))
    assert strategy.cache_[0].shape == (len(class_stream[2].train), 4)  # classes seen: 0..3


def test_feature_and_entropy_terms_are_added():
    stream = digits("domain")
    model = small_model(stream)
    strategy = LwF(alpha=0.0, feature_weight=2.0, feature_distance="mse", entropy_weight=-0.5)
    train_through(model, strategy, stream, last=0)
    model.head.weight.data.add_(0.1)  # make student and teacher differ
    model.backbone[1].weight.data.add_(0.01)
    strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    output = forward(model, batch)
    with torch.no_grad():
        teacher_features = strategy.teacher_.features(batch.x)
    expected = 2.0 * feature_distance(output.features, teacher_features, "mse") - 0.5 * entropy(output.logits)
    assert strategy.loss(model, batch, output).item() == pytest.approx(expected.item(), abs=1e-6)


def test_denoising_noises_the_student_view_only_once_a_teacher_exists():
    stream = digits("task")
    model = small_model(stream)
    strategy = LwF(noise="dropout", noise_level=0.5)
    train_through(model, strategy, stream, last=0)
    strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    torch.manual_seed(0)
    student_view = strategy.transform_batch(batch)
    assert not torch.equal(student_view.x, batch.x)
    dropped = student_view.x == 0
    assert 0.3 < dropped.float().mean().item() < 0.7
    assert torch.equal(student_view.x[~dropped], batch.x[~dropped])
    assert torch.equal(student_view.y, batch.y) and torch.equal(student_view.index, batch.index)
    # the teacher sees the clean input: its targets equal the teacher's outputs on batch.x
    with torch.no_grad():
        clean = strategy.teacher_.all_logits(batch.x)[:, [0]]
    assert torch.allclose(strategy.teacher_outputs(batch)[0], clean, atol=1e-6)


def test_gaussian_noise_has_the_requested_scale():
    stream = digits("task", train_size=200)
    strategy = LwF(noise="gaussian", noise_level=0.3)
    strategy.teacher_ = torch.nn.Identity()  # any teacher switches denoising on
    batch = first_batch(stream, 0, size=200)
    torch.manual_seed(0)
    difference = strategy.transform_batch(batch).x - batch.x
    assert difference.std().item() == pytest.approx(0.3, rel=0.05)


def test_warm_up_trains_only_the_new_head_rows():
    stream = digits("task")
    model = small_model(stream)
    strategy = LwF(warmup_iterations=20, warmup_lr=0.1)
    train_through(model, strategy, stream, last=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy.before_experience(model, stream[1])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone"))
    rows = after["head.weight"].view(5, 2, -1)
    old_rows = before["head.weight"].view(5, 2, -1)
    assert not torch.equal(rows[1], old_rows[1])
    assert torch.equal(rows[0], old_rows[0]) and torch.equal(rows[2:], old_rows[2:])


def test_alpha_per_experience_scales_the_loss():
    stream = digits("task")
    model = small_model(stream)
    single, listed = LwF(alpha=1.0), LwF(alpha=[9.0, 3.0, 1.0, 1.0, 1.0])
    for strategy in (single, listed):
        train_through(small_model(stream), strategy, stream, last=0)
        strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    assert _loss(listed, model, batch).item() == pytest.approx(3.0 * _loss(single, model, batch).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": [1.0, 1.0]}, "one value per experience"),
        ({"alpha": -1.0}, "non-negative"),
        ({"temperature": 0.0}, "temperature"),
        ({"noise": "salt"}, "noise must be one of"),
        ({"noise": "dropout", "noise_level": 1.5}, "drop probability"),
        ({"feature_distance": "l1"}, "feature_distance must be one of"),
        ({"warmup_iterations": -1}, "warmup_iterations"),
        ({"entropy_weight": float("nan")}, "entropy_weight must be a finite number"),
        ({"feature_weight": "x"}, "feature_weight must be a finite number >= 0"),
    ],
)
def test_invalid_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        LwF(**options).check_stream(digits("task"))


def test_unsupported_scenario_is_a_clear_error():
    class TaskOnly(LwF):
        scenarios = frozenset({"task"})

    with pytest.raises(ValueError, match="does not support the 'class' scenario; it supports: task"):
        TaskOnly().check_stream(digits("class"))


def test_zero_new_classes_puts_zero_teacher_mass_on_the_current_classes():
    stream = digits("class")
    model = small_model(stream)
    strategy = LwF(zero_new_classes=True, temperature=2.0)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    with torch.no_grad():
        teacher = strategy.teacher_.all_logits(batch.x)[:, 0, :4]
    p = torch.softmax(teacher / 2.0, dim=-1)
    log_q = torch.log_softmax(model.all_logits(batch.x)[:, 0, :6] / 2.0, dim=-1)  # classes 0..5 active
    expected = (p * (p.log() - log_q[:, :4])).sum(-1).mean()
    loss = _loss(strategy, model, batch)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert _loss(strategy, model, replace(batch, augmented=True)).item() == pytest.approx(loss.item(), abs=1e-6)
