"""The GIMP procedures' arguments, made from the options tables (:mod:`protocol.options`, :mod:`client.expand`), and
read back.

Pure (no ``gi``): the plug-in file registers one GIMP argument per row of :func:`procedure_arguments` (Generative
Fill) or :func:`expand_arguments` (Generative Expand) (with :func:`argument_kind`'s ``add_<kind>_argument`` and
:func:`gimp_default`) and reads a run's values with :func:`read_options` or :func:`read_expand_options`, so the
dialogs, *Repeat* and scripted calls have exactly the names, defaults and ranges of the tables, and a new option
appears in GIMP without touching the plug-in. Vendored into the plug-in: standard library, :mod:`protocol` and
:mod:`client.expand` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

from gimp_inpaint.client.expand import EXPAND_OPTIONS, ExpandOptions
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    EditorOptions,
    FillMode,
    FillOptions,
    OptionSpec,
    format_loras,
    parse_loras,
)

SERVER_URL = OptionSpec(name="server_url", type=str, default="", label="Server _URL",
                        help="Daemon WebSocket URL (empty: from connection.json)")
"""The one argument that is not a fill option: the daemon's URL for this run (empty: ``connection.json``'s)."""

_KINDS: dict[type, str] = {str: "string", int: "int", float: "double", bool: "boolean", dict: "string"}
"""Option type → the ``Gimp.Procedure.add_<kind>_argument`` that registers it (LoRAs are a text field; an enum
is a ``choice``)."""


EXPAND_FIXED: dict[str, Any] = {"fill_mode": FillMode.EXPAND}
"""Fill options that Generative Expand has no argument for, with the value it always sends."""


def procedure_arguments() -> list[OptionSpec]:
    """Every argument of the Generative Fill procedure, in dialog order: the rows of :data:`protocol.FILL_OPTIONS`,
    then of :data:`protocol.EDITOR_OPTIONS`, then :data:`SERVER_URL`. GIMP names each :attr:`OptionSpec.argument`."""
    return [*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values(), SERVER_URL]


def expand_arguments() -> list[OptionSpec]:
    """Every argument of the Generative Expand procedure, in dialog order: the rows of
    :data:`client.expand.EXPAND_OPTIONS` (what grows), then :func:`procedure_arguments` but :data:`EXPAND_FIXED`."""
    return [*EXPAND_OPTIONS.values(), *(spec for spec in procedure_arguments() if spec.name not in EXPAND_FIXED)]


def argument_kind(spec: OptionSpec) -> str:
    """Which ``add_<kind>_argument`` registers ``spec``: ``"string"``, ``"int"``, ``"double"``, ``"boolean"`` or
    ``"choice"`` (an enum, whose members are :func:`choices`)."""
    return "choice" if issubclass(spec.type, Enum) else _KINDS[spec.type]


def gimp_value(spec: OptionSpec, value: Any) -> Any:
    """``value`` of ``spec``'s row as GIMP holds it: a choice's nick, the LoRAs' text, else ``value`` itself."""
    if isinstance(value, Enum):
        return value.value
    return format_loras(value) if spec.type is dict else value


def gimp_default(spec: OptionSpec) -> Any:
    """The argument's default as GIMP holds it (:func:`gimp_value` of the row's default)."""
    return gimp_value(spec, spec.default)


Record = FillOptions | EditorOptions | ExpandOptions
"""A record of options that a procedure's arguments are read as (:func:`record_arguments`)."""


def record_arguments(arguments: Sequence[OptionSpec], records: Sequence[Record]) -> dict[str, Any]:
    """The values of ``arguments`` that ``records`` hold, by argument name, as GIMP holds them: the inverse of
    :func:`read_options` and :func:`read_expand_options`, for a dialog pre-filled from a request
    (:class:`protocol.FillOptions`, :class:`protocol.EditorOptions`, :class:`client.expand.ExpandOptions`, any of
    them). An argument no record has (the server URL) is left out; a field no argument has (Generative Expand's fill
    mode) is ignored."""
    values = {}
    for record in records:
        fields = {f.name for f in dataclasses.fields(record)}
        values.update({spec.argument: gimp_value(spec, getattr(record, spec.name))
                       for spec in arguments if spec.name in fields})
    return values


def choices(spec: OptionSpec) -> list[tuple[str, str]]:
    """``(nick, label)`` of each member of an enum option, in order (the label is the member's ``label`` when it
    has one, e.g. ``"Euler Ancestral"``).

    Raises:
        TypeError: ``spec`` is not an enum option.
    """
    if not issubclass(spec.type, Enum):
        raise TypeError(f"{spec.name} is not a choice (enum) option")
    return [(member.value, getattr(member, "label", member.value)) for member in spec.type]


def read_options(get: Callable[[str], Any], fixed: Mapping[str, Any] | None = None) -> tuple[FillOptions,
                                                                                          EditorOptions]:
    """The records for one run, from ``get(argument_name)`` (a choice reads as its nick, LoRAs as text) and
    ``fixed``, the values of the rows the procedure has no argument for (by row name).

    Raises:
        ProtocolError(INVALID_REQUEST): the LoRA text cannot be read (:func:`protocol.parse_loras`) or a value is
            out of its range.
    """
    known = fixed or {}

    def value(spec: OptionSpec) -> Any:
        if spec.name in known:
            return known[spec.name]
        return parse_loras(get(spec.argument)) if spec.type is dict else get(spec.argument)

    def values(rows: dict[str, OptionSpec]) -> dict[str, Any]:
        return {name: value(spec) for name, spec in rows.items()}

    return FillOptions(**values(FILL_OPTIONS)), EditorOptions(**values(EDITOR_OPTIONS))


def read_expand_options(get: Callable[[str], Any]) -> tuple[FillOptions, EditorOptions, ExpandOptions]:
    """The records for one Generative Expand run, from ``get(argument_name)`` as :func:`read_options` (with
    :data:`EXPAND_FIXED`), and its :class:`client.expand.ExpandOptions`.

    Raises:
        ProtocolError(INVALID_REQUEST): as :func:`read_options`, or a target size or aspect ratio that cannot be
            read, or both set.
    """
    options, editor = read_options(get, EXPAND_FIXED)
    return options, editor, ExpandOptions(**{name: get(spec.argument) for name, spec in EXPAND_OPTIONS.items()})
