"""Composition: build the stream, models, strategies, evaluator and loggers a run config asks for, and run.

The one explicit name -> class map of strategies lives here (:data:`STRATEGIES`); the
command line derives each strategy's options from it (:mod:`lifelong_kd.cli.options`).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lifelong_kd.cli.errors import UsageError
from lifelong_kd.config import RunConfig
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.strategies.ewc import EWC
from lifelong_kd.strategies.finetune import Finetune
from lifelong_kd.strategies.joint import Joint
from lifelong_kd.strategies.lwf import LwF
from lifelong_kd.strategies.multi_teacher import MultiTeacher

STRATEGIES: MappingProxyType[str, type[Strategy]] = MappingProxyType(
    {
        "finetune": Finetune,
        "joint": Joint,
        "lwf": LwF,
        "multi-teacher": MultiTeacher,
        "ewc": EWC,
        "compress": Compress,
    }
)


def build_strategy(name: str, options: Mapping[str, Any]) -> Strategy:
    """Instantiate a strategy by name with the options it accepts.

    Raises:
        UsageError: Unknown name, or an option the strategy does not take.
    """
    if name not in STRATEGIES:
        raise UsageError(f"Unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}.")
    cls = STRATEGIES[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        valid = ", ".join(sorted(accepted)) or "none"
        raise UsageError(f"Strategy {name!r} does not take option(s) {', '.join(unknown)}; it takes: {valid}.")
    try:
        return cls(**options)
    except TypeError as error:
        raise UsageError(f"Strategy {name!r}: {error}") from error


def default_out(config: RunConfig) -> str:
    """``runs/<benchmark>-<scenario>-<strategy>-s<seed>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{config.benchmark}-{config.scenario}-{config.strategy}-s{config.seed}-{stamp}")


def execute(config: RunConfig) -> dict[str, Any]:
    """Build stream, model, strategy, evaluator and loggers from ``config`` and run."""
    from lifelong_kd import pipeline
    from lifelong_kd.data.benchmarks import build_stream
    from lifelong_kd.evaluation.evaluator import Evaluator
    from lifelong_kd.loggers.figures import FigureLogger
    from lifelong_kd.loggers.jsonl import JsonlLogger
    from lifelong_kd.models import build_model

    if config.resume and config.out is None:
        raise UsageError("--resume needs --out RUN_DIR: the folder of the run to continue.")
    if config.student or config.teacher:
        return execute_compression(config)
    train_config = config.train_config()
    strategy = build_strategy(config.strategy, config.strategy_options)
    stream = build_stream(config.benchmark, config.stream_options())
    strategy.check_stream(stream)
    out = config.out or default_out(config)
    config = replace(config, out=out)
    pipeline.seed_everything(config.seed)
    model = build_model(config.model, stream.input_shape, stream.n_heads, stream.n_outputs)
    evaluator = make_evaluator(config, stream)
    loggers: list = [JsonlLogger(out), FigureLogger(out)]
    if config.tensorboard:
        from lifelong_kd.loggers.tensorboard import TensorBoardLogger

        loggers.append(TensorBoardLogger(out))
    if not config.quiet:
        print(f"{stream.name} ({stream.scenario} scenario, {len(stream)} experiences), {config.strategy}, "
              f"{config.model} ({sum(p.numel() for p in model.parameters()):,} parameters); run folder {out}", flush=True)
    if config.engine == "avalanche":
        from lifelong_kd.integrations.avalanche import run_avalanche

        if config.resume:
            raise UsageError("--resume is not supported with --engine avalanche.")
        return run_avalanche(stream, model, strategy, evaluator, train_config, out, config.record(), loggers)
    results = pipeline.run(stream, model, strategy, evaluator, loggers, train_config, out, config.resume, config.record())
    return results


