"""Compress: the student's size, the three loss terms, caches, the hint projection, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd.losses import feature_distance, kd_kl
from lifelong_kd.models import build_model
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.teacher import freeze_copy
from lifelong_kd.train import forward, train_experience
from tests.strategies.helpers import FAST, digits, first_batch, small_model, train_through


def _loss(strategy: Compress, model, batch):
    return strategy.loss(model, batch, forward(model, batch))


def _big_teacher(stream):
    torch.manual_seed(123)
    return freeze_copy(build_model("mlp:64,64", stream.input_shape, stream.n_heads, stream.n_outputs))


@pytest.mark.parametrize(
    ("spec", "input_shape", "heads", "outputs", "expected"),
    [
        # 784*100+100 + 100*100+100 + 100*(5*10)+50 (permuted-MNIST, 5 tasks of 10 classes)
        ("mlp:100,100", (1, 28, 28), 5, 10, 93_650),
        # 784*1000+1000 + 1000*1000+1000 + 1000*50+50: the benchmark's teacher (19.6x larger)
        ("mlp:1000,1000", (1, 28, 28), 5, 10, 1_836_050),
    ],
)
def test_student_parameter_count_matches_its_spec(spec, input_shape, heads, outputs, expected):
    model = build_model(spec, input_shape, heads, outputs)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_convnet_student_is_over_ten_times_smaller_than_the_benchmark_teacher():
    count = lambda spec: sum(p.numel() for p in build_model(spec, (3, 32, 32), 5, 2).parameters())  # noqa: E731
    assert count("convnet:32") / count("convnet:8") > 10


def test_adds_exactly_zero_on_first_experience_without_a_teacher():
    stream = digits("task")
    model = small_model(stream)
    strategy = Compress(hint_weight=1.0)
    strategy.check_stream(stream)
    strategy.before_experience(model, stream[0])
    loss = _loss(strategy, model, first_batch(stream, 0))
    assert loss.item() == 0.0 and loss.shape == ()


@pytest.mark.parametrize("scenario", ["task", "class", "domain"])
def test_loss_is_teacher_kd_plus_self_kd_plus_extra_label_weight(scenario):
    stream = digits(scenario)
    model = small_model(stream)
    strategy = Compress(temperature=3.0, teacher_weight=0.7, self_weight=0.4, label_weight=1.5, scale_t2=False)
    train_through(model, strategy, stream, last=1)
    big = _big_teacher(stream)
    strategy.set_teacher(big)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    student = model.all_logits(batch.x)
    with torch.no_grad():
        teacher, snapshot = big.all_logits(batch.x), strategy.snapshot_.all_logits(batch.x)
    if scenario == "task":  # the big teacher on heads 0..2 (current included), the snapshot on 0..1
        pick_teacher, pick_old = (lambda t: t[:, [0, 1, 2]]), (lambda t: t[:, [0, 1]])
    elif scenario == "class":  # classes seen: 6 with the current experience, 4 before
        pick_teacher, pick_old = (lambda t: t[:, 0, :6]), (lambda t: t[:, 0, :4])
    else:
        pick_teacher = pick_old = lambda t: t[:, 0]
    own = model.select(student, batch.task_id)
    expected = (
        0.5 * F.cross_entropy(own, batch.y)
        + 0.7 * kd_kl(pick_teacher(student), pick_teacher(teacher), 3.0, scale_t2=False)
        + 0.4 * kd_kl(pick_old(student), pick_old(snapshot), 3.0, scale_t2=False)
    )
    assert _loss(strategy, model, batch).item() == pytest.approx(expected.item(), abs=1e-5)


def test_cached_and_online_teachers_give_the_same_loss():
    stream = digits("task")
    model = small_model(stream)
    strategy = Compress(hint_weight=0.5)
    train_through(model, strategy, stream, last=1)
    strategy.set_teacher(_big_teacher(stream))
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    cached = _loss(strategy, model, batch)
    assert set(strategy.cache_) == {"teacher", "snapshot"}
    online = _loss(strategy, model, batch.__class__(batch.x, batch.y, batch.task_id, batch.index, True))
    assert cached.item() == pytest.approx(online.item(), abs=1e-6)


def test_hint_projection_maps_student_width_to_teacher_width_and_learns():
    stream = digits("task")
    model = small_model(stream)  # mlp:32
    strategy = Compress(hint_weight=1.0, hint_lr=0.1)
    strategy.set_teacher(_big_teacher(stream))  # mlp:64,64
    train_through(model, strategy, stream, last=0)
    assert strategy.projection_.weight.shape == (64, 32)
    before = strategy.projection_.weight.detach().clone()
    strategy.before_experience(model, stream[1])
    train_experience(model, strategy, stream, stream[1], FAST)
    assert not torch.equal(before, strategy.projection_.weight)
    strategy.projection_.zero_grad(set_to_none=True)  # the last step's gradient would be applied first
    batch = first_batch(stream, 1)
    output = forward(model, batch)
    with torch.no_grad():
        target = strategy.big_teacher_.features(batch.x)
    hint = feature_distance(strategy.projection_(output.features), target, "mse")
    kd = kd_kl(output.all_logits[:, [0, 1]], strategy.big_teacher_.all_logits(batch.x)[:, [0, 1]], 2.0, True)
    self_kd = kd_kl(output.all_logits[:, [0]], strategy.snapshot_.all_logits(batch.x)[:, [0]], 2.0, True)
    strategy.cache_ = {}
    assert _loss(strategy, model, batch).item() == pytest.approx((hint + kd + self_kd).item(), abs=1e-5)


def test_teacher_must_be_frozen():
    stream = digits("task")
    with pytest.raises(ValueError, match="freeze_copy"):
        Compress().set_teacher(small_model(stream))


@pytest.mark.parametrize("option", ["teacher_weight", "self_weight", "label_weight", "hint_weight", "hint_lr"])
def test_rejects_negative_weights(option):
    with pytest.raises(ValueError, match=option):
        Compress(**{option: -1.0}).check_stream(digits("task"))


def test_state_dict_round_trip_gives_the_same_loss():
    stream = digits("task")
    model = small_model(stream)
    strategy = Compress(hint_weight=0.5)
    strategy.set_teacher(_big_teacher(stream))
    train_through(model, strategy, stream, last=1)
    restored = Compress(hint_weight=0.5)
    restored.check_stream(stream)
    restored.load_state_dict(strategy.state_dict())
    for s in (strategy, restored):
        s.set_teacher(_big_teacher(stream))
        s.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    assert _loss(restored, model, batch).item() == pytest.approx(_loss(strategy, model, batch).item(), abs=1e-6)


def test_options_are_the_constructor_arguments():
    options = Compress(teacher_weight=2.0).options()
    assert options["teacher_weight"] == 2.0 and "big_teacher_" not in options and "cache_" not in options


def test_teacher_heads_current_distils_only_the_new_tasks_head():
    stream = digits("task")
    model = small_model(stream)
    strategy = Compress(teacher_heads="current", self_weight=0.0)
    train_through(model, strategy, stream, last=1)
    big = _big_teacher(stream)
    strategy.set_teacher(big)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    with torch.no_grad():
        teacher = big.all_logits(batch.x)[:, [2]]
    expected = kd_kl(model.all_logits(batch.x)[:, [2]], teacher, 2.0, scale_t2=True)
    assert _loss(strategy, model, batch).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="teacher_heads"):
        Compress(teacher_heads="old").check_stream(stream)
