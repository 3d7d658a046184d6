"""Composition: build the stream, models, strategies, evaluator and loggers a run config asks for, and run.

The one explicit name -> class map of strategies lives here (:data:`STRATEGIES`); the
command line derives each strategy's options from it (:mod:`lifelong_kd.cli.options`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lifelong_kd import distributed
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.options import check_accepted, strategy_parameters
from lifelong_kd.config import RunConfig
from lifelong_kd.logs import progress_logger
from lifelong_kd.strategies import BiC, Compress, DER, DERpp, ER, EWC, Finetune, ICaRL, Joint, LUCIR, LwF, MultiTeacher
from lifelong_kd.strategies.base import Strategy

log = logging.getLogger(__name__)

STRATEGIES: MappingProxyType[str, type[Strategy]] = MappingProxyType(
    {
        "finetune": Finetune,
        "joint": Joint,
        "lwf": LwF,
        "multi-teacher": MultiTeacher,
        "ewc": EWC,
        "compress": Compress,
        "er": ER,
        "der": DER,
        "derpp": DERpp,
        "icarl": ICaRL,
        "lucir": LUCIR,
        "bic": BiC,
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
    check_accepted(name, cls, options)
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise UsageError(f"Strategy {name!r}: {error}") from None


def default_out(config: RunConfig) -> str:
    """``runs/<benchmark>-<scenario>-<strategy>-s<seed>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{config.benchmark}-{config.scenario}-{config.strategy}-s{config.seed}-{stamp}")


# Benchmarks that ship with scikit-learn: --data-root does not change them.
EMBEDDED = frozenset({"split-digits", "permuted-digits"})


def model_spec(spec: str, input_shape: tuple[int, ...]) -> str:
    """A model spec with ``auto`` resolved (``auto`` -> ``mlp:400,400`` for grayscale inputs)."""
    from lifelong_kd.models import parse_spec

    name, widths = parse_spec(spec, input_shape)
    return name + (":" + ",".join(str(w) for w in widths) if widths else "")


def resolve(config: RunConfig, stream: Any) -> RunConfig:
    """The config as it runs: defaults filled and paths resolved, so that equal settings written
    differently (``--epochs 20`` and the default 20, ``$LIFELONG_KD_DATA`` and ``--data-root``,
    a trailing slash) record the same values (``results.json``, and the resume check)."""
    from lifelong_kd.data.sources import default_data_root

    root = None if config.benchmark in EMBEDDED else str(Path(config.data_root or default_data_root()).expanduser().resolve())
    return replace(
        config,
        out=config.out or default_out(config),
        model=model_spec(config.model, stream.input_shape),
        student=model_spec(config.student, stream.input_shape) if config.student else None,
        teacher=str(Path(config.teacher).expanduser().resolve()) if config.teacher else None,
        reference_model=str(Path(config.reference_model).expanduser().resolve()) if config.reference_model else None,
        epochs=config.train_config().epochs,
        n_experiences=len(stream),
        data_root=root,
    )


def execute(config: RunConfig) -> dict[str, Any]:
    """Build stream, model, strategy, evaluator and loggers from ``config`` and run them in the loop."""
    if config.resume and config.out is None:
        raise UsageError("--resume needs --out RUN_DIR: the folder of the run to continue.")
    if config.student or config.teacher:
        return execute_compression(config)
    config, stream, strategy, model, evaluator = compose_run(config)
    log.debug("configuration: %s", json.dumps(config.record(), sort_keys=True))
    trainer = make_trainer(config)  # before the banner: a missing engine is refused first
    if not config.quiet and distributed.is_main():  # one banner, from rank 0, under torchrun
        progress_logger.info(f"{stream.name} ({stream.scenario} scenario, {len(stream)} experiences), {config.strategy}, "
                             f"{config.model} ({sum(p.numel() for p in model.parameters()):,} parameters); run folder {config.out}")
    return run_composed(config, stream, strategy, model, evaluator, trainer)


def run_composed(config: RunConfig, stream: Any, strategy: Strategy, model: Any, evaluator: Any, trainer: Any = None) -> dict[str, Any]:
    """Run the parts :func:`compose_run` built (or a caller's variant of them) in the loop, with the run's loggers.

    ``trainer``: the engine (None: :func:`make_trainer` from ``config``).
    """
    from lifelong_kd import pipeline

    return pipeline.run(
        stream, model, strategy, evaluator, run_loggers(Path(config.out), config, figures=True), config.train_config(),
        config.out, config.resume, config.record(), overwrite=config.overwrite, trainer=trainer if trainer is not None else make_trainer(config),
    )


