"""Argument parsing: the parser, config files (read and type-checked) and the :class:`RunConfig` they give.

Every ``run`` flag is a :class:`~lifelong_kd.config.RunConfig` field, typed by the field's
annotation; strategy options are typed by the strategy constructors' annotations and explained
by their docstrings (:mod:`lifelong_kd.cli.options`). A config file uses the same names and is
checked by the same types.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from lifelong_kd.cli.compose import STRATEGIES
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.options import Parameter, all_options, flag, help_text, strategy_parameters
from lifelong_kd.cli.values import toml_type_name, value_kind
from lifelong_kd.config import RunConfig, field_names
from lifelong_kd.logs import progress_logger

# Namespace attributes that are not RunConfig fields.
NOT_FIELDS = ("command", "config_file", "verbose")
# Prefix of the namespace attributes holding strategy options (as typed on the command line).
OPTION_PREFIX = "opt_"


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one-paragraph :class:`UsageError` messages (no usage dump).

    Attributes:
        commands: The top-level parser's subcommand parsers by name (set by :func:`make_parser`).
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` (``main`` prints it and exits with 2)."""
        raise UsageError(f"{message}. See `{self.prog} --help`.")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; an unknown flag is an error that suggests the closest known one.

    Raises:
        UsageError: Bad flags or values (one paragraph, naming the flag).
    """
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if argv[:1] == ["sweep"] and "--" in argv:  # `sweep ... -- RUN OPTIONS`: the run options go to every run as they are
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    args, extra = parser.parse_known_args(argv)
    if args.command == "sweep":
        args.run_arguments = passed
    if extra:
        command = parser.commands[args.command]
        known = [option for action in command._actions for option in action.option_strings]
        close = [match for word in extra if word.startswith("--") for match in difflib.get_close_matches(word.split("=")[0], known, n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"unrecognized arguments: {' '.join(extra)}.{hint} See `{command.prog} --help`.")
    return args


def field_kind(name: str) -> Any:
    """The flag parser of RunConfig field ``name``, from its annotation."""
    return value_kind(typing.get_type_hints(RunConfig)[name]).parse


def _add_stream_arguments(add: Any) -> None:
    add("--benchmark", help="stream name (see `lifelong-kd list`; default split-digits, embedded in scikit-learn)")
    add("--scenario", choices=("task", "domain", "class"), help="default task")
    add("--n-experiences", type=field_kind("n_experiences"), help="experiences of the stream (default: the benchmark's own)")
    add("--train-size", type=field_kind("train_size"), help="training samples kept per experience (quick runs)")
    add("--test-size", type=field_kind("test_size"), help="test samples kept per experience")
    add("--class-order", type=field_kind("class_order"), help="class order of split streams, e.g. 9,8,7,6,5,4,3,2,1,0")
    add("--shuffle-classes", action=argparse.BooleanOptionalAction, help="seeded shuffle of the class order")
    add("--data-root", help="folder with torchvision roots / image archives (default $LIFELONG_KD_DATA or ./data)")
    add("--download", action=argparse.BooleanOptionalAction, help="let torchvision download missing data")
    add("--input-format", choices=("normalised", "raw", "raw32"), help="MNIST inputs: normalised 28x28 (default) | raw: 28x28 raw [0, 1] pixels (Buzzega et al. 2020's code) | raw32: 32x32 zero-padded raw [0, 1] pixels (van de Ven et al. 2019's code)")
    add("--validation-split", type=field_kind("validation_split"), help="share of each experience's training data held out and evaluated instead of the test set, for tuning (default 0: off)")


def _add_training_arguments(parser: argparse.ArgumentParser, add: Any) -> None:
    add("--strategy", help=f"one of {', '.join(STRATEGIES)} (default finetune)")
    add("--model", help="model spec: mlp:400,400 | convnet:32 | resnet18:20 | auto (default)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=field_kind("epochs"), help="passes per experience (default 1; 20 on digits)")
    group.add_argument("--iterations", type=field_kind("iterations"), help="fixed minibatches per experience instead of epochs")
    add("--batch-size", type=field_kind("batch_size"), help="default 128")
    add("--lr", type=field_kind("lr"), help="learning rate (default 0.01)")
    add("--optimizer", choices=("sgd", "adam"), help="default sgd; a fresh optimiser per experience unless --keep-optimizer")
    add("--keep-optimizer", action=argparse.BooleanOptionalAction, help="one optimiser for the whole run, its state (Adam's moments) kept across experiences, as van de Ven et al. 2019's code (default off: fresh per experience)")
    add("--cross-entropy-classes", choices=("all", "seen"), help="class scenario: cross-entropy over all outputs (default) | seen: the classes of the experiences so far (van de Ven et al. 2019's active classes)")
    add("--momentum", type=field_kind("momentum"), help="SGD momentum (default 0.9)")
    add("--weight-decay", type=field_kind("weight_decay"), help="default 0")
    add("--augment", action=argparse.BooleanOptionalAction, help="random crop + flip (CIFAR)")
    add("--seed", type=field_kind("seed"), help="0 to 2147483647 (default 0); same seed, same numbers")
    add("--precision", choices=("fp32", "bf16", "bf16-master", "fp16"), help="bf16: bfloat16 autocast, ~2x faster on CPUs with AVX512-BF16/AMX; bf16-master: the same numbers, the training forward on bfloat16 weight copies refreshed from the float32 weights after each step instead of cast in every forward (one process); fp16: float16 autocast with a gradient scaler (CUDA)")
    add("--compile", action=argparse.BooleanOptionalAction, help="run the training forward and backward through torch.compile (needs a C++ compiler on the CPU); the first step of each minibatch size compiles, which takes seconds to minutes and is reported as compile_seconds in each experience's timing (default off)")
    add("--fused-optimizer", action=argparse.BooleanOptionalAction, help="optimiser step in torch's fused SGD/Adam kernel, CPU and CUDA (default on: the same numbers as --no-fused-optimizer to float rounding, fewer passes over memory)")
    add("--device", help="auto (default: CUDA when available, else cpu) | cpu | cuda | cuda:N | mps; under torchrun each process takes cuda:LOCAL_RANK")
    add("--deterministic", action=argparse.BooleanOptionalAction, help="deterministic kernels only: CUDA runs repeat bit for bit (a little slower)")
    add("--data-on-device", action=argparse.BooleanOptionalAction, help="copy each experience's training data to the GPU once instead of every minibatch")
    add("--threads", type=field_kind("threads"), help="torch CPU threads (default: $OMP_NUM_THREADS, else one per core); idle threads sleep (OMP_WAIT_POLICY=PASSIVE unless set) so a shared machine stays fast")
    add("--engine", choices=("lifelong-kd", "avalanche"), help="training loop: ours (default) or Avalanche's with our plugin")


def _add_output_arguments(add: Any) -> None:
    add("--eval-batch-size", type=field_kind("eval_batch_size"), help="inference batch of evaluation (default: per model)")
    add("--shifts", help="robustness suite: default | none | all | NAME,NAME (see `lifelong-kd list`)")
    add("--severities", type=field_kind("severities"), help="corruption severities, e.g. 1,3,5 (default 1,2,3,4,5)")
    add("--robustness-samples", type=field_kind("robustness_samples"), help="test samples per experience under each corruption (default 64)")
    add("--robustness-every", help="when the robustness suite runs: auto (default: chosen from the stream, see docs/metrics.md) | final | K (every K-th experience and the final one; 1: every experience)")
    add("--reference-model", help="run folder of a reference (teacher) model for compression ratios")
    add("--instruments", action=argparse.BooleanOptionalAction, help="per-class accuracy and forgetting, confusion matrix, negative flips (default on)")
    add("--drift-samples", type=field_kind("drift_samples"), help="probe samples of representation drift, linear CKA between snapshots (default 512; 0: off)")
    add("--eval-every", type=field_kind("eval_every"), help="continual evaluation: accuracy on a probe of every seen experience every K iterations (stability gap; default off)")
    add("--probe-samples", type=field_kind("probe_samples"), help="test samples per experience in the continual-evaluation probe (default 256)")
    add("--out", help="run folder (default runs/<benchmark>-<scenario>-<strategy>-s<seed>-<time>)")
    add("--resume", action=argparse.BooleanOptionalAction, help="continue the run in --out from its last finished experience")
    add("--overwrite", action=argparse.BooleanOptionalAction, help="replace a finished run in --out (a new run; --resume continues one)")
    add("--tensorboard", action=argparse.BooleanOptionalAction, help="write TensorBoard event files (default on)")
    add("--figures-every", type=field_kind("figures_every"), help="draw the figures (PNG and TensorBoard images) every K experiences and after the last (default: every experience on streams of up to 5, about 5 times a run on streams of up to 20, after the last experience only on longer streams)")
    add("--csv", action=argparse.BooleanOptionalAction, help="also write <out>/metrics.csv: one row per experience (accuracies and metrics in %%, loss terms; default off)")
    add("--wandb", metavar="PROJECT", help='also log to this Weights & Biases project (pip install "lifelong-kd[wandb]"; WANDB_MODE=offline: no network)')
    add("--quiet", action=argparse.BooleanOptionalAction, help="no banner and no progress (bar, or lines every 30 s without a terminal); results and errors stay")


def _add_compression_arguments(add: Any) -> None:
    add("--student", help="lifelong compression: small model spec (e.g. mlp:100,100) distilled from --model with `compress`")
    add("--teacher", help="lifelong compression: run folder (or checkpoint.pt) of a finished teacher, instead of training --model")
    add("--prune", type=field_kind("prune"), help="pruned-teacher sparsities (default 0.5,0.8,0.9; '' for none)")
    add("--student-alone", action=argparse.BooleanOptionalAction, help="also train the student without the large teacher (baseline)")


def _add_strategy_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per strategy option, in a group per strategy (the first in the map that takes it)."""
    taken = set(field_names()) | set(NOT_FIELDS)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, parameters in all_options(STRATEGIES).items():
        if name in taken:
            raise RuntimeError(f"Strategy option {name!r} ({parameters[0].strategy}) has the name of a run option; rename it.")
        owner = parameters[0].strategy
        if owner not in groups:
            groups[owner] = parser.add_argument_group(f"options of --strategy {owner} (types and help from its docstring)")
        _add_strategy_flag(groups[owner], name, parameters)


