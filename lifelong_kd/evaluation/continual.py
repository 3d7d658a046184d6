"""Continual evaluation: accuracy on every seen experience every K training iterations, and the stability-gap metrics.

De Lange, van de Ven & Tuytelaars, "Continual evaluation for lifelong learning: identifying
the stability gap", ICLR 2023. Evaluating only at experience boundaries hides a transient
collapse of old experiences' accuracy in the first iterations of a new experience (the
*stability gap*). Continual evaluation measures, every ``K`` iterations (``--eval-every K``)
and at the last iteration of every experience, the accuracy on a fixed, seeded subset of the
test set of every experience seen so far (the current one included), in one batched pass.

The curve is a list of points ``(n, k, [A(E_0, f_n), ..., A(E_k, f_n)])``: global iteration
``n`` (optimiser steps since the start of the stream, counted from 1), the experience ``k``
being trained, the probe accuracies. ``ends[i] = |T_i|`` is the global iteration at which
experience ``i`` finished. The metrics (pure functions below, formulas in ``docs/metrics.md``)
are those of the paper, measured at the end of experience ``k`` (paper: task ``T_{k+1}``):

* min-ACC: the mean over earlier experiences of their minimum accuracy after they were learned;
* WC-ACC: ``1/(k+1)`` of the current experience's final accuracy plus ``k/(k+1)`` of min-ACC;
* WF^w: the largest accuracy drop within any ``w`` consecutive iterations, per experience,
  averaged over the experiences evaluated so far (the authors' code reports w = 10 and 100).

:class:`ContinualEvaluation` keeps the curve (weights-only state: numbers and lists) and
measures one point; the evaluator calls it from the training loop's per-iteration callback.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lifelong_kd import distributed
from lifelong_kd.data.stream import Stream
from lifelong_kd.evaluation.instruments import probe_indices
from lifelong_kd.models import inference_batch_size

# The period the cost benchmark measures and the docs use (De Lange et al. evaluate every
# iteration; every 50 shows the dip on split-MNIST at a few percent of the training time).
DEFAULT_EVAL_EVERY = 50
# Test samples per experience in the probe: a few hundred keeps one pass over every seen
# experience cheap (the paper's code subsamples 1,000 per task).
PROBE_SAMPLES = 256
# Windows of WF^w, in iterations: the two the authors' code reports (WF^10 and WF^100).
WINDOWS = (10, 100)
# Salt of the probe's seeded draw (the drift probe of the instruments uses another).
PROBE_SALT = 2


# ---------------------------------------------------------------------- the metrics


def _series(iterations: Sequence[int], accuracy: Sequence[Sequence[float | None]], experience: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated iterations ``n <= last`` at which ``experience`` was probed, and its accuracies there."""
    points = [(n, row[experience]) for n, row in zip(iterations, accuracy) if n <= last and experience < len(row) and row[experience] is not None]
    points = [(n, a) for n, a in points if not math.isnan(a)]
    return np.array([n for n, _ in points], dtype=np.int64), np.array([a for _, a in points], dtype=np.float64)


def minimum_accuracies(iterations: Sequence[int], accuracy: Sequence[Sequence[float | None]], ends: Sequence[int]) -> list[float]:
    """Each earlier experience's minimum accuracy after it was learned: ``min_{|T_i| < n <= |T_k|} A(E_i, f_n)`` for ``i < k``.

    Args:
        iterations: Evaluated global iterations ``n`` (increasing).
        accuracy: ``accuracy[p][i]``: accuracy on experience ``i`` at ``iterations[p]`` (None/NaN: not probed).
        ends: ``|T_0|, ..., |T_k|``: the global iteration at which each finished experience ended.

    Returns:
        One value per experience ``i < k`` (NaN when it was not evaluated after ``|T_i|``).
    """
    values = []
    for i in range(len(ends) - 1):
        steps, accuracies = _series(iterations, accuracy, i, ends[-1])
        after = accuracies[steps > ends[i]]
        values.append(float(after.min()) if after.size else math.nan)
    return values


