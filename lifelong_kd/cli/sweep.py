"""``lifelong-kd sweep``: seeds x grids of run options, each a normal run folder, then a mean ± std table.

A sweep is shared run options (``base``), a grid of options to vary (every combination), and
seeds. Each (combination, seed) is one ``lifelong-kd run`` in its own process and its own run
folder ``SWEEP/runs/<name>``, named by its settings (``strategy=lwf_lr=0.1_seed=2``). Given on
the command line::

    lifelong-kd sweep --out sweeps/lr --seeds 0,1,2 --grid strategy=finetune,lwf --grid lr=0.01,0.1 --jobs 2 -- --benchmark split-digits --epochs 5

or in a TOML file (flags given as well win)::

    out = "sweeps/lr"
    seeds = [0, 1, 2]
    jobs = 2
    [base]              # the run options every run shares (the keys of a `run` config file)
    benchmark = "split-digits"
    epochs = 5
    [grid]              # every combination of these
    strategy = ["finetune", "lwf"]
    lr = [0.01, 0.1]
    [grid.lwf]          # only in the runs of strategy lwf
    temperature = [1.0, 2.0]

On the command line, ``--grid lwf.temperature=1,2`` is the same strategy-specific grid.

Resumable: run again with the same shared options and every finished run is skipped, every
unfinished one resumed from its last finished experience (``run --resume``), the others started;
seeds and grid values may be added. Workers: ``--jobs N`` runs N at a time (default 1), each
with its share of the cores (``OMP_NUM_THREADS`` = cores // N, and a passive OpenMP wait
policy), so the workers do not oversubscribe the machine. Each worker dies with the sweep (a
killed sweep leaves consistent run folders that the next sweep resumes). The end: one row per
combination with the mean ± sample standard deviation over its seeds of the average accuracy,
forgetting, BWT, min-ACC and WC-ACC (with ``--eval-every``), mean corrupted accuracy (with
shifts) and wall time, as Markdown (printed and ``SWEEP/summary.md``), CSV (``summary.csv``)
and a figure (``summary.png``).
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import itertools
import json
import logging
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifelong_kd import threads
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.files import write_atomic
from lifelong_kd.threads import available_cores  # noqa: F401 - re-exported: the sweep's tests import it from here

log = logging.getLogger(__name__)

SWEEP_RECORD = "sweep.json"
RUNS = "runs"
LOGS = "logs"
# Columns of the summary: (key in a run's summary values, title, shown in percent).
COLUMNS = (
    ("average_accuracy", "avg acc %", True),
    ("forgetting", "forgetting %", True),
    ("backward_transfer", "BWT %", True),
    ("min_accuracy", "min-ACC %", True),
    ("worst_case_accuracy", "WC-ACC %", True),
    ("mean_corrupted_accuracy", "corrupted acc %", True),
    ("wall_seconds", "wall s", False),
)
# Seconds between two looks at the running workers.
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep.

    Attributes:
        name: Its folder name: the settings and the seed.
        configuration: The name without the seed (runs that differ only by seed share it).
        settings: The grid values of this run, by option name.
        seed: Its seed.
        arguments: Its ``lifelong-kd run`` arguments, without ``--out``.
    """

    name: str
    configuration: str
    settings: Mapping[str, str]
    seed: int
    arguments: tuple[str, ...]


@dataclass
class Sweep:
    """What to run: shared run arguments, the grid, the seeds.

    Attributes:
        base: Run arguments every run shares (``--benchmark split-digits --epochs 5``).
        grid: ``{option: values}`` varied over every combination (values as flag text).
        strategy_grids: ``{strategy: {option: values}}`` varied only in that strategy's runs.
        seeds: The seeds.
    """

    base: list[str] = field(default_factory=list)
    grid: dict[str, list[str]] = field(default_factory=dict)
    strategy_grids: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])


# ---------------------------------------------------------------------- reading the sweep


def flag_text(value: Any) -> str:
    """A TOML or flag value as flag text (lists as ``a,b,c``; booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(flag_text(v) for v in value)
    return str(value)


@functools.cache
def run_switches() -> frozenset[str]:
    """The ``run`` flags that are on/off switches (``--augment`` / ``--no-augment``)."""
    from lifelong_kd.cli.arguments import make_parser

    actions = make_parser().commands["run"]._actions
    return frozenset(flag for action in actions if isinstance(action, argparse.BooleanOptionalAction) for flag in action.option_strings)


def option_arguments(name: str, value: str) -> list[str]:
    """``--name value``, or ``--name`` / ``--no-name`` for the run's on/off flags."""
    flag = "--" + name.replace("_", "-")
    if flag in run_switches():
        truth = value.strip().lower()
        if truth not in ("true", "false"):
            raise UsageError(f"{flag} is on or off: give true or false in the sweep, got {value!r}.")
        return [flag if truth == "true" else "--no-" + flag[2:]]
    return [flag, value]