def _add_strategy_flag(group: argparse._ArgumentGroup, name: str, parameters: list[Parameter]) -> None:
    """The flag of one option; its text is typed later, by the strategy that receives it."""
    dest, help_line = OPTION_PREFIX + name, help_text(parameters)
    if all(parameter.kind.description == "true or false" for parameter in parameters):
        group.add_argument(flag(name), dest=dest, nargs="?", const="true", metavar="{true,false}", help=help_line)
        no_flag = "--no-" + flag(name)[2:]
        group.add_argument(no_flag, dest=dest, action="store_const", const="false", help=argparse.SUPPRESS)
        return
    suggestions = next((parameter.suggestions for parameter in parameters if parameter.suggestions), ())
    metavar = "{" + ",".join(suggestions) + "}" if suggestions else parameters[0].kind.metavar
    group.add_argument(flag(name), dest=dest, metavar=metavar, help=help_line)


def _add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """``lifelong-kd sweep`` (see :mod:`lifelong_kd.cli.sweep`); run options follow ``--``."""
    parser.add_argument("file", nargs="?", help="TOML sweep file: out, jobs, seeds, [base] run options, [grid] options to vary (flags win)")
    parser.add_argument("--out", help="sweep folder: runs/<name>/ per run, logs/, summary.md/.csv/.png")
    parser.add_argument("--seeds", help="seeds of every configuration: 0,1,2 or 0-4 (default 0)")
    parser.add_argument("--grid", action="append", metavar="KEY=V1,V2", help="vary a run option over values (repeat for a grid); STRATEGY.KEY=... for one strategy's runs")
    parser.add_argument("--jobs", type=int, help="runs at a time, each with its share of the cores (default 1)")
    parser.add_argument("--table-only", action="store_true", help="only the table of the runs finished so far")


