"""Continual-learning metrics as pure functions of the accuracy matrix.

The accuracy matrix ``R`` has shape ``(rows, T)`` with ``rows <= T``: ``R[i, j]`` is the
accuracy (a fraction in ``[0, 1]``) on experience ``j``'s test set after training on
experience ``i``. During a run only the rows trained so far exist, and cells that were not
evaluated hold ``NaN``. Every function ignores ``NaN`` cells; a quantity with no defined
term is ``NaN`` (never a silent ``0.0``).

``step`` arguments select the row ``t`` the metric is measured at (default: the last row);
negative values count from the end as in Python indexing.

See ``docs/metrics.md`` for every formula, the citations and a worked example.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

ForgettingDefinition = Literal["max", "avalanche"]
_FORGETTING_DEFINITIONS = ("max", "avalanche")


def _as_accuracy_matrix(accuracy_matrix: ArrayLike) -> np.ndarray:
    """Validates an accuracy matrix and returns it as a float64 copy.

    Args:
        accuracy_matrix: Array-like of shape ``(rows, T)`` with ``1 <= rows <= T``.

    Returns:
        The matrix as a new ``np.ndarray`` of dtype float64.

    Raises:
        ValueError: If the matrix is not numeric, not 2-D, empty, has more rows than
            columns, or holds a value outside ``[0, 1]`` that is not ``NaN``.
    """
    try:
        matrix = np.array(accuracy_matrix, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"accuracy matrix must be numeric, got {accuracy_matrix!r}") from error
    if matrix.ndim != 2:
        raise ValueError(
            f"accuracy matrix must be 2-D (rows = trained experiences, columns = "
            f"experiences), got {matrix.ndim}-D with shape {matrix.shape}"
        )
    rows, columns = matrix.shape
    if rows == 0 or columns == 0:
        raise ValueError(
            f"accuracy matrix must have at least one row and one column, got shape {matrix.shape}"
        )
    if rows > columns:
        raise ValueError(
            f"accuracy matrix has {rows} rows but only {columns} columns; row i is the "
            f"evaluation after experience i, so rows <= columns (transpose it?)"
        )
    _check_fractions(matrix, "accuracy matrix")
    return matrix


def _check_fractions(values: np.ndarray, name: str) -> None:
    """Raises ``ValueError`` if a non-NaN entry of ``values`` lies outside ``[0, 1]``."""
    bad = ~np.isnan(values) & ~((values >= 0.0) & (values <= 1.0))
    if bad.any():
        position = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} values must be fractions in [0, 1] or NaN; found "
            f"{float(values[position])!r} at index {position} "
            f"(pass accuracies as fractions, not percentages)"
        )


def _as_baseline(accuracy: ArrayLike, columns: int, name: str) -> np.ndarray:
    """Validates a per-experience accuracy vector of length ``columns``.

    Args:
        accuracy: Array-like of shape ``(T,)`` with fractions in ``[0, 1]`` or ``NaN``.
        columns: Expected length ``T`` (the number of columns of the accuracy matrix).
        name: Argument name used in error messages.

    Returns:
        The vector as a new float64 array of shape ``(T,)``.

    Raises:
        ValueError: If the shape or a value is invalid.
    """
    try:
        vector = np.array(accuracy, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric, got {accuracy!r}") from error
    if vector.shape != (columns,):
        raise ValueError(
            f"{name} must have shape ({columns},), one accuracy per experience, got {vector.shape}"
        )
    _check_fractions(vector, name)
    return vector


def _resolve_step(matrix: np.ndarray, step: int | None) -> int:
    """Returns the non-negative row index for ``step`` (default: the last row)."""
    rows = matrix.shape[0]
    if step is None:
        return rows - 1
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
        raise ValueError(f"step must be an integer row index, got {step!r}")
    if not -rows <= step < rows:
        raise ValueError(f"step {step} is out of range for an accuracy matrix with {rows} rows")
    return int(step) % rows


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries, or ``NaN`` (without a warning) if there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _nanmax(values: np.ndarray) -> float:
    """Maximum of the non-NaN entries, or ``NaN`` (without a warning) if there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.max()) if finite.size else float("nan")