def min_accuracy(iterations: Sequence[int], accuracy: Sequence[Sequence[float | None]], ends: Sequence[int]) -> float:
    r"""Average minimum accuracy at the end of experience ``k`` (De Lange et al., ICLR 2023, min-ACC).

    .. math::
        \text{min-ACC}_{T_k} = \frac{1}{k-1} \sum_{i=1}^{k-1} \min_{|T_i| < n \le |T_k|} A(E_i, f_n)

    (tasks numbered from 1 as in the paper: our experiences ``0..k-1`` before the current ``k``).
    NaN after the first experience (no earlier one) or when no minimum is defined.
    """
    return _mean(minimum_accuracies(iterations, accuracy, ends))


def final_accuracy(iterations: Sequence[int], accuracy: Sequence[Sequence[float | None]], ends: Sequence[int]) -> float:
    """``A(E_k, f_{|T_k|})``: the current experience's accuracy at its last iteration (NaN if not evaluated there)."""
    k = len(ends) - 1
    steps, accuracies = _series(iterations, accuracy, k, ends[-1])
    at_end = accuracies[steps == ends[-1]]
    return float(at_end[-1]) if at_end.size else math.nan


def worst_case_accuracy(iterations: Sequence[int], accuracy: Sequence[Sequence[float | None]], ends: Sequence[int]) -> float:
    r"""Worst-case accuracy at the end of experience ``k`` (De Lange et al., ICLR 2023, WC-ACC).

    .. math::
        \text{WC-ACC}_{T_k} = \frac{1}{k} A(E_k, f_{|T_k|}) + \left(1 - \frac{1}{k}\right) \text{min-ACC}_{T_k}

    with ``k`` counting tasks from 1 (``k = len(ends)``). After the first experience it is
    ``A(E_1, f_{|T_1|})``.
    """
    current = final_accuracy(iterations, accuracy, ends)
    k = len(ends)
    if k == 1:
        return current
    return current / k + (1 - 1 / k) * min_accuracy(iterations, accuracy, ends)


def largest_drop(steps: np.ndarray, accuracies: np.ndarray, window: int) -> float:
    """``max(A(m) - A(n))`` over evaluated iterations ``m < n`` with ``n - m < window``, floored at 0; NaN without such a pair."""
    best, paired = 0.0, False
    for later in range(len(steps)):
        earlier = later - 1
        while earlier >= 0 and steps[later] - steps[earlier] < window:
            best, paired = max(best, float(accuracies[earlier] - accuracies[later])), True
            earlier -= 1
    return best if paired else math.nan


def windowed_forgetting(iterations: Sequence[int], accuracy: Sequence[Sequence[float | None]], ends: Sequence[int], window: int) -> float:
    r"""Windowed forgetting WF^w at the end of experience ``k`` (De Lange et al., ICLR 2023).

    The largest accuracy decrease of experience ``i`` within ``w`` consecutive iterations,

    .. math::
        \mathrm{WF}^w(E_i) = \max_{m < n,\; n - m < w} \big( A(E_i, f_m) - A(E_i, f_n) \big)

    over the evaluated iterations ``m, n <= |T_k|`` (0 if the accuracy never drops), averaged
    over every experience evaluated so far, the current one included: the averaging of the
    authors' code (``WindowedForgettingPluginMetric`` + ``TaskAveragingPluginMetric``).
    Unlike that code (which evaluates every iteration), an experience none of whose
    evaluations are less than ``w`` iterations apart is left out (NaN), not counted as 0:
    with ``--eval-every K`` a window ``w <= K`` holds no pair, and WF^w is then undefined.
    """
    drops = [largest_drop(*_series(iterations, accuracy, i, ends[-1]), window) for i in range(len(ends))]
    return _mean(drops)