def make_parser() -> argparse.ArgumentParser:
    """The argument parser (every ``run`` default is None so a config file can fill it)."""
    from lifelong_kd import __version__

    parser = Parser(prog="lifelong-kd", description="Continual learning with knowledge distillation.")
    parser.add_argument("--version", action="version", version=f"lifelong-kd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,list,report,sweep}")
    run_parser = commands.add_parser("run", help="train a strategy on a stream and evaluate it")
    run_parser.add_argument("--config", dest="config_file", help="TOML file whose keys are these flags (flags given here win)")
    _add_stream_arguments(run_parser.add_argument)
    _add_training_arguments(run_parser, run_parser.add_argument)
    _add_output_arguments(run_parser.add_argument)
    _add_compression_arguments(run_parser.add_argument)
    _add_strategy_arguments(run_parser)
    list_parser = commands.add_parser("list", help="list benchmarks, strategies and models")
    list_parser.add_argument("--options", action="store_true", help="print the strategy options as a Markdown table (type, strategies, defaults)")
    report_parser = commands.add_parser("report", help="compare finished runs side by side")
    report_parser.add_argument("runs", nargs="+", help="run folders (holding results.json)")
    report_parser.add_argument("--by-seed", action="store_true", help="also one row per configuration: mean ± std over the runs that differ only by seed")
    report_parser.add_argument("--csv", metavar="FILE", help="also write the table to FILE as CSV (same columns and units, unrounded)")
    sweep_parser = commands.add_parser("sweep", help="seeds x grids of run options, each a run folder; a mean ± std table", usage="%(prog)s [SWEEP.toml] [options] [-- RUN OPTIONS]")
    _add_sweep_arguments(sweep_parser)
    for command in (run_parser, list_parser, report_parser, sweep_parser):
        command.add_argument("-v", "--verbose", action="count", help="also print debug messages")
    parser.commands = commands.choices
    return parser


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML config file (no code is evaluated); keys may use ``-`` or ``_``.

    A ``[strategy_options]`` table is flattened: its keys are strategy options like the top-level ones.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Config file {path} does not exist; check the path given to --config.")
    with path.open("rb") as handle:
        try:
            data = tomllib.load(handle)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise UsageError(f"Config file {path} is not valid TOML ({error}); fix the line named.") from error
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in ("strategy_options", "strategy-options"):
            flat.update({k.replace("-", "_"): v for k, v in value.items()})
        else:
            flat[key.replace("-", "_")] = value
    return flat


