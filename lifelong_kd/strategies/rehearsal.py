"""What the memory strategies (ER, DER, DER++, iCaRL, LUCIR, BiC) share.

:class:`Rehearsal` owns a :class:`~lifelong_kd.memory.ReplayMemory`, the generator every
replayed minibatch and every random memory choice is drawn from, and the batch transform
of each experience, so that stored samples (kept as the stream stores them, e.g. uint8)
become model inputs when they are replayed.

Determinism: :meth:`Rehearsal.begin` (called from ``before_experience``) reseeds the
generator from torch's global generator, which the loop seeds per experience from
``(seed, experience index)``; the memory itself is part of the strategy's state. So a run
resumed after experience k replays the same samples as an uninterrupted one.

Where stored samples come from:

* **Our loop**: ``Batch.index`` is each sample's position in the experience's training
  split, so the memory stores ``experience.train.x[batch.index]``: the stored, un-augmented
  and untransformed sample; replay applies the experience's transform (and the same
  random crop/flip the loop uses when the current batch is augmented).
* **Avalanche** (:class:`~lifelong_kd.integrations.avalanche.LifelongKDPlugin`):
  minibatches carry no positions (``Batch.index`` is -1), so the memory stores ``batch.x``,
  the model inputs Avalanche produced (after Avalanche's own train transforms, which may
  augment); the plugin's experiences have an identity transform, so replay feeds them to
  the model as they are, without further augmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lifelong_kd.data.augment import random_crop_flip
from lifelong_kd.data.stream import Batch, Experience, Stream, model_inputs
from lifelong_kd.memory import ReplayMemory, Stored
from lifelong_kd.models import inference_batch_size

# Upper bound of the per-experience seed drawn from torch's global generator.
SEED_RANGE = 2**62
# Score of output units of classes not seen yet (class scenario): never the arg max.
UNSEEN_CLASS_SCORE = -1e9


class SeenClassOutputs(nn.Module):
    """A class-incremental model's logits over the classes seen so far, optionally bias-corrected.

    Units ``n_seen..K-1`` (classes not seen yet, never trained by strategies that restrict
    their loss to the seen classes: iCaRL, LUCIR, BiC) score :data:`UNSEEN_CLASS_SCORE`;
    units ``start..stop-1`` become ``scale * z + shift`` (BiC's bias correction, Wu et al.
    2019, Eq. 5); every other unit is the model's own logit.

    Args:
        model: The network (``model(x, task_id)`` gives (B, K) logits); shared, not copied.
        n_seen: Number of classes seen so far.
        correction: ``(scale, shift)`` or None.
        start: First corrected unit.
        stop: One past the last corrected unit.
    """

    def __init__(self, model: nn.Module, n_seen: int, correction: Tensor | None = None, start: int = 0, stop: int = 0) -> None:
        super().__init__()
        self.model = model
        self.n_seen = n_seen
        self.start = start
        self.stop = stop
        self.register_buffer("correction", correction if correction is not None else torch.tensor([1.0, 0.0]))

    def forward(self, x: Tensor, task_id: Tensor | int | None = None) -> Tensor:
        """Corrected, masked logits (B, K)."""
        return corrected(self.model(x, task_id).float(), self.correction, self.start, self.stop, self.n_seen)


def corrected(logits: Tensor, correction: Tensor, start: int, stop: int, n_seen: int | None = None) -> Tensor:
    """``logits`` (B, K) with units ``start..stop-1`` mapped to ``scale * z + shift`` and units from ``n_seen`` on masked."""
    scale, shift = correction.to(logits.device)
    units = torch.arange(logits.shape[1], device=logits.device)
    inside = (units >= start) & (units < stop)
    logits = torch.where(inside, logits * scale + shift, logits)
    if n_seen is not None:
        logits = logits.masked_fill(units >= n_seen, UNSEEN_CLASS_SCORE)
    return logits


def has_positions(batch: Batch) -> bool:
    """Whether ``batch.index`` holds positions in the experience's training split (our loop)."""
    return len(batch.index) > 0 and int(batch.index.min()) >= 0


def stored_inputs(batch: Batch, experience: Experience) -> Tensor:
    """The batch's samples as the memory keeps them: the stream's own copy when positions are known, else ``batch.x``."""
    if has_positions(batch):
        return experience.train.x[batch.index.cpu()]
    return batch.x.detach()


@dataclass(frozen=True)
class Replayed:
    """A replayed minibatch: model inputs and what was stored with them.

    Attributes:
        batch: Model inputs, labels and task ids (``index`` = memory slots).
        stored: The samples as read from the memory (extras such as DER's logits).
    """

    batch: Batch
    stored: Stored


