"""Generative Expand's GIMP procedure arguments: its own table's rows, then the fill's (but the fill mode, always
``expand``), read back as the three records; the dialog's mnemonics stay unique."""

from __future__ import annotations

import pytest
from gimp_inpaint.client.expand import EXPAND_OPTIONS, ExpandOptions, GrowSides
from gimp_inpaint.plugin_gimp.arguments import (
    EXPAND_FIXED,
    SERVER_URL,
    argument_kind,
    choices,
    expand_arguments,
    gimp_default,
    procedure_arguments,
    read_expand_options,
)
from gimp_inpaint.protocol import CanvasExpansion, EditorOptions, ErrorCode, FillMode, FillOptions, ProtocolError, Rect


def test_the_expand_procedure_has_its_rows_then_the_fills_but_the_fill_mode():
    arguments = expand_arguments()
    assert arguments[:len(EXPAND_OPTIONS)] == list(EXPAND_OPTIONS.values())
    assert arguments[len(EXPAND_OPTIONS):] == [s for s in procedure_arguments() if s.name != "fill_mode"]
    assert arguments[-1] == SERVER_URL and set(EXPAND_FIXED) == {"fill_mode"}
    assert [argument_kind(spec) for spec in EXPAND_OPTIONS.values()] == ["int", "choice", "string", "string"]
    assert [s.argument for s in EXPAND_OPTIONS.values()] == ["pixels", "sides", "size", "aspect"]
    assert dict(choices(EXPAND_OPTIONS["sides"]))["left-right"] == "Left and right"
    assert [nick for nick, _ in choices(EXPAND_OPTIONS["sides"])] == [member.value for member in GrowSides]


def test_the_expand_dialogs_mnemonics_are_unique():
    letters = [a.label[a.label.index("_") + 1].lower() for a in expand_arguments()]
    assert len(letters) == len(set(letters)), letters


def test_an_expand_run_reads_back_its_three_records():
    defaults = {spec.argument: gimp_default(spec) for spec in expand_arguments()}
    assert "fill-mode" not in defaults
    assert read_expand_options(defaults.__getitem__) == (FillOptions(fill_mode=FillMode.EXPAND), EditorOptions(),
                                                         ExpandOptions())
    chosen = {**defaults, "sides": "top-bottom", "aspect": "1:2", "prompt": "sky", "padding": 16}
    options, editor, expand = read_expand_options(chosen.__getitem__)
    assert (options.prompt, options.fill_mode, editor.padding) == ("sky", FillMode.EXPAND, 16)
    assert expand == ExpandOptions(sides=GrowSides.TOP_BOTTOM, aspect="1:2")
    assert expand.expansion(100, 100) == CanvasExpansion(100, 200, Rect(0, 50, 100, 100))
    with pytest.raises(ProtocolError) as caught:
        read_expand_options({**defaults, "size": "big"}.__getitem__)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and "WIDTHxHEIGHT" in caught.value.message
