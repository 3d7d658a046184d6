"""Value kinds read from type annotations: how a flag's text is parsed and a config file's value is checked.

One annotation gives one :class:`ValueKind` (``float`` -> "a number", ``tuple[int, ...]``
-> "a list of integers", ``float | Sequence[float]`` -> "a number or a list of numbers",
``Literal["a", "b"]`` -> "one of a, b"), so :class:`~lifelong_kd.config.RunConfig` fields and
strategy options are read by the same rules and no table of types is kept by hand.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
# How a TOML value's type is named in messages.
TOML_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array", dict: "a table"}


@dataclass(frozen=True)
class ValueKind:
    """How the values of one option are read.

    Attributes:
        description: What a value must be, for messages and help ("a number", "true or false").
        parse: Flag text -> value; raises ``argparse.ArgumentTypeError`` with a clear message.
        convert: Config-file (TOML) value -> value; raises ``TypeError`` when its type is wrong.
        metavar: How a flag's value is shown in ``--help`` (``NUMBER``, ``INT,INT,...``).
        choices: The allowed values when the annotation is a ``Literal``, else None.
    """

    description: str
    parse: Callable[[str], Any]
    convert: Callable[[Any], Any]
    metavar: str = "VALUE"
    choices: tuple[Any, ...] | None = None


def toml_type_name(value: Any) -> str:
    """``"a string"``, ``"an array"``, ... : the type of a config-file value, in words."""
    return TOML_TYPE_NAMES.get(type(value), type(value).__name__)


def _wrong(kind: str, value: Any) -> TypeError:
    return TypeError(f"expected {kind}, got {value!r} ({toml_type_name(value)})")


def _text_error(kind: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")


def _scalar(annotation: type) -> ValueKind:
    """Kinds of ``bool``, ``int``, ``float`` and ``str``."""
    description = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[annotation]
    metavar = {bool: "{true,false}", int: "INT", float: "NUMBER", str: "TEXT"}[annotation]

    def parse(text: str) -> Any:
        try:
            if annotation is bool:
                return _parse_bool(text)
            return annotation(text.strip()) if annotation is not str else text
        except ValueError:
            raise _text_error(description, text) from None

    def convert(value: Any) -> Any:
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if type(value) is not annotation:
            raise _wrong(description, value)
        return value

    return ValueKind(description, parse, convert, metavar)


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(text)
    return word in TRUE_WORDS


def _sequence(element: type, container: type) -> ValueKind:
    """A list of integers or numbers: ``1,3,5`` on the command line, ``[1, 3, 5]`` in a config file."""
    item = _scalar(element)
    description = f"a list of {'integers' if element is int else 'numbers'}"

    def parse(text: str) -> Any:
        try:
            return container(item.parse(part) for part in text.split(",") if part.strip())
        except argparse.ArgumentTypeError:
            raise _text_error(description + " separated by commas", text) from None

    def convert(value: Any) -> Any:
        if not isinstance(value, list):
            raise _wrong(description, value)
        try:
            return container(item.convert(part) for part in value)
        except TypeError:
            raise _wrong(description, value) from None

    return ValueKind(description, parse, convert, f"{item.metavar},{item.metavar},...")


def _number_or_numbers() -> ValueKind:
    """``float | Sequence[float]``: one number, or one per experience (``0,1,2`` / ``[0, 1, 2]``)."""
    number, numbers = _scalar(float), _sequence(float, list)
    description = "a number or a list of numbers"

    def parse(text: str) -> Any:
        try:
            return numbers.parse(text) if "," in text else number.parse(text)
        except argparse.ArgumentTypeError:
            raise _text_error(description + " separated by commas", text) from None

    def convert(value: Any) -> Any:
        try:
            return numbers.convert(value) if isinstance(value, list) else number.convert(value)
        except TypeError:
            raise _wrong(description, value) from None

    return ValueKind(description, parse, convert, "NUMBER[,NUMBER,...]")


def _choice(choices: tuple[Any, ...]) -> ValueKind:
    description = "one of " + ", ".join(str(choice) for choice in choices)
    names = {str(choice): choice for choice in choices}

    def parse(text: str) -> Any:
        if text not in names:
            raise _text_error(description, text)
        return names[text]

    def convert(value: Any) -> Any:
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            raise _wrong(description, value)
        return value

    return ValueKind(description, parse, convert, "{" + ",".join(names) + "}", choices)


def _anything() -> ValueKind:
    """An annotation we cannot read: the text or value is passed on as it is (the receiver checks it)."""
    return ValueKind("a value", lambda text: text, lambda value: value)


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union without ``None`` (``int | None`` -> ``(int,)``)."""
    if get_origin(annotation) in (Union, UnionType):
        return tuple(member for member in get_args(annotation) if member is not NoneType)
    return (annotation,)


def _sequence_element(annotation: Any) -> tuple[type, type] | None:
    """``(element, container)`` of ``tuple[int, ...]``, ``list[float]``, ``Sequence[float]``, else None."""
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin not in (tuple, list, Sequence) or not arguments or arguments[0] not in (int, float):
        return None
    if origin is tuple and arguments[1:] != (Ellipsis,):
        return None
    return arguments[0], tuple if origin is tuple else list


def value_kind(annotation: Any) -> ValueKind:
    """The kind of values an annotation describes (``None`` members are ignored: neither flags nor TOML spell it)."""
    members = _members(annotation)
    if len(members) == 1:
        (only,) = members
        if get_origin(only) is Literal:
            return _choice(get_args(only))
        if only in (bool, int, float, str):
            return _scalar(only)
        sequence = _sequence_element(only)
        return _sequence(*sequence) if sequence else _anything()
    scalars = [member for member in members if member in (int, float)]
    sequences = [_sequence_element(member) for member in members if member not in (int, float)]
    if float in scalars and sequences and all(sequence is not None for sequence in sequences):
        return _number_or_numbers()
    return _anything()
