"""Replay memory: a fixed budget of stored samples and the policies that choose them.

A :class:`ReplayMemory` holds at most ``capacity`` samples exactly as the stream stores
them (``uint8`` images, labels, task ids, the index of the experience each came from,
and named per-sample extras such as DER's logits); strategies turn them into model
inputs when they replay them. Three selection policies:

* ``"reservoir"`` (Vitter 1985, Algorithm R; the memory of ER, Chaudhry et al. 2019,
  and DER, Buzzega et al. 2020): samples are offered one at a time as they stream past
  (:meth:`ReplayMemory.add`); after ``n`` offers every offered sample is in the memory
  with probability ``capacity / n``, whatever the order of the stream.
* ``"class_balanced"`` random (the memory of GDumb, Prabhu et al. 2020, and of
  rehearsal baselines in Chaudhry et al. 2019): after each experience
  (:meth:`ReplayMemory.update_groups`) every group (an experience's class) keeps
  ``capacity // n_groups`` samples: a random subset for a new group, the first ones kept
  so far for an old group.
* ``"herding"`` (Rebuffi et al. 2017, iCaRL, Algorithms 4 and 5): like class-balanced,
  but a new group's samples are ordered by :func:`herding_order`, which greedily picks
  the sample that keeps the mean of the chosen features closest to the group's mean
  feature; shrinking keeps the first (most representative) ones.

Every random choice takes an explicit ``torch.Generator``, so a strategy that reseeds its
generator per experience gets the same memory on every run and after a resume, and
processes that offer the same samples with generators in the same state (data-parallel
training, :mod:`lifelong_kd.strategies.rehearsal`) hold the same memory. The memory lives
in host memory whatever device the samples come from (the strategies move what they replay
to the model's device); its state (:meth:`ReplayMemory.state_dict`) is CPU tensors and
plain values only, so checkpoints load with ``torch.load(weights_only=True)`` anywhere.

This module imports only torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

POLICIES = ("reservoir", "class_balanced", "herding")


@dataclass(frozen=True)
class Stored:
    """Samples read from a memory, as stored.

    Attributes:
        x: Stored inputs (R, ...), the dtype the stream stores (usually uint8).
        y: Labels (R,) int64.
        task_id: Task ids (R,) int64.
        experience: Index of the experience each sample came from (R,) int64.
        slot: Position of each sample in the memory (R,) int64.
        extras: Named per-sample values (R, ...), e.g. ``"logits"`` for DER.
    """

    x: Tensor
    y: Tensor
    task_id: Tensor
    experience: Tensor
    slot: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    def select(self, rows: slice | Tensor) -> Stored:
        """The samples at ``rows`` (a slice or indices into these samples)."""
        extras = {name: value[rows] for name, value in self.extras.items()}
        return Stored(self.x[rows], self.y[rows], self.task_id[rows], self.experience[rows], self.slot[rows], extras)


def herding_order(features: Tensor, count: int) -> Tensor:
    r"""Indices of ``count`` samples chosen by herding (Rebuffi et al. 2017, Algorithm 4).

    With ``mu`` the mean of ``features``, the k-th choice (1-based) is

    .. math::
        p_k = \arg\min_{x \notin \{p_1..p_{k-1}\}} \Big\| \mu - \frac{1}{k}\Big(f(x) + \sum_{j<k} f(p_j)\Big) \Big\|_2

    so every prefix of the returned order is the greedy best approximation of ``mu`` by a
    mean of that many samples. A sample is chosen at most once (as in iCaRL's and
    mammoth's code); ties go to the lower index. iCaRL passes L2-normalised features.

    Args:
        features: Features of one group's samples (N, D).
        count: Number of samples to choose (at most N are returned).

    Returns:
        Indices into ``features`` (min(count, N),) int64, in choice order.
    """
    features = features.double()
    mean = features.mean(0)
    running = torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool)
    chosen: list[int] = []
    for k in range(1, min(count, len(features)) + 1):
        distance = (mean - (running + features) / k).norm(dim=1)
        distance[~available] = float("inf")
        index = int(distance.argmin())
        chosen.append(index)
        running += features[index]
        available[index] = False
    return torch.tensor(chosen, dtype=torch.long)


def _rank_in_group(keys: Tensor) -> Tensor:
    """Position of each row among the earlier rows with the same key (0 for the first)."""
    order = torch.sort(keys, stable=True).indices
    ordered = keys[order]
    positions = torch.arange(len(keys))
    starts = torch.ones(len(keys), dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group_start = torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), 0).values
    rank = torch.empty_like(positions)
    rank[order] = positions - group_start
    return rank


def _group_keys(experience: Tensor, y: Tensor) -> Tensor:
    """One integer per (experience, label) pair."""
    return experience * (int(y.max()) + 1 if len(y) else 1) + y


class ReplayMemory:
    """A fixed budget of stored samples with a named selection policy.

    Args:
        capacity: Maximum number of samples kept (the buffer size).
        policy: ``"reservoir"`` (fill online with :meth:`add`), ``"class_balanced"`` or
            ``"herding"`` (fill after each experience with :meth:`update_groups`).

    Attributes:
        x_: Stored inputs (N, ...) or None while empty.
        y_: Labels (N,); ``task_id_``, ``experience_`` likewise.
        extras_: Named per-sample values (N, ...).
        seen_: Samples offered to :meth:`add` so far (reservoir).
    """

    def __init__(self, capacity: int, policy: str = "reservoir") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"buffer_size must be a positive integer (samples kept in memory), got {capacity!r}.")
        if policy not in POLICIES:
            raise ValueError(f"memory policy must be one of {', '.join(POLICIES)}, got {policy!r}.")
        self.capacity = capacity
        self.policy = policy
        self.x_: Tensor | None = None
        self.y_ = torch.zeros(0, dtype=torch.long)
        self.task_id_ = torch.zeros(0, dtype=torch.long)
        self.experience_ = torch.zeros(0, dtype=torch.long)
        self.extras_: dict[str, Tensor] = {}
        self.seen_ = 0

    def __len__(self) -> int:
        return len(self.y_)

    @property
    def nbytes(self) -> int:
        """Bytes of everything stored: inputs, labels, task ids, experience indices, extras."""
        tensors = [self.y_, self.task_id_, self.experience_, *self.extras_.values()]
        tensors += [self.x_] if self.x_ is not None else []
        return sum(t.numel() * t.element_size() for t in tensors)

    def classes(self) -> Tensor:
        """The distinct labels in memory, sorted."""
        return torch.unique(self.y_)

    # ------------------------------------------------------------------ filling

    def add(
        self,
        x: Tensor,
        y: Tensor,
        task_id: Tensor,
        experience: int,
        generator: torch.Generator,
        extras: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Offer a batch to the reservoir (Vitter 1985, Algorithm R), samples in order.

        The ``n``-th sample offered overall (1-based) is stored while the memory is not
        full; afterwards it replaces slot ``j`` for ``j`` drawn uniformly from ``0..n-1``
        when ``j < capacity``, and is dropped otherwise. Two samples of one batch drawn
        to the same slot leave the later one, as offering them one by one would.

        Args:
            x: Inputs as the stream stores them (B, ...).
            y: Labels (B,).
            task_id: Task ids (B,).
            experience: Index of the experience the batch belongs to.
            generator: Source of the random slots.
            extras: Named per-sample values (B, ...) stored with the samples.

        Returns:
            The slot of each sample (B,), -1 for samples not stored.
        """
        self._require("reservoir", "add")
        count = len(y)
        slots = torch.full((count,), -1, dtype=torch.long)
        free = max(0, min(self.capacity - self.seen_, count))
        slots[:free] = torch.arange(self.seen_, self.seen_ + free)
        if count > free:
            seen_before = self.seen_ + torch.arange(free, count, dtype=torch.float64)
            draws = (torch.rand(count - free, generator=generator, dtype=torch.float64) * (seen_before + 1)).floor().long()
            slots[free:] = torch.where(draws < self.capacity, draws, torch.full_like(draws, -1))
        self.seen_ += count
        last_writer = {slot: row for row, slot in enumerate(slots.tolist()) if slot >= 0}
        if last_writer:
            rows = torch.tensor(list(last_writer.values()))
            targets = torch.tensor(list(last_writer.keys()))
            experiences = torch.full((len(rows),), experience, dtype=torch.long)
            self._write(targets, x[rows], y[rows], task_id[rows], experiences, {k: v[rows] for k, v in (extras or {}).items()})
        return slots

    def update_groups(
        self,
        x: Tensor,
        y: Tensor,
        task_id: Tensor,
        experience: int,
        generator: torch.Generator | None = None,
        features: Tensor | None = None,
        extras: Mapping[str, Tensor] | None = None,
    ) -> None:
        """Add an experience's groups and rebalance (``class_balanced`` and ``herding``).

        A group is one label of one experience. With ``G`` groups after adding this
        experience's, every group gets ``capacity // G`` slots: old groups keep their first
        ones (their priority order), each new group gets its first ``capacity // G``
        samples in the policy's order: a random permutation (``class_balanced``) or
        :func:`herding_order` of ``features`` (``herding``, Rebuffi et al. 2017,
        Algorithms 4-5). The rest of the budget (``capacity mod G``) stays unused, as in iCaRL.

        Args:
            x: The experience's training inputs as stored (N, ...).
            y: Labels (N,).
            task_id: Task ids (N,).
            experience: Index of the experience.
            generator: Source of the random order (``class_balanced``).
            features: Features of the samples (N, D) (``herding``).
            extras: Named per-sample values (N, ...) stored with the chosen samples.
        """
        if self.policy == "reservoir":
            raise ValueError("update_groups is for the class_balanced and herding policies; a reservoir memory fills with add().")
        if self.policy == "herding" and (features is None or len(features) != len(y)):
            raise ValueError("The herding policy needs the features of every offered sample (features=..., one row per sample).")
        if self.policy == "class_balanced" and generator is None:
            raise ValueError("The class_balanced policy needs a generator (its random choice must be reproducible).")
        old_groups = int(torch.unique(_group_keys(self.experience_, self.y_)).numel()) if len(self) else 0
        labels = torch.unique(y)
        quota = self.capacity // (old_groups + len(labels))
        self._shrink(quota)
        chosen = [self._choose(torch.nonzero(y == label).flatten(), quota, generator, features) for label in labels]
        rows = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.long)
        experiences = torch.full((len(rows),), experience, dtype=torch.long)
        slots = torch.arange(len(self), len(self) + len(rows))
        self._write(slots, x[rows], y[rows], task_id[rows], experiences, {k: v[rows] for k, v in (extras or {}).items()})
        self.seen_ += len(y)

    def _choose(self, candidates: Tensor, quota: int, generator: torch.Generator | None, features: Tensor | None) -> Tensor:
        """The first ``quota`` of ``candidates`` in the policy's order."""
        if self.policy == "herding":
            return candidates[herding_order(features[candidates], quota)]
        return candidates[torch.randperm(len(candidates), generator=generator)[:quota]]

    def _shrink(self, quota: int) -> None:
        """Keep the first ``quota`` samples of every stored group (in stored order)."""
        if len(self) == 0:
            return
        keep = torch.nonzero(_rank_in_group(_group_keys(self.experience_, self.y_)) < quota).flatten()
        self.x_ = self.x_[keep]
        self.y_, self.task_id_, self.experience_ = self.y_[keep], self.task_id_[keep], self.experience_[keep]
        self.extras_ = {name: value[keep] for name, value in self.extras_.items()}

    def _write(
        self, slots: Tensor, x: Tensor, y: Tensor, task_id: Tensor, experience: Tensor, extras: Mapping[str, Tensor]
    ) -> None:
        """Store rows at ``slots``, growing the tensors when a slot is past the end."""
        if len(slots) == 0:
            return
        if len(self) and set(extras) != set(self.extras_):
            raise ValueError(f"Every sample needs the same extras: memory holds {sorted(self.extras_)}, got {sorted(extras)}.")
        grow = max(int(slots.max()) + 1 - len(self), 0)
        if self.x_ is None:  # host memory, whatever device the samples come from
            self.x_ = torch.zeros((0, *x.shape[1:]), dtype=x.dtype)
            self.extras_ = {name: torch.zeros((0, *value.shape[1:]), dtype=value.dtype) for name, value in extras.items()}
        self._check_shape("inputs", self.x_, x)
        for name, value in extras.items():
            self._check_shape(f"extra {name!r}", self.extras_[name], value)
        self.x_ = _grown(self.x_, grow)
        self.y_, self.task_id_, self.experience_ = _grown(self.y_, grow), _grown(self.task_id_, grow), _grown(self.experience_, grow)
        self.extras_ = {name: _grown(value, grow) for name, value in self.extras_.items()}
        self.x_[slots] = x.detach().cpu()
        self.y_[slots], self.task_id_[slots], self.experience_[slots] = y.long().cpu(), task_id.long().cpu(), experience
        for name, value in extras.items():
            self.extras_[name][slots] = value.detach().to(self.extras_[name].dtype).cpu()

    @staticmethod
    def _check_shape(what: str, stored: Tensor, new: Tensor) -> None:
        if stored.shape[1:] != new.shape[1:] or stored.dtype != new.dtype:
            hint = " For DER's logits: use a model whose output width does not grow during the stream." if what != "inputs" else ""
            raise ValueError(
                f"The memory stores {what} of shape {tuple(stored.shape[1:])} and dtype {stored.dtype}; got "
                f"{tuple(new.shape[1:])} {new.dtype}. Every stored sample must look the same.{hint}"
            )

    def _require(self, policy: str, method: str) -> None:
        if self.policy != policy:
            raise ValueError(f"{method}() fills a {policy} memory; this memory's policy is {self.policy!r} (use update_groups()).")

    # ------------------------------------------------------------------ reading

    def sample(self, size: int, generator: torch.Generator, candidates: Tensor | None = None) -> Stored:
        """Up to ``size`` distinct stored samples, uniformly at random (without replacement).

        Args:
            size: Samples wanted.
            generator: Source of the draw.
            candidates: Slots to draw among (None: every stored sample), e.g. BiC's training part.
        """
        candidates = torch.arange(len(self)) if candidates is None else candidates
        return self.read(candidates[torch.randperm(len(candidates), generator=generator)[:size]])

    def last_of_each_group(self, count: int) -> Tensor:
        """Mask (N,) of the last ``count`` stored samples of every group (label of an experience), in stored order."""
        keys = _group_keys(self.experience_, self.y_)
        _, group, sizes = torch.unique(keys, return_inverse=True, return_counts=True)
        return _rank_in_group(keys) >= sizes[group] - count

    def read(self, slots: Tensor | None = None) -> Stored:
        """The samples at ``slots`` (None: every stored sample, in slot order)."""
        if self.x_ is None:
            raise ValueError("The memory is empty: nothing to read.")
        slots = torch.arange(len(self)) if slots is None else slots
        extras = {name: value[slots] for name, value in self.extras_.items()}
        return Stored(self.x_[slots], self.y_[slots], self.task_id_[slots], self.experience_[slots], slots, extras)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values (loads with ``torch.load(weights_only=True)``)."""
        return {
            "capacity": self.capacity,
            "policy": self.policy,
            "seen": self.seen_,
            "x": self.x_,
            "y": self.y_,
            "task_id": self.task_id_,
            "experience": self.experience_,
            "extras": dict(self.extras_),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the capacity and policy must match this memory's."""
        if state["capacity"] != self.capacity or state["policy"] != self.policy:
            raise ValueError(
                f"The saved memory has buffer_size {state['capacity']} and policy {state['policy']!r}; this one "
                f"{self.capacity} and {self.policy!r}. Resume with the options the run was started with."
            )
        self.seen_ = int(state["seen"])
        self.x_ = state["x"]
        self.y_, self.task_id_, self.experience_ = state["y"], state["task_id"], state["experience"]
        self.extras_ = dict(state["extras"])


def _grown(tensor: Tensor, rows: int) -> Tensor:
    """``tensor`` with ``rows`` zero rows appended (itself when ``rows`` is 0)."""
    if rows == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((rows, *tensor.shape[1:]))])
