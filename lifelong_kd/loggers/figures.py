"""Figures: heatmaps of the accuracy matrix, the robustness grid, the confusion matrix, per-class accuracy and representation drift; forgetting curves; and a PNG logger."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.files import write_atomic


def _pyplot():  # noqa: ANN202 (matplotlib module)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(
    values: Sequence[Sequence[float | None]], rows: Sequence[str], columns: Sequence[str], title: str, xlabel: str, ylabel: str,
    colorbar_label: str = "accuracy (%)", annotate: bool = True,
):  # noqa: ANN201
    """A matplotlib figure of a matrix of fractions, annotated in percent (``annotate=False``: colours only, for large matrices)."""
    plt = _pyplot()
    data = [[float("nan") if v is None else 100 * v for v in row] for row in values]
    figure, axes = plt.subplots(figsize=(3.5 + 0.6 * max(len(columns), 3), 1.5 + 0.45 * max(len(rows), 3)))
    image = axes.imshow(data, vmin=0, vmax=100, cmap="viridis")
    axes.set_xticks(range(len(columns)), columns)
    axes.set_yticks(range(len(rows)), rows)
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    for i, row in enumerate(data if annotate else []):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                axes.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, label=colorbar_label)
    figure.tight_layout()
    return figure


def accuracy_matrix_figure(matrix: Sequence[Sequence[float | None]]):  # noqa: ANN201
    """Heatmap of R[i, j] (row: after training experience i; column: tested on experience j)."""
    rows = [f"after E{i}" for i in range(len(matrix))]
    columns = [f"E{j}" for j in range(len(matrix[0]) if matrix else 0)]
    return heatmap(matrix, rows, columns, "Accuracy matrix", "tested on", "trained up to")


def forgetting_curves_figure(matrix: Sequence[Sequence[float | None]]):  # noqa: ANN201
    """Accuracy on each experience from the step it was learned on: one line per column of R.

    A line that falls after its first point is forgetting; the dashed line is the average
    accuracy over the experiences seen so far.
    """
    from lifelong_kd.evaluation import metrics

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    steps = list(range(len(matrix)))
    for j, curve in metrics.accuracy_curves(matrix).items():
        if j < len(matrix):
            axes.plot(steps[j:], [100 * v for v in curve[j:]], marker="o", markersize=3, label=f"E{j}")
    average = [100 * metrics.average_accuracy(matrix, t) for t in steps]
    axes.plot(steps, average, color="black", linestyle="--", label="average")
    axes.set(title="Accuracy on each experience", xlabel="after training experience", ylabel="accuracy (%)", ylim=(0, 100))
    axes.set_xticks(steps, [f"E{t}" for t in steps])
    axes.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    return figure


def method_curves_figure(matrices: Mapping[str, Sequence[Sequence[Sequence[float | None]]]], title: str):  # noqa: ANN201
    """Average accuracy and forgetting after each experience, one line per method (mean over runs).

    Args:
        matrices: ``{method: [accuracy matrix of each seed]}``.
        title: Figure title (say which benchmark and budget).
    """
    import numpy as np

    from lifelong_kd.evaluation import metrics

    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = list(range(len(next(iter(matrices.values()))[0])))  # every method ran the same stream
    for method, runs in matrices.items():
        accuracy = np.mean([[metrics.average_accuracy(m, t) for t in steps] for m in runs], axis=0)
        forgetting = np.mean([[metrics.forgetting(m, t) for t in steps[1:]] for m in runs], axis=0)
        left.plot(steps, 100 * accuracy, marker="o", markersize=3, label=method)
        right.plot(steps[1:], 100 * forgetting, marker="o", markersize=3, label=method)
    left.set(title="Average accuracy on seen experiences", xlabel="after training experience", ylabel="accuracy (%)")
    right.set(title="Forgetting (Chaudhry et al. 2018)", xlabel="after training experience", ylabel="forgetting (points)")
    left.set_xticks(steps, [f"E{t}" for t in steps])
    right.set_xticks(steps[1:], [f"E{t}" for t in steps[1:]])
    left.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def robustness_figure(robustness: Mapping[str, Any], step: int):  # noqa: ANN201
    """Heatmap of mean accuracy over seen experiences per corruption (rows) x severity (columns)."""
    grid = robustness["grid"]
    severities = robustness["severities"]
    values = [[_mean(grid[name][str(s)][: step + 1]) for s in severities] for name in grid]
    return heatmap(values, list(grid), [str(s) for s in severities], "Accuracy under corruption", "severity", "corruption")


# Largest matrix whose cells are annotated with their value (larger ones are colours only).
ANNOTATED_CELLS = 20


def confusion_matrix_figure(counts: Sequence[Sequence[int]], names: Sequence[str], step: int):  # noqa: ANN201
    """Row-normalised confusion matrix over output units (rows: true, columns: predicted), on the experiences seen."""
    fractions = [[value / sum(row) if sum(row) else None for value in row] for row in counts]
    labels = [names[k] if k < len(names) else str(k) for k in range(len(counts))]
    title = f"Confusion matrix after E{step} (share of each true class)"
    return heatmap(fractions, labels, labels, title, "predicted", "true", "share of the row (%)", annotate=len(counts) <= ANNOTATED_CELLS)


def per_class_accuracy_figure(per_class: Sequence[Sequence[float | None]], classes: Sequence[Sequence[int]], step: int):  # noqa: ANN201
    """Accuracy on each class (columns: position in the experience) of each experience (rows), after experience ``step``."""
    width = max((len(row) for row in per_class), default=0)
    values = [list(row) + [None] * (width - len(row)) for row in per_class]
    rows = [f"E{j} ({','.join(str(c) for c in classes[j])})" for j in range(len(per_class))]
    title = f"Per-class accuracy after E{step}"
    return heatmap(values, rows, [f"class {i}" for i in range(width)], title, "class of the experience", "experience", annotate=width <= ANNOTATED_CELLS)


def drift_figure(cka_matrix: Sequence[Sequence[float | None]]):  # noqa: ANN201
    """Linear CKA between the penultimate features of the snapshots after each experience (1: same representation)."""
    names = [f"E{i}" for i in range(len(cka_matrix))]
    return heatmap(cka_matrix, names, names, "Representation drift (linear CKA)", "snapshot after", "snapshot after", "CKA (%)")


def stability_curve_figure(curve: Mapping[str, Any]):  # noqa: ANN201
    """Continual evaluation: accuracy on each experience's probe at every evaluated iteration, across the stream.

    One line per experience from the iteration it starts being trained; dotted vertical lines
    mark the ends of experiences. A dip right after a line crosses into the next experience,
    followed by a recovery, is the stability gap (De Lange et al., ICLR 2023).
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 3.8))
    n_experiences = max((len(row) for row in curve["accuracy"]), default=0)
    for j in range(n_experiences):
        points = [(n, row[j]) for n, row in zip(curve["iterations"], curve["accuracy"]) if row[j] is not None]
        if points:
            axes.plot([n for n, _ in points], [100 * a for _, a in points], linewidth=1.2, label=f"E{j}")
    for end in curve["ends"][:-1]:
        axes.axvline(end, color="grey", linestyle=":", linewidth=0.8)
    title = f"Continual evaluation every {curve['eval_every']} iterations ({curve['probe_samples'] or 'all'} test samples per experience)"
    axes.set(title=title, xlabel="training iteration", ylabel="accuracy (%)", ylim=(0, 100))
    axes.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    return figure


