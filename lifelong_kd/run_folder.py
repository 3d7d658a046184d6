"""The run folder: the one module that knows its format, and the only one that writes it.

A run folder holds, for every kind of run (plain, lifelong compression, Avalanche engine):

* ``checkpoint.pt``: one layout (:data:`FORMAT`): the run's record, and for each member
  (``model`` for a plain run; ``teacher``, ``student``, ``pruned_0.9``, ... for lifelong
  compression) its model and strategy state, its evaluator state, its reports and timing.
  It loads with ``torch.load(..., weights_only=True)``.
* ``results.json``: derived from the checkpointed state (the primary member's document at
  the top level; with several members, one section per member under ``models`` and a
  ``summary`` row each);
* ``metrics.jsonl``: derived from the checkpointed state: the config, then one row per
  finished experience (with several members, the primary member's rows, and every
  member's own file under ``models/<name>/``);
* figures and TensorBoard files, written by loggers (see :mod:`lifelong_kd.pipeline`).

Consistency after a kill at any instant: every file is written through a temporary file
and an atomic rename; the checkpoint is written first and everything else is derived from
it, so opening a folder to resume rewrites ``results.json`` and ``metrics.jsonl`` from the
checkpoint (a kill between the two writes loses nothing), and stale temporary files are
removed. A folder is locked (``fcntl.flock`` on ``.lock``) while a run writes it; a second
process is refused. A folder holding a run is never overwritten unless the caller says so
(``resume`` continues it, ``overwrite`` replaces it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import shutil
import signal
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lifelong_kd.evaluation.continual import continual_rows
from lifelong_kd.evaluation.report import json_safe
from lifelong_kd.files import save_torch_atomic, write_atomic

CHECKPOINT = "checkpoint.pt"
RESULTS = "results.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"
MODELS = "models"
FORMAT = "lifelong_kd.run/1"
# Files and folders a run writes; what --overwrite removes, and what marks a folder as holding a run.
RUN_FILES = (CHECKPOINT, RESULTS, METRICS, "tensorboard", MODELS, "accuracy_matrix.png", "forgetting_curves.png", "robustness.png",
             "confusion_matrix.png", "per_class_accuracy.png", "representation_drift.png", "stability_curve.png", "metrics.csv", "wandb")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked; the message says why and what to do."""


class ResumeError(RunFolderError):
    """The run folder cannot be resumed (nothing to resume, or another configuration)."""


