"""Stream, Experience and Batch: the data contracts every other module reads.

Data lives in memory as tensors. Images are usually kept as ``uint8`` (N, C, H, W)
and turned into normalised floats one batch at a time by a :class:`BatchTransform`,
so a permuted-MNIST stream of ten experiences shares one copy of the pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

SCENARIOS = ("task", "domain", "class")


@dataclass(frozen=True)
class BatchTransform:
    """Turns a batch of stored images into model inputs.

    Applied to whole batches: ``uint8`` (B, C, H, W) -> float32 (B, C, H, W) in [0, 1]
    when ``scale`` is set (:meth:`to_unit`), then the pixels of each image are permuted
    when ``permutation`` is given (permuted-MNIST) and normalised with ``mean``/``std``
    per channel (:meth:`finish`).

    Attributes:
        mean: Per-channel mean subtracted after scaling.
        std: Per-channel standard deviation divided after scaling.
        permutation: Optional permutation of the H*W pixel positions (shared by channels).
        scale: Divide by 255 (set for uint8 storage).
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    permutation: Tensor | None = None
    scale: bool = True

    def to_unit(self, x: Tensor) -> Tensor:
        """Stored batch -> float32 images in [0, 1], before permutation and normalisation.

        Corruptions (``data.shifts``) operate on this view, in image space.
        """
        x = x.float()
        return x / 255.0 if self.scale else x

    def finish(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (B, C, H, W) -> model input: permute pixels, then normalise."""
        if self.permutation is not None:
            x = x.flatten(2)[:, :, self.permutation].view_as(x)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def __call__(self, x: Tensor) -> Tensor:
        return self.finish(self.to_unit(x))


@dataclass(frozen=True)
class Split:
    """One data split held as tensors.

    Attributes:
        x: Stored inputs (N, C, H, W), usually uint8.
        y: Targets (N,) int64: local labels in task/domain scenarios, global in class.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"Split has {len(self.x)} inputs but {len(self.y)} targets.")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Experience:
    """One step of a stream.

    Attributes:
        index: Position in the stream (0-based).
        task_id: Task label (equals ``index`` in the task scenario, 0 otherwise).
        train: Training split.
        test: Test split.
        classes: Global class ids; local label ``i`` stands for ``classes[i]``.
        transform: Batch transform from stored tensors to model inputs.
    """

    index: int
    task_id: int
    train: Split
    test: Split
    classes: tuple[int, ...]
    transform: BatchTransform = field(default_factory=BatchTransform)


@dataclass(frozen=True)
class Stream:
    """A sequence of experiences in one scenario.

    Attributes:
        name: Benchmark name, e.g. ``"split-mnist"``.
        scenario: ``"task"`` (task id given, one head per task), ``"domain"``
            (shared head, no task id) or ``"class"`` (one growing label space).
        experiences: The experiences in training order.
        n_classes: Number of global classes over the whole stream.
        input_shape: Shape of one model input (C, H, W).
    """

    name: str
    scenario: str
    experiences: tuple[Experience, ...]
    n_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"Unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}.")

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, index: int) -> Experience:
        return self.experiences[index]

    @property
    def n_heads(self) -> int:
        """Output heads a model needs: one per experience in the task scenario."""
        return len(self.experiences) if self.scenario == "task" else 1

    @property
    def n_outputs(self) -> int:
        """Output units per head."""
        if self.scenario == "class":
            return self.n_classes
        return max(len(e.classes) for e in self.experiences)


@dataclass(frozen=True)
class Batch:
    """A minibatch handed to the model and the strategy.

    Attributes:
        x: Model inputs (B, C, H, W), float32, transformed.
        y: Targets (B,) int64.
        task_id: Task ids (B,) int64.
        index: Position of each sample in the training set being iterated (B,) int64,
            so a strategy can look up cached per-sample values.
        augmented: Whether ``x`` is a random augmented view (cached teacher outputs
            then do not apply).
    """

    x: Tensor
    y: Tensor
    task_id: Tensor
    index: Tensor
    augmented: bool = False


def model_inputs(
    experience: Experience, split: str = "test", batch_size: int = 1024, device: torch.device | str | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield transformed ``(x, y)`` batches of one split, in order, without shuffling.

    Args:
        experience: The experience to read.
        split: ``"train"`` or ``"test"``.
        batch_size: Samples per batch.
        device: Where the batches go (None: where the data is); stored samples move there
            first and are transformed there.
    """
    data = experience.train if split == "train" else experience.test
    for start in range(0, len(data), batch_size):
        stop = start + batch_size
        x, y = data.x[start:stop], data.y[start:stop]
        if device is not None:
            x, y = x.to(device), y.to(device)
        yield experience.transform(x), y
