"""Lifelong compression run: a large continual teacher, a small distilled student, and baselines.

For every experience of the stream (a plain for-loop, like :func:`lifelong_kd.pipeline.run`):

1. the **teacher** (large model) trains on it with its own strategy (LwF, EWC, ...) - or,
   when it was loaded from a finished run, stays as it is;
2. the **student** (small model) trains on it with :class:`~lifelong_kd.strategies.compress.Compress`,
   whose large teacher is a frozen snapshot of the teacher (``freeze_copy``);
3. optionally the **student alone** (same architecture and initialisation) trains with
   ``Compress`` and no large teacher: LwF self-distillation + labels, the baseline the
   student must beat;
4. every model is evaluated by its own :class:`~lifelong_kd.evaluation.evaluator.Evaluator`
   (accuracy matrix, forgetting, robustness, compression ratios against the teacher, with
   "accuracy kept" against the teacher's average accuracy at the same step): the teacher,
   the student(s), a magnitude-pruned copy of the teacher at each sparsity
   (``pruned_0.9``) and its int8 dynamically quantised copy (``quantized``).

The run folder holds, atomically rewritten after each experience:

* ``checkpoint.pt``: weights and strategy states of the trained models, evaluator states,
  reports (loads with ``weights_only=True``; ``resume=True`` continues);
* ``results.json``: the **student's** document at the top level (``accuracy_matrix``,
  ``metrics``, ``robustness``, ``compression``, ... exactly as a plain run, so
  ``lifelong-kd report`` reads it), plus ``models``: one such section per model, and
  ``summary``: one row of headline numbers per model;
* ``models/<name>/``: each model's ``metrics.jsonl`` and TensorBoard events (if loggers are
  given), so ``tensorboard --logdir RUN/models`` shows them side by side.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong_kd.data.stream import Stream
from lifelong_kd.evaluation import posthoc
from lifelong_kd.evaluation.compression import count_parameters
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.files import save_torch_atomic, write_atomic
from lifelong_kd.loggers.base import Logger
from lifelong_kd.pipeline import CHECKPOINT, RESULTS, VOLATILE_KEYS, ResumeError, RunState, seed_everything
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.teacher import freeze_copy
from lifelong_kd.train import TrainConfig, autocast, train_experience

# Sparsities of the pruning baselines (fractions of weights set to zero; Han et al. 2015
# report 9-13x fewer weights on AlexNet/VGG, so 0.9 is the usual headline).
DEFAULT_SPARSITIES = (0.5, 0.8, 0.9)


@dataclass
class Member:
    """One evaluated model of the run.

    Attributes:
        name: Section name in ``results.json`` (``teacher``, ``student``, ``pruned_0.9``, ...).
        evaluator: Its own evaluator.
        state: Its reports and timing.
        model: The trained model (None for post-hoc copies, made from the teacher each step).
        strategy: The strategy it trains with (None: not trained here).
        loggers: Receive its config and reports.
    """

    name: str
    evaluator: Evaluator
    state: RunState
    model: nn.Module | None = None
    strategy: Strategy | None = None
    loggers: Sequence[Logger] = field(default_factory=tuple)


def pruned_name(sparsity: float) -> str:
    """Section name of the teacher pruned to ``sparsity`` (e.g. ``pruned_0.9``)."""
    return f"pruned_{sparsity:g}"


def member_names(sparsities: Sequence[float], quantize: bool, alone: bool) -> list[str]:
    """Names of the run's models, in report order."""
    names = ["teacher", "student"] + (["student_alone"] if alone else [])
    return names + [pruned_name(s) for s in sparsities] + (["quantized"] if quantize else [])


def alone_strategy(compress: Compress) -> Compress:
    """``compress``'s options without the large teacher: LwF self-distillation and labels only."""
    return Compress(**{**compress.options(), "teacher_weight": 0.0, "hint_weight": 0.0})


