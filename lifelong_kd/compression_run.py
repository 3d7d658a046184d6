"""Lifelong compression run: a large continual teacher, a small distilled student, and baselines.

This module only builds the run's members; :func:`lifelong_kd.pipeline.run_members` (the one
loop) drives them. For every experience of the stream:

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

The run folder (:mod:`lifelong_kd.run_folder`, the same format as every run) holds the
**student's** document at the top level of ``results.json`` (so ``lifelong-kd report`` reads
it like any run), ``models``: one section per model, ``summary``: one row of headline numbers
per model, and ``models/<name>/``: each model's ``metrics.jsonl`` and TensorBoard events (if
loggers are given), so ``tensorboard --logdir RUN/models`` shows them side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lifelong_kd.data.stream import Stream
from lifelong_kd.evaluation import compression, posthoc
from lifelong_kd.evaluation.compression import count_parameters
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.loggers.base import Logger
from lifelong_kd.pipeline import Member, run_members
from lifelong_kd.run_folder import summary_row
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.train import TrainConfig

# Sparsities of the pruning baselines (fractions of weights set to zero; Han et al. 2015
# report 9-13x fewer weights on AlexNet/VGG, so 0.9 is the usual headline).
DEFAULT_SPARSITIES = (0.5, 0.8, 0.9)

__all__ = ["DEFAULT_SPARSITIES", "alone_strategy", "compression_members", "member_names", "pruned_name", "run_compression", "summary_row"]


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


def pruner(sparsity: float) -> Callable[[nn.Module], tuple[nn.Module, dict[str, Any]]]:
    """A ``Member.derive``: the teacher's snapshot pruned to ``sparsity``, with its sparsity figures."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"Pruning sparsities must be in [0, 1), got {sparsity}.")

    def derive(teacher: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
        pruned = posthoc.pruned_copy(teacher, sparsity)
        nonzero = posthoc.nonzero_parameters(pruned)
        extra = {
            "sparsity": posthoc.weight_sparsity(pruned),
            "nonzero_parameters": nonzero,
            "nonzero_parameter_ratio": count_parameters(teacher) / max(nonzero, 1),
        }
        return pruned, extra

    return derive


def quantizer(teacher: nn.Module) -> tuple[nn.Module, dict[str, Any]]:
    """A ``Member.derive``: the teacher's snapshot quantised to int8."""
    return posthoc.quantized_copy(teacher), {}


def compression_members(
    stream: Stream,
    teacher: nn.Module,
    student: nn.Module,
    compress: Compress,
    teacher_strategy: Strategy | None = None,
    make_evaluator: Callable[..., Evaluator] = Evaluator,
    sparsities: Sequence[float] = DEFAULT_SPARSITIES,
    quantize: bool = True,
    alone: bool = False,
    make_loggers: Callable[[str], Sequence[Logger]] | None = None,
) -> list[Member]:
    """The members of a lifelong-compression run (see the module docstring).

    Args:
        stream: The benchmark stream.
        teacher: The large model, trained with ``teacher_strategy`` or fixed (None).
        student: The small model.
        compress: The student's strategy.
        teacher_strategy: The teacher's strategy; None keeps the teacher fixed.
        make_evaluator: Builds one evaluator per model; called with the keyword arguments
            ``reference``, ``probe``, ``model_stats`` and ``reference_stats`` (e.g. a
            ``functools.partial`` of :class:`Evaluator` holding the robustness suite).
        sparsities: Sparsities of the pruned teacher copies (empty: no pruning baseline).
        quantize: Also evaluate the int8 dynamically quantised teacher.
        alone: Also train the student without the large teacher (same initialisation).
        make_loggers: Loggers of one model, given its name.
    """
    derives = {pruned_name(s): pruner(s) for s in sparsities}
    if quantize:
        derives["quantized"] = quantizer
    first = make_evaluator(reference=None, probe=None, model_stats=None, reference_stats=None)
    stats = compression.measure(teacher, stream.input_shape, forward_kwargs={"task_id": 0}) if first.compression else None
    probe = first.probe
    trained = {"student": (student, compress)}
    if alone:
        trained["student_alone"] = (copy.deepcopy(student), alone_strategy(compress))
    members = []
    for name in member_names(sparsities, quantize, alone):
        loggers = tuple(make_loggers(name)) if make_loggers is not None else ()
        if name == "teacher":
            evaluator = make_evaluator(reference=None, probe=probe, model_stats=stats, reference_stats=None)
            members.append(Member(name, evaluator, teacher, teacher_strategy, loggers))
            continue
        model_stats = _quantized_stats(teacher, stream) if name == "quantized" and stats is not None else None
        evaluator = make_evaluator(reference=teacher, probe=probe, model_stats=model_stats, reference_stats=stats)
        if name in trained:
            model, strategy = trained[name]
            members.append(Member(name, evaluator, model, strategy, loggers, teacher="teacher" if name == "student" else None, reference="teacher"))
        else:
            precision = "fp32" if name == "quantized" else None  # int8 kernels take float32 inputs
            members.append(Member(name, evaluator, loggers=loggers, derive=derives[name], source="teacher", reference="teacher", precision=precision))
    return members


def _quantized_stats(teacher: nn.Module, stream: Stream) -> Any:
    return posthoc.quantized_stats(teacher, posthoc.quantized_copy(teacher), stream.input_shape, {"task_id": 0})


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
    overwrite: bool = False,
) -> dict[str, Any]:
    """Build the members (:func:`compression_members`) and run them with :func:`~lifelong_kd.pipeline.run_members`.

    Returns:
        The ``results.json`` document (the student's section on top, every model under ``models``).
    """
    members = compression_members(stream, teacher, student, compress, teacher_strategy, make_evaluator, sparsities, quantize, alone, make_loggers)
    return run_members(stream, members, config, out, resume, record, overwrite=overwrite, primary="student")
