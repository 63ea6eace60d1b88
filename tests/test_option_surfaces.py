"""The GIMP procedure's arguments, the CLI's flags and the README's table all equal the options table, so that
names, defaults and ranges cannot drift apart again (issue 9)."""

from __future__ import annotations

import argparse
from enum import Enum
from pathlib import Path

import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.plugin_gimp.arguments import (
    SERVER_URL,
    argument_kind,
    choices,
    gimp_default,
    procedure_arguments,
    read_options,
)
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    EditorOptions,
    ErrorCode,
    FillOptions,
    OptionSpec,
    ProtocolError,
    Scheduler,
)
from gimp_inpaint.protocol.options import markdown_table

ROWS = [*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values()]
README = Path(__file__).parents[1] / "README.md"


def _fill_actions() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in subparsers.choices["fill"]._actions}


def test_the_procedure_has_one_argument_per_row_with_its_name_default_and_range():
    arguments = procedure_arguments()
    assert arguments == [*ROWS, SERVER_URL]
    assert [spec.argument for spec in arguments][-1] == "server-url"
    kinds = {"prompt": "string", "scheduler": "choice", "loras": "string", "strength": "double",
             "num_inference_steps": "int", "sample_merged": "boolean"}
    assert {name: argument_kind(next(s for s in arguments if s.name == name)) for name in kinds} == kinds
    assert gimp_default(FILL_OPTIONS["scheduler"]) == "default" and gimp_default(FILL_OPTIONS["loras"]) == ""
    assert [nick for nick, _ in choices(FILL_OPTIONS["scheduler"])] == [member.value for member in Scheduler]
    assert dict(choices(FILL_OPTIONS["scheduler"]))["euler_a"] == "Euler Ancestral"


def test_the_dialogs_mnemonics_are_unique():
    """GTK warns of duplicate mnemonics (issue 12 saw five); every label marks a different letter."""
    letters = [a.label[a.label.index("_") + 1].lower() for a in procedure_arguments()]
    assert len(letters) == len(set(letters)), letters


def test_a_run_reads_back_the_records_it_was_registered_with():
    """Every argument at its registered default reads back as the default records."""
    defaults = {spec.argument: gimp_default(spec) for spec in procedure_arguments()}
    assert read_options(defaults.__getitem__) == (FillOptions(), EditorOptions())
    chosen = {**defaults, "scheduler": "euler_a", "loras": "detail:0.5, style", "num-inference-steps": 40,
              "sample-merged": False}
    options, editor = read_options(chosen.__getitem__)
    assert (options.scheduler, options.loras, options.num_inference_steps, editor.sample_merged) == (
        Scheduler.EULER_A, {"detail": 0.5, "style": 1.0}, 40, False)
    with pytest.raises(ProtocolError) as caught:
        read_options({**defaults, "num-inference-steps": 501}.__getitem__)
    assert caught.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize("spec", [s for s in ROWS if s.name not in cli.CLI_SKIPS], ids=lambda s: s.name)
def test_each_row_is_a_cli_flag_with_its_default(spec: OptionSpec):
    action = _fill_actions()[spec.name]
    negated = [f"--no-{spec.flag[2:]}"] if spec.type is bool else []  # argparse.BooleanOptionalAction's off switch
    assert action.option_strings == [spec.flag, *negated, *spec.aliases]
    if spec.type is dict:
        assert action.default == []
    elif issubclass(spec.type, Enum):
        assert action.default == spec.default.value and action.choices == [m.value for m in spec.type]
    else:
        assert action.default == spec.default


def test_the_cli_leaves_out_only_the_rows_it_names_with_a_reason():
    assert set(cli.CLI_SKIPS) <= {spec.name for spec in ROWS} and all(cli.CLI_SKIPS.values())
    assert {spec.name for spec in ROWS} - set(cli.CLI_SKIPS) <= set(_fill_actions())


@pytest.mark.parametrize("spec", [s for s in ROWS if s.type in (int, float)], ids=lambda s: s.name)
def test_the_cli_refuses_a_value_just_past_each_range(spec: OptionSpec, tmp_path, capsys):
    """Exit status 2 before anything is read or sent: the record checks the table's range."""
    past = spec.maximum + (1 if spec.type is int else 0.5)
    code = cli.main(["fill", str(tmp_path / "missing.png"), str(tmp_path / "mask.png"), "-o", str(tmp_path / "o.png"),
                     "--token", "t", "--url", "ws://127.0.0.1:9", spec.flag, str(past)])
    assert code == 2
    assert f"{spec.name}={spec.type(past)!r} is outside" in capsys.readouterr().err


def test_the_readme_holds_the_tables_rows():
    assert markdown_table() in README.read_text(encoding="utf-8")