def run_compression(
    stream: Stream,
    teacher: nn.Module,
    student: nn.Module,
    compress: Compress,
    teacher_strategy: Strategy | None = None,
    config: TrainConfig | None = None,
    make_evaluator: Callable[..., Evaluator] = Evaluator,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    quantize: bool = True,
    alone: bool = False,
    out: str | Path | None = None,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
    make_loggers: Callable[[str], Sequence[Logger]] | None = None,
) -> dict[str, Any]:
    """Train the teacher and the student(s) along ``stream``; evaluate them and the post-hoc baselines.

    Args:
        stream: The benchmark stream.
        teacher: The large model. Trained here with ``teacher_strategy``, or used as it is
            (e.g. loaded from a finished run) when ``teacher_strategy`` is None.
        student: The small model.
        compress: The student's strategy.
        teacher_strategy: The teacher's strategy; None keeps the teacher fixed.
        config: Training settings, shared by every trained model.
        make_evaluator: Builds one evaluator per model; called with keyword arguments
            ``reference`` and ``reference_accuracy`` (e.g. a ``functools.partial`` of
            :class:`Evaluator` holding the robustness suite).
        sparsities: Sparsities of the pruned teacher copies (empty: no pruning baseline).
        quantize: Also evaluate the int8 dynamically quantised teacher.
        alone: Also train the student without the large teacher (same initialisation).
        out: Run folder; None keeps nothing on disk.
        resume: Continue from ``out``'s checkpoint when there is one.
        record: The run's configuration as plain values.
        make_loggers: Loggers of one model, given its name (e.g. files under ``out/models/<name>``).

    Returns:
        The ``results.json`` document.
    """
    config = config or TrainConfig()
    for sparsity in sparsities:
        if not 0 <= sparsity < 1:
            raise ValueError(f"Pruning sparsities must be in [0, 1), got {sparsity}.")
    for strategy in (compress, teacher_strategy):
        if strategy is not None:
            strategy.check_stream(stream)
    members = _members(stream, teacher, student, compress, teacher_strategy, make_evaluator, sparsities, quantize, alone, record, make_loggers)
    folder = Path(out) if out is not None else None
    if folder is not None and resume and (folder / CHECKPOINT).exists():
        load(folder, members, record or {})
    else:
        for member in members.values():
            if member.model is not None:
                member.evaluator.measure_initial(member.model, stream)
    for member in members.values():
        for logger in member.loggers:
            logger.log_config(member.state.record)
    for experience in stream.experiences[members["student"].state.finished :]:
        _run_experience(stream, experience.index, members, config, sparsities)
        if folder is not None:
            save(folder, members)
    for member in members.values():
        for logger in member.loggers:
            logger.close()
    return results(members)


def _members(
    stream: Stream,
    teacher: nn.Module,
    student: nn.Module,
    compress: Compress,
    teacher_strategy: Strategy | None,
    make_evaluator: Callable[..., Evaluator],
    sparsities: Sequence[float],
    quantize: bool,
    alone: bool,
    record: Mapping[str, Any] | None,
    make_loggers: Callable[[str], Sequence[Logger]] | None,
) -> dict[str, Member]:
    """One :class:`Member` per model; evaluators share the corrupted test sets."""
    trained = {"teacher": (teacher, teacher_strategy), "student": (student, compress)}
    if alone:
        alone_compress = alone_strategy(compress)
        alone_compress.check_stream(stream)
        trained["student_alone"] = (copy.deepcopy(student), alone_compress)
    members: dict[str, Member] = {}
    for name in member_names(sparsities, quantize, alone):
        model, strategy = trained.get(name, (None, None))
        reference = None if name == "teacher" else teacher
        evaluator = make_evaluator(reference=reference, reference_accuracy=None)
        loggers = tuple(make_loggers(name)) if make_loggers is not None else ()
        members[name] = Member(name, evaluator, RunState({**(record or {}), "model_name": name}), model, strategy, loggers)
    probe = members["teacher"].evaluator.probe_
    for member in members.values():
        member.evaluator.probe_ = probe
    return members


def _train(member: Member, stream: Stream, index: int, config: TrainConfig) -> dict[str, float]:
    """Hooks and training of one member on experience ``index``; its timing."""
    experience = stream[index]
    seed_everything(config.seed, index)
    start = time.perf_counter()
    with autocast(config.precision):  # evaluation stays float32: int8, pruned and float models compared alike
        member.strategy.before_experience(member.model, experience)
        stats = train_experience(member.model, member.strategy, stream, experience, config)
        member.strategy.after_experience(member.model, experience)
    return {
        "train_seconds": time.perf_counter() - start,
        "loop_seconds": stats["train_seconds"],
        "samples": stats["samples"],
        "samples_per_second": stats["samples"] / max(stats["train_seconds"], 1e-9),
    }


def _run_experience(stream: Stream, index: int, members: Mapping[str, Member], config: TrainConfig, sparsities: Sequence[float]) -> None:
    """Train the teacher, then the students; evaluate everyone; record reports and timing."""
    teacher = members["teacher"]
    timings = {name: {"train_seconds": 0.0} for name in members}
    if teacher.strategy is not None:
        timings["teacher"] = _train(teacher, stream, index, config)
    snapshot = freeze_copy(teacher.model)
    for name in ("student", "student_alone"):
        if name in members:
            members[name].strategy.set_teacher(snapshot if name == "student" else None)
            timings[name] = _train(members[name], stream, index, config)
            members[name].strategy.set_teacher(None)
    reference_accuracy = _evaluate(teacher, teacher.model, stream, index, timings["teacher"], None)
    _share_reference_stats(members)
    for name in ("student", "student_alone"):
        if name in members:
            _evaluate(members[name], members[name].model, stream, index, timings[name], reference_accuracy)
    for sparsity in sparsities:
        start = time.perf_counter()
        pruned = posthoc.pruned_copy(snapshot, sparsity)
        timing = {"train_seconds": time.perf_counter() - start}
        _evaluate(members[pruned_name(sparsity)], pruned, stream, index, timing, reference_accuracy, _sparsity_extra(pruned, snapshot))
    if "quantized" in members:
        _evaluate_quantized(members["quantized"], snapshot, stream, index, reference_accuracy)