def split_compression_options(config: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Strategy options for the teacher's strategy and for ``Compress`` (an option may go to both)."""
    if config.strategy not in STRATEGIES:
        raise UsageError(f"Unknown strategy {config.strategy!r}; choose one of: {', '.join(STRATEGIES)}.")
    accepted = {name: set(inspect.signature(STRATEGIES[name].__init__).parameters) - {"self"} for name in (config.strategy, "compress")}
    unknown = sorted(set(config.strategy_options) - accepted[config.strategy] - accepted["compress"])
    if unknown:
        raise UsageError(f"Option(s) {', '.join(unknown)} apply to neither {config.strategy!r} (the teacher's strategy) nor 'compress' (the student's).")
    teacher = {k: v for k, v in config.strategy_options.items() if k in accepted[config.strategy]}
    student = {k: v for k, v in config.strategy_options.items() if k in accepted["compress"]}
    return teacher, student


def execute_compression(config: RunConfig) -> dict[str, Any]:
    """Lifelong compression (``--student``): teacher (trained with ``--strategy`` or loaded with ``--teacher``) and student."""
    from lifelong_kd import compression_run, pipeline
    from lifelong_kd.data.benchmarks import build_stream
    from lifelong_kd.loggers.jsonl import JsonlLogger
    from lifelong_kd.models import build_model

    if not config.student:
        raise UsageError("--teacher RUN_DIR needs --student SPEC: the small model to distil into.")
    if config.engine != "lifelong-kd" or config.reference_model:
        raise UsageError("--student runs on our engine and uses the teacher as the reference: drop --engine avalanche / --reference-model.")
    teacher_options, student_options = split_compression_options(config)
    stream = build_stream(config.benchmark, config.stream_options())
    out = Path(config.out or default_out(config))
    config = replace(config, out=str(out))
    pipeline.seed_everything(config.seed)
    if config.teacher:
        teacher, teacher_strategy = load_reference(config.teacher, stream)[0], None
    else:
        teacher = build_model(config.model, stream.input_shape, stream.n_heads, stream.n_outputs)
        teacher_strategy = build_strategy(config.strategy, teacher_options)
    student = build_model(config.student, stream.input_shape, stream.n_heads, stream.n_outputs)

    def make_evaluator_for(reference: Any = None, reference_accuracy: float | None = None) -> Any:
        evaluator = make_evaluator(config, stream)
        evaluator.reference, evaluator.reference_accuracy = reference, reference_accuracy
        return evaluator

    def make_loggers(name: str) -> list[Any]:
        loggers: list[Any] = [JsonlLogger(out / "models" / name)]
        if config.tensorboard:
            from lifelong_kd.loggers.tensorboard import TensorBoardLogger

            loggers.append(TensorBoardLogger(out / "models" / name))
        return loggers

    if not config.quiet:
        sizes = " vs ".join(f"{sum(p.numel() for p in m.parameters()):,}" for m in (teacher, student))
        print(f"{stream.name} ({stream.scenario} scenario, {len(stream)} experiences): teacher {config.teacher or config.model} "
              f"({config.strategy if teacher_strategy else 'loaded'}) -> student {config.student}, {sizes} parameters; run folder {out}", flush=True)
    return compression_run.run_compression(
        stream, teacher, student, build_strategy("compress", student_options), teacher_strategy, config.train_config(),
        make_evaluator_for, config.prune, True, config.student_alone, out, config.resume, config.record(), make_loggers,
    )


def load_reference(path: str, stream: Any) -> tuple[Any, float | None]:
    """The model of a finished run (folder or its checkpoint.pt) and its final average accuracy."""
    import torch

    from lifelong_kd.models import build_model
    from lifelong_kd.pipeline import CHECKPOINT, RESULTS

    folder = Path(path).parent if Path(path).is_file() else Path(path)
    if not (folder / RESULTS).is_file() or not (folder / CHECKPOINT).is_file():
        raise UsageError(f"--reference-model {path}: expected a run folder with {RESULTS} and {CHECKPOINT}.")
    results = json.loads((folder / RESULTS).read_text())
    model = build_model(results["config"]["model"], stream.input_shape, stream.n_heads, stream.n_outputs)
    try:
        checkpoint = torch.load(folder / CHECKPOINT, weights_only=True)
        model.load_state_dict(checkpoint["model"] if "model" in checkpoint else checkpoint["models"]["teacher"])
    except RuntimeError as error:
        raise UsageError(f"--reference-model {path}: it was trained on a different stream or head layout ({error}).") from error
    return model, results["metrics"].get("average_accuracy")


def make_evaluator(config: RunConfig, stream: Any) -> Any:
    """The evaluator a run config asks for (robustness suite, reference model)."""
    from lifelong_kd.data.shifts import parse_shifts
    from lifelong_kd.evaluation.evaluator import Evaluator

    reference, reference_accuracy = (None, None)
    if config.reference_model:
        reference, reference_accuracy = load_reference(config.reference_model, stream)
    if config.robustness_samples is not None and config.robustness_samples < 1:
        raise UsageError(f"robustness_samples must be positive, got {config.robustness_samples}.")
    return Evaluator(
        batch_size=config.eval_batch_size,
        shifts=parse_shifts(config.shifts),
        severities=config.severities,
        robustness_samples=config.robustness_samples,
        reference=reference,
        reference_accuracy=reference_accuracy,
        seed=config.seed,
    )