class RunFolder:
    """An opened, locked run folder. Use :func:`open_run_folder`.

    Args:
        path: The folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock: Any = None

    # ------------------------------------------------------------------ opening

    def _acquire(self) -> None:
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 (held until release)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: no lock
            self._lock = handle
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RunFolderError(
                f"{self.path} is being written by another process ({owner}). Wait for that run to "
                "finish, or choose another --out folder."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        """Release the lock (the lock file stays; a lock dies with its process)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def holds_run(self) -> bool:
        """Whether the folder holds (part of) a run."""
        return any((self.path / name).exists() for name in RUN_FILES)

    def remove_run(self) -> None:
        """Delete every file a run writes (``--overwrite``)."""
        for name in RUN_FILES:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def remove_temporary_files(self) -> None:
        """Delete temporary files a killed writer left behind (``.NAME.tmpPID``)."""
        for stale in self.path.rglob(".*.tmp*"):
            if stale.is_file():
                stale.unlink()

    # ------------------------------------------------------------------ reading

    def load_checkpoint(self) -> dict[str, Any]:
        """The checkpoint, loaded safely (``weights_only=True``) onto the CPU.

        Raises:
            RunFolderError: The file is missing a part, damaged, or not a lifelong_kd checkpoint.
        """
        path = self.path / CHECKPOINT
        try:
            checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
            raise RunFolderError(damaged_message(path, str(error).splitlines()[0] if str(error) else type(error).__name__)) from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
            found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
            raise RunFolderError(damaged_message(path, f"it is not a {FORMAT} checkpoint (found {found!r})"))
        return checkpoint

    # ------------------------------------------------------------------ writing

    def save(
        self,
        checkpoint: Mapping[str, Any],
        document: Mapping[str, Any],
        rows: Mapping[str, Sequence[Mapping[str, Any]]],
        encoded: Mapping[int, str | list[str]] | None = None,
    ) -> None:
        """Write the checkpoint, then the files derived from it.

        Args:
            checkpoint: The state to resume from (see :func:`checkpoint_document`).
            document: The ``results.json`` document.
            rows: ``metrics.jsonl`` contents by path relative to the folder (config line first).
            encoded: JSON text of reports ``document`` and ``rows`` hold, by ``id()`` of the
                report (:meth:`MemberLog.encoded`); None encodes every report.
        """
        with signals_held():  # a Ctrl-C or SIGTERM arriving now stops the run after the folder is whole
            save_torch_atomic({**checkpoint, "format": FORMAT}, self.path / CHECKPOINT)
            self.write_derived(document, rows, encoded)

    def write_derived(
        self, document: Mapping[str, Any], rows: Mapping[str, Sequence[Mapping[str, Any]]], encoded: Mapping[int, str | list[str]] | None = None
    ) -> None:
        """Rewrite ``results.json`` and the ``metrics.jsonl`` files (idempotent); ``encoded`` as in :meth:`save`.

        They are renamed into place whole but not ``fsync``ed: the checkpoint, which is, holds
        everything they say, and loading it (``--resume``) writes them again. On a long stream
        their two flushes per experience were a tenth of the save's time.
        """
        encoded = encoded or {}
        write_atomic(self.path / RESULTS, readable_json(document, encoded).encode(), sync=False)
        for relative, lines in rows.items():
            text = "".join((encoded.get(id(line)) or json_line(dict(line))) + "\n" for line in lines)
            write_atomic(self.path / relative, text.encode(), sync=False)