def read_config_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """RunConfig values (type-checked against the field annotations) and strategy options (checked later) of a config file.

    Raises:
        UsageError: Unknown key, or a value of the wrong type (the message names the file, key, type and value).
    """
    hints = typing.get_type_hints(RunConfig)
    known_options = all_options(STRATEGIES)
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in read_toml(path).items():
        if key in field_names():
            values[key] = _convert(value_kind(hints[key]), value, f"Config file {path}: key {key!r}")
        elif key in known_options:
            options[key] = value
        else:
            valid = ", ".join(sorted(set(field_names()) | set(known_options)))
            raise UsageError(f"Config file {path}: unknown key {key!r}. Valid keys: {valid}.")
    return values, options


def _convert(kind: Any, value: Any, where: str) -> Any:
    """``kind.convert(value)``, or a :class:`UsageError` naming ``where``, the expected type and the value."""
    try:
        return kind.convert(value)
    except TypeError:
        raise UsageError(f"{where} must be {kind.description}, got {value!r} ({toml_type_name(value)}).") from None


def _parse(kind: Any, text: str, name: str) -> Any:
    """``kind.parse(text)``, or a :class:`UsageError` naming the flag."""
    try:
        return kind.parse(text)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"argument {flag(name)}: {error}.") from None


def receivers(config: RunConfig) -> list[dict[str, Parameter]]:
    """Parameters of the strategies that will receive the options: ``--strategy`` (and ``compress`` with ``--student``/``--teacher``)."""
    names = [config.strategy] + (["compress"] if config.student or config.teacher else [])
    return [strategy_parameters(name, STRATEGIES[name]) for name in names if name in STRATEGIES]


