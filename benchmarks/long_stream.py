"""Long streams: where the time and memory of a 50-experience permuted-MNIST LwF run go, experience by experience.

The run is the one a user gets from ``lifelong-kd run --benchmark permuted-mnist --strategy lwf
--n-experiences 50 --train-size 5000 --test-size 1000 --shifts none`` (task scenario, MLP
784-400-400 with one head per experience, instruments and representation drift on, figures
and TensorBoard on, a run folder written after every experience), composed by the CLI's own
functions and driven by :func:`lifelong_kd.pipeline.run`. Around the loggers and the run
folder's ``save`` the script only adds clocks.

Per experience it prints: training seconds (strategy hooks + minibatch loop), evaluation
seconds, the seconds of the figure logger, of the TensorBoard logger and of the run folder's
save (building the checkpoint and the ``results.json`` and ``metrics.jsonl`` documents, and
writing the three files: ``_Run.save``; records before 2026-12 clocked the writing alone), and
the resident set size (RSS) after the experience, the process's peak RSS so far and the peak RSS
within the experience ("exp peak": Linux's peak is reset before each phase, so each phase of each
experience has its own; the per-phase peaks of the 5th and the last experience are printed). Then the ratio of the last experience to the 5th (training seconds and RSS;
also on medians of five experiences, which a busy machine disturbs less) and the loggers' share
of the wall time. One JSON record is appended to ``benchmarks/output/long_stream.jsonl``
(``long_stream_quick.jsonl`` with ``--quick``).

Evaluation grows linearly with the stream's length and does not grow along the stream: every
evaluation measures the test sets of *all* experiences (the full accuracy matrix, whose upper
triangle is forward transfer's baseline), so one evaluation costs ``n_experiences x test_size``
forwards at every experience, and a whole run ``n_experiences^2 x test_size``.

    python benchmarks/long_stream.py --data-root ../shared/data          # the measurement (idle machine, a few minutes)
    python benchmarks/long_stream.py --data-root ../shared/data --quick  # 6 small experiences (CI, about a minute)
    python benchmarks/long_stream.py --quick --profile                   # and cProfile's shares of the run
    python benchmarks/long_stream.py --data-root ../shared/data --strategy finetune  # no distillation: the loop alone
    python benchmarks/long_stream.py --pool 3                            # the last 3 runs' targets, pooled (runs nothing)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import DEFAULT_DATA, OUTPUT, append_jsonl, hardware  # noqa: E402

from lifelong_kd import pipeline  # noqa: E402
from lifelong_kd.cli.compose import compose_run, run_loggers  # noqa: E402
from lifelong_kd.config import RunConfig  # noqa: E402
from lifelong_kd.evaluation.report import EvalReport  # noqa: E402

FULL = {"n_experiences": 50, "train_size": 5000, "test_size": 1000}  # the measurement, 50 experiences
QUICK = {"n_experiences": 6, "train_size": 1000, "test_size": 200}  # CI: the same code paths in about a minute
# Functions whose cumulative time --profile reports as a share of the run.
PROFILED = {
    "training": ("pipeline.py", "train"),
    "evaluation": ("evaluator.py", "evaluate"),
    "figures": ("figures.py", "log_report"),
    "tensorboard": ("tensorboard.py", "log_report"),
    "save": ("pipeline.py", "save"),
}


def rss_bytes() -> dict[str, int]:
    """Resident set size now and its peak so far (Linux ``/proc/self/status``; else the peak from ``getrusage``)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) * 1024, "peak": int(fields["VmHWM"].split()[0]) * 1024}
    except (OSError, KeyError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"rss": peak, "peak": peak}


class PhasePeaks:
    """The peak RSS of each phase of an experience (training, evaluation, save, each logger), not of the process so far.

    Linux resets a process's peak RSS (``VmHWM``) when ``5`` is written to
    ``/proc/self/clear_refs``. :meth:`mark` reads the peak of the stretch that just ended, names
    it, and resets the peak for the next stretch; :meth:`take` hands over one experience's
    peaks (the largest per name). Elsewhere (no ``clear_refs``) it records nothing.
    """

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.works = True
        except OSError:
            self.works = False

    def mark(self, ended: str) -> None:
        """The stretch since the last mark was ``ended``: keep its peak, start a new one."""
        if not self.works:
            return
        self.peaks[ended] = max(self.peaks.get(ended, 0), rss_bytes()["peak"])
        Path("/proc/self/clear_refs").write_text("5")

    def take(self) -> dict[str, int]:
        """The peaks marked since the last call."""
        peaks, self.peaks = self.peaks, {}
        return peaks

    def around(self, name: str, function: Any, before: str = "between") -> Any:
        """``function`` wrapped: the stretch before a call is ``before``, the call itself ``name``."""

        def wrapped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.mark(before)
            try:
                return function(*args, **kwargs)
            finally:
                self.mark(name)

        return wrapped


