"""The parts of the training loss: cross-entropy and each strategy term, averaged like the loss curve.

Every training step the loop hands :class:`LossTermCurve` the step's named parts (detached
tensors: ``cross_entropy`` and the terms the strategy recorded with
:meth:`~lifelong_kd.strategies.base.Strategy.sum_terms`). They are summed on the device where
they were computed and read back once per window of the loss curve
(:func:`lifelong_kd.logs.loss_window` iterations): one host transfer per point, none per step.

This module imports nothing else from the package but :mod:`lifelong_kd.logs`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from lifelong_kd.logs import loss_window


class LossTermCurve:
    """Window sums of each named loss term over one experience (windows as :class:`lifelong_kd.logs.LossCurve`).

    A term missing from a step (e.g. LwF's distillation before there is a teacher) counts as 0
    in that step; a term never seen in a window is absent from it.

    Args:
        total: Iterations the experience trains for.
    """

    def __init__(self, total: int) -> None:
        self.window = loss_window(total)
        self.total = total
        self.steps = 0
        self.closed: list[dict[str, float]] = []  # window sums, read back once per window
        self._open: dict[str, Tensor] = {}

    def add(self, terms: Mapping[str, Tensor], weight: float = 1.0) -> None:
        """One more iteration's terms (scalar tensors), multiplied by ``weight`` (a process's share of a global minibatch)."""
        for name, value in terms.items():
            part = value.detach().float() if weight == 1.0 else value.detach().float() * weight
            current = self._open.get(name)
            self._open[name] = part if current is None else current + part
        self.steps += 1
        if self.steps % self.window == 0 or self.steps == self.total:
            self._close()

    def _close(self) -> None:
        """Read the open window's sums back to the host (one transfer for every term)."""
        names = list(self._open)
        values = torch.stack([self._open[name] for name in names]).tolist() if names else []
        self.closed.append(dict(zip(names, values)))
        self._open = {}

    def names(self) -> list[str]:
        """Every term seen, in the order first seen."""
        seen: dict[str, None] = {}
        for window in self.closed:
            seen.update(dict.fromkeys(window))
        return list(seen)

    def sums(self, names: list[str]) -> Tensor:
        """The window sums as a (windows, terms) float64 tensor in ``names`` order (to sum over processes)."""
        return torch.tensor([[window.get(name, 0.0) for name in names] for window in self.closed], dtype=torch.float64).reshape(len(self.closed), len(names))

    def record(self, reduce: Callable[[Tensor], Tensor] | None = None) -> tuple[dict[str, float], dict[str, list[list[float]]]]:
        """The experience's mean of each term and each term's curve.

        Args:
            reduce: Applied to :meth:`sums` before averaging (e.g. the mean over processes); None: as is.

        Returns:
            ``({name: mean over the experience's iterations}, {name: [[iteration, mean over the window], ...]})``,
            iterations counted from 1 within the experience, one point per window at its last iteration.
        """
        names = self.names()
        sums = self.sums(names)
        sums = reduce(sums) if reduce is not None else sums
        ends = [min((index + 1) * self.window, self.steps) for index in range(len(self.closed))]
        lengths = [end - start for start, end in zip([0, *ends[:-1]], ends)]
        means = {name: float(sums[:, column].sum()) / max(self.steps, 1) for column, name in enumerate(names)}
        curves = {name: [[end, float(sums[row, column]) / length] for row, (end, length) in enumerate(zip(ends, lengths))] for column, name in enumerate(names)}
        return means, curves
