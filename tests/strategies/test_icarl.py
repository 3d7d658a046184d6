"""iCaRL: the BCE/distillation loss, herding exemplars, class means, the nearest-mean classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifelong_kd.memory import herding_order
from lifelong_kd.models import Classifier
from lifelong_kd.strategies.icarl import UNKNOWN_CLASS_SCORE, ICaRL, NearestMeanOfExemplars
from lifelong_kd.strategies.rehearsal import training_features, union_share
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through


def test_nearest_mean_classifier_on_hand_made_features():
    model = Classifier(nn.Flatten(), feature_dim=2, n_outputs=4)  # features are the inputs themselves
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # class 2 has no exemplars
    classifier = NearestMeanOfExemplars(model, means, width=4)
    x = torch.tensor([[2.0, 0.1], [0.1, 3.0], [-1.0, 0.2]]).view(3, 2, 1, 1)
    scores = classifier(x)
    assert scores.shape == (3, 4)
    assert scores.argmax(1).tolist() == [0, 1, 1]
    features = F.normalize(x.flatten(1), dim=1)
    assert scores[:, :2] == pytest.approx(-((features[:, None] - means[None, :2]) ** 2).sum(-1), abs=1e-6)
    assert (scores[:, 2:] == UNKNOWN_CLASS_SCORE).all()


def test_first_experience_loss_is_bce_on_the_seen_classes_replacing_cross_entropy():
    stream = digits("class")
    model = small_model(stream)
    strategy = ICaRL()
    strategy.check_stream(stream)
    strategy.before_experience(model, stream[0])
    assert strategy.evaluation_model(model) is model  # no exemplars yet
    batch = first_batch(stream, 0)
    output = forward(model, batch)
    total = F.cross_entropy(output.logits, batch.y) + strategy.loss(model, batch, output)
    expected = F.binary_cross_entropy_with_logits(output.logits[:, :2], F.one_hot(batch.y, 10)[:, :2].float())
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_later_loss_distils_old_classes_with_the_teachers_sigmoids_on_batch_and_exemplars():
    stream = digits("class")
    model = small_model(stream)
    strategy = ICaRL(buffer_size=40, replay_batch_size=6)
    train_through(model, strategy, stream, last=1)
    strategy.before_experience(model, stream[2])
    batch = first_batch(stream, 2)
    with torch.no_grad():
        model.head.weight.add_(0.05 * torch.randn_like(model.head.weight))  # move away from the teacher
    output = forward(model, batch)
    generator = torch.Generator()
    generator.set_state(strategy.rehearsal_.generator.get_state())
    stored = strategy.memory_.sample(6, generator)
    x = torch.cat([batch.x, strategy.rehearsal_.inputs(stored)])
    labels = torch.cat([batch.y, stored.y])
    targets = F.one_hot(labels, 10)[:, :6].float()
    targets[:, :4] = torch.sigmoid(strategy.teacher_(x)[:, :4])
    expected = F.binary_cross_entropy_with_logits(model(x)[:, :6], targets)
    total = F.cross_entropy(output.logits, batch.y) + strategy.loss(model, batch, output)
    assert set(stored.y.tolist()) <= {0, 1, 2, 3}
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_default_replay_size_is_the_exemplars_share_of_the_union():
    stream = digits("class")
    model = small_model(stream)
    strategy = ICaRL(buffer_size=60)
    train_through(model, strategy, stream, last=0)
    strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1, size=32)
    assert union_share(None, batch, stream[1], len(strategy.memory_)) == round(32 * 60 / (100 + 60))


def test_exemplars_are_chosen_by_herding_and_shrink_to_equal_shares():
    stream = digits("class")
    model = small_model(stream)
    strategy = ICaRL(buffer_size=40)
    train_through(model, strategy, stream, last=0)
    memory = strategy.memory_
    features = training_features(model, stream[0])
    for label in (0, 1):
        rows = torch.nonzero(stream[0].train.y == label).flatten()
        chosen = rows[herding_order(features[rows], 20)]
        assert torch.equal(memory.x_[memory.y_ == label], stream[0].train.x[chosen])
    first_class = memory.x_[memory.y_ == 0].clone()
    strategy.before_experience(model, stream[1])
    strategy.after_experience(model, stream[1])
    assert torch.bincount(memory.y_).tolist() == [10, 10, 10, 10]
    assert torch.equal(memory.x_[memory.y_ == 0], first_class[:10])


def test_class_means_are_normalised_means_of_normalised_exemplar_features():
    stream = digits("class")
    model = small_model(stream)
    strategy = ICaRL(buffer_size=40)
    train_through(model, strategy, stream, last=1)
    model.eval()
    with torch.no_grad():
        features = F.normalize(model.features(stream[0].transform(strategy.memory_.x_)), dim=1)
    for label in range(4):
        expected = F.normalize(features[strategy.memory_.y_ == label].mean(0), dim=0)
        assert strategy.means_[label] == pytest.approx(expected, abs=1e-5)
    classifier = strategy.evaluation_model(model)
    assert isinstance(classifier, NearestMeanOfExemplars)
    assert classifier(stream[0].transform(stream[0].test.x[:5])).shape == (5, 10)