def compose_run(config: RunConfig) -> tuple[RunConfig, Any, Strategy, Any, Any]:
    """The parts of a plain run as ``lifelong-kd run`` builds them: resolved config, stream, strategy, model, evaluator.

    The benchmark scripts that time a default run (``benchmarks/eval_cost.py``,
    ``benchmarks/long_stream.py``) compose it here too, so they measure what a user gets.
    """
    from lifelong_kd.data.benchmarks import build_stream
    from lifelong_kd.evaluation.evaluator import Evaluator
    from lifelong_kd.models import build_model

    strategy = build_strategy(config.strategy, config.strategy_options)
    stream = build_stream(config.benchmark, config.stream_options())
    strategy.check_stream(stream)
    config = replace(resolve(config, stream), strategy_options=filled_options(config.strategy, strategy))
    model = build_model(config.model, stream.input_shape, stream.n_heads, stream.n_outputs, head=strategy.model_head, seed=config.seed)
    return config, stream, strategy, model, Evaluator(**evaluator_options(config, stream))


def filled_options(name: str, strategy: Strategy) -> dict[str, Any]:
    """Every option of strategy ``name`` as it runs: those given and the defaults of the others (recorded, and in TensorBoard's HParams)."""
    accepted = strategy_parameters(name, STRATEGIES[name])
    return {option: value for option, value in strategy.options().items() if option in accepted}


def make_trainer(config: RunConfig) -> Any:
    """Our trainer, or Avalanche's template for ``--engine avalanche``."""
    if config.engine != "avalanche":
        return None
    from lifelong_kd.integrations.avalanche import AvalancheTrainer

    return AvalancheTrainer()


def run_loggers(folder: Path, config: RunConfig, figures: bool, member: str | None = None) -> list[Any]:
    """Loggers writing into ``folder``: figures (PNG), TensorBoard events, ``metrics.csv`` and a W&B run, as the config asks.

    ``member`` names the model of a lifelong-compression run the loggers are for (its W&B run is named after it).

    Raises:
        UsageError: ``--wandb`` without the wandb package.
    """
    loggers: list[Any] = []
    if config.figures_every is not None and config.figures_every < 1:
        raise UsageError(f"--figures-every must be a positive number of experiences (e.g. 5), got {config.figures_every}; leave it out for the default (every experience on streams of up to 5, about 5 times a run up to 20, else after the last experience only).")
    if figures:
        from lifelong_kd.loggers.figures import FigureLogger

        loggers.append(FigureLogger(folder, every=config.figures_every))
    if config.tensorboard:
        from lifelong_kd.loggers.tensorboard import TensorBoardLogger

        loggers.append(TensorBoardLogger(folder, figures_every=config.figures_every))
    if config.csv:
        from lifelong_kd.loggers.csv import CSVLogger

        loggers.append(CSVLogger(folder))
    if config.wandb:
        from lifelong_kd.loggers.wandb import INSTALL, WandbLogger, wandb_available

        if not wandb_available():
            raise UsageError(f"--wandb {config.wandb} needs the wandb package, which is not installed: {INSTALL} (or drop --wandb).")
        loggers.append(WandbLogger(folder, config.wandb, member=member))
    return loggers


