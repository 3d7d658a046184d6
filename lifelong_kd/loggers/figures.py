"""Figures: heatmaps of the accuracy matrix, the robustness grid, the confusion matrix, per-class accuracy and representation drift; forgetting curves; and a PNG logger."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable, Mapping, Sequence
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


# Largest side (rows or columns) of a heatmap whose cells are annotated with their value; larger ones
# are colours only: past it the numbers no longer fit their cells, and drawing them dominates the figure's cost.
ANNOTATED_CELLS = 20
# Largest heatmap size in inches (width, height): cells shrink past it, so a figure of a long stream
# (a 50 x 50 matrix, 500 output units) costs what a 20 x 20 one does (figures were quadratic in the stream length).
MAX_HEATMAP_INCHES = (11.0, 8.5)
# Most tick labels drawn along an axis; longer axes label every k-th row or column (a 50-row axis: every 5th).
# Each tick is several matplotlib artists laid out twice (tight_layout, then the drawing): 25 labels per
# axis instead of 12 made a large heatmap about 1.4x as slow to draw.
MAX_TICK_LABELS = 12


def thinned_ticks(labels: Sequence[str], most: int = MAX_TICK_LABELS) -> tuple[list[int], list[str]]:
    """Positions and labels of every ``k``-th item, ``k = ceil(len / most)``, so at most ``most`` labels are drawn."""
    stride = max(1, -(-len(labels) // most))
    positions = list(range(0, len(labels), stride))
    return positions, [labels[i] for i in positions]


def _as_array(values: Any, rows: int, columns: int) -> Any:
    """``values`` (nested sequences with None, or an array with NaN) as a float array of shape (rows, columns), None as NaN."""
    import numpy as np

    if isinstance(values, np.ndarray):
        return values.astype(float).reshape(rows, columns)
    return np.array([[float("nan") if v is None else v for v in row] for row in values], dtype=float).reshape(rows, columns)


def heatmap(
    values: Sequence[Sequence[float | None]] | Any, rows: Sequence[str], columns: Sequence[str], title: str, xlabel: str, ylabel: str,
    colorbar_label: str = "accuracy (%)", annotate: bool | None = None,
):  # noqa: ANN201
    """A matplotlib figure of a matrix of fractions (nested sequences, None for no value, or a float array, NaN for no value), annotated in percent.

    ``annotate=None`` (default) annotates matrices of at most :data:`ANNOTATED_CELLS` rows and
    columns and draws larger ones in colours only; True or False forces it. The figure grows
    with the matrix up to :data:`MAX_HEATMAP_INCHES`, and long axes are labelled every k-th
    item (:func:`thinned_ticks`), so drawing a large matrix costs about what a 20 x 20 one does.

    Cells that are None (not measured, or masked like the untrained cells of the accuracy
    matrix) are masked: drawn in light grey, without a value, never coloured as a result.
    """
    import numpy as np

    plt = _pyplot()
    annotate = max(len(rows), len(columns)) <= ANNOTATED_CELLS if annotate is None else annotate
    data = np.ma.masked_invalid(100 * _as_array(values, len(rows), len(columns)))
    width, height = 3.5 + 0.6 * max(len(columns), 3), 1.5 + 0.45 * max(len(rows), 3)
    capped = width > MAX_HEATMAP_INCHES[0] or height > MAX_HEATMAP_INCHES[1]
    figure, axes = plt.subplots(figsize=(min(width, MAX_HEATMAP_INCHES[0]), min(height, MAX_HEATMAP_INCHES[1])))
    colours, scale = plt.get_cmap("viridis").with_extremes(bad="#e6e6e6"), plt.Normalize(vmin=0, vmax=100)
    # Coloured here, as 8-bit RGBA: the same pixels as imshow(data, cmap=...), which resamples a float RGBA
    # copy of the matrix at the canvas's size (a 500 x 500 confusion matrix: 73 MB of numpy arrays; 29 MB this way).
    axes.imshow(colours(scale(data), bytes=True), aspect="auto" if capped else "equal", interpolation="nearest")
    axes.set_xticks(*thinned_ticks(columns))
    axes.set_yticks(*thinned_ticks(rows))
    if len(columns) > 12:
        axes.tick_params(axis="x", labelrotation=90, labelsize=7)
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.set_title(title, fontsize=9)
    for i, row in enumerate(data.filled(float("nan")) if annotate else []):
        for j, value in enumerate(row):
            if value == value:  # not NaN: masked cells stay blank
                axes.text(j, i, f"{value:.0f}", ha="center", va="center", color="white" if value < 60 else "black", fontsize=8)
    figure.colorbar(plt.cm.ScalarMappable(norm=scale, cmap=colours), ax=axes, label=colorbar_label)
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
    axes.set_xticks(*thinned_ticks([f"E{t}" for t in steps], most=12))  # a 5.5-inch axis holds about 12 labels
    if len(matrix) <= LEGEND_LINES:
        axes.legend(fontsize=7, ncol=2, loc="lower left")
    else:  # one entry per experience would cover the plot: the average alone
        axes.legend(handles=axes.get_lines()[-1:], fontsize=7, loc="lower left", title=f"one line per experience (E0-E{len(matrix) - 1})", title_fontsize=7)
    figure.tight_layout()
    return figure


# Most lines named one by one in a legend (more: the legend names the average alone).
LEGEND_LINES = 12


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


def confusion_matrix_figure(counts: Sequence[Sequence[int]], names: Sequence[str], step: int, label: str = ""):  # noqa: ANN201
    """Row-normalised confusion matrix over output units (rows: true, columns: predicted), on the experiences seen."""
    import numpy as np

    array = np.asarray(counts, dtype=float).reshape(len(counts), len(counts))
    totals = array.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(totals > 0, array / totals, np.nan)  # rows without samples: masked
    labels = [names[k] if k < len(names) else str(k) for k in range(len(counts))]
    title = titled(f"Confusion matrix after E{step} (share of each true class)", label)
    return heatmap(fractions, labels, labels, title, "predicted", "true", "share of the row (%)")


def per_class_accuracy_figure(per_class: Sequence[Sequence[float | None]], classes: Sequence[Sequence[int]], step: int, label: str = ""):  # noqa: ANN201
    """Accuracy on each class (columns: position in the experience) of each experience (rows), after experience ``step``."""
    width = max((len(row) for row in per_class), default=0)
    values = [list(row) + [None] * (width - len(row)) for row in per_class]
    rows = [f"E{j} ({','.join(str(c) for c in classes[j])})" for j in range(len(per_class))]
    title = titled(f"Per-class accuracy after E{step}", label)
    return heatmap(values, rows, [f"class {i}" for i in range(width)], title, "class of the experience", "experience")


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


# The last drawing of each figure function, keyed by its arguments: the PNG logger and the
# TensorBoard logger draw the same figures from the same report, and a drawing costs 0.15-0.3 s.
_LAST_DRAWING: dict[str, tuple[str, bytes]] = {}


def shared_png(figure_function: Callable[..., Any], *inputs: Any) -> bytes:
    """PNG bytes of ``figure_function(*inputs)``, drawn once for every logger that asks.

    The drawing is reused while the same function is asked for with equal ``inputs`` (compared
    through their JSON text); one drawing per function is kept.
    """
    key = json.dumps(inputs, sort_keys=True, default=str)
    cached = _LAST_DRAWING.get(figure_function.__name__)
    if cached is not None and cached[0] == key:
        return cached[1]
    png = figure_png(figure_function(*inputs))
    _LAST_DRAWING[figure_function.__name__] = (key, png)
    return png


def png_size(png: bytes) -> tuple[int, int]:
    """(height, width) of a PNG from its header."""
    width, height = struct.unpack(">II", png[16:24])
    return height, width


# Drawings per run when figures_every is None: streams of up to this many experiences are drawn after every
# experience; longer ones every ceil(n / FIGURE_REDRAWS) experiences (a 20-experience stream: every 4th).
FIGURE_REDRAWS = 5
# Longer streams than this are drawn after the last experience only when figures_every is None: their heatmaps
# are drawn at the largest size, 0.3-0.5 s each, and four more drawings were 3.5% of a 50-experience run's wall
# time (benchmarks/long_stream.py; the loggers' budget is 10%). TensorBoard's scalars still come every experience.
DRAWN_ONCE_AFTER = 20


def check_figures_every(every: int | None) -> None:
    """Raise ``ValueError`` unless ``every`` is None or a positive number of experiences."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"figures_every must be a positive number of experiences (e.g. 5) or None for the default, got {every!r}.")