def stability_metrics(curve: Mapping[str, Any], windows: Sequence[int] = WINDOWS) -> dict[str, Any]:
    """min-ACC, WC-ACC, WF^w for each window, the final and minimum accuracies, from a curve (see :meth:`ContinualEvaluation.curve`)."""
    iterations, accuracy, ends = curve["iterations"], curve["accuracy"], curve["ends"]
    return {
        "min_accuracy": min_accuracy(iterations, accuracy, ends),
        "worst_case_accuracy": worst_case_accuracy(iterations, accuracy, ends),
        "windowed_forgetting": {str(w): windowed_forgetting(iterations, accuracy, ends, w) for w in windows},
        "final_accuracy": final_accuracy(iterations, accuracy, ends),
        "minimum_accuracies": minimum_accuracies(iterations, accuracy, ends),
        "experiences": len(ends),
        "eval_every": curve["eval_every"],
        "probe_samples": curve["probe_samples"],
    }


def _mean(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


# ---------------------------------------------------------------------- rows of metrics.jsonl


def continual_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` rows of a report's own experience: one per (iteration, probed experience).

    Each row is ``{"step": k, "iteration": n, "experience": j, "accuracy": A(E_j, f_n)}`` with
    ``k`` the experience being trained; rows come from the checkpointed reports, so a resumed
    run writes each (iteration, experience) exactly once.
    """
    curve, step = report.get("continual"), report["step"]
    if not curve:
        return []
    rows = []
    for n, k, row in zip(curve["iterations"], curve["experience"], curve["accuracy"]):
        if k == step:
            rows.extend({"step": k, "iteration": n, "experience": j, "accuracy": a} for j, a in enumerate(row) if a is not None)
    return rows


# ---------------------------------------------------------------------- measuring


class ContinualEvaluation:
    """The continual-evaluation curve of one evaluator: measures a point every ``eval_every`` iterations.

    Args:
        eval_every: Evaluate every K iterations of each experience (and at its last).
        probe_samples: Test samples per experience in the probe (None: the whole test set).
        seed: Seed of the probe's draw.
        batch_size: Inference batch size (None: :func:`lifelong_kd.models.inference_batch_size`).
        windows: Windows of WF^w in iterations.
    """

    def __init__(self, eval_every: int, probe_samples: int | None = PROBE_SAMPLES, seed: int = 0, batch_size: int | None = None, windows: Sequence[int] = WINDOWS) -> None:
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise ValueError(f"eval_every must be a positive number of iterations, got {eval_every!r}.")
        if probe_samples is not None and probe_samples < 1:
            raise ValueError(f"probe_samples must be positive (or None: every test sample), got {probe_samples!r}.")
        self.eval_every = eval_every
        self.probe_samples = probe_samples
        self.seed = seed
        self.batch_size = batch_size
        self.windows = tuple(windows)
        self.points_: list[list[Any]] = []
        self.ends_: list[int] = []
        self.seconds_: list[float] = []
        self._probe: dict[str, Any] = {}

    # -------------------------------------------------------------- during training

    def begin(self, experience: int) -> None:
        """Forget whatever was measured from ``experience`` on (a re-run or resumed experience starts clean)."""
        self.points_ = [point for point in self.points_ if point[1] < experience]
        self.ends_ = self.ends_[:experience]
        self.seconds_ = self.seconds_[:experience] + [0.0] * (experience + 1 - min(len(self.seconds_), experience))

    def due(self, iteration: int, total: int) -> bool:
        """Whether iteration ``iteration`` (1-based) of ``total`` is evaluated: every K-th, and the last."""
        return iteration % self.eval_every == 0 or iteration == total

    def measure(self, model: nn.Module, stream: Stream, experience: int, iteration: int, total: int) -> None:
        """Evaluate ``model`` (in eval mode) on the probes of experiences ``0..experience``; record the point.

        Args:
            model: The evaluated model.
            stream: The stream.
            experience: Index of the experience being trained.
            iteration: The iteration just done (1-based, within the experience).
            total: Iterations of the experience.
        """
        start = time.perf_counter()
        offset = self.ends_[experience - 1] if 0 < experience <= len(self.ends_) else (self.ends_[-1] if self.ends_ else 0)
        accuracies = self.probe_accuracy(model, stream, experience)
        self.points_.append([offset + iteration, experience, accuracies])
        if iteration == total:
            self.ends_ = self.ends_[:experience] + [offset + total]
        self.seconds_[experience] += time.perf_counter() - start

    def _inputs(self, stream: Stream, experience: int, device: torch.device) -> dict[str, Tensor]:
        """The probe of experiences ``0..experience``, stacked and transformed (built once per experience and device)."""
        key = f"{experience}:{device}"
        if self._probe.get("key") != key:
            parts = [(e, probe_indices(e, self.probe_samples, self.seed, PROBE_SALT)) for e in stream.experiences[: experience + 1]]
            x = torch.cat([e.transform(e.test.x[index]) for e, index in parts])
            self._probe = {
                "key": key,
                "x": distributed.to_device(x, device),
                "y": torch.cat([e.test.y[index] for e, index in parts]).to(device),
                "task": torch.cat([torch.full((len(index),), e.task_id, dtype=torch.long) for e, index in parts]).to(device),
                "owner": torch.cat([torch.full((len(index),), e.index, dtype=torch.long) for e, index in parts]).to(device),
                "sizes": [len(index) for _, index in parts],
            }
        return self._probe

    @torch.inference_mode()
    def probe_accuracy(self, model: nn.Module, stream: Stream, experience: int) -> list[float]:
        """Accuracy on each seen experience's probe, in one batched pass (each process counts its rows; one sum)."""
        device = distributed.module_device(model)
        probe = self._inputs(stream, experience, device)
        if "batch_size" not in probe:
            probe["batch_size"] = self.batch_size or inference_batch_size(model, stream.input_shape)
        rows, batch = distributed.shard(len(probe["y"])), probe["batch_size"]
        correct = torch.zeros(experience + 1, dtype=torch.long, device=device)
        for start in range(rows.start, rows.stop, batch):
            part = slice(start, min(start + batch, rows.stop))
            hits = model(probe["x"][part], probe["task"][part]).argmax(1) == probe["y"][part]
            correct += torch.bincount(probe["owner"][part][hits], minlength=experience + 1)
        counts = distributed.all_reduce_sum(correct).tolist()
        return [count / max(size, 1) for count, size in zip(counts, probe["sizes"])]

    # -------------------------------------------------------------- reporting

    def curve(self, step: int, n_experiences: int) -> dict[str, Any] | None:
        """The curve up to the end of experience ``step`` (accuracy rows padded with None to the stream's length), or None if empty."""
        points = [point for point in self.points_ if point[1] <= step]
        if not points:
            return None
        return {
            "eval_every": self.eval_every,
            "probe_samples": self.probe_samples,
            "iterations": [int(point[0]) for point in points],
            "experience": [int(point[1]) for point in points],
            "accuracy": [list(point[2]) + [None] * (n_experiences - len(point[2])) for point in points],
            "ends": list(self.ends_[: step + 1]),
            "seconds": list(self.seconds_[: step + 1]),
        }

    def stability(self, curve: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The stability-gap metrics of ``curve`` (None without a curve or before its first experience ends)."""
        if not curve or not curve["ends"]:
            return None
        return stability_metrics(curve, self.windows)

    def state_dict(self) -> dict[str, Any]:
        """The curve: points, experience ends, seconds spent (numbers and lists: weights-only loadable)."""
        return {"points": [[int(n), int(k), list(a)] for n, k, a in self.points_], "ends": list(self.ends_), "seconds": list(self.seconds_)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.points_ = [[int(n), int(k), [float(a) for a in accuracies]] for n, k, accuracies in state.get("points", [])]
        self.ends_ = [int(n) for n in state.get("ends", [])]
        self.seconds_ = [float(s) for s in state.get("seconds", [])]