def typed_options(config: RunConfig, from_file: Mapping[str, Any], from_flags: Mapping[str, str], path: str | None) -> dict[str, Any]:
    """Strategy options typed by the strategy that receives each (the first that takes it).

    An option no receiving strategy takes is passed on as it is: composing the run rejects it
    with the list of options the strategy does take.
    """
    takers = receivers(config)
    options: dict[str, Any] = {}
    for name, value in {**from_file, **from_flags}.items():
        parameter = next((parameters[name] for parameters in takers if name in parameters), None)
        if parameter is None:
            options[name] = value
        elif name in from_flags:
            options[name] = _parse(parameter.kind, value, name)
        else:
            options[name] = _convert(parameter.kind, value, f"Config file {path}: key {name!r}")
    return options


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults <- (with ``--resume``: the run folder's saved config) <- config file <- explicit flags.

    Every ``run`` flag's default is None, so the options given explicitly (on the command line
    or in ``--config``) are known: when resuming, the others are taken from the folder's saved
    configuration (:func:`restored_values`), and the explicit ones are compared with it by
    the loop's resume check. Unknown config keys and wrong types are errors.
    """
    values, file_options = read_config_file(args.config_file) if args.config_file else ({}, {})
    flag_options: dict[str, str] = {}
    for key, value in vars(args).items():
        if value is None or key in NOT_FIELDS:
            continue
        if key.startswith(OPTION_PREFIX):
            flag_options[key[len(OPTION_PREFIX) :]] = value
        else:
            values[key] = value
    saved = saved_record(values["out"]) if values.get("resume") and values.get("out") else None
    if saved is not None:
        restored = restored_values(saved, values["out"])
        progress_logger.info(f"resuming {values['out']}: options not given are taken from its saved configuration ({len(set(restored) - set(values))} of them)")
        values = {**restored, **values}
    config = replace(RunConfig(), **values)
    options = typed_options(config, file_options, flag_options, args.config_file)
    if saved is not None and saved.get("strategy") == config.strategy and isinstance(saved.get("strategy_options"), Mapping):
        options = {**saved["strategy_options"], **options}
    return replace(config, strategy_options=options)


def saved_record(out: str) -> dict[str, Any] | None:
    """The configuration saved in run folder ``out`` (``results.json`` ``config``, else the checkpoint's ``record``).

    None when the folder holds neither (resuming it then fails with the run folder's own
    message, e.g. that there is nothing to resume).
    """
    import json

    from lifelong_kd.run_folder import CHECKPOINT, RESULTS, RunFolder, RunFolderError

    folder = Path(out)
    try:
        record = json.loads((folder / RESULTS).read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        record = None
    if not isinstance(record, dict) and (folder / CHECKPOINT).is_file():
        try:
            record = RunFolder(folder).load_checkpoint().get("record")
        except RunFolderError:
            record = None
    return record if isinstance(record, dict) else None


def restored_values(saved: Mapping[str, Any], out: str) -> dict[str, Any]:
    """RunConfig values of a saved configuration, type-checked like a config file's.

    Options that do not change the numbers (:data:`lifelong_kd.pipeline.VOLATILE_KEYS`: ``--out``,
    ``--quiet``, ``--device``, ...) keep their defaults, except the loggers ``tensorboard``, ``csv``,
    ``wandb`` and ``figures_every`` (a resumed run keeps writing what it wrote, when it wrote it); strategy options are merged by
    :func:`config_from_args`.

    Raises:
        UsageError: A saved value has the wrong type (the folder's files were edited or damaged).
    """
    from lifelong_kd.pipeline import VOLATILE_KEYS

    hints = typing.get_type_hints(RunConfig)
    restored: dict[str, Any] = {}
    for key in field_names():
        if key not in saved or (key in VOLATILE_KEYS and key not in ("tensorboard", "csv", "wandb", "figures_every")):
            continue
        value = saved[key]
        where = f"The saved configuration of {out}: key {key!r} (give --{key.replace('_', '-')} explicitly)"
        restored[key] = None if value is None else _convert(value_kind(hints[key]), value, where)
    return restored