def heap_in_use_bytes() -> int | None:
    """Bytes the C heap holds for live allocations (glibc ``mallinfo2``: in-use arena chunks + mmapped chunks); None elsewhere.

    RSS also counts heap pages glibc keeps after ``free`` and returns only when the top of
    the heap is trimmed: on this run it swings by 100-200 MB from one experience to the next
    with no change in live memory. This is the live part.
    """
    import ctypes

    class MallocInfo(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    mallinfo2.restype = MallocInfo
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


class Clocked:
    """A logger with a clock around ``log_report``: the seconds of each report go to ``seconds[step]``."""

    def __init__(self, logger: Any, meter: PhasePeaks | None = None) -> None:
        self.logger = logger
        self.seconds: dict[int, float] = {}
        self.meter = meter

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Passed on."""
        self.logger.log_config(config, first_step)

    def log_report(self, report: EvalReport) -> None:
        """Passed on, timed (and its peak RSS marked)."""
        if self.meter is not None:
            self.meter.mark("between")
        start = time.perf_counter()
        self.logger.log_report(report)
        self.seconds[report.step] = self.seconds.get(report.step, 0.0) + time.perf_counter() - start
        if self.meter is not None:
            self.meter.mark(type(self.logger).__name__)

    def close(self) -> None:
        """Passed on."""
        self.logger.close()


class MemoryProbe:
    """The last logger: records the RSS after each experience (all other work of the experience is done).

    ``trim``: first hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``),
    the experiment of ``--trim``: is the growth of the peak RSS freed memory glibc keeps?
    """

    def __init__(self, trim: bool = False, meter: PhasePeaks | None = None) -> None:
        self.memory: dict[int, dict[str, Any]] = {}
        self.trim = trim
        self.meter = meter
        self.process_peak = 0

    def log_config(self, config: Mapping[str, Any], first_step: int = 0) -> None:
        """Nothing to record."""

    def log_report(self, report: EvalReport) -> None:
        """RSS now, and the C heap's live bytes."""
        if self.trim:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
        memory = {**rss_bytes(), "heap": heap_in_use_bytes()}
        if self.meter is not None:
            self.meter.mark("between")
            memory["phases"] = self.meter.take()
            # the meter resets Linux's peak before each phase: the process's peak so far is the largest phase peak yet
            self.process_peak = max(self.process_peak, *memory["phases"].values())
            memory["peak"] = self.process_peak
        self.memory[report.step] = memory

    def close(self) -> None:
        """Nothing held."""


