"""The GIMP procedure's arguments, made from the options table (:mod:`protocol.options`), and read back.

Pure (no ``gi``): the plug-in file registers one GIMP argument per :class:`Argument` of :func:`procedure_arguments`
(``add_string_argument``, ``add_int_argument``, …) and reads a run's values with :func:`read_options`, so the
dialog, *Repeat* and scripted calls have exactly the names, defaults and ranges of the table, and a new option
appears in GIMP without touching the plug-in. Vendored into the plug-in: standard library and :mod:`protocol` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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

SERVER_URL = "server-url"
"""The one argument that is not a fill option: the daemon's URL for this run (empty: ``connection.json``'s)."""

_KINDS: dict[type, str] = {str: "string", int: "int", float: "double", bool: "boolean", dict: "string"}
"""Option type → the ``Gimp.Procedure.add_<kind>_argument`` that registers it (LoRAs are a text field; an enum
is a ``choice``)."""


@dataclass(frozen=True)
class Argument:
    """One GIMP procedure argument.

    Attributes:
        kind: ``"string"``, ``"int"``, ``"double"``, ``"boolean"`` or ``"choice"`` (which ``add_*_argument``).
        name: GIMP's name for it (``-`` for ``_``: :attr:`protocol.OptionSpec.argument`).
        label, help: the dialog's label (``_`` before the mnemonic) and tooltip.
        default: the value before the user sets one (a choice's nick, the LoRAs' text).
        minimum, maximum: the range of an ``int`` or ``double``; None otherwise.
        choices: ``(nick, label)`` of each member of a ``choice``, in order.
    """

    kind: str
    name: str
    label: str
    help: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[tuple[str, str], ...] = ()


def _argument(spec: OptionSpec) -> Argument:
    if issubclass(spec.type, Enum):
        return Argument("choice", spec.argument, spec.label, spec.help, spec.default.value,
                        choices=tuple((member.value, getattr(member, "label", member.value)) for member in spec.type))
    default = format_loras(spec.default) if spec.type is dict else spec.default
    ranged = spec.type in (int, float)
    return Argument(_KINDS[spec.type], spec.argument, spec.label, spec.help, default,
                    spec.minimum if ranged else None, spec.maximum if ranged else None)


def procedure_arguments() -> list[Argument]:
    """Every argument of the procedure, in dialog order: the rows of :data:`protocol.FILL_OPTIONS`, then of
    :data:`protocol.EDITOR_OPTIONS`, then :data:`SERVER_URL`."""
    rows = [*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values()]
    return [*map(_argument, rows), Argument("string", SERVER_URL, "Server _URL",
                                            "Daemon WebSocket URL (empty: from connection.json)", "")]


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
