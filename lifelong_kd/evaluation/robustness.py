"""Robustness under distribution shift: accuracy on corrupted copies of every test set.

The corrupted test sets do not depend on the model, so they are built once per stream
(a seeded subsample of each experience's test set, every corruption x severity applied
to whole batches in image space, before permutation and normalisation) and kept as
``uint8`` images, like the published MNIST-C / CIFAR-10-C files. Each experience's clean
subsample and all its corrupted copies are stacked, so an evaluation is one batched
inference pass per experience, in large batches.

Devices and processes: the corruptions are applied on the device of the model evaluated
first (the sets are then kept in host memory); each evaluation moves its batches to the
model's device. With several processes each evaluates its contiguous part of every stacked
set and the correct counts are summed (:mod:`lifelong_kd.distributed`); every process builds
the whole sets (once per run), so they are the same as in a single process.

Definitions (``docs/metrics.md``): mean corrupted accuracy = mean over corruption,
severity and the experiences seen so far; relative robustness = mean corrupted accuracy
/ clean accuracy on the same samples; corrupted forgetting = the forgetting formula
applied to the corrupted accuracy matrix (row t = mean corrupted accuracy per experience
after training experience t).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from lifelong_kd import distributed
from lifelong_kd.data import shifts
from lifelong_kd.data.stream import Experience, Stream
from lifelong_kd.models import inference_batch_size


@dataclass(frozen=True)
class CorruptedSet:
    """Test images of one experience (clean and corrupted copies stacked, see build_corrupted_sets).

    Attributes:
        x: Images in [0, 255] (N, C, H, W) uint8, before permutation/normalisation.
        y: Targets (N,).
    """

    x: Tensor
    y: Tensor


def test_subsample(experience: Experience, samples: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded subsample of the test split as images in [0, 1] and targets."""
    test = experience.test
    index = torch.arange(len(test))
    if samples is not None and samples < len(test):
        generator = torch.Generator().manual_seed(seed * 1009 + experience.index)
        index = torch.randperm(len(test), generator=generator)[:samples].sort().values
    return experience.transform.to_unit(test.x[index]), test.y[index]


def build_corrupted_sets(
    stream: Stream, names: Sequence[str], severities: Sequence[int], samples: int | None, seed: int = 0, device: torch.device | None = None
) -> list[CorruptedSet]:
    """Per experience, its clean test subsample followed by every corrupted copy, stacked.

    Args:
        stream: The stream whose test sets are corrupted.
        names: Corruption names.
        severities: Severities in 1..5.
        samples: Test samples per experience (None: all).
        seed: Seed of the subsample and of the random corruptions.
        device: Where the corruptions run (None: the CPU); the sets are returned in host memory.

    Returns:
        One :class:`CorruptedSet` per experience whose ``x`` holds ``1 + len(names) *
        len(severities)`` blocks of the same samples: clean first, then each
        (name, severity) in order, so one batched inference pass covers them all.
    """
    stacked = []
    for experience in stream:
        images, targets = test_subsample(experience, samples, seed)
        images = images.to(device) if device is not None else images
        blocks = [images]
        for name in names:
            for severity in severities:
                blocks.append(shifts.corrupt(images, name, severity, seed=seed * 7 + experience.index))
        x = torch.cat([_to_uint8(block) for block in blocks]).cpu()
        stacked.append(CorruptedSet(x, targets.repeat(len(blocks))))
    return stacked


def _to_uint8(images: Tensor) -> Tensor:
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


@torch.inference_mode()
def block_accuracies(model: nn.Module, experience: Experience, data: CorruptedSet, n_blocks: int, batch_size: int) -> list[float]:
    """Accuracy of ``model`` on each of the ``n_blocks`` equal blocks of a stacked image set.

    Runs on the model's device; with several processes each process evaluates its part of
    the rows and the correct counts per block are summed over processes.
    """
    device = distributed.module_device(model)
    rows = distributed.shard(len(data.y))
    hits = []
    for start in range(rows.start, rows.stop, batch_size):
        stop = min(start + batch_size, rows.stop)
        x = experience.transform.finish(distributed.to_device(data.x[start:stop], device).float() / 255.0)
        hits.append((model(x, experience.task_id).argmax(1) == data.y[start:stop].to(device)).cpu())
    per_block = len(data.y) // n_blocks
    block = torch.arange(rows.start, rows.stop) // per_block
    found = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    counts = torch.zeros(n_blocks, dtype=torch.long).index_add_(0, block, found.long())
    return (distributed.all_reduce_sum(counts).float() / per_block).tolist()


