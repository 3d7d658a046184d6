"""Argument parsing: the parser, config files (read and type-checked) and the :class:`RunConfig` they give."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from lifelong_kd.cli.compose import STRATEGIES
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.config import RunConfig, field_names, read_toml


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
    from lifelong_kd import __version__

    parser = argparse.ArgumentParser(prog="lifelong-kd", description="Continual learning with knowledge distillation.")
    parser.add_argument("--version", action="version", version=f"lifelong-kd {__version__}")
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