def average_accuracy(
    accuracy_matrix: ArrayLike, step: int | None = None, seen_only: bool = True
) -> float:
    """Average accuracy at row ``t`` (Lopez-Paz & Ranzato, 2017, "ACC").

    ``ACC_t = mean_{j <= t} R[t, j]``. At the end of the stream (``t = T - 1``) this is
    the ACC of Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning",
    NeurIPS 2017. With ``seen_only=False`` the mean runs over every evaluated column,
    ``mean_j R[t, j]``, including experiences not trained yet (Avalanche's stream accuracy).

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        step: Row ``t`` to measure at; default the last row.
        seen_only: Average only experiences ``j <= t`` (default) or all evaluated ones.

    Returns:
        The average accuracy in ``[0, 1]``, or ``NaN`` if no cell in range was evaluated.
    """
    matrix = _as_accuracy_matrix(accuracy_matrix)
    t = _resolve_step(matrix, step)
    row = matrix[t, : t + 1] if seen_only else matrix[t]
    return _nanmean(row)


def per_experience_forgetting(
    accuracy_matrix: ArrayLike,
    step: int | None = None,
    definition: ForgettingDefinition = "max",
) -> np.ndarray:
    """Forgetting of each earlier experience ``j < t`` at row ``t``.

    ``definition="max"`` (ours; Chaudhry et al., "Riemannian Walk for Incremental
    Learning", ECCV 2018): ``f_j = max_{j <= l < t} R[l, j] - R[t, j]``. The maximum starts at
    ``l = j``, the row where experience ``j`` was learned; rows ``l < j`` hold accuracy before
    training on ``j`` (forward transfer, not knowledge that can be forgotten).

    ``definition="avalanche"`` (Avalanche's ``forgetting``): ``f_j = R[j, j] - R[t, j]``.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        step: Row ``t`` to measure at; default the last row.
        definition: ``"max"`` or ``"avalanche"``.

    Returns:
        Array of shape ``(t,)``; entry ``j`` is ``NaN`` where a needed cell is ``NaN``. Empty
        when ``t == 0``.

    Raises:
        ValueError: If ``definition`` is unknown or the matrix is invalid.
    """
    if definition not in _FORGETTING_DEFINITIONS:
        raise ValueError(
            f"definition must be one of {_FORGETTING_DEFINITIONS}, got {definition!r}"
        )
    matrix = _as_accuracy_matrix(accuracy_matrix)
    t = _resolve_step(matrix, step)
    if definition == "avalanche":
        reference = np.diagonal(matrix)[:t]
    else:
        reference = np.array([_nanmax(matrix[j:t, j]) for j in range(t)], dtype=np.float64)
    return reference - matrix[t, :t]


def forgetting(
    accuracy_matrix: ArrayLike,
    step: int | None = None,
    definition: ForgettingDefinition = "max",
) -> float:
    """Average forgetting at row ``t`` (Chaudhry et al., ECCV 2018).

    ``F_t = mean_{j < t} f_j`` with ``f_j = max_{j <= l < t} R[l, j] - R[t, j]``
    (``definition="max"``, ours) or ``f_j = R[j, j] - R[t, j]`` (``"avalanche"``). See
    :func:`per_experience_forgetting`. Positive values mean accuracy was lost.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        step: Row ``t`` to measure at; default the last row.
        definition: ``"max"`` or ``"avalanche"``.

    Returns:
        The mean of the defined ``f_j``. ``NaN`` at ``t == 0`` (no earlier experience, so
        forgetting is undefined rather than zero) or when no ``f_j`` is defined.
    """
    return _nanmean(per_experience_forgetting(accuracy_matrix, step, definition))


def backward_transfer(accuracy_matrix: ArrayLike, step: int | None = None) -> float:
    """Backward transfer at row ``t`` (Lopez-Paz & Ranzato, NeurIPS 2017, "BWT").

    ``BWT_t = mean_{j < t} (R[t, j] - R[j, j])``. Negative values mean forgetting; BWT is
    the negative of ``forgetting(..., definition="avalanche")``.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        step: Row ``t`` to measure at; default the last row.

    Returns:
        The backward transfer in ``[-1, 1]``, or ``NaN`` at ``t == 0`` or when no term is
        defined.
    """
    matrix = _as_accuracy_matrix(accuracy_matrix)
    t = _resolve_step(matrix, step)
    return _nanmean(matrix[t, :t] - np.diagonal(matrix)[:t])


