"""Strategy options: names and types from the constructors, help from the docstrings, clear errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from lifelong_kd.cli import STRATEGIES, main
from lifelong_kd.cli.arguments import config_from_args, make_parser
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.options import all_options, check_accepted, docstring_arguments, flag, help_text, strategy_parameters
from lifelong_kd.cli.values import value_kind
from lifelong_kd.strategies.base import Strategy


class Toy(Strategy):
    """A strategy made up for these tests.

    Args:
        weight: Weight of the made-up term (0.5, nowhere).
            Continued on a second line.
        rounds: Number of rounds.
        sharp: Sharpen the targets.
        schedule: One number, or one per experience.
        mode: ``"fast"`` or ``"slow"``.
        level: A closed set of levels.
    """

    name = "toy"

    def __init__(
        self,
        weight: float = 0.5,
        rounds: int = 3,
        sharp: bool = False,
        schedule: float | Sequence[float] = 1.0,
        mode: str = "fast",
        level: Literal["low", "high"] = "low",
    ) -> None:
        self.weight, self.rounds, self.sharp, self.schedule, self.mode, self.level = weight, rounds, sharp, schedule, mode, level


class ToyWithoutInit(Toy):
    """Takes its parent's options (no ``__init__`` of its own)."""


class ToyForwarding(Toy):
    """Adds one option and forwards the rest.

    Args:
        extra: An option of its own.
    """

    def __init__(self, extra: int = 1, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra


def _config(*flags: str):
    return config_from_args(make_parser().parse_args(["run", *flags]))


def test_options_are_typed_from_annotations_and_explained_by_the_docstring():
    parameters = strategy_parameters("toy", Toy)
    assert list(parameters) == ["weight", "rounds", "sharp", "schedule", "mode", "level"]
    kinds = {name: parameter.kind.description for name, parameter in parameters.items()}
    assert kinds == {
        "weight": "a number",
        "rounds": "an integer",
        "sharp": "true or false",
        "schedule": "a number or a list of numbers",
        "mode": "a string",
        "level": "one of low, high",
    }
    assert parameters["weight"].help == "Weight of the made-up term (0.5, nowhere). Continued on a second line."
    assert parameters["mode"].suggestions == ("fast", "slow")
    assert parameters["level"].kind.choices == ("low", "high")


def test_options_are_collected_over_the_mro_without_args_and_kwargs():
    assert list(strategy_parameters("bare", ToyWithoutInit)) == list(strategy_parameters("toy", Toy))
    forwarding = strategy_parameters("forwarding", ToyForwarding)
    assert list(forwarding) == ["extra", "weight", "rounds", "sharp", "schedule", "mode", "level"]
    assert forwarding["extra"].help == "An option of its own." and forwarding["weight"].help.startswith("Weight")
    assert strategy_parameters("finetune", STRATEGIES["finetune"]) == {}


def test_a_new_strategy_in_the_map_brings_its_options():
    options = all_options({"toy": Toy, "lwf": STRATEGIES["lwf"]})
    assert {"weight", "schedule", "temperature", "alpha"} <= set(options)
    assert [parameter.strategy for parameter in options["temperature"]] == ["lwf"]
    text = help_text(options["weight"])
    assert text.startswith("Weight of the made-up term") and "[a number; toy; default 0.5]" in text


def test_every_option_of_every_strategy_in_the_map_is_a_flag_with_its_help(capsys):
    assert main(["run", "--help"]) == 0
    usage = capsys.readouterr().out
    for name, cls in STRATEGIES.items():
        for option in strategy_parameters(name, cls):
            assert flag(option) in usage, (name, option)
    assert "--temperature NUMBER" in usage and "Softmax temperature T" in usage
    assert "--alpha NUMBER[,NUMBER,...]" in usage


def test_help_shows_defaults_that_differ_between_strategies():
    text = help_text(all_options(STRATEGIES)["scale_t2"])
    assert "default False (lwf, multi-teacher" in text and "True (compress" in text


def test_flags_are_typed_by_the_strategy_that_receives_them():
    options = _config("--strategy", "lwf", "--temperature", "3", "--alpha", "0,1,2", "--warmup-iterations", "2", "--scale-t2", "True").strategy_options
    assert options == {"temperature": 3.0, "alpha": [0.0, 1.0, 2.0], "warmup_iterations": 2, "scale_t2": True}
    assert isinstance(options["temperature"], float) and isinstance(options["warmup_iterations"], int)
    assert _config("--strategy", "lwf", "--alpha", "1").strategy_options == {"alpha": 1.0}


@pytest.mark.parametrize(("flags", "expected"), [(["--scale-t2"], True), (["--no-scale-t2"], False), (["--scale-t2", "false"], False)])
def test_boolean_options_take_a_bare_flag_a_no_flag_or_a_word(flags, expected):
    assert _config("--strategy", "lwf", *flags).strategy_options == {"scale_t2": expected}


def test_a_flag_of_the_wrong_type_names_the_flag_and_the_type():
    with pytest.raises(UsageError, match=r"--warmup-iterations: expected an integer, got '2.5'"):
        _config("--strategy", "lwf", "--warmup-iterations", "2.5")
    with pytest.raises(UsageError, match=r"--alpha: expected a number or a list of numbers separated by commas, got '1,x'"):
        _config("--strategy", "lwf", "--alpha", "1,x")


def test_an_option_the_strategy_does_not_take_lists_those_it_takes(tmp_path, capsys):
    assert main(["run", "--strategy", "finetune", "--temperature", "2", "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Strategy 'finetune' takes no options, but got --temperature" in err and "args" not in err
    assert main(["run", "--strategy", "ewc", "--temperature", "2", "--quiet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "Strategy 'ewc' does not take --temperature; it takes: --ewc-lambda, --fisher-kind" in err
    assert not (tmp_path / "r").exists()


def test_check_accepted_covers_inherited_options():
    check_accepted("bare", ToyWithoutInit, {"weight": 1.0})
    with pytest.raises(UsageError, match="it takes: --weight, --rounds"):
        check_accepted("bare", ToyWithoutInit, {"temperature": 2.0})


def test_docstring_arguments_stop_at_the_next_section():
    doc = """Summary.

    Args:
        first: One
            two.
        second (int): Three.

    Returns:
        nothing: Not an argument.
    """
    assert docstring_arguments(doc) == {"first": "One two.", "second": "Three."}


@pytest.mark.parametrize(
    ("annotation", "text", "value"),
    [(float, "2", 2.0), (int, "7", 7), (bool, "Yes", True), (str, "mse", "mse"), (tuple[int, ...], "1,3,5", (1, 3, 5)),
     (tuple[float, ...], "", ()), (float | Sequence[float], "0,1", [0.0, 1.0]), (int | None, "4", 4)],
)
def test_value_kinds_parse_flag_text(annotation, text, value):
    assert value_kind(annotation).parse(text) == value


@pytest.mark.parametrize(
    ("annotation", "value"),
    [(float, "fast"), (float, True), (int, True), (int, 2.5), (bool, "yes"), (str, 3), (tuple[int, ...], 3), (tuple[int, ...], [1, "2"]),
     (str, ["blur"]), (float | Sequence[float], "1"), (Literal["low", "high"], "mid")],
)
def test_value_kinds_reject_config_values_of_the_wrong_type(annotation, value):
    with pytest.raises(TypeError):
        value_kind(annotation).convert(value)


def test_docs_hold_the_current_strategy_options_table(capsys):
    assert main(["list", "--options"]) == 0
    table = capsys.readouterr().out.strip()
    assert table.startswith("| flag | type | taken by (default) |") and "| `--temperature` | a number |" in table
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    assert table in docs, "docs/cli.md: paste the output of `lifelong-kd list --options` into its strategy options section"