def clocked_saves(meter: PhasePeaks) -> tuple[list[float], Any]:
    """Put a clock around the loop's save (building the checkpoint and documents, writing them); returns the list it fills and the original method."""
    seconds: list[float] = []
    original = pipeline._Run.save
    measured = meter.around("save", original)

    def save(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        start = time.perf_counter()
        measured(self, *args, **kwargs)
        seconds.append(time.perf_counter() - start)

    pipeline._Run.save = save
    return seconds, original


def run_stream(config: RunConfig, trim: bool = False) -> dict[str, Any]:
    """One run composed as ``lifelong-kd run`` composes it, with clocks; per-experience rows and the wall time."""
    config, stream, strategy, model, evaluator = compose_run(config)
    meter = PhasePeaks()
    loggers = {type(logger).__name__: Clocked(logger, meter) for logger in run_loggers(Path(config.out), config, figures=True)}
    probe = MemoryProbe(trim, meter)
    saves, original = clocked_saves(meter)
    evaluator.evaluate = meter.around("evaluation", evaluator.evaluate, before="training")
    timed = evaluator._timed  # the evaluator's clocked parts (clean, instruments, robustness, compression) get their own peaks

    @contextlib.contextmanager
    def timed_and_measured(part: str):  # noqa: ANN202
        meter.mark("evaluation")
        with timed(part):
            yield
        meter.mark(f"evaluation: {part}")

    evaluator._timed = timed_and_measured
    start = time.perf_counter()
    try:
        document = pipeline.run(stream, model, strategy, evaluator, [*loggers.values(), probe], config.train_config(), config.out, record=config.record())
    finally:
        pipeline._Run.save = original
    wall = time.perf_counter() - start
    rows = []
    for step, timing in enumerate(document["timing"]["per_experience"]):
        row = {"experience": step + 1, "train_seconds": timing["train_seconds"], "eval_seconds": timing["eval_seconds"]}
        row |= {"figures_seconds": loggers["FigureLogger"].seconds.get(step, 0.0), "save_seconds": saves[step]}
        row |= {"tensorboard_seconds": loggers["TensorBoardLogger"].seconds.get(step, 0.0) if "TensorBoardLogger" in loggers else 0.0}
        row |= {"rss_mb": probe.memory[step]["rss"] / 2**20, "peak_rss_mb": probe.memory[step]["peak"] / 2**20}
        row |= {"heap_mb": probe.memory[step]["heap"] / 2**20 if probe.memory[step]["heap"] is not None else None}
        phases = probe.memory[step].get("phases") or {}
        row |= {"phase_peak_mb": {name: peak / 2**20 for name, peak in phases.items()}}
        row |= {"experience_peak_mb": max(phases.values()) / 2**20 if phases else None}
        rows.append(row)
    return {"rows": rows, "wall_seconds": wall, "model": config.model, "average_accuracy": document["metrics"]["average_accuracy"]}


def ratio(rows: list[dict[str, Any]], key: str, window: int = 1) -> float:
    """``key`` at the last experience over ``key`` at the 5th (with ``window`` > 1: medians of that many experiences around each)."""
    fifth = min(4, len(rows) - 1)
    low = max(fifth - window // 2, 0)
    early = statistics.median(row[key] for row in rows[low : low + window])
    late = statistics.median(row[key] for row in rows[-window:])
    return late / early if early else float("nan")


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Totals, shares of the wall time and the 5th-vs-last ratios."""
    rows, wall = result["rows"], result["wall_seconds"]
    totals = {key: sum(row[f"{key}_seconds"] for row in rows) for key in ("train", "eval", "figures", "tensorboard", "save")}
    loggers = totals["figures"] + totals["tensorboard"] + totals["save"]
    return {
        "wall_seconds": wall,
        "totals": totals,
        "loggers_share": loggers / wall,
        "train_ratio_last_over_5th": ratio(rows, "train_seconds"),
        "train_ratio_median5": ratio(rows, "train_seconds", 5),
        "rss_ratio_last_over_5th": ratio(rows, "rss_mb"),
        "rss_ratio_median5": ratio(rows, "rss_mb", 5),
        "heap_ratio_last_over_5th": ratio(rows, "heap_mb") if rows[0].get("heap_mb") is not None else None,
        "peak_rss_ratio_last_over_5th": ratio(rows, "peak_rss_mb"),
        **(experience_peaks(rows) if rows[0].get("experience_peak_mb") is not None else {}),
    }


def experience_peaks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The peak RSS within each experience (not the process's so far): last over 5th, and the same per phase."""
    fifth, last = rows[min(4, len(rows) - 1)], rows[-1]
    names = sorted(set(fifth["phase_peak_mb"]) & set(last["phase_peak_mb"]))
    return {
        "experience_peak_ratio_last_over_5th": ratio(rows, "experience_peak_mb"),
        "experience_peak_ratio_median5": ratio(rows, "experience_peak_mb", 5),
        "phase_peak_mb": {name: {"5th": fifth["phase_peak_mb"][name], "last": last["phase_peak_mb"][name]} for name in names},
    }


def distillation_seconds(config: RunConfig, old_heads: int, repeats: int = 100) -> float:
    """Seconds per experience of LwF's distillation loss alone (``losses.kd_kl`` forward and backward over ``old_heads`` heads' logits).

    LwF distils every old head: its loss works on (batch, old heads, outputs) logits, so its
    cost per step grows with the stream (the model's forward and backward do not: all heads
    exist from the start). Timed on random logits of the run's batch and head sizes, median
    of ``repeats`` steps, times the experience's steps.
    """
    import math

    import torch

    from lifelong_kd import losses

    batch, outputs = config.batch_size, 10
    student = torch.randn(batch, old_heads, outputs, requires_grad=True)
    teacher = torch.randn(batch, old_heads, outputs)
    times = []
    for _ in range(repeats + 10):
        start = time.perf_counter()
        losses.kd_kl(student, teacher, 2.0).backward()
        times.append(time.perf_counter() - start)
    steps = math.ceil(config.train_size / batch) * (config.epochs or 1)  # permuted-MNIST: one epoch by default
    return statistics.median(times[10:]) * steps


def print_table(result: dict[str, Any], totals: dict[str, Any]) -> None:
    """The per-experience table and the summary lines."""
    print(f"{'exp':>4} {'train s':>8} {'eval s':>8} {'figures s':>9} {'tb s':>7} {'save s':>7} {'RSS MB':>8} {'peak MB':>8} {'exp peak':>8} {'heap MB':>8}")
    for row in result["rows"]:
        print(f"{row['experience']:>4} {row['train_seconds']:>8.3f} {row['eval_seconds']:>8.3f} {row['figures_seconds']:>9.3f} "
              f"{row['tensorboard_seconds']:>7.3f} {row['save_seconds']:>7.3f} {row['rss_mb']:>8.1f} {row['peak_rss_mb']:>8.1f} {row['experience_peak_mb'] or float('nan'):>8.1f} {row['heap_mb'] or float('nan'):>8.1f}")
    seconds = totals["totals"]
    print(f"wall {totals['wall_seconds']:.1f} s: training {seconds['train']:.1f} s, evaluation {seconds['eval']:.1f} s, figures {seconds['figures']:.1f} s, "
          f"TensorBoard {seconds['tensorboard']:.1f} s, save {seconds['save']:.1f} s")
    print(f"loggers (figures + TensorBoard + save) share of wall time: {100 * totals['loggers_share']:.1f}% (target <= 10%)")
    last = len(result["rows"])
    print(f"training seconds, experience {last} / experience 5: {totals['train_ratio_last_over_5th']:.3f} "
          f"(medians of 5: {totals['train_ratio_median5']:.3f}; target within 0.9-1.1)")
    print(f"RSS, experience {last} / experience 5: {totals['rss_ratio_last_over_5th']:.3f} (medians of 5: {totals['rss_ratio_median5']:.3f}); "
          f"peak RSS: {totals['peak_rss_ratio_last_over_5th']:.3f} (target within 1.1)")
    if totals.get("experience_peak_ratio_last_over_5th") is not None:
        print(f"peak RSS within the experience, experience {last} / experience 5: {totals['experience_peak_ratio_last_over_5th']:.3f} "
              f"(medians of 5: {totals['experience_peak_ratio_median5']:.3f}; target within 1.1); per phase (MB, 5th -> last): "
              + ", ".join(f"{name} {peaks['5th']:.0f} -> {peaks['last']:.0f}" for name, peaks in totals["phase_peak_mb"].items()))
    if totals["heap_ratio_last_over_5th"] is not None:
        print(f"live C heap (malloc in use), experience {last} / experience 5: {totals['heap_ratio_last_over_5th']:.3f}")
    if totals.get("distillation_seconds"):
        fifth, final = totals["distillation_seconds"]["5th"], totals["distillation_seconds"]["last"]
        early = statistics.median(row["train_seconds"] for row in result["rows"][2:7])
        print(f"the distillation loss alone (kd_kl forward + backward, old heads' logits): {fifth:.3f} s per experience at the 5th, "
              f"{final:.3f} s at the last; with the rest of the step flat, training would grow {(early + final - fifth) / early:.3f}x "
              f"(on the medians of 5 around the 5th experience)")


def profile_shares(profiler: cProfile.Profile, wall: float) -> dict[str, float]:
    """cProfile's cumulative seconds of the :data:`PROFILED` functions as shares of the wall time; prints the top functions."""
    stats = pstats.Stats(profiler)
    shares = {}
    for name, (file_end, function) in PROFILED.items():
        cumulative = sum(entry[3] for (path, _, func), entry in stats.stats.items() if path.endswith(file_end) and func == function)
        shares[name] = cumulative / wall
    print("cProfile, cumulative share of the run: " + ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares.items()))
    stats.sort_stats("cumulative").print_stats(25)
    return shares


def pooled(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The flatness targets over several runs: training seconds of experiences 3-7 and of the last five, pooled, and each run's figures.

    One experience trains in about 0.3 s, and identical runs on this machine differ by up to a
    third, sometimes inside one run as a step from one level to another: the median of the
    pooled experiences is the estimate a single run cannot give.
    """
    early = [row["train_seconds"] for record in records for row in record["rows"][2:7]]
    late = [row["train_seconds"] for record in records for row in record["rows"][-5:]]
    return {
        "runs": [record["time"] for record in records],
        "train_ratio_pooled": statistics.median(late) / statistics.median(early),
        "train_ratio_median5_per_run": [record["train_ratio_median5"] for record in records],
        "peak_rss_ratio_per_run": [record["peak_rss_ratio_last_over_5th"] for record in records],
        "loggers_share_per_run": [record["loggers_share"] for record in records],
    }


def print_pooled(log: Path, strategy: str, n_experiences: int, count: int) -> None:
    """:func:`pooled` over the last ``count`` records of ``strategy`` with ``n_experiences`` (default sizes, no experiments)."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    records = [r for r in records if r.get("strategy") == strategy and r["sizes"]["n_experiences"] == n_experiences
               and not r.get("trim") and not r.get("profile") and not r.get("environment") and r.get("figures_every") is None][-count:]
    if len(records) < count:
        raise SystemExit(f"{log} holds {len(records)} default {strategy} runs of {n_experiences} experiences; run the benchmark {count} times first.")
    result = pooled(records)
    print(f"{count} runs of {strategy} ({', '.join(result['runs'])}):")
    print(f"  training seconds, last five experiences / experiences 3-7, pooled over the runs: {result['train_ratio_pooled']:.3f} (target within 0.9-1.1)")
    print("  each run, medians of 5: " + ", ".join(f"{value:.3f}" for value in result["train_ratio_median5_per_run"]))
    print("  peak RSS, last / 5th: " + ", ".join(f"{value:.3f}" for value in result["peak_rss_ratio_per_run"]) + " (target within 1.1)")
    print("  loggers' share of the wall time: " + ", ".join(f"{100 * value:.1f}%" for value in result["loggers_share_per_run"]) + " (target <= 10%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DEFAULT_DATA), help="folder holding MNIST (default ../shared/data)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK['n_experiences']} experiences of {QUICK['train_size']} training images (CI)")
    parser.add_argument("--n-experiences", type=int, help=f"default {FULL['n_experiences']} ({QUICK['n_experiences']} with --quick)")
    parser.add_argument("--figures-every", type=int, help="draw figures every K experiences (default: the library's)")
    parser.add_argument("--strategy", default="lwf", help="the run's strategy (default lwf; finetune separates the loop's growth from the distillation's)")
    parser.add_argument("--trim", action="store_true", help="experiment: malloc_trim(0) after every experience (glibc)")
    parser.add_argument("--profile", action="store_true", help="run under cProfile and print the shares of training, evaluation and loggers")
    parser.add_argument("--out", help="run folder (default: a temporary folder, removed afterwards)")
    parser.add_argument("--pool", type=int, metavar="N", help="run nothing: the targets pooled over the last N default runs of --strategy in the record")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    sizes["n_experiences"] = args.n_experiences or sizes["n_experiences"]
    if args.pool:
        print_pooled(OUTPUT / ("long_stream_quick.jsonl" if args.quick else "long_stream.jsonl"), args.strategy, sizes["n_experiences"], args.pool)
        return
    with tempfile.TemporaryDirectory() as scratch:
        config = RunConfig(benchmark="permuted-mnist", strategy=args.strategy, shifts="none", data_root=args.data_root, quiet=True,
                           out=args.out or str(Path(scratch) / "run"), overwrite=bool(args.out), **sizes,
                           **({"figures_every": args.figures_every} if args.figures_every else {}))
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        result = run_stream(config, args.trim)
        if profiler is not None:
            profiler.disable()
    totals = summary(result)
    if args.strategy == "lwf":
        totals["distillation_seconds"] = {"5th": distillation_seconds(config, min(4, sizes["n_experiences"] - 1)),
                                          "last": distillation_seconds(config, sizes["n_experiences"] - 1)}
    print(f"permuted-mnist, {args.strategy}, {sizes['n_experiences']} experiences x {sizes['train_size']} training / {sizes['test_size']} test images, "
          f"{result['model']}; {hardware()}")
    print_table(result, totals)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "hardware": hardware(), "sizes": sizes, "strategy": args.strategy, "trim": args.trim, "figures_every": args.figures_every,
              "environment": {name: value for name, value in os.environ.items() if name.startswith(("MALLOC_", "OMP_", "GOMP_"))},
              "profile": args.profile, "average_accuracy": result["average_accuracy"], **totals, "rows": result["rows"]}
    if profiler is not None:
        record["profile_shares"] = profile_shares(profiler, result["wall_seconds"])
    append_jsonl(OUTPUT / ("long_stream_quick.jsonl" if args.quick else "long_stream.jsonl"), json.loads(json.dumps(record)))


if __name__ == "__main__":
    main()
