"""The one training loop: minibatches of cross-entropy plus the strategy's extra loss."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from lifelong_kd.data.augment import random_crop_flip
from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.strategies.base import ModelOutput, Strategy

OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; finished experiences are kept on disk."""


@dataclass(frozen=True)
class TrainConfig:
    """How each experience is trained.

    Attributes:
        epochs: Passes over each experience's training set (ignored when ``iterations`` is set).
        iterations: Fixed number of minibatches per experience (van de Ven et al. 2019 use
            2,000 on split-MNIST); None trains for ``epochs``.
        batch_size: Samples per minibatch (128 in van de Ven et al. 2019 and Avalanche examples).
        lr: Learning rate.
        optimizer: ``"sgd"`` or ``"adam"``; a fresh optimiser per experience, as Avalanche does.
        momentum: SGD momentum (0.9, the common choice for split-CIFAR).
        weight_decay: L2 penalty (0: none of the reproduced papers use it).
        augment: Random crop (padding 4) and horizontal flip per sample, for colour images.
        seed: Seed of model initialisation, shuffling and augmentation.
        eval_batch_size: Samples per batch at evaluation; None (default) picks one per model
            (:func:`lifelong_kd.models.inference_batch_size`: 1024 for MLPs, 32-64 for ConvNets).
        progress: Show a progress bar with ETA.
        precision: ``"fp32"`` (default) or ``"bf16"``: matmuls and convolutions of training,
            teacher forwards and evaluation run in bfloat16 under ``torch.autocast`` (weights,
            optimiser state and losses stay float32). About 2x faster on CPUs with AVX512-BF16
            or AMX; much slower on CPUs without them.
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = False
    seed: int = 0
    eval_batch_size: int | None = None
    progress: bool = True
    precision: str = "fp32"

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.iterations is None or self.iterations >= 1, f"iterations must be at least 1, got {self.iterations}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, f"eval_batch_size must be at least 1, got {self.eval_batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be non-negative, got {self.weight_decay}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")


def autocast(precision: str) -> AbstractContextManager:
    """The mixed-precision context of a run: bfloat16 autocast on the CPU for ``"bf16"``, else nothing.

    Wraps everything that runs the model in a step of the stream (strategy hooks, the
    minibatch loop and evaluation), so teacher caches and accuracies use the same precision
    as training.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    # No weight-cast cache: the region spans many optimiser steps, and a cached bfloat16 copy
    # of a weight would go stale after the first one.
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """A fresh optimiser over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


class TrainingSet:
    """Concatenation of experiences' training splits, sampled by global index.

    ``Batch.index`` is the position in this concatenation (for one experience, the
    position in its training split).
    """

    def __init__(self, experiences: list[Experience], augment: bool, generator: torch.Generator) -> None:
        self.experiences = experiences
        self.augment = augment
        self.generator = generator
        sizes = [len(e.train) for e in experiences]
        self.offsets = torch.tensor([0, *sizes]).cumsum(0)
        self.size = int(self.offsets[-1])

    def _part(self, experience: Experience, local: Tensor) -> tuple[Tensor, Tensor]:
        x = experience.train.x[local]
        if self.augment:
            x = random_crop_flip(x, self.generator)
        return experience.transform(x), experience.train.y[local]

    def batch(self, index: Tensor) -> Batch:
        """Gather, augment and transform the samples at global positions ``index``."""
        if len(self.experiences) == 1:
            experience = self.experiences[0]
            x, y = self._part(experience, index)
            task_id = torch.full_like(y, experience.task_id)
            return Batch(x, y, task_id, index, self.augment)
        owner = torch.bucketize(index, self.offsets[1:], right=True)
        xs, ys, tasks, order = [], [], [], []
        for part, experience in enumerate(self.experiences):
            mask = owner == part
            if mask.any():
                x, y = self._part(experience, index[mask] - self.offsets[part])
                xs.append(x), ys.append(y), order.append(index[mask])
                tasks.append(torch.full_like(y, experience.task_id))
        return Batch(torch.cat(xs), torch.cat(ys), torch.cat(tasks), torch.cat(order), self.augment)

    def batches(self, batch_size: int, n_batches: int) -> Iterator[Batch]:
        """``n_batches`` shuffled minibatches, reshuffling after each pass."""
        produced = 0
        while produced < n_batches:
            permutation = torch.randperm(self.size, generator=self.generator)
            for start in range(0, self.size, batch_size):
                if produced == n_batches:
                    return
                yield self.batch(permutation[start : start + batch_size])
                produced += 1


def n_batches(size: int, config: TrainConfig) -> int:
    """Number of minibatches one experience trains for."""
    if config.iterations is not None:
        return config.iterations
    return config.epochs * math.ceil(size / config.batch_size)


def forward(model: nn.Module, batch: Batch) -> ModelOutput:
    """One forward pass giving features, every head's logits and each sample's own logits."""
    features = model.features(batch.x)
    all_logits = model.heads(features)
    return ModelOutput(model.select(all_logits, batch.task_id), all_logits, features)


def train_step(model: nn.Module, strategy: Strategy, optimizer: torch.optim.Optimizer, batch: Batch) -> float:
    """Cross-entropy + strategy loss, backward, optimiser step; returns the loss.

    The phases are labelled ``lkd.forward``, ``lkd.loss``, ``lkd.backward`` and
    ``lkd.optimizer`` for ``torch.profiler`` (``benchmarks/profile_runs.py`` reads them).
    """
    with record_function("lkd.forward"):
        output = forward(model, strategy.transform_batch(batch))
    with record_function("lkd.loss"):
        loss = F.cross_entropy(output.logits, batch.y) + strategy.loss(model, batch, output)
        value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss became {value} (non-finite); lower --lr or check the strategy's weights. "
            "Every finished experience is kept in the run folder."
        )
    with record_function("lkd.backward"):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    with record_function("lkd.optimizer"):
        optimizer.step()
    return value


def train_experience(
    model: nn.Module,
    strategy: Strategy,
    stream: Stream,
    experience: Experience,
    config: TrainConfig,
) -> dict[str, float]:
    """Train ``model`` on one experience (the hooks are the caller's).

    Returns:
        ``{"train_seconds", "samples", "mean_loss"}``.
    """
    generator = torch.Generator().manual_seed(config.seed * 7919 + experience.index)
    data = TrainingSet(strategy.train_experiences(stream, experience), config.augment, generator)
    total = n_batches(data.size, config)
    optimizer = make_optimizer(model, config)
    model.train()
    start, samples, loss_sum = time.perf_counter(), 0, 0.0
    bar = _progress(total, f"experience {experience.index + 1}/{len(stream)}", config.progress)
    for batch in _labelled(data.batches(config.batch_size, total), "lkd.data"):
        loss_sum += train_step(model, strategy, optimizer, batch)
        samples += len(batch.y)
        bar.update(1)
    bar.close()
    return {"train_seconds": time.perf_counter() - start, "samples": samples, "mean_loss": loss_sum / max(total, 1)}


def _labelled(batches: Iterator[Batch], label: str) -> Iterator[Batch]:
    """``batches``, each one's gathering and transforms labelled ``label`` for ``torch.profiler``."""
    while True:
        with record_function(label):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def _progress(total: int, description: str, enabled: bool):  # noqa: ANN202 (tqdm type)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="batch", disable=not enabled, leave=False, dynamic_ncols=True)