class Rehearsal:
    """A replay memory, its generator and the transforms that turn stored samples into inputs.

    Args:
        buffer_size: Samples the memory keeps.
        policy: The memory's selection policy (see :mod:`lifelong_kd.memory`).
    """

    def __init__(self, buffer_size: int, policy: str) -> None:
        self.memory = ReplayMemory(buffer_size, policy)
        self.generator = torch.Generator()
        self.transforms: dict[int, Callable[[Tensor], Tensor]] = {}

    def check_stream(self, stream: Stream) -> None:
        """Remember every experience's batch transform (a resumed run replays earlier experiences' samples)."""
        self.transforms = {experience.index: experience.transform for experience in stream}

    def begin(self, experience: Experience) -> None:
        """Reseed the generator from torch's global generator; record the experience's transform."""
        self.generator.manual_seed(int(torch.randint(SEED_RANGE, (1,))))
        self.transforms[experience.index] = experience.transform

    def add(self, batch: Batch, experience: Experience, extras: dict[str, Tensor] | None = None) -> None:
        """Offer the batch to a reservoir memory (stored as :func:`stored_inputs` gives it)."""
        self.memory.add(stored_inputs(batch, experience), batch.y, batch.task_id, experience.index, self.generator, extras)

    def replay(self, size: int, augment: bool, device: torch.device | None = None, candidates: Tensor | None = None) -> Replayed:
        """A minibatch of up to ``size`` distinct stored samples, as model inputs.

        Args:
            size: Samples wanted (fewer when the memory holds fewer).
            augment: Apply the loop's random crop and flip to the stored images first (our
                loop with ``augment``; see :func:`replay_augmented`).
            device: Device of the returned batch (None: the memory's, the CPU).
            candidates: Memory slots to draw among (None: all).
        """
        stored = self.memory.sample(size, self.generator, candidates)
        x = self.inputs(stored, augment)
        batch = Batch(x.to(device), stored.y.to(device), stored.task_id.to(device), stored.slot, augment)
        return Replayed(batch, stored)

    def inputs(self, stored: Stored, augment: bool = False) -> Tensor:
        """Model inputs of stored samples: each experience's transform on its samples."""
        raw = random_crop_flip(stored.x, self.generator) if augment else stored.x
        parts = {int(e): torch.nonzero(stored.experience == e).flatten() for e in torch.unique(stored.experience)}
        outputs = {e: self._transform(e)(raw[rows]) for e, rows in parts.items()}
        first = next(iter(outputs.values()))
        x = first.new_empty((len(stored), *first.shape[1:]))
        for e, rows in parts.items():
            x[rows] = outputs[e]
        return x

    def _transform(self, experience: int) -> Callable[[Tensor], Tensor]:
        if experience not in self.transforms:
            raise RuntimeError("Call strategy.check_stream(stream) before training (pipeline.run does): replay needs the stream's transforms.")
        return self.transforms[experience]

    def state_dict(self) -> dict[str, Any]:
        """The memory's state (the generator is reseeded at every experience)."""
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.memory.load_state_dict(state)


def replay_augmented(batch: Batch) -> bool:
    """Whether replayed samples get the loop's augmentation: when the current batch is augmented by our loop.

    Samples stored by the Avalanche plugin are model inputs after Avalanche's own
    transforms; they are replayed as stored.
    """
    return batch.augmented and has_positions(batch)


def replay_size(requested: int | None, batch: Batch) -> int:
    """Samples per replayed minibatch: ``requested``, or the current batch's size when None."""
    return len(batch.y) if requested is None else requested


def union_share(requested: int | None, batch: Batch, experience: Experience, stored: int) -> int:
    """Exemplars per step: ``requested``, or (None) their expected number in a minibatch of the union.

    iCaRL (Rebuffi et al. 2017), LUCIR and BiC train on the experience's data together with
    the exemplars; a minibatch of ``B`` drawn from that union holds on average
    ``B * stored / (len(experience.train) + stored)`` exemplars (rounded, at least 1).
    """
    if requested is not None:
        return requested
    return max(1, round(len(batch.y) * stored / (len(experience.train) + stored)))


def check_replay_batch_size(value: int | None) -> None:
    """Raise ``ValueError`` unless ``value`` is None or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"replay_batch_size must be a positive integer, or None for the current batch's size; got {value!r}.")


@torch.no_grad()
def training_features(model: nn.Module, experience: Experience, normalise: bool = True) -> Tensor:
    """Penultimate features of ``experience``'s whole training split, in order, in eval mode.

    Args:
        model: A Classifier (``features(x)``).
        experience: Its un-augmented training inputs are used.
        normalise: L2-normalise each feature vector (iCaRL).

    Returns:
        (N, D) float32.
    """
    was_training = model.training
    model.eval()
    try:
        size = inference_batch_size(model, experience.train.x.shape[1:]) if len(experience.train) else 1
        features = torch.cat([model.features(x).float() for x, _ in model_inputs(experience, "train", size)])
    finally:
        model.train(was_training)
    return torch.nn.functional.normalize(features, dim=1) if normalise else features