def split_compression_options(config: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Strategy options for the teacher's strategy and for ``Compress`` (an option may go to both)."""
    if config.strategy not in STRATEGIES:
        raise UsageError(f"Unknown strategy {config.strategy!r}; choose one of: {', '.join(STRATEGIES)}.")
    accepted = {name: set(strategy_parameters(name, STRATEGIES[name])) for name in (config.strategy, "compress")}
    unknown = sorted(set(config.strategy_options) - accepted[config.strategy] - accepted["compress"])
    if unknown:
        raise UsageError(f"Option(s) {', '.join(unknown)} apply to neither {config.strategy!r} (the teacher's strategy) nor 'compress' (the student's).")
    teacher = {k: v for k, v in config.strategy_options.items() if k in accepted[config.strategy]}
    student = {k: v for k, v in config.strategy_options.items() if k in accepted["compress"]}
    return teacher, student


def execute_compression(config: RunConfig) -> dict[str, Any]:
    """Lifelong compression (``--student``): teacher (trained with ``--strategy`` or loaded with ``--teacher``) and student."""
    import functools

    from lifelong_kd import compression_run, pipeline
    from lifelong_kd.data.benchmarks import build_stream
    from lifelong_kd.evaluation.evaluator import Evaluator
    from lifelong_kd.models import build_model

    if not config.student:
        raise UsageError("--teacher RUN_DIR needs --student SPEC: the small model to distil into.")
    if config.engine != "lifelong-kd" or config.reference_model:
        raise UsageError("--student runs on our engine and uses the teacher as the reference: drop --engine avalanche / --reference-model.")
    teacher_options, student_options = split_compression_options(config)
    stream = build_stream(config.benchmark, config.stream_options())
    config = resolve(config, stream)
    out = Path(config.out)
    pipeline.seed_everything(config.seed)
    if config.teacher:
        teacher, teacher_strategy = load_reference(config.teacher, stream, "--teacher")[0], None
    else:
        teacher_strategy = build_strategy(config.strategy, teacher_options)
        teacher = build_model(config.model, stream.input_shape, stream.n_heads, stream.n_outputs, head=teacher_strategy.model_head)
    student = build_model(config.student, stream.input_shape, stream.n_heads, stream.n_outputs)
    options = {k: v for k, v in evaluator_options(config, stream).items() if k not in ("reference", "reference_accuracy")}
    members = compression_run.compression_members(
        stream, teacher, student, build_strategy("compress", student_options), teacher_strategy,
        functools.partial(Evaluator, **options), config.prune, True, config.student_alone,
        lambda name: run_loggers(out / "models" / name, config, figures=False, member=name),
    )
    if not config.quiet and distributed.is_main():
        sizes = " vs ".join(f"{sum(p.numel() for p in m.parameters()):,}" for m in (teacher, student))
        progress_logger.info(f"{stream.name} ({stream.scenario} scenario, {len(stream)} experiences): teacher {config.teacher or config.model} "
                             f"({config.strategy if teacher_strategy else 'loaded'}) -> student {config.student}, {sizes} parameters; run folder {out}")
    return pipeline.run_members(
        stream, members, config.train_config(), out, config.resume, config.record(), overwrite=config.overwrite, primary="student"
    )


def load_reference(path: str, stream: Any, flag: str = "--reference-model") -> tuple[Any, float | None]:
    """The model of a finished run (its folder or its checkpoint.pt) and its final average accuracy.

    A lifelong-compression folder gives its teacher; any other run, its model.

    Args:
        path: The run folder (or its ``checkpoint.pt``).
        stream: The stream the model must fit.
        flag: The option that named ``path``, for error messages.
    """
    from lifelong_kd.models import build_model
    from lifelong_kd.run_folder import CHECKPOINT, RESULTS, RunFolder, RunFolderError, read_results

    folder = Path(path).parent if Path(path).is_file() else Path(path)
    if not (folder / RESULTS).is_file() or not (folder / CHECKPOINT).is_file():
        raise UsageError(f"{flag} {path}: expected a run folder with {RESULTS} and {CHECKPOINT} (a finished `lifelong-kd run`).")
    try:
        results = read_results(folder)
        checkpoint = RunFolder(folder).load_checkpoint()
    except RunFolderError as error:
        raise UsageError(f"{flag} {path}: {error}") from None
    members = checkpoint["members"]
    name = "teacher" if "teacher" in members else checkpoint["primary"]
    spec = results["config"]["model"]
    try:
        model = build_model(spec, stream.input_shape, stream.n_heads, stream.n_outputs)
        model.load_state_dict(members[name]["model"])
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"{flag} {path}: its model ({spec}) was trained on a different stream or head layout ({str(error).splitlines()[0]}).") from None
    section = results.get("models", {}).get(name, results)
    return model, section["metrics"].get("average_accuracy")


def evaluator_options(config: RunConfig, stream: Any) -> dict[str, Any]:
    """The :class:`~lifelong_kd.evaluation.evaluator.Evaluator` arguments a run config asks for."""
    from lifelong_kd.data.shifts import parse_shifts

    reference, reference_accuracy = (None, None)
    if config.reference_model:
        reference, reference_accuracy = load_reference(config.reference_model, stream)
    if config.robustness_samples is not None and config.robustness_samples < 1:
        raise UsageError(f"robustness_samples must be positive, got {config.robustness_samples}.")
    if config.drift_samples is not None and config.drift_samples < 0:
        raise UsageError(f"--drift-samples must be 0 (off) or a positive number of probe samples, got {config.drift_samples}.")
    if config.eval_every is not None and config.eval_every < 1:
        raise UsageError(f"--eval-every must be a positive number of iterations (e.g. 50), got {config.eval_every}; leave it out to evaluate only after each experience.")
    if config.probe_samples is not None and config.probe_samples < 1:
        raise UsageError(f"--probe-samples must be a positive number of test samples per experience, got {config.probe_samples}.")
    return {
        "batch_size": config.eval_batch_size,
        "shifts": parse_shifts(config.shifts),
        "severities": config.severities,
        "robustness_samples": config.robustness_samples,
        "reference": reference,
        "reference_accuracy": reference_accuracy,
        "seed": config.seed,
        "instruments": config.instruments,
        "drift_samples": config.drift_samples,
        "eval_every": config.eval_every,
        "probe_samples": config.probe_samples,
        "robustness_every": robustness_schedule(config, stream),
    }


def robustness_schedule(config: RunConfig, stream: Any) -> int | None:
    """``--robustness-every`` as the evaluator's ``robustness_every``: ``auto`` (:func:`~lifelong_kd.evaluation.robustness.default_every`), ``final`` (None) or K."""
    from lifelong_kd.data.shifts import parse_shifts
    from lifelong_kd.evaluation.robustness import default_every

    value = config.robustness_every
    text = str(value).strip().lower()
    if text == "auto":
        training = config.train_config()
        per_experience = [training.iterations * training.batch_size if training.iterations else training.epochs * len(e.train) for e in stream]
        blocks = 1 + len(parse_shifts(config.shifts)) * len(config.severities)
        return default_every(stream, blocks, config.robustness_samples, sum(per_experience)) if blocks > 1 else 1
    if text == "final":
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--robustness-every must be auto, final or a positive number of experiences K (1: after every experience), got {value!r}.")
    return int(text)