def parse_grid(items: Sequence[str]) -> tuple[dict[str, list[str]], dict[str, dict[str, list[str]]]]:
    """``KEY=V1,V2`` items (``STRATEGY.KEY=...`` for one strategy's runs) as the grid and the per-strategy grids.

    Raises:
        UsageError: An item without ``=`` or without values.
    """
    grid: dict[str, list[str]] = {}
    strategy_grids: dict[str, dict[str, list[str]]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        parts = [v.strip() for v in _split_values(values)]
        if not sep or not key or not parts or any(not p for p in parts):
            raise UsageError(f"--grid {item!r}: write KEY=VALUE,VALUE,... (e.g. --grid lr=0.01,0.1, or lwf.temperature=1,2 for one strategy's runs).")
        strategy, dot, option = key.rpartition(".")
        target = strategy_grids.setdefault(strategy, {}) if dot else grid
        target[option if dot else key] = parts
    return grid, strategy_grids


def _split_values(text: str) -> list[str]:
    """Comma-separated grid values; a value that is itself a list is written in brackets: ``alpha=[0,1],[1,2]``."""
    values, depth, current = [], 0, ""
    for character in text:
        depth += character == "["
        depth -= character == "]"
        if character == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += character
    values.append(current)
    return [value.strip().strip("[]") if value.strip().startswith("[") else value for value in values]


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (inclusive) as seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            seeds.extend(range(int(first), int(last) + 1) if dash else [int(first)])
    except ValueError:
        raise UsageError(f"--seeds {text!r}: give seeds as 0,1,2 or a range 0-4.") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: give at least one seed, each once.")
    return seeds


def read_sweep_file(path: str) -> dict[str, Any]:
    """A TOML sweep file's ``out``, ``jobs``, ``seeds``, ``base`` and ``grid`` (other keys are an error)."""
    from lifelong_kd.cli.arguments import read_toml

    data = read_toml(path)
    unknown = sorted(set(data) - {"out", "jobs", "seeds", "base", "grid"})
    if unknown:
        raise UsageError(f"Sweep file {path}: unknown key(s) {', '.join(unknown)}; a sweep file has out, jobs, seeds, and the tables [base] and [grid].")
    for table in ("base", "grid"):
        if not isinstance(data.get(table, {}), dict):
            raise UsageError(f"Sweep file {path}: {table} must be a table ([{table}]), got {data[table]!r}.")
    return data


def sweep_from(args: argparse.Namespace) -> tuple[Sweep, str | None, int]:
    """The sweep, its folder and its number of workers, from the file (if any) and the flags (which win)."""
    data = read_sweep_file(args.file) if args.file else {}
    base: list[str] = []
    for key, value in data.get("base", {}).items():
        base.extend(option_arguments(key, flag_text(value)))
    grid = {key: [flag_text(v) for v in (values if isinstance(values, list) else [values])] for key, values in data.get("grid", {}).items() if not isinstance(values, dict)}
    strategy_grids = {
        strategy: {key: [flag_text(v) for v in (values if isinstance(values, list) else [values])] for key, values in table.items()}
        for strategy, table in data.get("grid", {}).items()
        if isinstance(table, dict)
    }
    flag_grid, flag_strategy_grids = parse_grid(args.grid or [])
    grid.update(flag_grid)
    for strategy, table in flag_strategy_grids.items():
        strategy_grids.setdefault(strategy, {}).update(table)
    seeds = parse_seeds(args.seeds) if args.seeds else [int(s) for s in data.get("seeds", [0])]
    jobs = args.jobs if args.jobs is not None else int(data.get("jobs", 1))
    if jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}.")
    return Sweep(base + list(args.run_arguments or []), grid, strategy_grids, seeds), args.out or data.get("out"), jobs


# ---------------------------------------------------------------------- planning


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.,=+-]", "-", text)