def figures_due(step: int, n_experiences: int, every: int | None = None) -> bool:
    """Whether the figures are drawn after experience ``step`` (0-based) of ``n_experiences``.

    After the last experience always; before it, after every ``every``-th experience (steps
    ``every - 1``, ``2 every - 1``, ...). ``every=None`` chooses ``ceil(n_experiences / 5)``:
    every experience on streams of up to 5 experiences, about 5 drawings on streams of up to
    20 (:data:`FIGURE_REDRAWS`), and the last experience alone on longer streams
    (:data:`DRAWN_ONCE_AFTER`), so the figures' share of a run does not grow with the stream.

    The rule depends on the step alone, so a resumed run draws at the same steps and ends with
    the same figures as an uninterrupted one.
    """
    if every is None:
        every = n_experiences if n_experiences > DRAWN_ONCE_AFTER else max(1, -(-n_experiences // FIGURE_REDRAWS))
    return step >= n_experiences - 1 or (step + 1) % every == 0


class FigureLogger:
    """Writes figures into the run folder, each redrawn whole from one report.

    ``accuracy_matrix.png`` and ``forgetting_curves.png`` (and ``robustness.png``; with continual
    evaluation, ``stability_curve.png``) when :func:`figures_due` says so; with the instruments,
    ``confusion_matrix.png``, ``per_class_accuracy.png`` and ``representation_drift.png`` (large
    matrices on long streams) after the last experience.

    Args:
        folder: The run folder.
        every: Draw after every ``every``-th experience and after the last; None: every experience
            on streams of up to 5 experiences, about 5 times on streams of up to 20, after the last
            experience alone on longer ones (:func:`figures_due`).
    """

    def __init__(self, folder: str | Path, every: int | None = None) -> None:
        check_figures_every(every)
        self.folder = Path(folder)
        self.every = every
        self.label_ = ""

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Keep the run's label for the titles (every figure is redrawn whole from each report)."""
        from lifelong_kd.loggers.base import run_label

        self.label_ = run_label(config)

    def log_report(self, report: EvalReport) -> None:
        """Redraw the figures atomically, when they are due after this report's experience."""
        if not figures_due(report.step, len(report.accuracy), self.every):
            return
        self._progress_figures(report)
        if report.instruments and report.step >= len(report.accuracy) - 1:
            self._instrument_figures(report.instruments, report.step)

    def _progress_figures(self, report: EvalReport) -> None:
        """The accuracy matrix, forgetting curves, robustness grid and stability curve so far."""
        label = self.label_
        write_atomic(self.folder / "accuracy_matrix.png", shared_png(accuracy_matrix_figure, report.accuracy_matrix, label))
        write_atomic(self.folder / "forgetting_curves.png", figure_png(forgetting_curves_figure(report.accuracy_matrix, label)))
        if report.robustness:
            write_atomic(self.folder / "robustness.png", shared_png(robustness_figure, report.robustness, report.step, label))
        if report.continual:
            write_atomic(self.folder / "stability_curve.png", figure_png(stability_curve_figure(report.continual, label)))

    def _instrument_figures(self, instruments: Mapping[str, Any], step: int) -> None:
        """The confusion matrix, per-class accuracy and representation drift (after the last experience)."""
        label = self.label_
        if instruments.get("confusion_matrix") is not None:  # None in an earlier report of a long stream (run_folder.compact_report)
            confusion = shared_png(confusion_matrix_figure, instruments["confusion_matrix"], instruments["unit_names"], step, label)
            write_atomic(self.folder / "confusion_matrix.png", confusion)
        per_class = per_class_accuracy_figure(instruments["per_class_accuracy"], instruments["classes"], step, label)
        write_atomic(self.folder / "per_class_accuracy.png", figure_png(per_class))
        if instruments.get("drift"):
            write_atomic(self.folder / "representation_drift.png", shared_png(drift_figure, instruments["drift"]["cka_matrix"], label))

    def close(self) -> None:
        """Nothing is held open."""
