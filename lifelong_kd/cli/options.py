"""Strategy options, derived from the strategies themselves: names and types from the constructors'
signatures, help text from their Google-style docstrings.

Nothing here names a strategy: every class in the map handed over (the CLI's
:data:`~lifelong_kd.cli.compose.STRATEGIES`) contributes its constructor arguments, so a new
strategy's options become flags and config-file keys by adding it to the map.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.values import ValueKind, value_kind

# Quoted values a docstring names for a string option (``"mse"``, ``"l2"`` or ``"cosine"``).
QUOTED_VALUE = re.compile(r'``"([^"`]+)"``')
# Inline literal markup (``x``), dropped from help text.
MARKUP = re.compile(r"``([^`]+)``")
ARGS_HEADER = re.compile(r"^(\s*)Args:\s*$")
ARGS_ENTRY = re.compile(r"^(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
NAMED_PARAMETERS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@dataclass(frozen=True)
class Parameter:
    """One constructor argument of one strategy.

    Attributes:
        strategy: The strategy's name in the map (``"lwf"``).
        name: The argument (``"temperature"``); the flag is ``--temperature``.
        kind: How its values are read (from the annotation).
        default: Its default value (``inspect.Parameter.empty`` when it has none).
        help: Its ``Args:`` entry in the class or ``__init__`` docstring ("" when undocumented).
    """

    strategy: str
    name: str
    kind: ValueKind
    default: Any
    help: str

    @property
    def suggestions(self) -> tuple[str, ...]:
        """The quoted values its docstring names, when the default is one of them (shown in help, not enforced)."""
        values = tuple(dict.fromkeys(QUOTED_VALUE.findall(self.help)))
        return values if isinstance(self.default, str) and self.default in values else ()


def flag(name: str) -> str:
    """``temperature`` -> ``--temperature``, ``scale_t2`` -> ``--scale-t2``."""
    return "--" + name.replace("_", "-")


def docstring_arguments(doc: str | None) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section (name -> text on one line)."""
    entries: dict[str, list[str]] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    header = next(((i, m.group(1)) for i, line in enumerate(lines) if (m := ARGS_HEADER.match(line))), None)
    if header is None:
        return {}
    start, indent = header
    current: list[str] | None = None
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= len(indent):
            break
        entry = ARGS_ENTRY.match(line.strip())
        if entry and len(line) - len(line.lstrip()) <= len(indent) + 4:
            current = entries.setdefault(entry.group(1), [entry.group(2)])
        elif current is not None and line.strip():
            current.append(line.strip())
    return {name: " ".join(parts) for name, parts in entries.items()}


def _own_parameters(cls: type) -> tuple[list[inspect.Parameter], bool]:
    """The named arguments of ``cls.__init__`` and whether it also takes ``**kwargs`` (forwarded to the parent)."""
    signature = inspect.signature(cls.__init__)
    parameters = list(signature.parameters.values())[1:]
    named = [parameter for parameter in parameters if parameter.kind in NAMED_PARAMETERS]
    return named, any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)


def _type_hints(function: Any) -> dict[str, Any]:
    """The evaluated annotations of ``function`` ({} when one names something not importable at run time)."""
    try:
        return typing.get_type_hints(function)
    except (NameError, TypeError):
        return {}


def strategy_parameters(name: str, cls: type) -> dict[str, Parameter]:
    """Every option ``cls`` takes, collected over its MRO (``*args``/``**kwargs`` are not options).

    A class without an ``__init__`` of its own takes its parent's arguments; an ``__init__``
    with ``**kwargs`` takes its own and its parent's. ``object.__init__`` takes none.
    """
    found: dict[str, Parameter] = {}
    for klass in cls.__mro__:
        if klass is object or "__init__" not in vars(klass):
            continue
        hints = _type_hints(klass.__init__)
        docs = {**docstring_arguments(klass.__init__.__doc__), **docstring_arguments(klass.__doc__)}
        named, forwards = _own_parameters(klass)
        for parameter in named:
            kind = value_kind(hints.get(parameter.name, Any))
            found.setdefault(parameter.name, Parameter(name, parameter.name, kind, parameter.default, docs.get(parameter.name, "")))
        if not forwards:
            break
    return found


def all_options(strategies: Mapping[str, type]) -> dict[str, list[Parameter]]:
    """Option name -> the parameter of every strategy that takes it, in the map's order."""
    options: dict[str, list[Parameter]] = {}
    for name, cls in strategies.items():
        for option, parameter in strategy_parameters(name, cls).items():
            options.setdefault(option, []).append(parameter)
    return options


def check_accepted(name: str, cls: type, options: Mapping[str, Any]) -> None:
    """Raise :class:`UsageError` naming the options ``cls`` does not take and listing those it does."""
    accepted = strategy_parameters(name, cls)
    unknown = [option for option in options if option not in accepted]
    if not unknown:
        return
    given = ", ".join(flag(option) for option in unknown)
    if not accepted:
        raise UsageError(f"Strategy {name!r} takes no options, but got {given}; drop them or choose another --strategy.")
    takes = ", ".join(flag(option) for option in accepted)
    raise UsageError(f"Strategy {name!r} does not take {given}; it takes: {takes}.")


def _shown(default: Any) -> str:
    """A default as help shows it (``2.0``, ``mse``, ``none`` when the argument is required)."""
    return "none" if default is inspect.Parameter.empty else repr(default).strip("'")


def _default_text(parameters: list[Parameter]) -> str:
    """``default 2.0``, or per strategy when they differ (``default False (lwf), True (compress)``)."""
    defaults: dict[str, list[str]] = {}
    for parameter in parameters:
        defaults.setdefault(_shown(parameter.default), []).append(parameter.strategy)
    if len(defaults) == 1:
        return f"default {next(iter(defaults))}"
    return "default " + ", ".join(f"{value} ({', '.join(names)})" for value, names in defaults.items())


def help_text(parameters: list[Parameter]) -> str:
    """Argparse help of one option: its docstring entry, its type, who takes it, its default."""
    documented = next((parameter.help for parameter in parameters if parameter.help), "")
    kinds = dict.fromkeys(parameter.kind.description for parameter in parameters)
    takers = ", ".join(parameter.strategy for parameter in parameters)
    details = f"[{' / '.join(kinds)}; {takers}; {_default_text(parameters)}]"
    plain = MARKUP.sub(r"\1", documented)
    return f"{plain} {details}".strip().replace("%", "%%")


def _described(parameter: Parameter) -> str:
    """The type in words, with the values the docstring names for a string (``a string: mse, l2, cosine``)."""
    suggestions = parameter.suggestions
    return parameter.kind.description + (f": {', '.join(suggestions)}" if suggestions else "")


def markdown_table(strategies: Mapping[str, type]) -> str:
    """Every strategy option as a Markdown table: flag, type, the strategies taking it with their defaults.

    ``lifelong-kd list --options`` prints it; docs/cli.md holds a copy.
    """
    lines = ["| flag | type | taken by (default) |", "| --- | --- | --- |"]
    for name, parameters in all_options(strategies).items():
        kinds = " / ".join(dict.fromkeys(_described(parameter) for parameter in parameters))
        takers = ", ".join(f"`{parameter.strategy}` ({_shown(parameter.default)})" for parameter in parameters)
        lines.append(f"| `{flag(name)}` | {kinds} | {takers} |")
    return "\n".join(lines)