def plan(sweep: Sweep) -> list[PlannedRun]:
    """Every (combination, seed) of ``sweep``, in a stable order (strategy grids expand their strategy's runs).

    Raises:
        UsageError: A strategy grid for a strategy no run uses.
    """
    strategies = set(sweep.grid.get("strategy", [_base_value(sweep.base, "strategy") or "finetune"]))
    unused = sorted(set(sweep.strategy_grids) - strategies)
    if unused:
        raise UsageError(f"grid options for strategy {', '.join(unused)}, which no run of the sweep uses (its runs use {', '.join(sorted(strategies))}); check the name before the dot.")
    runs = []
    for combination in _combinations(sweep.grid):
        strategy = combination.get("strategy", _base_value(sweep.base, "strategy"))
        for extra in _combinations(sweep.strategy_grids.get(strategy or "finetune", {})):
            settings = {**combination, **extra}
            configuration = "_".join(f"{key}={_safe(value)}" for key, value in settings.items()) or "base"
            arguments = list(sweep.base)
            for key, value in settings.items():
                arguments.extend(option_arguments(key, value))
            for seed in sweep.seeds:
                runs.append(PlannedRun(f"{configuration}_seed={seed}", configuration, settings, seed, (*arguments, "--seed", str(seed), "--quiet")))
    return runs


def _combinations(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def _base_value(base: Sequence[str], name: str) -> str | None:
    flag = "--" + name
    for position, word in enumerate(base):
        if word == flag and position + 1 < len(base):
            return base[position + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def check_runs(runs: Sequence[PlannedRun], folder: Path) -> None:
    """Parse every run's arguments and build its strategy now, so bad input stops the sweep before anything runs.

    Raises:
        UsageError: The first run whose options are wrong, named.
    """
    from lifelong_kd.cli.arguments import config_from_args, parse_arguments
    from lifelong_kd.cli.compose import build_strategy

    reserved = ("--out", "--resume", "--no-resume", "--overwrite", "--no-overwrite", "--config")
    for run in runs:
        try:
            if any(word.split("=")[0] in reserved for word in run.arguments):
                raise UsageError("--out, --resume, --overwrite and --config are the sweep's to set; leave them out of the run options (put shared options in the sweep file's [base]).")
            config = config_from_args(parse_arguments(["run", *run.arguments, "--out", str(folder / RUNS / run.name)]))
            if not (config.student or config.teacher):
                build_strategy(config.strategy, config.strategy_options)
        except (UsageError, ValueError) as error:
            raise UsageError(f"sweep run {run.name}: {error}") from None


def check_record(folder: Path, sweep: Sweep) -> None:
    """Refuse a sweep folder made with other shared options; record the sweep in a new one."""
    path = folder / SWEEP_RECORD
    record = {"base": sweep.base, "grid": sweep.grid, "strategy_grids": sweep.strategy_grids, "seeds": sweep.seeds}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UsageError(f"{path} is damaged (not JSON); choose another --out, or delete the file if the runs in {folder / RUNS} are to be reused.") from None
        if saved.get("base") != sweep.base:
            raise UsageError(
                f"{folder} holds a sweep with other shared run options ({' '.join(saved.get('base', []))!r}, now {' '.join(sweep.base)!r}); "
                "its finished runs would mix with the new ones. Give the same options to continue it, or choose another --out."
            )
        record["grid"] = {**saved.get("grid", {}), **sweep.grid}
        record["seeds"] = sorted(set(saved.get("seeds", [])) | set(sweep.seeds))
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=2).encode())


# ---------------------------------------------------------------------- running


def run_state(folder: Path) -> str:
    """``finished``, ``resume`` (a checkpoint to continue), ``restart`` (files but no checkpoint) or ``new``."""
    from lifelong_kd.run_folder import CHECKPOINT, RESULTS, RUN_FILES

    results = folder / RESULTS
    if results.is_file():
        try:
            document = json.loads(results.read_text())
            matrix = document.get("accuracy_matrix") or []
            if matrix and document.get("finished_experiences") == len(matrix[0]):
                return "finished"
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
            pass
    if (folder / CHECKPOINT).is_file():
        return "resume"
    return "restart" if folder.is_dir() and any((folder / name).exists() for name in RUN_FILES) else "new"


