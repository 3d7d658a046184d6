"""MultiTeacher: every earlier snapshot teaches; 'each' vs 'average'; equals LwF with one teacher."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lifelong_kd.losses import kd_kl
from lifelong_kd.strategies.distill import Knowledge, average_targets
from lifelong_kd.strategies.lwf import LwF
from lifelong_kd.strategies.multi_teacher import MultiTeacher
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through


def _loss(strategy, model, batch):
    return strategy.loss(model, batch, forward(model, batch))


@pytest.mark.parametrize("combine", ["each", "average"])
def test_with_one_earlier_experience_it_equals_lwf(combine):
    stream = digits("class")
    model = small_model(stream)
    multi, lwf = MultiTeacher(combine=combine), LwF()
    train_through(model, multi, stream, last=0)
    lwf.check_stream(stream)
    lwf.after_experience(model, stream[0])
    for strategy in (multi, lwf):
        strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    assert _loss(multi, model, batch).item() == pytest.approx(_loss(lwf, model, batch).item(), abs=1e-7)


def test_first_experience_adds_zero():
    stream = digits("task")
    model = small_model(stream)
    strategy = MultiTeacher()
    strategy.check_stream(stream)
    strategy.before_experience(model, stream[0])
    assert _loss(strategy, model, first_batch(stream, 0)).item() == 0.0


@pytest.mark.parametrize("scenario", ["task", "class", "domain"])
def test_each_is_the_mean_of_per_teacher_kd_on_what_each_knew(scenario):
    stream = digits(scenario)
    model = small_model(stream)
    strategy = MultiTeacher(combine="each", alpha=2.0)
    train_through(model, strategy, stream, last=2)
    assert len(strategy.teachers_) == 3
    strategy.before_experience(model, stream[3])
    batch = first_batch(stream, 3)
    student = model.all_logits(batch.x)
    terms = []
    for j, teacher in enumerate(strategy.teachers_):
        with torch.no_grad():
            target = teacher.all_logits(batch.x)
        if scenario == "task":
            terms.append(kd_kl(student[:, : j + 1], target[:, : j + 1], 2.0, False))
        elif scenario == "class":
            n = 2 * (j + 1)
            terms.append(kd_kl(student[:, 0, :n], target[:, 0, :n], 2.0, False))
        else:
            terms.append(kd_kl(student[:, 0], target[:, 0], 2.0, False))
    expected = 2.0 * torch.stack(terms).mean()
    assert _loss(strategy, model, batch).item() == pytest.approx(expected.item(), abs=1e-6)


@pytest.mark.parametrize("combine", ["each", "average"])
def test_cached_and_online_teachers_give_the_same_loss(combine):
    stream = digits("task")
    model = small_model(stream)
    strategy = MultiTeacher(combine=combine)
    train_through(model, strategy, stream, last=2)
    strategy.before_experience(model, stream[3])
    batch = first_batch(stream, 3)
    cached = _loss(strategy, model, batch)
    assert len(strategy.cache_) == (3 if combine == "each" else 1)
    online = _loss(strategy, model, replace(batch, augmented=True))
    assert cached.item() == pytest.approx(online.item(), abs=1e-6)


def test_average_targets_average_each_output_over_the_teachers_that_know_it():
    old = torch.tensor([[1.0, 2.0]])
    new = torch.tensor([[3.0, 4.0, 5.0, 6.0]])
    assert torch.equal(average_targets([old, new], "class"), torch.tensor([[2.0, 3.0, 5.0, 6.0]]))
    heads_old = torch.ones(1, 1, 2)
    heads_new = torch.full((1, 2, 2), 3.0)
    expected = torch.tensor([[[2.0, 2.0], [3.0, 3.0]]])
    assert torch.equal(average_targets([heads_old, heads_new], "task"), expected)
    assert torch.equal(average_targets([old, old + 2], "domain"), old + 1)


def test_knowledge_selects_old_heads_seen_classes_or_the_shared_head():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4)
    assert Knowledge("task", heads=(0, 2)).select(logits).shape == (2, 2, 4)
    assert torch.equal(Knowledge("class", n_classes=3).select(logits[:, :1]), logits[:, 0, :3])
    assert torch.equal(Knowledge("domain").select(logits[:, :1]), logits[:, 0])


def test_invalid_combine_is_a_clear_error():
    with pytest.raises(ValueError, match="combine must be one of each, average"):
        MultiTeacher(combine="max").check_stream(digits("task"))


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True))


def test_max_teachers_keeps_the_most_recent_snapshots_and_distils_from_them_alone():
    stream = digits("task")
    model, earlier_model = small_model(stream), small_model(stream)
    capped, earlier = MultiTeacher(max_teachers=2), MultiTeacher(max_teachers=2)
    train_through(model, capped, stream, last=3)
    train_through(earlier_model, earlier, stream, last=2)  # the same run, stopped one experience sooner
    assert len(capped.teachers_) == len(capped.knowledge_) == 2
    assert _same_weights(capped.teachers_[0], earlier.teachers_[-1])  # the snapshot after experience 2
    assert _same_weights(capped.teachers_[1], model)  # the snapshot after experience 3
    capped.before_experience(model, stream[4])
    batch = first_batch(stream, 4)
    student = model.all_logits(batch.x)
    with torch.no_grad():
        targets = [teacher.all_logits(batch.x) for teacher in capped.teachers_]
    expected = torch.stack([kd_kl(student[:, :known], target[:, :known], 2.0, False) for known, target in zip((3, 4), targets)]).mean()
    assert _loss(capped, model, batch).item() == pytest.approx(expected.item(), abs=1e-6)


def test_capped_teachers_are_what_the_checkpoint_holds_and_restores():
    stream = digits("task")
    model = small_model(stream)
    capped = MultiTeacher(max_teachers=1)
    train_through(model, capped, stream, last=2)
    state = capped.state_dict()
    assert len(state["teachers"]) == len(state["knowledge"]) == 1
    restored = MultiTeacher(max_teachers=1)
    restored.check_stream(stream)
    restored.load_state_dict(state)
    batch = first_batch(stream, 3)
    for strategy in (capped, restored):
        strategy.before_experience(model, stream[3])
    assert _loss(restored, model, batch).item() == pytest.approx(_loss(capped, model, batch).item(), abs=1e-7)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_invalid_max_teachers_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="max_teachers must be a positive number of teachers"):
        MultiTeacher(max_teachers=bad)
