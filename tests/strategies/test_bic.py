"""BiC: held-out validation samples, the stage-1 objective, the bias correction of new classes only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd.losses import soft_cross_entropy
from lifelong_kd.strategies.bic import BiC, fit_bias_correction
from lifelong_kd.strategies.rehearsal import UNSEEN_CLASS_SCORE, SeenClassOutputs, corrected
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through


def test_bias_correction_fixes_inflated_new_class_logits_and_leaves_old_ones_unchanged():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(25)
    logits = torch.randn(100, 4, generator=generator) + 3.0 * F.one_hot(labels, 4)
    logits[:, 2:] += 4.0  # new classes 2, 3 score too high: old samples are predicted as new
    before = (logits.argmax(1) == labels).float().mean()
    correction = fit_bias_correction(logits, labels, 2, 4, epochs=200, lr=0.05, generator=generator)
    fixed = corrected(logits, correction, 2, 4)
    assert torch.equal(fixed[:, :2], logits[:, :2])
    assert correction[1] < -1.0
    assert (fixed.argmax(1) == labels).float().mean() > before + 0.3


def test_default_fit_removes_a_planted_new_class_bias_from_a_one_minibatch_held_out_set():
    # BiC's held-out set: 5 samples of each of 4 classes (buffer 200, 10%): one minibatch per epoch.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(5)
    logits = torch.randn(20, 4, generator=generator) + 3.0 * F.one_hot(labels, 4)
    biased = logits.clone()
    biased[:, 2:] += 4.0  # planted: new classes 2, 3 outscore every old sample's class
    defaults = BiC()
    correction = fit_bias_correction(biased, labels, 2, 4, defaults.bias_epochs, defaults.bias_lr, generator)
    fixed = corrected(biased, correction, 2, 4)
    old = labels < 2
    assert (biased.argmax(1)[old] == labels[old]).float().mean() < 0.2
    assert (fixed.argmax(1)[old] == labels[old]).float().mean() >= 0.8  # old classes recovered
    assert (fixed.argmax(1) == labels).float().mean() >= (logits.argmax(1) == labels).float().mean() - 0.1
    assert correction[1] < -2.5  # most of the +4 removed (Adam at lr 0.001 moves it by at most ~0.25 here)
    assert F.cross_entropy(fixed, labels) < 0.5 * F.cross_entropy(biased, labels)


def test_corrected_outputs_keep_old_logits_correct_the_latest_classes_and_mask_unseen_ones():
    stream = digits("class")
    model = small_model(stream)
    x = stream[0].transform(stream[0].test.x[:6])
    outputs = SeenClassOutputs(model, 6, torch.tensor([0.5, -1.0]), 4, 6)
    with torch.no_grad():
        scores, logits = outputs(x), model(x)
    assert torch.equal(scores[:, :4], logits[:, :4])
    assert scores[:, 4:6] == pytest.approx(0.5 * logits[:, 4:6] - 1.0)
    assert (scores[:, 6:] == UNSEEN_CLASS_SCORE).all()


def test_held_out_samples_are_balanced_and_never_trained_on():
    stream = digits("class")
    model = small_model(stream)
    strategy = BiC(buffer_size=40, validation_fraction=0.1)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    per_class = round(0.1 * 40 / 6)
    assert torch.bincount(stream[2].train.y[strategy._held_out]).tolist()[4:] == [per_class, per_class]
    assert torch.bincount(strategy.memory_.y_[strategy._validation]).tolist() == [per_class] * 4
    [training] = strategy.train_experiences(stream, stream[2])
    assert len(training.train) == len(stream[2].train) - 2 * per_class
    held = stream[2].train.x[strategy._held_out].flatten(1)
    assert not (training.train.x.flatten(1)[:, None] == held[None]).all(-1).any()
    for _ in range(20):  # replay never draws a held-out exemplar
        batch = first_batch(stream, 2)
        strategy.loss(model, batch, forward(model, batch))
    validation = set(torch.nonzero(strategy._validation).flatten().tolist())
    generator = torch.Generator()
    generator.set_state(strategy.rehearsal_.generator.get_state())
    candidates = torch.nonzero(~strategy._validation).flatten()
    assert not set(strategy.memory_.sample(100, generator, candidates).slot.tolist()) & validation


def test_stage_one_objective_on_one_batch():
    stream = digits("class")
    model = small_model(stream)
    strategy = BiC(buffer_size=40, temperature=2.0, replay_batch_size=8, bias_epochs=30, bias_lr=0.01)
    train_through(model, strategy, stream, last=1)
    assert strategy.correction_ is not None and strategy.corrected_range_ == (2, 4)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    with torch.no_grad():
        model.head.weight.add_(0.05 * torch.randn_like(model.head.weight))
    output = forward(model, batch)
    generator = torch.Generator()
    generator.set_state(strategy.rehearsal_.generator.get_state())
    stored = strategy.memory_.sample(8, generator, torch.nonzero(~strategy._validation).flatten())
    x = torch.cat([batch.x, strategy.rehearsal_.inputs(stored)])
    labels = torch.cat([batch.y, stored.y])
    logits = model(x)
    teacher = corrected(strategy.teacher_(x), strategy.correction_, 2, 4)[:, :4]
    weight = 4 / 6
    expected = (1 - weight) * F.cross_entropy(logits[:, :6], labels) + weight * soft_cross_entropy(logits[:, :4], teacher, 2.0)
    total = F.cross_entropy(output.logits, batch.y) + strategy.loss(model, batch, output)
    assert total.item() == pytest.approx(expected.item(), abs=1e-5)


def test_first_experience_has_no_held_out_samples_and_no_correction():
    stream = digits("class")
    model = small_model(stream)
    strategy = BiC(buffer_size=40)
    train_through(model, strategy, stream, last=0)
    assert strategy.correction_ is None
    assert strategy.train_experiences(stream, stream[0]) == [stream[0]]


@pytest.mark.parametrize(("options", "message"), [({"validation_fraction": 1.0}, "validation_fraction must be in"),
                                                   ({"bias_epochs": -1}, "bias_epochs must be"),
                                                   ({"temperature": 0.0}, "temperature must be")])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        BiC(**options).check_stream(digits("class"))