def worker_environment(jobs: int) -> dict[str, str]:
    """The environment of a worker: its share of the cores as OpenMP/MKL threads, a passive OpenMP wait policy (:mod:`lifelong_kd.threads`)."""
    return threads.worker_environment(threads.share_of_cores(jobs), shared=jobs > 1)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL this child when the sweep dies (no orphan keeps writing a run folder)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start(run: PlannedRun, folder: Path, state: str, environment: Mapping[str, str]) -> subprocess.Popen:
    """Start one run's process (``--resume`` or ``--overwrite`` as its folder's state asks); its output goes to ``SWEEP/logs``."""
    out = folder / RUNS / run.name
    extra = {"resume": ["--resume"], "restart": ["--overwrite"]}.get(state, [])
    (folder / LOGS).mkdir(parents=True, exist_ok=True)
    output = open(folder / LOGS / f"{run.name}.log", "a")  # noqa: SIM115 - closed when the process ends
    command = [sys.executable, "-m", "lifelong_kd", "run", *run.arguments, "--out", str(out), *extra]
    output.write(f"$ {' '.join(command)}\n")
    output.flush()
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=dict(environment), preexec_fn=preexec)  # noqa: PLW1509
    process.log_file = output  # type: ignore[attr-defined]
    return process


def execute(runs: Sequence[PlannedRun], folder: Path, jobs: int) -> list[str]:
    """Run every unfinished run, ``jobs`` at a time; returns the names of the runs that failed.

    On Ctrl-C or SIGTERM the workers get SIGTERM (each stops like an interrupted run,
    keeping its finished experiences) and the interruption is raised again.
    """
    from lifelong_kd.run_folder import tidy_finished

    states = {run.name: run_state(folder / RUNS / run.name) for run in runs}
    pending = [run for run in runs if states[run.name] != "finished"]
    for run in runs:
        if states[run.name] == "finished":
            tidy_finished(folder / RUNS / run.name)  # a worker killed while drawing its final figures
    skipped = len(runs) - len(pending)
    log.info(f"sweep {folder}: {len(runs)} runs, {skipped} finished already, {len(pending)} to run, {jobs} at a time "
             f"with {threads.share_of_cores(jobs)} threads each")
    environment, active, failed, done = worker_environment(jobs), {}, [], skipped
    try:
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.pop(0)
                active[start(run, folder, states[run.name], environment)] = (run, time.perf_counter())
            time.sleep(POLL_SECONDS)
            for process in [p for p in active if p.poll() is not None]:
                run, began = active.pop(process)
                process.log_file.close()
                done += 1
                outcome = "finished" if process.returncode == 0 else f"failed (exit {process.returncode}, see {folder / LOGS / (run.name + '.log')})"
                if process.returncode != 0:
                    failed.append(run.name)
                log.info(f"[{done}/{len(runs)}] {run.name}: {outcome} in {time.perf_counter() - began:.0f} s")
    except KeyboardInterrupt:
        _stop(active)
        raise
    return failed


def _stop(active: Mapping[subprocess.Popen, Any]) -> None:
    """SIGTERM every worker and wait for them (each keeps its finished experiences)."""
    for process in active:
        if process.poll() is None:
            process.terminate()
    for process in active:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        process.log_file.close()


# ---------------------------------------------------------------------- the table


def run_values(results: Mapping[str, Any]) -> dict[str, float | None]:
    """The summary values of one finished run's ``results.json``."""
    metrics = results.get("metrics") or {}
    stability = results.get("stability") or {}
    robustness = results.get("robustness") or {}
    timing = results.get("timing") or {}
    return {
        "average_accuracy": metrics.get("average_accuracy"),
        "forgetting": metrics.get("forgetting"),
        "backward_transfer": metrics.get("backward_transfer"),
        "min_accuracy": stability.get("min_accuracy"),
        "worst_case_accuracy": stability.get("worst_case_accuracy"),
        "mean_corrupted_accuracy": robustness.get("mean_corrupted_accuracy"),
        "wall_seconds": (timing.get("train_seconds") or 0.0) + (timing.get("eval_seconds") or 0.0) if timing else None,
    }


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (n - 1; None for one value) of the defined values, and their number."""
    defined = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not defined:
        return None, None, 0
    mean = sum(defined) / len(defined)
    std = math.sqrt(sum((v - mean) ** 2 for v in defined) / (len(defined) - 1)) if len(defined) > 1 else None
    return mean, std, len(defined)


def aggregate(groups: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per configuration: the number of runs and ``{key}_mean``/``{key}_std`` for every summary column."""
    rows = []
    for configuration, documents in groups.items():
        values = [run_values(document) for document in documents]
        row: dict[str, Any] = {"configuration": configuration, "runs": len(documents)}
        for key, _, _ in COLUMNS:
            row[f"{key}_mean"], row[f"{key}_std"], _ = mean_std([v[key] for v in values])
        rows.append(row)
    return rows


