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


def titled(title: str, label: str = "") -> str:
    """A figure title with the run's label (:func:`lifelong_kd.loggers.base.run_label`) on a second line."""
    return f"{title}\n{label}" if label else title


def fitted_limits(values: Sequence[float], floor: float = 0.0, ceiling: float = 100.0) -> tuple[float, float]:
    """Axis limits around ``values`` (percent): a margin of 10% of their range (at least 2 points), kept within [floor, ceiling]."""
    finite = [value for value in values if value == value]
    if not finite:
        return floor, ceiling
    low, high = min(finite), max(finite)
    margin = max(2.0, 0.1 * (high - low))
    return max(floor, low - margin), min(ceiling, high + margin)


def heatmap(
    values: Sequence[Sequence[float | None]], rows: Sequence[str], columns: Sequence[str], title: str, xlabel: str, ylabel: str,
    colorbar_label: str = "accuracy (%)", annotate: bool = True,
):  # noqa: ANN201
    """A matplotlib figure of a matrix of fractions, annotated in percent (``annotate=False``: colours only, for large matrices).

    Cells that are None (not measured, or masked like the untrained cells of the accuracy
    matrix) are masked: drawn in light grey, without a value, never coloured as a result.
    """
    import numpy as np

    plt = _pyplot()
    data = np.ma.masked_invalid(np.array([[float("nan") if v is None else 100 * v for v in row] for row in values], dtype=float).reshape(len(rows), len(columns)))
    figure, axes = plt.subplots(figsize=(3.5 + 0.6 * max(len(columns), 3), 1.5 + 0.45 * max(len(rows), 3)))
    colours = plt.get_cmap("viridis").with_extremes(bad="#e6e6e6")
    image = axes.imshow(data, vmin=0, vmax=100, cmap=colours)
    axes.set_xticks(range(len(columns)), columns)
    axes.set_yticks(range(len(rows)), rows)
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.set_title(title, fontsize=9)
    for i, row in enumerate(data.filled(float("nan")) if annotate else []):
        for j, value in enumerate(row):
            if value == value:  # not NaN: masked cells stay blank
                axes.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    figure.colorbar(image, ax=axes, label=colorbar_label)
    figure.tight_layout()
    return figure


def accuracy_matrix_figure(matrix: Sequence[Sequence[float | None]], label: str = ""):  # noqa: ANN201
    """Heatmap of R[i, j] (row: after training experience i; column: tested on experience j).

    The cells of experiences not trained yet (j > i) are masked: their accuracy is measured (it
    is the baseline of forward transfer) but it is not a result of learning them.

    Args:
        matrix: Rows of R so far (fractions).
        label: The run's label for the title (:func:`lifelong_kd.loggers.base.run_label`).
    """
    rows = [f"after E{i}" for i in range(len(matrix))]
    columns = [f"E{j}" for j in range(len(matrix[0]) if matrix else 0)]
    trained = [[value if j <= i else None for j, value in enumerate(row)] for i, row in enumerate(matrix)]
    return heatmap(trained, rows, columns, titled("Accuracy matrix (grey: not trained yet)", label), "tested on", "trained up to")


def forgetting_curves_figure(matrix: Sequence[Sequence[float | None]], label: str = ""):  # noqa: ANN201
    """Accuracy on each experience from the step it was learned on: one line per column of R.

    A line that falls after its first point is forgetting; the dashed line is the average
    accuracy over the experiences seen so far. The accuracy axis is fitted to the points
    (:func:`fitted_limits`), so close curves stay apart.
    """
    from lifelong_kd.evaluation import metrics

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    steps = list(range(len(matrix)))
    drawn: list[float] = []
    for j, curve in metrics.accuracy_curves(matrix).items():
        if j < len(matrix):
            values = [100 * v for v in curve[j:]]
            drawn += values
            axes.plot(steps[j:], values, marker="o", markersize=3, label=f"E{j}")
    average = [100 * metrics.average_accuracy(matrix, t) for t in steps]
    axes.plot(steps, average, color="black", linestyle="--", label="average")
    axes.set(xlabel="after training experience", ylabel="accuracy (%)", ylim=fitted_limits(drawn + average))
    axes.set_title(titled("Accuracy on each experience", label), fontsize=9)
    axes.set_xticks(steps, [f"E{t}" for t in steps])
    axes.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    return figure