def summarize_row(
    clean: Sequence[float], grid: dict[str, dict[int, list[float]]], step: int
) -> dict[str, object]:
    """Headline robustness numbers of one evaluation, over the experiences seen (j <= step)."""
    seen = slice(0, step + 1)
    full = np.array([list(by_severity.values()) for by_severity in grid.values()])  # (corruption, severity, T)
    cube = full[:, :, seen]
    clean_mean = float(np.mean(clean[seen]))
    corrupted_mean = float(cube.mean()) if cube.size else float("nan")
    return {
        "clean_accuracy": clean_mean,
        "mean_corrupted_accuracy": corrupted_mean,
        "relative_robustness": corrupted_mean / clean_mean if clean_mean > 0 else float("nan"),
        "per_corruption": {name: float(cube[i].mean()) for i, name in enumerate(grid)},
        "per_severity": {str(s): float(cube[:, k].mean()) for k, s in enumerate(next(iter(grid.values()), {}))},
        "corrupted_row": full.mean(axis=(0, 1)).tolist() if full.size else [],
    }


class RobustnessProbe:
    """Evaluates a model on the corrupted test sets of a stream (built lazily, once).

    Args:
        names: Corruption names (see ``lifelong_kd.data.shifts``).
        severities: Severities in 1..5.
        samples: Test samples per experience (None: all). 256 keeps the default suite's
            cost below one experience of permuted-MNIST training.
        seed: Seed of the subsample and of the random corruptions.
        batch_size: Inference batch size (None: :func:`lifelong_kd.models.inference_batch_size`).
    """

    def __init__(
        self, names: Sequence[str], severities: Sequence[int] = (1, 2, 3, 4, 5), samples: int | None = 256, seed: int = 0, batch_size: int | None = None
    ) -> None:
        self.names = tuple(names)
        self.severities = tuple(severities)
        self.samples = samples
        self.seed = seed
        self.batch_size = batch_size
        self._sets: list[CorruptedSet] | None = None
        self._stream_name: str | None = None
        for severity in self.severities:
            if severity not in shifts.SEVERITIES:
                raise ValueError(f"Severities must be in 1..5, got {severity}.")

    def _ensure(self, stream: Stream, device: torch.device | None = None) -> list[CorruptedSet]:
        if self._sets is None or self._stream_name != stream.name:
            self._sets = build_corrupted_sets(stream, self.names, self.severities, self.samples, self.seed, device)
            self._stream_name = stream.name
        return self._sets

    def evaluate(self, model: nn.Module, stream: Stream, step: int) -> dict[str, object]:
        """Clean and corrupted accuracy per experience, plus the summary over seen experiences."""
        stacked = self._ensure(stream, distributed.module_device(model))
        n_blocks = 1 + len(self.names) * len(self.severities)
        batch_size = self.batch_size or inference_batch_size(model, stream.input_shape)
        per_experience = [block_accuracies(model, e, stacked[e.index], n_blocks, batch_size) for e in stream]
        clean = [blocks[0] for blocks in per_experience]
        grid: dict[str, dict[int, list[float]]] = {name: {} for name in self.names}
        for k, (name, severity) in enumerate((n, s) for n in self.names for s in self.severities):
            grid[name][severity] = [blocks[1 + k] for blocks in per_experience]
        summary = summarize_row(clean, grid, step)
        return {"clean": clean, "grid": {n: {str(s): v for s, v in by.items()} for n, by in grid.items()}, **summary}


# ``--robustness-every auto`` keeps the robustness suite within this fraction of training ...
ROBUSTNESS_BUDGET = 0.10
# ... counting one inference as this fraction of one training sample (forward + backward + step at
# batch 128 against an inference batch; measured 0.30 for mlp:400,400 and 0.34 for resnet18:20,
# issue 18, benchmarks/eval_cost.py).
INFERENCE_COST = 1 / 3


def suite_inferences(stream: Stream, blocks: int, samples: int | None) -> int:
    """Inferences of one robustness evaluation: every experience's subsample, clean and under each corruption x severity (``blocks`` in all)."""
    return sum(blocks * (len(e.test) if samples is None else min(samples, len(e.test))) for e in stream)


def evaluations(every: int | None, n_experiences: int) -> int:
    """How many times the suite runs along a stream with schedule ``every`` (the final experience always)."""
    if every is None:
        return 1
    return n_experiences // every + (1 if n_experiences % every else 0)


def default_every(stream: Stream, blocks: int, samples: int | None, training_samples: int) -> int | None:
    """The schedule ``--robustness-every auto`` gives: as often as :data:`ROBUSTNESS_BUDGET` of training allows.

    The smallest K (1: after every experience) whose evaluations cost at most
    ``ROBUSTNESS_BUDGET * training_samples`` training-sample equivalents (an inference counted as
    :data:`INFERENCE_COST` of one); None (the final experience only) when even that is over budget.

    Args:
        stream: The stream.
        blocks: Stacked blocks per experience: 1 clean + corruptions x severities.
        samples: Test samples per experience in the suite (None: all).
        training_samples: Samples the whole run trains on (every experience, every epoch).
    """
    per_evaluation = INFERENCE_COST * suite_inferences(stream, blocks, samples)
    allowed = int(ROBUSTNESS_BUDGET * training_samples // max(per_evaluation, 1e-9))
    for every in range(1, len(stream)):
        if evaluations(every, len(stream)) <= allowed:
            return every
    return None
