"""Report formatting: the accuracy matrix, headline metrics, run comparison and compression summary tables."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lifelong_kd.cli.errors import UsageError

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = {
    "model": ("model", "{}"),
    "average_accuracy": ("avg acc %", "{:.2f}"),
    "forgetting": ("forgetting %", "{:.2f}"),
    "relative_robustness": ("rel. robustness", "{:.3f}"),
    "nonzero_parameters": ("params (non-zero)", "{:,}"),
    "nonzero_parameter_ratio": ("param ratio", "{:.1f}x"),
    "bytes_ratio": ("bytes ratio", "{:.1f}x"),
    "flops_ratio": ("FLOPs ratio", "{:.1f}x"),
    "latency_ratio": ("latency ratio", "{:.2f}x"),
    "latency_seconds": ("ms / batch of 256", "{:.2f}"),
    "accuracy_kept": ("acc. kept %", "{:.1f}"),
}
PERCENT = frozenset({"average_accuracy", "forgetting", "accuracy_kept"})


def format_summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ``summary`` rows as a Markdown table (ratios are teacher / model: above 1 = smaller/faster)."""
    lines = ["| " + " | ".join(title for title, _ in SUMMARY_COLUMNS.values()) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for row in rows:
        cells = []
        for key, (_, pattern) in SUMMARY_COLUMNS.items():
            value = row.get(key)
            value = 100 * value if key in PERCENT and value is not None else value
            value = 1000 * value if key == "latency_seconds" and value is not None else value
            cells.append("-" if value is None else pattern.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_matrix(matrix: Sequence[Sequence[float | None]]) -> str:
    """Accuracy matrix as a percent table: rows = after experience i, columns = experience j."""
    width = len(matrix[0]) if matrix else 0
    lines = ["after \\ on " + " ".join(f"{f'E{j}':>6}" for j in range(width))]
    for i, row in enumerate(matrix):
        cells = " ".join(f"{'-' if v is None else f'{100 * v:.1f}':>6}" for v in row)
        lines.append(f"{f'E{i}':<11}" + cells)
    return "\n".join(lines)


def format_metrics(metrics: Mapping[str, float | None]) -> str:
    """Headline metrics in percent."""
    return "  ".join(f"{k}: {'n/a' if v is None else f'{100 * v:.2f}%'}" for k, v in metrics.items())


# Keys a results.json must hold, with their JSON types, for `lifelong-kd report` to read it.
REQUIRED_RESULTS = {"config": dict, "metrics": dict, "finished_experiences": int, "accuracy_matrix": list}


def read_finished(run_dir: str) -> tuple[dict[str, Any] | None, str | None]:
    """A run folder's ``results.json`` if its run is finished, else ``(None, why not)``.

    Raises:
        UsageError: The path does not exist, or its ``results.json`` is damaged or not a results file.
    """
    folder, path = Path(run_dir), Path(run_dir) / "results.json"
    if not folder.exists():
        raise UsageError(f"{run_dir} does not exist; pass run folders written by `lifelong-kd run`.")
    if not folder.is_dir():
        return None, "not a run folder"
    if not path.is_file():
        return None, "no results.json yet (unfinished, or not a run folder)"
    results = _load_results(path)
    finished, total = results["finished_experiences"], _experiences(results)
    if finished < 1 or (total is not None and finished < total):
        return None, f"unfinished ({finished} of {total or '?'} experiences; `lifelong-kd run --resume --out {run_dir}` continues it)"
    return results, None


def _load_results(path: Path) -> dict[str, Any]:
    """The parsed ``results.json``, checked for the keys the report reads."""
    fix = "re-run it (or drop the folder from the list)"
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is damaged (not valid JSON: {error}); {fix}.") from None
    if not isinstance(results, dict):
        raise UsageError(f"{path} is not a lifelong-kd results file: it holds a JSON {type(results).__name__}, not an object; {fix}.")
    wrong = [key for key, kind in REQUIRED_RESULTS.items() if not isinstance(results.get(key), kind) or isinstance(results.get(key), bool)]
    if wrong:
        raise UsageError(f"{path} is not a lifelong-kd results file: {', '.join(wrong)} missing or of the wrong type; {fix}.")
    return results


def _experiences(results: Mapping[str, Any]) -> int | None:
    """Experiences of the run's stream: the width of its accuracy matrix (None when it has no row yet)."""
    matrix = results["accuracy_matrix"]
    return len(matrix[0]) if matrix and isinstance(matrix[0], list) else None


def report_rows(run_dirs: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """One summary row per finished run folder, and one note per folder left out (unfinished, not a run)."""
    rows, notes = [], []
    for run_dir in run_dirs:
        results, why = read_finished(run_dir)
        if results is None:
            notes.append(f"skipped {run_dir}: {why}")
        else:
            rows.append(summary_row(run_dir, results))
    return rows, notes


def summary_row(run_dir: str, results: Mapping[str, Any]) -> dict[str, Any]:
    """The report row of one finished run (fractions and ratios as recorded; :func:`shown_row` converts them)."""
    config, metrics, timing = results["config"], results["metrics"], results.get("timing") or {}
    robustness = results.get("robustness") or {}
    ratios = (results.get("compression") or {}).get("ratios", {})
    return {
        "run": Path(run_dir).name,
        "benchmark": config.get("benchmark"),
        "scenario": config.get("scenario"),
        "strategy": config.get("strategy"),
        "engine": config.get("engine") or "lifelong-kd",  # runs recorded before the option existed used ours
        "seed": config.get("seed"),
        "exps": results["finished_experiences"],
        "avg_acc": metrics.get("average_accuracy"),
        "forgetting": metrics.get("forgetting"),
        "bwt": metrics.get("backward_transfer"),
        "fwt": metrics.get("forward_transfer"),
        "corrupted_acc": robustness.get("mean_corrupted_accuracy"),
        "rel_robustness": robustness.get("relative_robustness"),
        "corrupted_forgetting": robustness.get("corrupted_forgetting"),
        "param_ratio": ratios.get("parameter_ratio"),
        "flops_ratio": ratios.get("flops_ratio"),
        "acc_kept": ratios.get("accuracy_kept"),
        "train_s": timing.get("train_seconds"),
        "eval_s": timing.get("eval_seconds"),
    }


# Report columns recorded as fractions, shown (table and CSV) in percent: one unit for every accuracy-like number.
PERCENT_COLUMNS = ("avg_acc", "forgetting", "bwt", "fwt", "corrupted_acc", "rel_robustness", "corrupted_forgetting", "acc_kept")
# Report columns that are factors: the reference model's size or FLOPs over the run's.
FACTOR_COLUMNS = ("param_ratio", "flops_ratio")
# The units line printed above the table.
UNITS = (
    "units: avg_acc, forgetting, bwt, fwt, corrupted_acc, rel_robustness, corrupted_forgetting and acc_kept in % "
    "(forgetting, bwt and fwt in percentage points); param_ratio and flops_ratio: reference / model (x); train_s and eval_s in seconds"
)


def column_title(key: str) -> str:
    """A column's name with its unit: ``avg_acc_%``, ``param_ratio_x``, ``train_s``."""
    return f"{key}_%" if key in PERCENT_COLUMNS else f"{key}_x" if key in FACTOR_COLUMNS else key


def shown_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with fractions in percent and every key titled with its unit (the values of the table and the CSV)."""
    return {column_title(key): 100 * value if key in PERCENT_COLUMNS and value is not None else value for key, value in row.items()}


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table in the units of :data:`UNITS`: percent with two decimals, factors with two, seconds with one."""
    shown = [shown_row(row) for row in rows]
    headers = list(shown[0])

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key.endswith(("_%", "_x")):
            return f"{value:.2f}"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(k, row[k]) for k in headers) + " |" for row in shown]
    return "\n".join(lines)


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as CSV: the table's columns and units, values unrounded (empty when not measured)."""
    import csv
    import io

    shown = [shown_row(row) for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(shown[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in shown)
    return buffer.getvalue()


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write :func:`format_csv` to ``path`` atomically.

    Raises:
        UsageError: ``path`` is a folder.
    """
    from lifelong_kd.files import write_atomic

    if Path(path).is_dir():
        raise UsageError(f"--csv {path} is a folder; give the path of the CSV file to write (e.g. {Path(path) / 'report.csv'}).")
    write_atomic(path, format_csv(rows).encode())


def command_report(args: argparse.Namespace) -> int:
    """``lifelong-kd report RUN_DIR...``: finished runs side by side; unfinished folders are noted on stderr."""
    rows, notes = report_rows(args.runs)
    for note in notes:
        log.warning(f"note: {note}")
    if not rows:
        raise UsageError(f"None of the {len(args.runs)} folder(s) given holds a finished run; wait for them to finish or resume them.")
    log.info(UNITS)
    log.info(format_rows(rows))
    if getattr(args, "csv", None):
        write_csv(args.csv, rows)
        log.info(f"CSV written to {args.csv}")
    if args.by_seed:  # runs that differ only by seed: one row of mean ± std each (lifelong_kd.cli.sweep)
        from lifelong_kd.cli.sweep import aggregate, format_markdown, group_by_configuration

        finished = [document for document in (read_finished(run_dir)[0] for run_dir in args.runs) if document is not None]
        log.info("\nmean ± std over seeds:\n" + format_markdown(aggregate(group_by_configuration(finished))))
    return 0