# Signals that stop a run (Ctrl-C, and SIGTERM from Slurm, timeout or kill): held while a folder is written.
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs; a signal that arrived is delivered after it.

    The checkpoint and the files derived from it are written as one step: a stop in between
    would leave a checkpoint without its ``results.json`` (resuming repairs that, but a reader
    of the folder would not find the finished experience). Python runs signal handlers in the
    main thread whichever thread the operating system delivered the signal to, so the block
    swaps in handlers that only note the signal, then restores the previous ones and raises
    each noted signal again. Outside the main thread (where handlers cannot be set) the block
    runs unguarded.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {number: signal.signal(number, lambda received, _frame: noted.append(received)) for number in HELD_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for number in dict.fromkeys(noted):
            signal.raise_signal(number)


def _scalar_list_json(values: Sequence[Any]) -> str | None:
    """JSON text of ``values`` when it is a non-empty list of scalars (numbers, strings, booleans, None), NaN/inf as null; else None.

    Checked and encoded by ``json``'s C encoder, once per list rather than once per item: a
    500 x 500 confusion matrix is 500 encodings, not 250,000 Python calls.
    """
    if not values or isinstance(values[0], (list, tuple, Mapping)):
        return None
    try:
        text = json.dumps(values, allow_nan=False)
    except (ValueError, TypeError):  # NaN or infinity among the numbers (or an object JSON does not know)
        if not all(isinstance(value, (int, float, str)) or value is None for value in values):
            return None
        text = json.dumps([None if isinstance(value, float) and not math.isfinite(value) else value for value in values])
    return text if "[" not in text[1:] and "{" not in text else None


def readable_json(document: Any, encoded: Mapping[int, str | list[str]] | None = None) -> str:
    """``document`` as indented JSON (NaN/inf as null) with each list of scalars on one line, and each report on one line.

    The layout of ``json.dumps(json_safe(document), indent=2)`` with the lines of numbers folded
    and the ``reports`` list holding one line per report (as ``metrics.jsonl``): the same JSON
    value in a fraction of the text and of the time (a 500 x 500 confusion matrix is 500 lines,
    not 250,000, and every experience rewrites ``results.json``).

    ``encoded``: the JSON text of reports, by ``id()`` of the report object the document holds
    (:meth:`MemberLog.encoded`); those are not encoded again (on a long stream, encoding every
    earlier report at every save made the save grow with the stream). A list of row texts under
    a matrix's ``id()`` writes those rows, one per line.
    """
    encoded = encoded or {}
    leaves: list[str] = []

    def leaf(text: str) -> str:
        leaves.append(text)
        return f"\0{len(leaves) - 1}"

    def fold(value: Any, key: str = "") -> Any:
        if isinstance(value, Mapping):
            return {str(k): fold(item, str(k)) for k, item in value.items()}
        if isinstance(value, (list, tuple)):
            rows = encoded.get(id(value))
            if isinstance(rows, list):  # a matrix whose rows' text is known (MemberLog._encode)
                return [leaf(row) for row in rows]
            if key == "reports":
                return [leaf(encoded.get(id(item)) or json_line(item)) for item in value]
            text = _scalar_list_json(value)
            return leaf(text) if text is not None else [fold(item) for item in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    text = json.dumps(fold(document), indent=2)
    return re.sub(r'"\\u0000(\d+)"', lambda match: leaves[int(match.group(1))], text)


def json_line(value: Any) -> str:
    """``json.dumps(json_safe(value))``, encoded directly when ``value`` holds no NaN or infinity (the usual case)."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(json_safe(value))


def damaged_message(path: Path, reason: str) -> str:
    """The one-paragraph error for a damaged checkpoint."""
    return (
        f"{path} cannot be read ({reason}): the file is damaged (e.g. a disk filled up) or was not "
        "written by lifelong_kd. Restore it from a copy, or start the run anew with --overwrite."
    )


def check_path(path: Path) -> None:
    """Refuse a run folder path that is, or lies under, an existing file."""
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            where = "is" if candidate == path else f"lies under {candidate}, which is"
            raise RunFolderError(f"--out {path} {where} a file, not a folder; choose a folder path for the run.")


def tidy_finished(path: Path) -> None:
    """Delete the temporary files a killed writer left in a finished run folder, unless a process still writes it.

    A run is finished once its ``results.json`` says so; its loggers (the final figures) write
    after that, so a process killed there leaves ``.NAME.tmpPID`` files in a folder that is never
    opened again (``lifelong-kd sweep`` skips finished runs and tidies them with this).
    """
    folder = RunFolder(path)
    try:
        folder._acquire()
    except RunFolderError:
        return  # another process still writes it: its temporary files are its own
    try:
        folder.remove_temporary_files()
    finally:
        folder.release()


@contextlib.contextmanager
def open_run_folder(path: str | Path, resume: bool = False, overwrite: bool = False) -> Iterator[RunFolder]:
    """Open ``path`` for one run: create, lock, and check it holds what the caller expects.

    Args:
        path: The run folder.
        resume: Continue the run the folder holds (it must have a checkpoint).
        overwrite: Replace the run the folder holds, if any.

    Raises:
        RunFolderError: The path is a file, another process writes the folder, or it
            holds a run and neither ``resume`` nor ``overwrite`` was asked for.
        ResumeError: ``resume`` on a folder without a checkpoint.
    """
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite contradict each other: choose one.")
    folder = RunFolder(Path(path))
    check_path(folder.path)
    if resume and not (folder.path / CHECKPOINT).is_file():
        held = folder.path.is_dir() and folder.holds_run()
        raise ResumeError(
            f"--resume: {folder.path} has no {CHECKPOINT}, so there is nothing to resume "
            + ("(the run there finished no experience); start it anew with --overwrite." if held else "(no run was started there); drop --resume to start one.")
        )
    folder.path.mkdir(parents=True, exist_ok=True)
    folder._acquire()
    try:
        if folder.holds_run() and not resume:
            if not overwrite:
                raise RunFolderError(
                    f"{folder.path} already holds a run. Continue it with --resume, replace it with "
                    "--overwrite, or choose another --out folder."
                )
            folder.remove_run()
        folder.remove_temporary_files()
        yield folder
    finally:
        folder.release()


# ---------------------------------------------------------------------- records


def differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """Human-readable differences between two JSON-like records (``key: saved -> current``)."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        found = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in saved or key not in current:
                present = "only in the folder" if key in saved else "only now"
                value = saved.get(key, current.get(key))
                found.append(f"{name} ({present}: {value!r})")
            else:
                found.extend(differences(saved[key], current[key], name))
        return found
    if json_safe(saved) != json_safe(current):
        return [f"{prefix or 'value'}: {saved!r} in the folder, {current!r} now"]
    return []


def refuse_resume(path: Path, found: Sequence[str]) -> ResumeError:
    """The error for a resume whose configuration differs, listing what differs."""
    found = sorted(found, key=lambda text: ".options." in text)  # a changed strategy or setting before its many options
    listed = "; ".join(found[:12]) + (f"; and {len(found) - 12} more" if len(found) > 12 else "")
    return ResumeError(
        f"{path} holds a run with another configuration ({listed}). Resume it with the same options, "
        "start it anew with --overwrite, or choose another --out folder."
    )


def read_results(path: str | Path) -> dict[str, Any]:
    """A ``results.json`` document, with clear errors when it is missing or damaged."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise RunFolderError(f"{path} does not exist: pass a run folder written by `lifelong-kd run`.")
    try:
        document = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); the file is damaged. Rerun the run, or resume it with --resume to rewrite the file.") from None
    if not isinstance(document, dict) or "accuracy_matrix" not in document or "config" not in document:
        raise RunFolderError(f"{path} is not a lifelong_kd results file (no config/accuracy_matrix); pass a run folder written by `lifelong-kd run`.")
    return document


# ---------------------------------------------------------------------- documents

# Largest confusion matrix (cells) an earlier experience's report keeps; a larger one is kept by the newest
# report only. A 50-experience task-scenario stream has 500 output units: 250,000 counts per report, which the
# checkpoint, results.json and metrics.jsonl held for every experience and rewrote after each (quadratic).
KEPT_CONFUSION_CELLS = 10_000


def confusion_of(report: Mapping[str, Any]) -> Any:
    """The confusion matrix in ``report``'s instruments (None when it has none)."""
    instruments = report.get("instruments")
    return instruments.get("confusion_matrix") if isinstance(instruments, Mapping) else None


def large_confusion(matrix: Any) -> bool:
    """Whether ``matrix`` is a list of rows with more than :data:`KEPT_CONFUSION_CELLS` cells."""
    return isinstance(matrix, list) and len(matrix) ** 2 > KEPT_CONFUSION_CELLS and all(isinstance(row, list) for row in matrix)


def compact_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier experience's report as the log keeps it: its confusion matrix left out (None) when larger than :data:`KEPT_CONFUSION_CELLS`."""
    if not large_confusion(confusion_of(report)):
        return dict(report)
    return {**report, "instruments": {**report["instruments"], "confusion_matrix": None}}


class MemberLog:
    """What one member of a run has finished: a report and a timing row per experience.

    Args:
        reports: ``EvalReport.to_dict()`` of each finished experience, or its JSON text as the
            checkpoint holds it (:meth:`checkpoint_reports`).
        timing: Timing of each finished experience (train/eval seconds, samples, ...).
    """

    def __init__(self, reports: Sequence[Mapping[str, Any] | str] = (), timing: Sequence[Mapping[str, Any]] = ()) -> None:
        self.reports = [json.loads(r) if isinstance(r, str) else dict(r) for r in reports]
        self.timing = [dict(t) for t in timing]
        self.texts_: list[str | None] = [r if isinstance(r, str) else None for r in reports]
        self.matrix_rows_: dict[int, tuple[list[Any], list[str]]] = {}  # id -> (confusion matrix, its rows' JSON text)

    def checkpoint_reports(self) -> list[str]:
        """Each report as JSON text, encoded once: the checkpoint's form of the reports.

        A report is JSON-ready already (``EvalReport.to_dict``), so its text loads back to an
        equal dict. As Python lists, the numbers of 50 reports (a 500-unit confusion matrix,
        the accuracy rows) were pickled one object at a time at every experience.
        """
        self.texts_ = [text if text is not None else self._encode(report) for text, report in zip(self.texts_, self.reports, strict=True)]
        return list(self.texts_)

    def _encode(self, report: Mapping[str, Any]) -> str:
        """``json.dumps(report)``; a large confusion matrix's rows are encoded once for this text and for ``results.json``.

        ``results.json`` shows the newest report's instruments a second time, one matrix row
        per line (:func:`readable_json`); with 500 output units that matrix is 250,000 counts,
        and encoding it twice was a third of a save on a long stream. Its row texts are kept
        (:meth:`encoded`) and the report's text is joined from them: the same text
        ``json.dumps`` writes.
        """
        matrix = confusion_of(report)
        if not large_confusion(matrix):
            return json.dumps(report)
        rows = [json.dumps(row) for row in matrix]
        if any("NaN" in row or "Infinity" in row for row in rows):  # counts are integers; anything else takes the general path
            return json.dumps(report)
        marker = "\0matrix"
        text = json.dumps({**report, "instruments": {**report["instruments"], "confusion_matrix": marker}})
        self.matrix_rows_[id(matrix)] = (matrix, rows)
        return text.replace(json.dumps(marker), "[" + ", ".join(rows) + "]", 1)

    def encoded(self) -> dict[int, str | list[str]]:
        """Each report's JSON text (:meth:`checkpoint_reports`) by the ``id()`` of the report dict this log holds.

        ``results.json`` and ``metrics.jsonl`` hold these very dicts (:func:`section` and
        :func:`metrics_rows` do not copy them), so a save writes each earlier report's text
        instead of encoding it again (:func:`readable_json`): on a 50-experience stream,
        re-encoding every report made each save grow with the stream. Valid until the log changes.
        """
        texts: dict[int, str | list[str]] = {id(report): text for report, text in zip(self.reports, self.checkpoint_reports(), strict=True)}
        held = {id(matrix): matrix for report in self.reports if isinstance(matrix := confusion_of(report), list)}
        self.matrix_rows_ = {key: kept for key, kept in self.matrix_rows_.items() if held.get(key) is kept[0]}  # drop compacted reports' matrices
        return texts | {key: rows for key, (_, rows) in self.matrix_rows_.items()}

    @property
    def finished(self) -> int:
        """Number of finished experiences."""
        return len(self.reports)

    def add(self, report: Mapping[str, Any], timing: Mapping[str, Any]) -> None:
        """Record experience ``report["step"]`` (replacing it if it was recorded already); the report before it is compacted (:func:`compact_report`)."""
        step = int(report["step"])
        earlier = self.reports[:step]
        self.reports = earlier[:-1] + [compact_report(r) for r in earlier[-1:]] + [dict(report)]
        self.texts_ = self.texts_[: max(step - 1, 0)] + [None] * (len(self.reports) - max(step - 1, 0))
        self.timing = self.timing[:step] + [dict(timing)]


def section(record: Mapping[str, Any], log: MemberLog, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One member's results: config, accuracy matrix, metrics, reports, timing.

    The reports and the parts taken from the last one are JSON values already (the log holds
    ``EvalReport.to_dict()`` or the checkpoint's decoded text): they are placed, not copied
    (:meth:`MemberLog.encoded` finds them by identity, and copying every report at every save
    grew with the stream); the rest is made JSON-safe.
    """
    last = log.reports[-1] if log.reports else {}
    safe = json_safe(
        {
            "config": dict(record),
            "extra": dict(extra or {}),
            "timing": {
                "train_seconds": sum(t.get("train_seconds", 0.0) for t in log.timing),
                "eval_seconds": sum(t.get("eval_seconds", 0.0) for t in log.timing),
                "per_experience": log.timing,
                "machine": {"cpu_threads": torch.get_num_threads(), "platform": _platform(), "cpu": cpu_model()},
            },
        }
    )
    return {
        "config": safe["config"],
        "finished_experiences": log.finished,
        "accuracy_matrix": last.get("accuracy_matrix", []),
        "metrics": last.get("metrics", {}),
        "initial_accuracy": last.get("initial_accuracy"),
        "robustness": last.get("robustness"),
        "compression": last.get("compression"),
        # Optional measurements of the last report (per-class accuracy, drift, flips; the stability gap).
        **{key: last[key] for key in ("instruments", "stability") if last.get(key) is not None},
        **safe["extra"],
        "reports": list(log.reports),
        "timing": safe["timing"],
    }


def _platform() -> str:
    import platform

    return platform.platform()


def cpu_model() -> str | None:
    """The CPU's model name (Linux: ``/proc/cpuinfo``; elsewhere what :func:`platform.processor` says), None if unknown."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def results_document(
    record: Mapping[str, Any], logs: Mapping[str, MemberLog], primary: str, extras: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``results.json`` document.

    With one member, its :func:`section`. With several (lifelong compression), the
    primary member's section at the top level (so ``lifelong-kd report`` reads it like any
    run), ``models``: every member's section without the config, and ``summary``: one row
    of headline numbers per member with at least one finished experience.
    """
    extras = extras or {}
    sections = {name: section(record, log, extras.get(name)) for name, log in logs.items()}
    document = dict(sections[primary])
    if len(sections) > 1:
        document["models"] = {name: {k: v for k, v in part.items() if k != "config"} for name, part in sections.items()}
        document["summary"] = [summary_row(name, part) for name, part in sections.items() if part["reports"]]
    return document


def metrics_rows(record: Mapping[str, Any], logs: Mapping[str, MemberLog], primary: str) -> dict[str, list[dict[str, Any]]]:
    """``metrics.jsonl`` files (by relative path): the config line, then one row per experience.

    With continual evaluation, each experience's row is preceded by its continual-evaluation
    rows, one per (iteration, probed experience) (:func:`lifelong_kd.evaluation.continual.continual_rows`).
    """
    rows = {METRICS: [{"config": dict(record)}, *_with_continual(logs[primary].reports)]}
    if len(logs) > 1:
        for name, log in logs.items():
            rows[f"{MODELS}/{name}/{METRICS}"] = [{"config": {**record, "model_name": name}}, *_with_continual(log.reports)]
    return rows


def _with_continual(reports: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Each report preceded by the continual-evaluation rows of its experience."""
    return [row for report in reports for row in (*continual_rows(report), report)]


def summary_row(name: str, part: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers of one member's section (fractions; ratios are reference / member)."""
    last = part["reports"][-1]
    ratios = (part.get("compression") or {}).get("ratios", {})
    model_stats = (part.get("compression") or {}).get("model", {})
    robustness = part.get("robustness") or {}
    return {
        "model": name,
        "average_accuracy": part["metrics"].get("average_accuracy"),
        "forgetting": part["metrics"].get("forgetting"),
        "relative_robustness": robustness.get("relative_robustness"),
        "mean_corrupted_accuracy": robustness.get("mean_corrupted_accuracy"),
        "parameters": model_stats.get("parameters"),
        "nonzero_parameters": last.get("nonzero_parameters", model_stats.get("parameters")),
        "parameter_ratio": ratios.get("parameter_ratio"),
        "nonzero_parameter_ratio": last.get("nonzero_parameter_ratio", ratios.get("parameter_ratio")),
        "bytes_ratio": ratios.get("bytes_ratio"),
        "flops_ratio": ratios.get("flops_ratio"),
        "latency_ratio": ratios.get("latency_ratio"),
        "latency_seconds": model_stats.get("latency_seconds"),
        "accuracy_kept": ratios.get("accuracy_kept"),
        "sparsity": last.get("sparsity"),
        "train_seconds": part["timing"]["train_seconds"],
    }
