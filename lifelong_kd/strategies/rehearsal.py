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

Devices: the memory stays in host memory (``uint8`` like the stream); replayed samples move
to the model's device as stored (``uint8``, through page-locked memory to a GPU) and are
transformed there, as the loop's minibatches are; herding features, class means and BiC's
held-out logits are computed on the model's device.

Several processes (data-parallel training, :mod:`lifelong_kd.distributed`): each process
trains on its rows of every global minibatch. :func:`locate` tells a strategy where its rows
sit (one small all-gather per step); then

* the reservoir is offered the whole global minibatch: the positions, labels, task ids and
  extras (DER's logits) of every process's rows are gathered (:meth:`Share.gather`), so every
  process stores the same samples with the same generator;
* every process draws the same global replayed minibatch (sized from the global minibatch)
  and trains on its part of it (:meth:`Share.part`), with its terms weighted
  (:meth:`Share.weigh`) so that the averaged gradient is the gradient of one process's
  step with the same global minibatch;
* herding features are computed sharded and gathered; the rest (BiC's held-out logits and
  bias correction, iCaRL's class means) is small and computed alike by every process.

The memories are therefore identical on every process, and a step equals the single-process
step up to float rounding (batch-norm statistics inside a step excepted, as for the loop).

The hooks the strategies share are two mixins, listed before ``Strategy`` (each one level
deep): :class:`ReplayHooks` (all six: the memory, option checks, reseeding, the memory's
state; ER's and DER's replay step) and :class:`ExemplarHooks` (iCaRL, LUCIR, BiC, listed
before :class:`ReplayHooks`: the frozen snapshot and what it knew, herding after each
experience, exemplars drawn as a share of the union of data and memory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from lifelong_kd import distributed
from lifelong_kd.data.augment import random_crop_flip
from lifelong_kd.data.stream import Batch, Experience, Split, Stream, model_inputs
from lifelong_kd.memory import ReplayMemory, Stored
from lifelong_kd.models import inference_batch_size
from lifelong_kd.strategies.base import ModelOutput
from lifelong_kd.strategies.distill import Knowledge, rebuild_teacher, require_experience, require_scenario, teacher_state
from lifelong_kd.teacher import freeze_copy

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
class Share:
    """Where this process's rows sit in the global minibatch (one process: all of it).

    The loop gives process ``p`` of ``P`` the contiguous rows ``start..stop-1`` of a global
    minibatch of ``B = size`` rows and multiplies its loss by ``w_p = rows * P / B``;
    ``DistributedDataParallel`` averages the gradients, so a term ``T_p`` of process ``p``
    enters the update as ``(rows / B) grad T_p`` (:func:`lifelong_kd.distributed.shard_rows`).
    A process whose part is empty (a last minibatch smaller than ``P``) trains on a stand-in
    row with weight 0: here ``start == stop``.

    Attributes:
        size: Rows ``B`` of the global minibatch.
        start: This process's first row.
        stop: One past its last row.
        processes: Number of processes ``P``.
        totals: The counts given to :func:`locate`, summed over the processes with rows.
    """

    size: int
    start: int
    stop: int
    processes: int = 1
    totals: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        """Rows of the global minibatch this process trains on (0 for a stand-in row)."""
        return self.stop - self.start

    def part(self, total: int) -> slice:
        """This process's rows of a batch of ``total`` rows every process draws alike (a replayed minibatch).

        Split in proportion to the current minibatch: rows ``total * start // B`` to
        ``total * stop // B``; the same split as the current minibatch's when ``total == B``,
        everything in one process, nothing for a process without rows.
        """
        return slice(total * self.start // self.size, total * self.stop // self.size)

    def scale(self, local: int, total: int) -> float:
        r"""The factor that makes this process's mean over its ``local`` rows its part of a mean over ``total`` rows.

        A term of the single-process loss that is a mean over ``total`` rows (of the
        minibatch, of a replayed minibatch or of their union), :math:`\frac{1}{total}\sum_i l_i`,
        is recovered by the weighted average over processes when process ``p`` contributes
        :math:`T_p = \frac{B}{rows \cdot total}\sum_{i \in p} l_i = \mathrm{mean}_{i \in p}(l_i)
        \cdot \frac{local \cdot B}{total \cdot rows}`. Exactly 1 in one process; 0 for a
        process without rows or without local rows.
        """
        if local == total and self.rows == self.size:
            return 1.0
        if local == 0 or self.rows == 0:
            return 0.0
        return local * self.size / (total * self.rows)

    def weigh(self, term: Tensor, local: int, total: int) -> Tensor:
        """``term``, a mean over this process's ``local`` rows, times :meth:`scale` (untouched when the factor is 1)."""
        factor = self.scale(local, total)
        return term if factor == 1.0 else term * factor

    def gather(self, part: Tensor) -> Tensor:
        """Every process's rows of ``part`` (this process's rows, (rows, ...)), in minibatch order, on every process.

        One process: ``part`` itself. A stand-in row is left out.
        """
        if self.processes == 1:
            return part
        bounds = [distributed.shard_bounds(self.size, index, self.processes) for index in range(self.processes)]
        longest = max(1, *(stop - start for start, stop in bounds))
        padded = part.new_zeros((longest, *part.shape[1:]))
        padded[: min(len(part), longest)] = part[:longest]
        gathered = distributed.all_gather_rows(padded, longest * self.processes).view(self.processes, longest, *part.shape[1:])
        return torch.cat([gathered[index, : stop - start] for index, (start, stop) in enumerate(bounds)])


def locate(batch: Batch, counts: Sequence[int] = ()) -> Share:
    """Where ``batch``, this process's rows of the global minibatch, sits in it (one all-gather with several processes).

    Each process sends its row count and its first row's position; a process given a
    stand-in row (the minibatch's row 0, weight 0) is recognised by the repeated position.

    Args:
        batch: This process's minibatch from the loop (``Batch.index`` = positions).
        counts: Integers each process adds up over its rows (e.g. LUCIR's old-class
            samples), summed over the processes with rows into :attr:`Share.totals`.

    Raises:
        ValueError: Several processes and a batch without positions (only our loop runs
            data-parallel).
    """
    rows = len(batch.y)
    processes = distributed.world_size()
    if processes == 1:
        return Share(rows, 0, rows, 1, tuple(counts))
    if not has_positions(batch):
        raise ValueError("With several processes a memory strategy needs the loop's minibatches (Batch.index = positions in the "
                         "experience); train with lifelong_kd's loop (pipeline.run), or in one process.")
    header = torch.tensor([[rows, int(batch.index[0]), *counts]], dtype=torch.long)
    table = distributed.all_gather_rows(header, processes)
    sizes = table[:, 0]
    size = int(torch.unique(table[:, 1]).numel()) if bool((sizes == 1).all()) else int(sizes.sum())
    bounds = [distributed.shard_bounds(size, index, processes) for index in range(processes)]
    holding = torch.tensor([stop > start for start, stop in bounds])
    totals = tuple(int(value) for value in table[holding, 2:].sum(0))
    start, stop = bounds[distributed.rank()]
    return Share(size, start, stop, processes, totals)


def gather_samples(share: Share, batch: Batch, extras: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """Positions, labels, task ids and extras of the whole global minibatch, on every process.

    Packed into one float64 tensor for a single all-gather (exact: positions and labels
    below 2**53, float32 extras).

    Returns:
        ``(positions, labels, task_ids, extras)``, each with the global minibatch's rows, on the CPU.
    """
    names = sorted(extras)
    columns = [batch.index.cpu()[:, None], batch.y.detach().cpu()[:, None], batch.task_id.detach().cpu()[:, None]]
    columns += [extras[name].detach().cpu().flatten(1) for name in names]
    widths = [column.shape[1] for column in columns]
    gathered = share.gather(torch.cat([column.double() for column in columns], 1)).split(widths, dim=1)
    index, labels, task_ids = (column[:, 0].long() for column in gathered[:3])
    values = {name: column.to(extras[name].dtype).reshape(-1, *extras[name].shape[1:]) for name, column in zip(names, gathered[3:], strict=True)}
    return index, labels, task_ids, values


@dataclass(frozen=True)
class Replayed:
    """A replayed minibatch: this process's model inputs and what was stored with them, and the whole draw.

    Attributes:
        batch: This process's model inputs, labels and task ids (``index`` = memory slots);
            the whole draw in one process.
        stored: This process's samples as read from the memory (extras such as DER's logits).
        drawn: Every sample drawn (all processes'), as stored.
    """

    batch: Batch
    stored: Stored
    drawn: Stored


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

    def add(self, batch: Batch, experience: Experience, extras: dict[str, Tensor] | None = None, share: Share | None = None) -> None:
        """Offer the batch to a reservoir memory (stored as :func:`stored_inputs` gives it).

        With several processes (``share`` from :func:`locate`) the whole global minibatch is
        offered, gathered from every process, so every memory stays the same.
        """
        if share is None or share.processes == 1:
            self.memory.add(stored_inputs(batch, experience), batch.y, batch.task_id, experience.index, self.generator, extras)
            return
        index, labels, task_ids, values = gather_samples(share, batch, extras or {})
        self.memory.add(experience.train.x[index], labels, task_ids, experience.index, self.generator, values or None)

    def replay(
        self, size: int, augment: bool, device: torch.device | None = None, candidates: Tensor | None = None, share: Share | None = None
    ) -> Replayed:
        """A minibatch of up to ``size`` distinct stored samples, as model inputs.

        Args:
            size: Samples wanted (fewer when the memory holds fewer); with several processes,
                for the whole global minibatch.
            augment: Apply the loop's random crop and flip to the stored images first (our
                loop with ``augment``; see :func:`replay_augmented`).
            device: Device of the returned batch (None: the memory's, the CPU).
            candidates: Memory slots to draw among (None: all).
            share: This process's place in the global minibatch (:func:`locate`): every
                process draws the same samples and crops, and keeps :meth:`Share.part` of
                them. None: all of them.
        """
        drawn = self.memory.sample(size, self.generator, candidates)
        raw = random_crop_flip(drawn.x, self.generator) if augment else drawn.x
        rows = share.part(len(drawn)) if share is not None else slice(0, len(drawn))
        stored = drawn.select(rows)
        x = self._model_inputs(raw[rows], stored.experience, device)
        batch = Batch(x, stored.y.to(device), stored.task_id.to(device), stored.slot, augment)
        return Replayed(batch, stored, drawn)

    def inputs(self, stored: Stored, augment: bool = False, device: torch.device | None = None) -> Tensor:
        """Model inputs of stored samples: each experience's transform on its samples, on ``device`` (None: the CPU)."""
        raw = random_crop_flip(stored.x, self.generator) if augment else stored.x
        return self._model_inputs(raw, stored.experience, device)

    def _model_inputs(self, raw: Tensor, experience: Tensor, device: torch.device | None) -> Tensor:
        """Stored samples ``raw`` moved to ``device`` as stored, then transformed by their experiences' transforms."""
        if device is not None:
            raw = distributed.to_device(raw, device)
        if len(raw) == 0:
            return raw.float()
        parts = {int(e): torch.nonzero(experience == e).flatten().to(raw.device) for e in torch.unique(experience)}
        outputs = {e: self._transform(e)(raw[rows]) for e, rows in parts.items()}
        first = next(iter(outputs.values()))
        x = first.new_empty((len(raw), *first.shape[1:]))
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


def _minibatch_size(minibatch: Batch | Share) -> int:
    """Rows of the (global) minibatch: a :class:`Share`'s ``size``, or a batch's rows."""
    return minibatch.size if isinstance(minibatch, Share) else len(minibatch.y)


def replay_size(requested: int | None, minibatch: Batch | Share) -> int:
    """Samples per replayed minibatch: ``requested``, or (None) the current minibatch's size (global with several processes)."""
    return _minibatch_size(minibatch) if requested is None else requested


def union_share(requested: int | None, minibatch: Batch | Share, experience: Experience, stored: int) -> int:
    """Exemplars per step: ``requested``, or (None) their expected number in a minibatch of the union.

    iCaRL (Rebuffi et al. 2017), LUCIR and BiC train on the experience's data together with
    the exemplars; a minibatch of ``B`` drawn from that union holds on average
    ``B * stored / (len(experience.train) + stored)`` exemplars (rounded, at least 1). ``B``
    is the global minibatch's size (``minibatch``: the batch, or its :class:`Share`).
    """
    if requested is not None:
        return requested
    return max(1, round(_minibatch_size(minibatch) * stored / (len(experience.train) + stored)))


def replayed_term(share: Share, replayed: Replayed, term: Callable[[Batch, Stored], Tensor], like: Tensor) -> Tensor:
    """``term(batch, stored)``, a mean over this process's replayed rows, as its part of the mean over the whole draw.

    Zero (a tensor like ``like``) when this process has no replayed rows; ``term`` is then not called.
    """
    local = len(replayed.batch.y)
    if local == 0 or share.rows == 0:
        return like.new_zeros(())
    return share.weigh(term(replayed.batch, replayed.stored), local, len(replayed.drawn))


def check_replay_batch_size(value: int | None) -> None:
    """Raise ``ValueError`` unless ``value`` is None or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"replay_batch_size must be a positive integer, or None for the current batch's size; got {value!r}.")


@torch.no_grad()
def training_features(model: nn.Module, experience: Experience, normalise: bool = True) -> Tensor:
    """Penultimate features of ``experience``'s whole training split, in order, in eval mode, on the model's device.

    With several processes each computes its part of the split (:func:`lifelong_kd.distributed.shard`)
    and the parts are gathered, so every process holds all of them.

    Args:
        model: A Classifier (``features(x)``).
        experience: Its un-augmented training inputs are used.
        normalise: L2-normalise each feature vector (iCaRL).

    Returns:
        (N, D) float32.
    """
    device = distributed.module_device(model)
    total = len(experience.train)
    part = distributed.shard(total)
    local = replace(experience, train=Split(experience.train.x[part], experience.train.y[part]))
    was_training = model.training
    model.eval()
    try:
        size = inference_batch_size(model, experience.train.x.shape[1:]) if total else 1
        parts = [model.features(x).float() for x, _ in model_inputs(local, "train", size, device)]
        if not parts:  # fewer samples than processes
            parts = [model.features(experience.transform(distributed.to_device(experience.train.x[:0], device))).float()]
        features = distributed.all_gather_rows(torch.cat(parts), total)
    finally:
        model.train(was_training)
    return torch.nn.functional.normalize(features, dim=1) if normalise else features


class ReplayHooks:
    """The hooks every memory strategy shares (a mixin listed before ``Strategy``).

    The strategy's ``__init__`` sets ``replay_batch_size``, ``rehearsal_`` (a :class:`Rehearsal`)
    and ``_experience`` (None); it may override :meth:`check_options`.
    """

    replay_batch_size: int | None
    rehearsal_: Rehearsal
    _experience: Experience | None

    @property
    def memory_(self) -> ReplayMemory:
        """The replay memory."""
        return self.rehearsal_.memory

    def check_stream(self, stream: Stream) -> None:
        """Validate the scenario, the options (:meth:`check_options`, then ``replay_batch_size``); remember the stream's transforms."""
        super().check_stream(stream)  # Strategy's scenario check
        self.check_options()
        check_replay_batch_size(self.replay_batch_size)
        self.rehearsal_.check_stream(stream)

    def check_options(self) -> None:
        """Raise ``ValueError`` for a bad option of the method (none by default)."""

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Reseed the replay generator for this experience."""
        self._experience = experience
        self.rehearsal_.begin(experience)

    def replay_step(self, batch: Batch, output: ModelOutput, term: Callable[[Share], Tensor], extras: dict[str, Tensor] | None = None) -> Tensor:
        """ER's and DER's step: ``term(share)`` once the memory holds samples (zero before); then offer the batch to the memory.

        Args:
            batch: The loop's minibatch.
            output: The model's output on it.
            term: The replay loss, given this process's place in the global minibatch (:func:`locate`).
            extras: Per-sample values stored with the batch (DER's logits).
        """
        experience = require_experience(self._experience)
        share = locate(batch)
        loss = term(share) if len(self.memory_) else output.logits.new_zeros(())
        self.rehearsal_.add(batch, experience, extras, share)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The memory."""
        return {"memory": self.rehearsal_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rehearsal_.load_state_dict(state["memory"])


class ExemplarHooks:
    """What iCaRL, LUCIR and BiC share (a mixin listed before :class:`ReplayHooks` and ``Strategy``).

    A herding memory of exemplars; the frozen snapshot of the model taken after each experience
    (the teacher) and the classes it knew; the number of classes seen including the current
    experience's; the scenario (class-incremental). The strategy's ``__init__`` calls
    :meth:`init_exemplars`.
    """

    memory_: ReplayMemory
    rehearsal_: Rehearsal
    replay_batch_size: int | None

    def init_exemplars(self, buffer_size: int) -> None:
        """Empty state: a herding memory of ``buffer_size`` exemplars, no teacher yet."""
        self.rehearsal_ = Rehearsal(buffer_size, "herding")
        self.teacher_: nn.Module | None = None
        self.knowledge_: Knowledge | None = None
        self.scenario_: str | None = None
        self._experience: Experience | None = None
        self._active_classes = 0
        self._teacher_state: dict[str, Tensor] | None = None

    def _knowledge(self) -> Knowledge:
        return self.knowledge_ or Knowledge(require_scenario(self.scenario_))

    def check_stream(self, stream: Stream) -> None:
        """:meth:`ReplayHooks.check_stream`; record the scenario."""
        super().check_stream(stream)
        self.scenario_ = stream.scenario

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Reseed; count the classes seen with this experience; rebuild a restored teacher."""
        super().before_experience(model, experience)
        self._active_classes = self._knowledge().learn(experience).n_classes
        if self.teacher_ is None and self._teacher_state is not None:
            self.teacher_ = rebuild_teacher(model, self._teacher_state)

    def replay_exemplars(self, batch: Batch, share: Share, experience: Experience, candidates: Tensor | None = None) -> Replayed | None:
        """Exemplars to train on with ``batch``: their share of a minibatch of the union (:func:`union_share`); None without any.

        Args:
            batch: The loop's minibatch.
            share: Its place in the global minibatch (:func:`locate`).
            experience: The data the loop trains on (its size sets the share).
            candidates: Memory slots to draw among (None: all).
        """
        available = len(self.memory_) if candidates is None else len(candidates)
        if available == 0:
            return None
        size = union_share(self.replay_batch_size, share, experience, available)
        return self.rehearsal_.replay(size, replay_augmented(batch), batch.x.device, candidates, share)

    def remember(self, model: nn.Module, experience: Experience) -> None:
        """After an experience: what the model knows, its frozen snapshot as the teacher, the experience's exemplars by herding."""
        self.knowledge_ = self._knowledge().learn(experience)
        self.teacher_, self._teacher_state = freeze_copy(model), None
        features = training_features(model, experience).cpu()
        task_ids = torch.full_like(experience.train.y, experience.task_id)
        self.memory_.update_groups(experience.train.x, experience.train.y, task_ids, experience.index, features=features)

    def state_dict(self) -> dict[str, Any]:
        """Exemplars, teacher weights, what it knew and the scenario."""
        teacher = teacher_state(self.teacher_) if self.teacher_ is not None else self._teacher_state
        knowledge = self.knowledge_.to_state() if self.knowledge_ is not None else None
        return {**super().state_dict(), "teacher": teacher, "knowledge": knowledge, "scenario": self.scenario_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the teacher is rebuilt at the next ``before_experience``."""
        super().load_state_dict(state)
        self.teacher_, self._teacher_state = None, state["teacher"]
        self.knowledge_ = Knowledge.from_state(state["knowledge"]) if state["knowledge"] is not None else None
        self.scenario_ = state["scenario"] or self.scenario_


def with_replayed(model: nn.Module, batch: Batch, output: ModelOutput, replayed: Replayed | None) -> tuple[Tensor, Tensor, Tensor, int]:
    """The minibatch followed by this process's replayed exemplars: logits (N, K), labels (N,), inputs (N, ...); and the number drawn in all."""
    logits, labels, inputs = [output.logits], [batch.y], [batch.x]
    drawn = 0
    if replayed is not None:
        drawn = len(replayed.drawn)
        if len(replayed.batch.y):
            logits.append(model(replayed.batch.x, replayed.batch.task_id))
            labels.append(replayed.batch.y)
            inputs.append(replayed.batch.x)
    return torch.cat(logits), torch.cat(labels), torch.cat(inputs), drawn
