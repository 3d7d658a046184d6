"""Small streams, models and manual loop steps shared by the strategy tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lifelong_kd import StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.data.stream import Batch, Stream
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.train import TrainingSet, train_experience

FAST = TrainConfig(epochs=2, batch_size=32, lr=0.05, progress=False)


def digits(scenario: str = "task", train_size: int = 100) -> Stream:
    """split-digits (scikit-learn, embedded): 5 experiences of 2 classes."""
    return build_stream("split-digits", StreamOptions(scenario=scenario, train_size=train_size))


def small_model(stream: Stream, seed: int = 0) -> torch.nn.Module:
    seed_everything(seed)
    return build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)


def train_through(model: torch.nn.Module, strategy: Strategy, stream: Stream, last: int, config: TrainConfig = FAST) -> None:
    """Run hooks and training for experiences 0..last (what pipeline.run does, minus evaluation)."""
    strategy.check_stream(stream)
    for experience in stream.experiences[: last + 1]:
        seed_everything(config.seed, experience.index)
        strategy.before_experience(model, experience)
        train_experience(model, strategy, stream, experience, config)
        strategy.after_experience(model, experience)


def first_batch(stream: Stream, index: int, size: int = 16) -> Batch:
    """A deterministic, un-augmented minibatch of experience ``index``."""
    data = TrainingSet([stream[index]], augment=False, generator=torch.Generator().manual_seed(1))
    return next(data.batches(size, 1))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Small MLPs are several times faster on one thread than on oversubscribed cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