def configurations_figure(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]):  # noqa: ANN201
    """Bars of the mean (error bars: sample standard deviation) of each column, one group per configuration.

    Args:
        rows: ``{"configuration", "runs", "<key>_mean", "<key>_std"}`` per configuration (fractions).
        columns: ``(key, title)`` of the columns to draw; columns without any value are left out.
    """
    plt = _pyplot()
    shown = [(key, title) for key, title in columns if any(row.get(f"{key}_mean") is not None for row in rows)]
    figure, axes = plt.subplots(figsize=(max(5.0, 1.2 + 0.9 * len(rows) * max(len(shown), 1) / 2), 4.0))
    width = 0.8 / max(len(shown), 1)
    for position, (key, title) in enumerate(shown):
        means = [100 * (row.get(f"{key}_mean") or 0.0) for row in rows]
        errors = [100 * (row.get(f"{key}_std") or 0.0) for row in rows]
        axes.bar([i + position * width for i in range(len(rows))], means, width, yerr=errors, capsize=3, label=title)
    axes.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(rows))], [str(row["configuration"]) for row in rows], rotation=30, ha="right", fontsize=7)
    axes.set(title="Sweep: mean ± std over seeds", ylabel="%")
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def figure_png(figure: Any) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    _pyplot().close(figure)
    return buffer.getvalue()


class FigureLogger:
    """Writes ``accuracy_matrix.png``, ``forgetting_curves.png`` (and ``robustness.png``; with the instruments,
    ``confusion_matrix.png``, ``per_class_accuracy.png``, ``representation_drift.png``; with continual evaluation,
    ``stability_curve.png``) into the run folder after each report."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Nothing to draw (every figure is redrawn whole from each report)."""

    def log_report(self, report: EvalReport) -> None:
        """Redraw the figures atomically."""
        write_atomic(self.folder / "accuracy_matrix.png", figure_png(accuracy_matrix_figure(report.accuracy_matrix)))
        write_atomic(self.folder / "forgetting_curves.png", figure_png(forgetting_curves_figure(report.accuracy_matrix)))
        if report.robustness:
            write_atomic(self.folder / "robustness.png", figure_png(robustness_figure(report.robustness, report.step)))
        instruments = report.instruments
        if instruments:
            confusion = confusion_matrix_figure(instruments["confusion_matrix"], instruments["unit_names"], report.step)
            write_atomic(self.folder / "confusion_matrix.png", figure_png(confusion))
            per_class = per_class_accuracy_figure(instruments["per_class_accuracy"], instruments["classes"], report.step)
            write_atomic(self.folder / "per_class_accuracy.png", figure_png(per_class))
            if instruments.get("drift"):
                write_atomic(self.folder / "representation_drift.png", figure_png(drift_figure(instruments["drift"]["cka_matrix"])))
        if report.continual:
            write_atomic(self.folder / "stability_curve.png", figure_png(stability_curve_figure(report.continual)))

    def close(self) -> None:
        """Nothing is held open."""