def _cell(mean: float | None, std: float | None, percent: bool) -> str:
    if mean is None:
        return "-"
    scale, digits = (100.0, 2) if percent else (1.0, 1)
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if std is not None else "")


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary rows as a Markdown table (columns without any value are left out)."""
    shown = [(key, title, percent) for key, title, percent in COLUMNS if any(row[f"{key}_mean"] is not None for row in rows)]
    lines = ["| configuration | runs | " + " | ".join(title for _, title, _ in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for row in rows:
        cells = [_cell(row[f"{key}_mean"], row[f"{key}_std"], percent) for key, _, percent in shown]
        lines.append(f"| {row['configuration']} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary rows as CSV (fractions and seconds, unrounded; empty where undefined)."""
    buffer = io.StringIO()
    names = ["configuration", "runs", *(f"{key}_{part}" for key, _, _ in COLUMNS for part in ("mean", "std"))]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: ("" if row.get(name) is None else row[name]) for name in names})
    return buffer.getvalue()


def group_by_configuration(documents: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Finished runs grouped by their configuration without the seed; each group named by the options whose values differ.

    Options that do not change the numbers (:data:`lifelong_kd.pipeline.VOLATILE_KEYS`: ``out``,
    ``quiet``, ...) are ignored; the strategy options count (an option one strategy does not
    take is left out of its group's name).
    """
    from lifelong_kd.evaluation.report import json_safe
    from lifelong_kd.pipeline import VOLATILE_KEYS

    ignored = (VOLATILE_KEYS - {"strategy_options"}) | {"seed"}
    flat = []
    for document in documents:
        config = {key: value for key, value in json_safe(dict(document.get("config") or {})).items() if key not in ignored}
        flat.append({**{k: v for k, v in config.items() if k != "strategy_options"}, **(config.get("strategy_options") or {})})
    keyed: dict[str, tuple[dict[str, Any], list[Mapping[str, Any]]]] = {}
    for document, options in zip(documents, flat):
        keyed.setdefault(json.dumps(options, sort_keys=True), (options, []))[1].append(document)
    varying = sorted({key for options, _ in keyed.values() for key in options if len({json.dumps(o.get(key)) for o, _ in keyed.values() if o.get(key) is not None}) > 1})
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for options, members in keyed.values():
        label = "_".join(f"{key}={flag_text(options[key])}" for key in varying if options.get(key) is not None) or "all runs"
        while label in groups:  # groups that differ only where one of them has no value
            label += "+"
        groups[label] = members
    return groups


def collect(runs: Sequence[PlannedRun], folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The finished runs' ``results.json`` documents, grouped by configuration (in plan order)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        path = folder / RUNS / run.name
        if run_state(path) == "finished":
            groups.setdefault(run.configuration, []).append(json.loads((path / "results.json").read_text()))
    return groups


def write_summary(rows: Sequence[Mapping[str, Any]], folder: Path) -> None:
    """``summary.md``, ``summary.csv`` and ``summary.png`` in the sweep folder."""
    from lifelong_kd.loggers.figures import configurations_figure, figure_png

    write_atomic(folder / "summary.md", (format_markdown(rows) + "\n").encode())
    write_atomic(folder / "summary.csv", format_csv(rows).encode())
    write_atomic(folder / "summary.png", figure_png(configurations_figure(rows, [(key, title) for key, title, percent in COLUMNS if percent])))


def command_sweep(args: argparse.Namespace) -> int:
    """``lifelong-kd sweep``: plan, check, run what is unfinished, then the mean ± std table."""
    sweep, out, jobs = sweep_from(args)
    if not out:
        raise UsageError("lifelong-kd sweep needs a folder: --out SWEEP_DIR (or out = \"...\" in the sweep file).")
    folder = Path(out)
    runs = plan(sweep)
    check_runs(runs, folder)
    check_record(folder, sweep)
    failed: list[str] = []
    if not args.table_only:
        try:
            failed = execute(runs, folder, jobs)
        except KeyboardInterrupt as stop:
            log.error(f"sweep stopped; finished runs are kept in {folder / RUNS}. Run the same command again to continue (finished runs are skipped, unfinished ones resumed).")
            return 128 + getattr(stop, "signal_number", signal.SIGINT)
    groups = collect(runs, folder)
    if not groups:
        raise UsageError(f"No run of the sweep in {folder} has finished yet; run it without --table-only.")
    rows = aggregate(groups)
    write_summary(rows, folder)
    log.info(format_markdown(rows))
    log.info(f"summary in {folder / 'summary.md'}, {folder / 'summary.csv'}, {folder / 'summary.png'}")
    if failed:
        log.error(f"{len(failed)} run(s) failed: {', '.join(failed)}; their logs are in {folder / LOGS}.")
        return 1
    return 0
