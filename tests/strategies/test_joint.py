"""Joint: the loop trains experience k on experiences 0..k."""

from __future__ import annotations

from lifelong_kd.strategies.joint import Joint
from lifelong_kd.train import TrainingSet
from tests.strategies.helpers import digits


def test_trains_on_every_experience_seen_so_far():
    stream = digits("class")
    assert Joint().train_experiences(stream, stream[0]) == [stream[0]]
    assert Joint().train_experiences(stream, stream[3]) == list(stream.experiences[:4])


def test_training_set_covers_the_union_with_each_sample_labelled_by_its_experience():
    import torch

    stream = digits("class")
    data = TrainingSet(Joint().train_experiences(stream, stream[2]), augment=False, generator=torch.Generator().manual_seed(0))
    assert data.size == sum(len(e.train) for e in stream.experiences[:3])
    batch = data.batch(torch.arange(data.size))
    assert set(batch.y.tolist()) == set(range(6))
