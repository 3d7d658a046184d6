"""Instruments for studying forgetting: per-class accuracy and forgetting, confusion matrices, negative flips, linear CKA.

The functions are pure: predictions, targets and features in, numbers out (formulas and
citations in each docstring and in ``docs/metrics.md``). :class:`InstrumentTracker` is the
small state the evaluator keeps between experiences to apply them after each one: the
per-class accuracies so far, the previous snapshot's predictions (negative flips) and every
snapshot's features on a fixed probe set (CKA drift). Its state is tensors, numbers and lists,
so a checkpoint holding it loads with ``torch.load(..., weights_only=True)``.

Conventions:

* An experience's classes are numbered by their **position** ``i`` in ``Experience.classes``.
  Their labels are ``offset + i`` with ``offset`` the number of classes of the earlier
  experiences in the class scenario, and ``i`` otherwise (:func:`experience_labels`).
* A model's **output units** are ``task_id * n_outputs + label`` (one block per head in the
  task scenario; the labels themselves otherwise), the rows and columns of the confusion matrix.
* Undefined quantities are ``NaN`` (``None`` in JSON), never ``0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lifelong_kd import distributed
from lifelong_kd.data.stream import Experience, Stream

FORGETTING_DEFINITIONS = ("max", "avalanche")


# ---------------------------------------------------------------------- labels and units


def experience_labels(stream: Stream) -> list[list[int]]:
    """The label of each class of each experience: ``labels[j][i]`` for ``Experience.classes[i]``.

    In the class scenario labels run on over the stream (experience ``j``'s first class has
    label ``sum of len(classes) of experiences before j``); in the task and domain scenarios
    each experience labels its classes ``0..len(classes)-1``. This is how every stream of
    :mod:`lifelong_kd.data.benchmarks` labels its classes.
    """
    labels, offset = [], 0
    for experience in stream:
        labels.append([offset + i for i in range(len(experience.classes))])
        if stream.scenario == "class":
            offset += len(experience.classes)
    return labels


def unit_names(stream: Stream) -> list[str]:
    """A name per output unit: the class id(s) it stands for (``"3"``, or ``"0/2/4"`` when experiences share a unit)."""
    names: list[list[int]] = [[] for _ in range(stream.n_heads * stream.n_outputs)]
    for experience, labels in zip(stream, experience_labels(stream)):
        for label, class_id in zip(labels, experience.classes):
            unit = experience.task_id * stream.n_outputs + label if stream.n_heads > 1 else label
            if class_id not in names[unit]:
                names[unit].append(class_id)
    return ["/".join(str(c) for c in ids) if ids else "-" for ids in names]


# ---------------------------------------------------------------------- per-class accuracy


def confusion_matrix(targets: Tensor, predictions: Tensor, n_units: int) -> Tensor:
    """Counts ``C[a, b] = #{samples with target a predicted as b}`` (rows: true unit, columns: predicted unit).

    Args:
        targets: True units (N,) int.
        predictions: Predicted units (N,) int.
        n_units: Number of units K.

    Returns:
        (K, K) int64 counts; row ``a`` sums to the number of samples of unit ``a``.

    Raises:
        ValueError: Mismatched shapes, or a unit outside ``0..K-1``.
    """
    targets, predictions = targets.reshape(-1).long(), predictions.reshape(-1).long()
    if targets.shape != predictions.shape:
        raise ValueError(f"targets and predictions must have the same length, got {len(targets)} and {len(predictions)}.")
    for name, values in (("targets", targets), ("predictions", predictions)):
        if len(values) and (int(values.min()) < 0 or int(values.max()) >= n_units):
            raise ValueError(f"{name} must be units in 0..{n_units - 1}, got values from {int(values.min())} to {int(values.max())}.")
    return torch.bincount(targets * n_units + predictions, minlength=n_units * n_units).view(n_units, n_units)


def per_class_accuracy(targets: Tensor, predictions: Tensor, labels: Sequence[int]) -> list[float]:
    """Accuracy on each class: ``a_c = #{y = c and y_hat = c} / #{y = c}`` for each label ``c`` in ``labels``.

    The diagonal of the row-normalised confusion matrix. A class without test samples is ``NaN``.

    Args:
        targets: True labels (N,).
        predictions: Predicted labels (N,).
        labels: The labels to report, in order.
    """
    accuracies = []
    for label in labels:
        mask = targets == label
        count = int(mask.sum())
        accuracies.append(float((predictions[mask] == label).sum()) / count if count else math.nan)
    return accuracies


def per_class_forgetting(history: Sequence[Sequence[Sequence[float]]], step: int | None = None, definition: str = "max") -> list[list[float]]:
    """Forgetting of each class of each earlier experience at ``step``: Chaudhry et al.'s formula per class.

    With ``a_l(j, c)`` the accuracy on class ``c`` of experience ``j`` after training experience ``l``:

    * ``"max"`` (Chaudhry et al., ECCV 2018): ``f_{j,c} = max_{j <= l < t} a_l(j, c) - a_t(j, c)``;
    * ``"avalanche"``: ``f_{j,c} = a_j(j, c) - a_t(j, c)``.

    Args:
        history: ``history[l][j][c]``, one entry per step ``l <= t`` (NaN: not measured).
        step: The step ``t`` (default: the last).
        definition: ``"max"`` or ``"avalanche"``.

    Returns:
        ``f[j][c]`` for the experiences ``j < t`` (empty at ``t = 0``); NaN where undefined.
    """
    if definition not in FORGETTING_DEFINITIONS:
        raise ValueError(f"definition must be one of {', '.join(FORGETTING_DEFINITIONS)}, got {definition!r}.")
    step = len(history) - 1 if step is None else step
    result = []
    for j in range(step):
        rows = np.array([history[l][j] for l in range(j, step + 1)], dtype=np.float64)  # (step - j + 1, classes)
        earlier = rows[:-1] if definition == "max" else rows[:1]
        with np.errstate(invalid="ignore"):
            best = np.where(np.isnan(earlier).all(axis=0), np.nan, np.nanmax(np.where(np.isnan(earlier), -np.inf, earlier), axis=0))
        result.append((best - rows[-1]).tolist())
    return result


def nanmean(values: Sequence[float] | Sequence[Sequence[float]]) -> float:
    """Mean of the defined (non-NaN) values, flattened; NaN when there is none."""
    flat = np.array([v for row in values for v in (row if isinstance(row, (list, tuple)) else [row])], dtype=np.float64)
    defined = flat[~np.isnan(flat)]
    return float(defined.mean()) if defined.size else math.nan


# ---------------------------------------------------------------------- negative flips


def negative_flips(targets: Tensor, old_predictions: Tensor, new_predictions: Tensor) -> int:
    """Number of samples the old model classified correctly and the new one does not.

    Yan et al., "Positive-Congruent Training: Towards Regression-Free Model Updates", CVPR 2021:
    a negative flip is a sample with ``y_old = y`` and ``y_new != y``.
    """
    if not targets.shape == old_predictions.shape == new_predictions.shape:
        raise ValueError(f"targets and both predictions must have one shape, got {tuple(targets.shape)}, {tuple(old_predictions.shape)}, {tuple(new_predictions.shape)}.")
    return int(((old_predictions == targets) & (new_predictions != targets)).sum())


def negative_flip_rate(targets: Tensor, old_predictions: Tensor, new_predictions: Tensor) -> float:
    """Negative flip rate ``NFR = (1/N) sum_i 1[y_old_i = y_i and y_new_i != y_i]`` (Yan et al., CVPR 2021); NaN for N = 0."""
    return negative_flips(targets, old_predictions, new_predictions) / len(targets) if len(targets) else math.nan


# ---------------------------------------------------------------------- representation similarity


def _centred(features: Tensor) -> Tensor:
    features = features.reshape(len(features), -1).double()
    return features - features.mean(0, keepdim=True)


def _unbiased_hsic(gram_x: Tensor, gram_y: Tensor) -> Tensor:
    """Unbiased HSIC estimator of two Gram matrices with zeroed diagonals (Song et al., JMLR 2012).

    ``HSIC_1 = [tr(K L) + (1'K1)(1'L1) / ((n-1)(n-2)) - 2/(n-2) 1'KL1] / (n(n-3))``.
    """
    n = len(gram_x)
    ones = torch.ones(n, 1, dtype=gram_x.dtype)
    trace = (gram_x * gram_y).sum()
    sums = (ones.T @ gram_x @ ones) * (ones.T @ gram_y @ ones) / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (ones.T @ gram_x @ gram_y @ ones)
    return ((trace + sums - cross) / (n * (n - 3))).squeeze()


def linear_cka(x: Tensor, y: Tensor, debiased: bool = False) -> float:
    r"""Linear centred kernel alignment between two representations of the same N samples.

    Kornblith, Norouzi, Lee & Hinton, "Similarity of Neural Network Representations
    Revisited", ICML 2019 (linear kernel): with ``X`` (N, p1) and ``Y`` (N, p2) centred per column,

    .. math::
        \mathrm{CKA}(X, Y) = \frac{\lVert Y^\top X \rVert_F^2}{\lVert X^\top X \rVert_F \, \lVert Y^\top Y \rVert_F}

    In [0, 1]; 1 for identical representations; invariant to orthogonal transforms and to
    isotropic scaling of either representation (not to arbitrary invertible linear maps).
    The estimate is biased upwards for few samples: independent Gaussian features score
    about ``sqrt(p1 p2 / ((N + p1)(N + p2)))`` rather than 0 (0.44 for N = 512, p1 = p2 = 400).
    ``debiased=True`` replaces each HSIC by its
    unbiased estimator (Song et al., JMLR 2012; used for CKA by Nguyen, Raghu & Kornblith,
    ICLR 2021), which is near 0 for independent features at any N (N >= 4).

    Args:
        x: Features (N, ...) of one model; flattened per sample.
        y: Features (N, ...) of another model on the same samples.
        debiased: Use the unbiased HSIC estimator.

    Returns:
        The similarity; NaN when a representation is constant (zero variance).
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must hold the same samples, got {len(x)} and {len(y)} rows.")
    x, y = _centred(x), _centred(y)
    if debiased:
        if len(x) < 4:
            raise ValueError(f"debiased CKA needs at least 4 samples, got {len(x)}.")
        grams = [g.fill_diagonal_(0.0) for g in (x @ x.T, y @ y.T)]
        cross, self_x, self_y = _unbiased_hsic(grams[0], grams[1]), _unbiased_hsic(grams[0], grams[0]), _unbiased_hsic(grams[1], grams[1])
        denominator = torch.sqrt(self_x * self_y)
        return float(cross / denominator) if float(denominator) > 0 else math.nan
    return _biased_cka(x, y, _self_similarity(x), _self_similarity(y))


def _self_similarity(centred: Tensor) -> Tensor:
    """``||X'X||_F^2`` of centred features: the biased HSIC of a representation with itself (up to a constant)."""
    return (centred.T @ centred).norm() ** 2


def _biased_cka(x: Tensor, y: Tensor, self_x: Tensor, self_y: Tensor) -> float:
    """Linear CKA of centred ``x`` and ``y`` given their self-similarities (:func:`_self_similarity`, computed once per snapshot)."""
    denominator = torch.sqrt(self_x * self_y)
    return float((y.T @ x).pow(2).sum() / denominator) if float(denominator) > 0 else math.nan


def feature_extractor(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """The penultimate representation of ``model``: its ``features``, or that of the network it wraps (``model.model``).

    Strategies may evaluate a wrapper (iCaRL's nearest-mean classifier, BiC's and LUCIR's
    seen-class outputs) that keeps the trained network as ``.model``.

    Raises:
        TypeError: Neither ``model`` nor ``model.model`` has ``features``.
    """
    for candidate in (model, getattr(model, "model", None)):
        if candidate is not None and callable(getattr(candidate, "features", None)):
            return candidate.features
    raise TypeError(f"{type(model).__name__} has no features(x) (nor a wrapped .model with one); representation drift needs the penultimate features.")


# ---------------------------------------------------------------------- the evaluator's state


def probe_indices(experience: Experience, samples: int | None, seed: int, salt: int = 0) -> Tensor:
    """A seeded, sorted subsample of ``samples`` positions of ``experience``'s test set (all of it when None or larger).

    The generator is seeded from ``(seed, salt, experience index)`` only, so every snapshot,
    process and resumed run draws the same probe.
    """
    size = len(experience.test)
    if samples is None or samples >= size:
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + salt * 7_919 + experience.index)
    return torch.randperm(size, generator=generator)[:samples].sort().values


# Snapshots whose probe features representation drift keeps (the first and the 9 most recent): streams of up to
# 10 experiences get every pair; a longer one compares each snapshot with 9 others (a 50-experience stream kept
# all 50 otherwise: 50 x 512 x width floats in memory and in every checkpoint, and 49 CKAs at its last experience).
DRIFT_SNAPSHOTS = 10


class InstrumentTracker:
    """Applies the instruments after each experience and keeps what they need between experiences.

    Args:
        drift_samples: Test samples in the probe set of representation drift, drawn evenly
            from every experience (None or 0: no drift). 512 keeps the checkpoint small
            (``512 x feature width`` floats per snapshot) and the extra forward pass well below
            one evaluation of the test sets.
        seed: Seed of the probe set.
        forgetting_definition: ``"max"`` or ``"avalanche"`` (as the evaluator's forgetting).
        debiased_cka: Use the unbiased HSIC estimator in CKA.
        drift_snapshots: Most snapshots whose probe features are kept for CKA: the first and the
            ``drift_snapshots - 1`` most recent (None: all). Each snapshot is compared with the
            kept ones only, so on a stream longer than this the CKA matrix holds the first row and
            column and a band of that width along the diagonal (other cells NaN), and the drift's
            memory, checkpoint share and time per experience stay bounded (all snapshots: linear in
            the experiences seen, quadratic over the run). ``cka_previous`` and ``cka_first`` are
            always measured.
    """

    def __init__(
        self, drift_samples: int | None = 512, seed: int = 0, forgetting_definition: str = "max", debiased_cka: bool = False,
        drift_snapshots: int | None = DRIFT_SNAPSHOTS,
    ) -> None:
        if drift_snapshots is not None and drift_snapshots < 2:
            raise ValueError(f"drift_snapshots must be at least 2 (the first and the newest snapshot) or None for all, got {drift_snapshots}.")
        self.drift_samples = drift_samples
        self.seed = seed
        self.forgetting_definition = forgetting_definition
        self.debiased_cka = debiased_cka
        self.drift_snapshots = drift_snapshots
        self.self_similarity_: dict[int, Tensor] = {}  # per kept snapshot, computed once (not checkpointed: derived from the features)
        self.class_history_: list[list[list[float]]] = []
        self.history_tensors_: dict[int, tuple[list[list[float]], Tensor]] = {}  # id -> (a step's rows, their values as one tensor)
        self.predictions_: list[Tensor] = []
        self.predictions_step_ = -1
        self.features_: list[Tensor] = []
        self.cka_: list[list[float]] = []

    def update(self, model: nn.Module, stream: Stream, step: int, predictions: Sequence[Tensor], batch_size: int) -> dict[str, Any]:
        """The instruments after training experience ``step``, from the evaluator's predictions on every test set.

        Args:
            model: The evaluated model (in eval mode), for the drift probe's features.
            stream: The stream.
            step: Index of the experience just trained.
            predictions: Predicted labels on each experience's full test set, in order.
            batch_size: Inference batch size of the probe pass.
        """
        labels = experience_labels(stream)
        per_class = [per_class_accuracy(e.test.y, p.cpu(), lab) for e, p, lab in zip(stream, predictions, labels)]
        missing = [[[math.nan] * len(lab) for lab in labels]] * max(step - len(self.class_history_), 0)  # steps not evaluated
        self.class_history_ = self.class_history_[:step] + missing + [per_class]
        forgetting = per_class_forgetting(self.class_history_, step, self.forgetting_definition)
        result = {
            "classes": [list(e.classes) for e in stream],
            "per_class_accuracy": per_class,
            "per_class_forgetting": forgetting,
            "class_forgetting": nanmean(forgetting),
            "confusion_matrix": self._confusion(stream, step, predictions).tolist(),
            "unit_names": unit_names(stream),
            "negative_flips": self._flips(stream, step, predictions),
        }
        self.predictions_, self.predictions_step_ = [p.to("cpu", torch.int32) for p in predictions], step
        if self.drift_samples:
            result["drift"] = self._drift(model, stream, step, batch_size)
        return result

    def _confusion(self, stream: Stream, step: int, predictions: Sequence[Tensor]) -> Tensor:
        """Confusion over output units, on the test sets of the experiences seen so far."""
        offset = [e.task_id * stream.n_outputs if stream.n_heads > 1 else 0 for e in stream]
        targets = torch.cat([e.test.y + offset[j] for j, e in enumerate(stream) if j <= step])
        predicted = torch.cat([predictions[j].long().cpu() + offset[j] for j in range(step + 1)])
        # A wrapper may score more units than the stream's heads (they stay columns of zeros in the rows).
        n_units = max(stream.n_heads * stream.n_outputs, int(predicted.max()) + 1 if len(predicted) else 0)
        return confusion_matrix(targets, predicted, n_units)

    def _flips(self, stream: Stream, step: int, predictions: Sequence[Tensor]) -> dict[str, Any]:
        """Negative flips from the previous snapshot, on the experiences it had learned (j < step)."""
        if step == 0 or self.predictions_step_ != step - 1:
            return {"rate": None, "count": None, "per_experience": []}
        old = self.predictions_
        counts = [negative_flips(stream[j].test.y, old[j].long(), predictions[j].long().cpu()) for j in range(step)]
        total = sum(len(stream[j].test) for j in range(step))
        rates = [c / len(stream[j].test) if len(stream[j].test) else None for j, c in enumerate(counts)]
        return {"rate": sum(counts) / total if total else None, "count": sum(counts), "per_experience": rates}

    def _probe(self, stream: Stream) -> Tensor:
        """The drift probe's inputs: an even, seeded share of every experience's test set, transformed."""
        share = math.ceil(self.drift_samples / len(stream))
        parts = [e.transform(e.test.x[probe_indices(e, share, self.seed, salt=1)]) for e in stream]
        return torch.cat(parts)

    @torch.inference_mode()
    def _features(self, model: nn.Module, stream: Stream, batch_size: int) -> Tensor:
        extract, inputs, device = feature_extractor(model), self._probe(stream), distributed.module_device(model)
        outputs = [extract(distributed.to_device(inputs[start : start + batch_size], device)).float().flatten(1).cpu() for start in range(0, len(inputs), batch_size)]
        return torch.cat(outputs)

    def _drift(self, model: nn.Module, stream: Stream, step: int, batch_size: int) -> dict[str, Any]:
        """CKA between this snapshot's probe features and every earlier snapshot's (a symmetric matrix)."""
        features = self._features(model, stream, batch_size)
        missing = max(step - len(self.features_), 0)  # snapshots not evaluated
        self.features_ = self.features_[:step] + [None] * missing + [features]
        oldest = step - self.drift_snapshots + 2 if self.drift_snapshots is not None else 0  # kept: 0 and oldest..step
        self.features_ = [f if i == 0 or i >= oldest else None for i, f in enumerate(self.features_)]
        self.self_similarity_ = {i: s for i, s in self.self_similarity_.items() if i < step and self.features_[i] is not None}
        row = [self._cka(i, features, earlier) if earlier is not None else math.nan for i, earlier in enumerate(self.features_)]
        self.cka_ = [r[: step + 1] for r in self.cka_[:step]] + [[math.nan] * (i + 1) for i in range(len(self.cka_), step)] + [row]
        matrix = [[self.cka_[max(i, j)][min(i, j)] for j in range(step + 1)] for i in range(step + 1)]
        return {"cka_previous": row[-2] if step else None, "cka_first": row[0] if step else None, "cka_matrix": matrix, "probe_samples": len(features), "debiased": self.debiased_cka}

    def _cka(self, index: int, features: Tensor, earlier: Tensor) -> float:
        """CKA between the newest snapshot's ``features`` and snapshot ``index``'s (``earlier``), reusing each snapshot's self-similarity."""
        if self.debiased_cka:
            return linear_cka(features, earlier, debiased=True)
        newest = len(self.features_) - 1
        centred = {newest: _centred(features), index: _centred(earlier)}
        for i in (newest, index):
            if i not in self.self_similarity_:
                self.self_similarity_[i] = _self_similarity(centred[i])
        return _biased_cka(centred[newest], centred[index], self.self_similarity_[newest], self.self_similarity_[index])

    def _history_state(self) -> dict[str, Tensor]:
        """The per-class history as tensors: every value in order (float64), each row's length, each step's number of rows.

        As nested lists, a 50-experience stream's history was 25,000 floats pickled one object
        at a time at every checkpoint (quadratic over the run); each step's values are made a
        tensor once.
        """
        live = {id(step): step for step in self.class_history_}
        self.history_tensors_ = {key: kept for key, kept in self.history_tensors_.items() if live.get(key) is kept[0]}
        values = []
        for step in self.class_history_:
            if id(step) not in self.history_tensors_:
                self.history_tensors_[id(step)] = (step, torch.tensor([value for row in step for value in row], dtype=torch.float64))
            values.append(self.history_tensors_[id(step)][1])
        return {
            "values": torch.cat(values) if values else torch.zeros(0, dtype=torch.float64),
            "lengths": torch.tensor([len(row) for step in self.class_history_ for row in step], dtype=torch.int64),
            "rows": torch.tensor([len(step) for step in self.class_history_], dtype=torch.int64),
        }

    @staticmethod
    def _history_from_state(state: Any) -> list[list[list[float]]]:
        """The nested per-class history from :meth:`_history_state` (or from the nested lists older checkpoints hold)."""
        if not isinstance(state, dict):
            return [[list(row) for row in step] for step in state]
        values, lengths = state["values"].tolist(), iter(state["lengths"].tolist())
        history, start = [], 0
        for rows in state["rows"].tolist():
            step = []
            for _ in range(rows):
                length = next(lengths)
                step.append(values[start : start + length])
                start += length
            history.append(step)
        return history

    def state_dict(self) -> dict[str, Any]:
        """Per-class history, the last predictions, every snapshot's probe features, the CKA rows (weights-only loadable)."""
        return {
            "class_history": self._history_state(),
            "predictions": list(self.predictions_),
            "predictions_step": self.predictions_step_,
            "features": list(self.features_),
            "cka": [list(row) for row in self.cka_],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.class_history_ = self._history_from_state(state.get("class_history", []))
        self.history_tensors_ = {}
        self.predictions_ = list(state.get("predictions", []))
        self.predictions_step_ = int(state.get("predictions_step", -1))
        self.features_ = list(state.get("features", []))
        self.self_similarity_ = {}
        self.cka_ = [list(row) for row in state.get("cka", [])]
