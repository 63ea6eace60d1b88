"""The GIMP procedure's arguments, made from the options table (:mod:`protocol.options`), and read back.

Pure (no ``gi``): the plug-in file registers one GIMP argument per row of :func:`procedure_arguments` (with
:func:`argument_kind`'s ``add_<kind>_argument`` and :func:`gimp_default`) and reads a run's values with
:func:`read_options`, so the dialog, *Repeat* and scripted calls have exactly the names, defaults and ranges of the
table, and a new option appears in GIMP without touching the plug-in. Vendored into the plug-in: standard library
and :mod:`protocol` only.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    EditorOptions,
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


def procedure_arguments() -> list[OptionSpec]:
    """Every argument of the procedure, in dialog order: the rows of :data:`protocol.FILL_OPTIONS`, then of
    :data:`protocol.EDITOR_OPTIONS`, then :data:`SERVER_URL`. GIMP names each :attr:`OptionSpec.argument`."""
    return [*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values(), SERVER_URL]


def argument_kind(spec: OptionSpec) -> str:
    """Which ``add_<kind>_argument`` registers ``spec``: ``"string"``, ``"int"``, ``"double"``, ``"boolean"`` or
    ``"choice"`` (an enum, whose members are :func:`choices`)."""
    return "choice" if issubclass(spec.type, Enum) else _KINDS[spec.type]


def gimp_default(spec: OptionSpec) -> Any:
    """The argument's default as GIMP holds it: a choice's nick, the LoRAs' text, else the row's default."""
    if isinstance(spec.default, Enum):
        return spec.default.value
    return format_loras(spec.default) if spec.type is dict else spec.default


def choices(spec: OptionSpec) -> list[tuple[str, str]]:
    """``(nick, label)`` of each member of an enum option, in order (the label is the member's ``label`` when it
    has one, e.g. ``"Euler Ancestral"``).

    Raises:
        TypeError: ``spec`` is not an enum option.
    """
    if not issubclass(spec.type, Enum):
        raise TypeError(f"{spec.name} is not a choice (enum) option")
    return [(member.value, getattr(member, "label", member.value)) for member in spec.type]


def read_options(get: Callable[[str], Any]) -> tuple[FillOptions, EditorOptions]:
    """The records for one run, from ``get(argument_name)`` (a choice reads as its nick, LoRAs as text).

    Raises:
        ProtocolError(INVALID_REQUEST): the LoRA text cannot be read (:func:`protocol.parse_loras`) or a value is
            out of its range.
    """

    def values(rows: dict[str, OptionSpec]) -> dict[str, Any]:
        return {name: parse_loras(get(spec.argument)) if spec.type is dict else get(spec.argument)
                for name, spec in rows.items()}

    return FillOptions(**values(FILL_OPTIONS)), EditorOptions(**values(EDITOR_OPTIONS))
