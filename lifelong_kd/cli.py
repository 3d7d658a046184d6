"""``lifelong-kd``: run a stream, list what exists, compare finished runs.

The one explicit name -> class map of strategies lives here (:data:`STRATEGIES`).
Strategy options become flags automatically from each strategy's ``__init__`` signature.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lifelong_kd.config import RunConfig, field_names, read_toml
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


class UsageError(ValueError):
    """Bad command-line or config-file input."""


def strategy_parameters() -> dict[str, Any]:
    """Every strategy option (name -> default) over all strategies in :data:`STRATEGIES`."""
    options: dict[str, Any] = {}
    for cls in STRATEGIES.values():
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name != "self" and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                options.setdefault(name, parameter.default)
    return options


def parse_value(text: str) -> Any:
    """Parse a flag value: bool, int, float, comma-separated list of numbers, or string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
    return text


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


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", dest="config_file", help="TOML file whose keys are these flags (flags given here win)")
    add("--benchmark", help="stream name (see `lifelong-kd list`); default split-digits, embedded")
    add("--scenario", choices=("task", "domain", "class"), help="default task")
    add("--n-experiences", type=int)
    add("--strategy", help="default finetune")
    add("--model", help="model spec: mlp:400,400 | convnet:32 | resnet18:20 | auto (default)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int, help="passes per experience (default 1; 20 on digits)")
    group.add_argument("--iterations", type=int, help="fixed minibatches per experience instead of epochs")
    add("--batch-size", type=int)
    add("--lr", type=float)
    add("--optimizer", choices=("sgd", "adam"))
    add("--momentum", type=float)
    add("--weight-decay", type=float)
    add("--augment", action=argparse.BooleanOptionalAction, help="random crop + flip (CIFAR)")
    add("--seed", type=int)
    add("--eval-batch-size", type=int)
    add("--precision", choices=("fp32", "bf16"), help="bf16: bfloat16 autocast, ~2x faster on CPUs with AVX512-BF16/AMX")
    add("--train-size", type=int, help="training samples kept per experience (quick runs)")
    add("--test-size", type=int, help="test samples kept per experience")
    add("--class-order", type=lambda s: tuple(int(c) for c in s.split(",")), help="e.g. 9,8,7,6,5,4,3,2,1,0")
    add("--shuffle-classes", action=argparse.BooleanOptionalAction)
    add("--data-root", help="folder with torchvision roots / image archives (default $LIFELONG_KD_DATA or ./data)")
    add("--download", action=argparse.BooleanOptionalAction, help="let torchvision download missing data")
    add("--out", help="run folder (default runs/<benchmark>-<scenario>-<strategy>-s<seed>-<time>)")
    add("--resume", action=argparse.BooleanOptionalAction, help="continue the run in --out")
    add("--quiet", action=argparse.BooleanOptionalAction, help="no progress bar")
    add("--engine", choices=("lifelong-kd", "avalanche"), help="training loop: ours (default) or Avalanche's with our plugin")
    add("--shifts", help="robustness suite: default | none | all | NAME,NAME (see `lifelong-kd list`)")
    add("--severities", type=lambda s: tuple(int(c) for c in s.split(",")), help="corruption severities, e.g. 1,3,5")
    add("--robustness-samples", type=int, help="test samples per experience under each corruption (default 256)")
    add("--reference-model", help="run folder of a reference (teacher) model for compression ratios")
    add("--tensorboard", action=argparse.BooleanOptionalAction, help="write TensorBoard event files (default on)")
    add("--student", help="lifelong compression: small model spec (e.g. mlp:100,100) distilled from --model with `compress`")
    add("--teacher", help="lifelong compression: run folder (or checkpoint.pt) of a finished teacher, instead of training --model")
    add("--prune", type=lambda s: tuple(float(c) for c in s.split(",") if c.strip()), help="pruned-teacher sparsities (default 0.5,0.8,0.9; '' for none)")
    add("--student-alone", action=argparse.BooleanOptionalAction, help="also train the student without the large teacher (baseline)")
    strategy_group = parser.add_argument_group("strategy options (each applies to the strategies that take it)")
    for name in strategy_parameters():
        strategy_group.add_argument("--" + name.replace("_", "-"), dest="opt_" + name, type=parse_value, metavar=name.upper())


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (every default is None so a config file can fill it)."""
    parser = argparse.ArgumentParser(prog="lifelong-kd", description="Continual learning with knowledge distillation.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train a strategy on a stream and evaluate it")
    _add_run_arguments(run_parser)
    commands.add_parser("list", help="list benchmarks, strategies and models")
    report_parser = commands.add_parser("report", help="compare finished runs side by side")
    report_parser.add_argument("runs", nargs="+", help="run folders (holding results.json)")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults <- config file <- explicit flags; unknown config keys are an error."""
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if args.config_file:
        known_options = strategy_parameters()
        for key, value in read_toml(args.config_file).items():
            if key in field_names():
                values[key] = tuple(value) if key in ("class_order", "severities", "prune") else value
            elif key in known_options:
                options[key] = value
            else:
                valid = ", ".join(sorted(set(field_names()) | set(known_options)))
                raise UsageError(f"Config file {args.config_file}: unknown key {key!r}. Valid keys: {valid}.")
    for key, value in vars(args).items():
        if value is None or key in ("command", "config_file"):
            continue
        if key.startswith("opt_"):
            options[key[4:]] = value
        else:
            values[key] = value
    _check_types(values)
    return replace(RunConfig(), **values, strategy_options=options)


def _check_types(values: Mapping[str, Any]) -> None:
    types = {f.name: f.type for f in fields(RunConfig)}
    for key, value in values.items():
        expected = str(types[key])
        if "int" in expected and not ("float" in expected or "str" in expected) and not isinstance(value, (int, tuple)):
            raise UsageError(f"{key} must be an integer, got {value!r}.")


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


def command_run(args: argparse.Namespace) -> int:
    """``lifelong-kd run``."""
    results = execute(config_from_args(args))
    print("accuracy matrix (%):")
    print(format_matrix(results["accuracy_matrix"]))
    print(format_metrics(results["metrics"]))
    robustness = results.get("robustness")
    if robustness:
        keys = ("clean_accuracy", "mean_corrupted_accuracy", "relative_robustness", "corrupted_forgetting")
        print("robustness: " + format_metrics({k: robustness.get(k) for k in keys}))
    if "summary" in results:
        from lifelong_kd.compression_run import format_summary

        print(format_summary(results["summary"]))
    timing = results["timing"]
    print(f"train {timing['train_seconds']:.1f} s, eval {timing['eval_seconds']:.1f} s; results in {results['config']['out']}")
    return 0


def _first_line(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").splitlines()[0] if inspect.getdoc(obj) else ""


def command_list(_: argparse.Namespace) -> int:
    """``lifelong-kd list``."""
    from lifelong_kd.data.benchmarks import BENCHMARKS
    from lifelong_kd.models import MODEL_DESCRIPTIONS

    print("benchmarks:")
    for name, builder in BENCHMARKS.items():
        print(f"  {name:<22} {_first_line(builder)}")
    print("strategies:")
    for name, cls in STRATEGIES.items():
        print(f"  {name:<22} {_first_line(cls)} [{', '.join(sorted(cls.scenarios))}]")
    print("models:")
    for name, description in MODEL_DESCRIPTIONS.items():
        print(f"  {name:<22} {description}")
    return 0


def report_rows(run_dirs: Sequence[str]) -> list[dict[str, Any]]:
    """One summary row per finished run folder."""
    rows = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "results.json"
        if not path.is_file():
            raise UsageError(f"{run_dir} has no results.json; pass run folders written by `lifelong-kd run`.")
        results = json.loads(path.read_text())
        config, metrics, timing = results["config"], results["metrics"], results["timing"]
        robustness = results.get("robustness") or {}
        ratios = (results.get("compression") or {}).get("ratios", {})
        rows.append(
            {
                "run": Path(run_dir).name,
                "benchmark": config.get("benchmark"),
                "scenario": config.get("scenario"),
                "strategy": config.get("strategy"),
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
        )
    return rows


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table; fractions shown in percent, seconds with one decimal."""
    headers = list(rows[0])
    percent = {"avg_acc", "forgetting", "bwt", "fwt", "corrupted_acc", "corrupted_forgetting"}

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key in percent:
            return f"{100 * value:.2f}"
        if key.endswith(("ratio", "kept", "robustness")):
            return f"{value:.2f}"
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(k, row[k]) for k in headers) + " |" for row in rows]
    return "\n".join(lines)


def command_report(args: argparse.Namespace) -> int:
    """``lifelong-kd report RUN_DIR...``."""
    print(format_rows(report_rows(args.runs)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on bad input, 1 on a failed run)."""
    from lifelong_kd.data.sources import DataNotFoundError
    from lifelong_kd.pipeline import ResumeError
    from lifelong_kd.train import NonFiniteLossError

    args = make_parser().parse_args(argv)
    handlers = {"run": command_run, "list": command_list, "report": command_report}
    try:
        return handlers[args.command](args)
    except (UsageError, ValueError, DataNotFoundError, FileNotFoundError, ResumeError) as error:
        print(f"lifelong-kd: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"lifelong-kd: run stopped: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lifelong-kd: interrupted; finished experiences are in the run folder (--resume continues).", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