def forward_transfer(accuracy_matrix: ArrayLike, random_init_accuracy: ArrayLike) -> float:
    """Forward transfer (Lopez-Paz & Ranzato, NeurIPS 2017, "FWT").

    ``FWT = mean_{1 <= j <= T-1} (R[j-1, j] - b_j)``, where ``b_j`` is the accuracy of a
    randomly initialised model on experience ``j``. With a partial matrix of ``rows`` rows,
    ``j`` runs over ``1 <= j <= min(rows, T - 1)``.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        random_init_accuracy: Vector ``b`` of shape ``(T,)``.

    Returns:
        The forward transfer, or ``NaN`` if no term is defined (for example ``T == 1``).
    """
    matrix = _as_accuracy_matrix(accuracy_matrix)
    rows, columns = matrix.shape
    baseline = _as_baseline(random_init_accuracy, columns, "random_init_accuracy")
    later = np.arange(1, min(rows, columns - 1) + 1)
    return _nanmean(matrix[later - 1, later] - baseline[later])


def per_experience_learning_accuracy(accuracy_matrix: ArrayLike) -> np.ndarray:
    """Accuracy on each experience right after training on it: ``a_j = R[j, j]``.

    Riemer et al., "Learning to Learn without Forgetting by Maximizing Transfer and
    Minimizing Interference", ICLR 2019 ("learning accuracy").

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.

    Returns:
        Array of shape ``(rows,)`` holding the diagonal ``R[j, j]`` for ``j < rows``.
    """
    return np.diagonal(_as_accuracy_matrix(accuracy_matrix)).copy()


def learning_accuracy(accuracy_matrix: ArrayLike) -> float:
    """Mean learning accuracy ``LA = mean_j R[j, j]`` (Riemer et al., ICLR 2019).

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.

    Returns:
        The mean of the defined diagonal cells, or ``NaN`` if none is defined.
    """
    return _nanmean(per_experience_learning_accuracy(accuracy_matrix))


def intransigence(accuracy_matrix: ArrayLike, reference_accuracy: ArrayLike) -> float:
    """Mean intransigence ``I = mean_j (a*_j - R[j, j])`` (Chaudhry et al., ECCV 2018).

    ``a*_j`` is the accuracy on experience ``j`` of a reference model trained jointly on the
    data of experiences ``0..j``. Positive values mean the learner cannot learn new
    experiences as well as the joint reference.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        reference_accuracy: Vector ``a*`` of shape ``(T,)``.

    Returns:
        The mean intransigence over ``j < rows``, or ``NaN`` if no term is defined.
    """
    matrix = _as_accuracy_matrix(accuracy_matrix)
    reference = _as_baseline(reference_accuracy, matrix.shape[1], "reference_accuracy")
    diagonal = np.diagonal(matrix)
    return _nanmean(reference[: diagonal.size] - diagonal)


def accuracy_curves(accuracy_matrix: ArrayLike) -> dict[int, np.ndarray]:
    """Accuracy of each experience over the stream: the columns of ``R``.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.

    Returns:
        ``{j: R[:, j]}`` for every experience ``j < T``; each curve has shape ``(rows,)``.
        Entries before row ``j`` are accuracies before training on ``j``; ``NaN`` where not
        evaluated. The arrays are copies.
    """
    matrix = _as_accuracy_matrix(accuracy_matrix)
    return {j: matrix[:, j].copy() for j in range(matrix.shape[1])}


def summarize(
    accuracy_matrix: ArrayLike,
    random_init_accuracy: ArrayLike | None = None,
    forgetting_definition: ForgettingDefinition = "max",
) -> dict[str, float]:
    """Headline metrics at the last row of the accuracy matrix.

    Args:
        accuracy_matrix: Accuracy matrix of shape ``(rows, T)``.
        random_init_accuracy: Optional vector ``b`` of shape ``(T,)`` for forward transfer.
        forgetting_definition: ``"max"`` (ours) or ``"avalanche"``.

    Returns:
        Dict with keys ``average_accuracy``, ``forgetting``, ``backward_transfer``,
        ``learning_accuracy`` and, if ``random_init_accuracy`` is given,
        ``forward_transfer``. Undefined values are ``NaN``.
    """
    matrix = _as_accuracy_matrix(accuracy_matrix)
    summary = {
        "average_accuracy": average_accuracy(matrix),
        "forgetting": forgetting(matrix, definition=forgetting_definition),
        "backward_transfer": backward_transfer(matrix),
        "learning_accuracy": learning_accuracy(matrix),
    }
    if random_init_accuracy is not None:
        summary["forward_transfer"] = forward_transfer(matrix, random_init_accuracy)
    return summary