def method_curves_figure(matrices: Mapping[str, Sequence[Sequence[Sequence[float | None]]]], title: str):  # noqa: ANN201
    """Average accuracy and forgetting after each experience, one line per method: the mean over runs,
    in a band of ± the sample standard deviation (methods with one run: the line alone).

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
        accuracy = 100 * np.array([[metrics.average_accuracy(m, t) for t in steps] for m in runs])
        forgetting = 100 * np.array([[metrics.forgetting(m, t) for t in steps[1:]] for m in runs]).reshape(len(runs), len(steps) - 1)
        _mean_and_band(left, steps, accuracy, method)
        _mean_and_band(right, steps[1:], forgetting, method)
    left.set(title="Average accuracy on seen experiences (band: ± std)", xlabel="after training experience", ylabel="accuracy (%)")
    right.set(title="Forgetting (Chaudhry et al. 2018)", xlabel="after training experience", ylabel="forgetting (points)")
    left.set_xticks(steps, [f"E{t}" for t in steps])
    right.set_xticks(steps[1:], [f"E{t}" for t in steps[1:]])
    left.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def _mean_and_band(axes: Any, steps: Sequence[int], values: Any, method: str) -> None:
    """The mean over runs (rows of ``values``) as a line; with two runs or more, ± the sample standard deviation as a band."""
    mean = values.mean(axis=0)
    line = axes.plot(steps, mean, marker="o", markersize=3, label=method)[0]
    if len(values) > 1:
        spread = values.std(axis=0, ddof=1)
        axes.fill_between(steps, mean - spread, mean + spread, color=line.get_color(), alpha=0.15, linewidth=0, label=f"_band {method}")


def robustness_figure(robustness: Mapping[str, Any], step: int, label: str = ""):  # noqa: ANN201
    """Heatmap of mean accuracy over seen experiences per corruption (rows) x severity (columns)."""
    grid = robustness["grid"]
    severities = robustness["severities"]
    values = [[_mean(grid[name][str(s)][: step + 1]) for s in severities] for name in grid]
    return heatmap(values, list(grid), [str(s) for s in severities], titled(f"Accuracy under corruption after E{step}", label), "severity", "corruption")


# Largest matrix whose cells are annotated with their value (larger ones are colours only).
ANNOTATED_CELLS = 20


def confusion_matrix_figure(counts: Sequence[Sequence[int]], names: Sequence[str], step: int, label: str = ""):  # noqa: ANN201
    """Row-normalised confusion matrix over output units (rows: true, columns: predicted), on the experiences seen."""
    fractions = [[value / sum(row) if sum(row) else None for value in row] for row in counts]
    labels = [names[k] if k < len(names) else str(k) for k in range(len(counts))]
    title = titled(f"Confusion matrix after E{step} (share of each true class)", label)
    return heatmap(fractions, labels, labels, title, "predicted", "true", "share of the row (%)", annotate=len(counts) <= ANNOTATED_CELLS)


def per_class_accuracy_figure(per_class: Sequence[Sequence[float | None]], classes: Sequence[Sequence[int]], step: int, label: str = ""):  # noqa: ANN201
    """Accuracy on each class (columns: position in the experience) of each experience (rows), after experience ``step``."""
    width = max((len(row) for row in per_class), default=0)
    values = [list(row) + [None] * (width - len(row)) for row in per_class]
    rows = [f"E{j} ({','.join(str(c) for c in classes[j])})" for j in range(len(per_class))]
    title = titled(f"Per-class accuracy after E{step}", label)
    return heatmap(values, rows, [f"class {i}" for i in range(width)], title, "class of the experience", "experience", annotate=width <= ANNOTATED_CELLS)


def drift_figure(cka_matrix: Sequence[Sequence[float | None]], label: str = ""):  # noqa: ANN201
    """Linear CKA between the penultimate features of the snapshots after each experience (1: same representation)."""
    names = [f"E{i}" for i in range(len(cka_matrix))]
    return heatmap(cka_matrix, names, names, titled("Representation drift (linear CKA)", label), "snapshot after", "snapshot after", "CKA (%)")


def stability_curve_figure(curve: Mapping[str, Any], label: str = ""):  # noqa: ANN201
    """Continual evaluation: accuracy on each experience's probe at every evaluated iteration, across the stream.

    One line per experience from the iteration it starts being trained; dotted vertical lines
    mark the ends of experiences. A dip right after a line crosses into the next experience,
    followed by a recovery, is the stability gap (De Lange et al., ICLR 2023).
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 3.8))
    n_experiences = max((len(row) for row in curve["accuracy"]), default=0)
    drawn: list[float] = []
    for j in range(n_experiences):
        points = [(n, row[j]) for n, row in zip(curve["iterations"], curve["accuracy"]) if row[j] is not None]
        if points:
            drawn += [100 * a for _, a in points]
            axes.plot([n for n, _ in points], [100 * a for _, a in points], linewidth=1.2, label=f"E{j}")
    for end in curve["ends"][:-1]:
        axes.axvline(end, color="grey", linestyle=":", linewidth=0.8)
    title = f"Continual evaluation every {curve['eval_every']} iterations ({curve['probe_samples'] or 'all'} test samples per experience)"
    axes.set(xlabel="training iteration", ylabel="accuracy (%)", ylim=fitted_limits(drawn))
    axes.set_title(titled(title, label), fontsize=9)
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
        self.label_ = ""

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Keep the run's label for the titles (every figure is redrawn whole from each report)."""
        from lifelong_kd.loggers.base import run_label

        self.label_ = run_label(config)

    def log_report(self, report: EvalReport) -> None:
        """Redraw the figures atomically."""
        label = self.label_
        write_atomic(self.folder / "accuracy_matrix.png", figure_png(accuracy_matrix_figure(report.accuracy_matrix, label)))
        write_atomic(self.folder / "forgetting_curves.png", figure_png(forgetting_curves_figure(report.accuracy_matrix, label)))
        if report.robustness:
            write_atomic(self.folder / "robustness.png", figure_png(robustness_figure(report.robustness, report.step, label)))
        instruments = report.instruments
        if instruments:
            confusion = confusion_matrix_figure(instruments["confusion_matrix"], instruments["unit_names"], report.step, label)
            write_atomic(self.folder / "confusion_matrix.png", figure_png(confusion))
            per_class = per_class_accuracy_figure(instruments["per_class_accuracy"], instruments["classes"], report.step, label)
            write_atomic(self.folder / "per_class_accuracy.png", figure_png(per_class))
            if instruments.get("drift"):
                write_atomic(self.folder / "representation_drift.png", figure_png(drift_figure(instruments["drift"]["cka_matrix"], label)))
        if report.continual:
            write_atomic(self.folder / "stability_curve.png", figure_png(stability_curve_figure(report.continual, label)))

    def close(self) -> None:
        """Nothing is held open."""