def _share_reference_stats(members: Mapping[str, Member]) -> None:
    """Give every evaluator the teacher's measured stats, so the teacher is measured once."""
    stats = members["teacher"].evaluator.compression_stats_
    for member in members.values():
        if stats is not None and member.evaluator.reference_stats is None:
            member.evaluator.reference_stats = stats["model"]


def _sparsity_extra(pruned: nn.Module, reference: nn.Module) -> dict[str, float]:
    nonzero = posthoc.nonzero_parameters(pruned)
    return {
        "sparsity": posthoc.weight_sparsity(pruned),
        "nonzero_parameters": nonzero,
        "nonzero_parameter_ratio": count_parameters(reference) / max(nonzero, 1),
    }


def _evaluate_quantized(member: Member, teacher: nn.Module, stream: Stream, index: int, reference_accuracy: float) -> None:
    start = time.perf_counter()
    quantized = posthoc.quantized_copy(teacher)
    timing = {"train_seconds": time.perf_counter() - start}
    if member.evaluator.compression and member.evaluator.compression_stats_ is None:
        member.evaluator.model_stats = posthoc.quantized_stats(teacher, quantized, stream.input_shape, {"task_id": 0})
    _evaluate(member, quantized, stream, index, timing, reference_accuracy)


def _evaluate(
    member: Member,
    model: nn.Module,
    stream: Stream,
    index: int,
    timing: dict[str, float],
    reference_accuracy: float | None,
    extra: Mapping[str, Any] | None = None,
) -> float:
    """Evaluate ``model`` for ``member`` after experience ``index``; returns its average accuracy."""
    member.evaluator.reference_accuracy = reference_accuracy
    report = member.evaluator.evaluate(model, stream, index)
    if extra:
        report = replace(report, extra=dict(extra))
    member.state.reports = member.state.reports[:index] + [report.to_dict()]
    member.state.timing = member.state.timing[:index] + [{**timing, "eval_seconds": report.eval_seconds}]
    for logger in member.loggers:
        logger.log_report(report)
    return report.metrics["average_accuracy"]


def results(members: Mapping[str, Member]) -> dict[str, Any]:
    """The ``results.json`` document: the student at the top level, every model under ``models``."""
    sections = {name: member.state.results() for name, member in members.items()}
    document = dict(sections["student"])
    document["config"] = {key: value for key, value in document["config"].items() if key != "model_name"}
    document["models"] = {name: {k: v for k, v in section.items() if k != "config"} for name, section in sections.items()}
    document["summary"] = [summary_row(name, section) for name, section in sections.items() if section["reports"]]
    return json_safe(document)


def summary_row(name: str, section: Mapping[str, Any]) -> dict[str, Any]:
    """Headline numbers of one model section (fractions, ratios against the teacher)."""
    last = section["reports"][-1]
    ratios = (section.get("compression") or {}).get("ratios", {})
    model_stats = (section.get("compression") or {}).get("model", {})
    robustness = section.get("robustness") or {}
    return {
        "model": name,
        "average_accuracy": section["metrics"].get("average_accuracy"),
        "forgetting": section["metrics"].get("forgetting"),
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
        "train_seconds": section["timing"]["train_seconds"],
    }


def save(folder: Path, members: Mapping[str, Member]) -> None:
    """Write the checkpoint, then ``results.json``, each atomically."""
    checkpoint = {
        "models": {name: m.model.state_dict() for name, m in members.items() if m.model is not None},
        "strategies": {name: m.strategy.state_dict() for name, m in members.items() if m.strategy is not None},
        "evaluators": {name: m.evaluator.state_dict() for name, m in members.items()},
        "reports": {name: m.state.reports for name, m in members.items()},
        "timing": {name: m.state.timing for name, m in members.items()},
        "record": json_safe(members["student"].state.record),
    }
    save_torch_atomic(checkpoint, folder / CHECKPOINT)
    write_atomic(folder / RESULTS, json.dumps(results(members), indent=2).encode())


def _comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in json_safe(dict(record)).items() if k not in VOLATILE_KEYS}


def load(folder: Path, members: Mapping[str, Member], record: Mapping[str, Any]) -> None:
    """Restore a compression run from ``folder``'s checkpoint into ``members``."""
    checkpoint = torch.load(folder / CHECKPOINT, weights_only=True)
    expected = {**dict(record), "model_name": "student"}
    if _comparable(checkpoint["record"]) != _comparable(expected) or set(checkpoint["evaluators"]) != set(members):
        raise ResumeError(f"{folder} holds a run with a different configuration; resume it with the same options, or choose a new --out folder.")
    for name, member in members.items():
        if member.model is not None:
            member.model.load_state_dict(checkpoint["models"][name])
        if member.strategy is not None:
            member.strategy.load_state_dict(checkpoint["strategies"][name])
        member.evaluator.load_state_dict(checkpoint["evaluators"][name])
        member.state.reports = list(checkpoint["reports"][name])
        member.state.timing = list(checkpoint["timing"][name])


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
