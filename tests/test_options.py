"""The options table (protocol/options.py): its rows and defaults, validation of both records when built and when
decoded from a request, the LoRA text and the Markdown table."""

from __future__ import annotations

import dataclasses
import math
import re
from enum import Enum
from typing import Any

import msgpack
import pytest
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    MAX_LORAS,
    MAX_VARIANTS,
    SEED_MAX,
    EditorOptions,
    ErrorCode,
    FillMode,
    FillOptions,
    InpaintRequest,
    OptionSpec,
    Plane,
    ProtocolError,
    Scheduler,
    decode,
    encode,
    format_loras,
    parse_loras,
    resolve_fill_mode,
)
from gimp_inpaint.protocol.options import LORA_WEIGHT_MAX, MAX_ENGINE_NAME_CHARS, MAX_PROMPT_CHARS, markdown_table
from hypothesis import given, settings
from hypothesis import strategies as st

RECORDS = [(FillOptions, FILL_OPTIONS), (EditorOptions, EDITOR_OPTIONS)]
ROWS = [pytest.param(record, spec, id=spec.name) for record, rows in RECORDS for spec in rows.values()]
NUMBER_ROWS = [(record, spec) for record, rows in RECORDS for spec in rows.values() if spec.type in (int, float)]

MSGPACK_INTS = st.integers(-(2**63), 2**64 - 1)
"""The integers msgpack can carry."""


def _capped_text(cap: int) -> st.SearchStrategy[str]:
    """Short random text, or one character repeated up to ``cap`` times (4-byte characters included)."""
    characters = st.characters(blacklist_categories=("Cs",))  # lone surrogates are refused (below)
    return st.one_of(st.text(characters, max_size=min(cap, 24)),
                     st.tuples(characters, st.integers(0, cap)).map(lambda pair: pair[0] * pair[1]))


_weights = st.floats(-LORA_WEIGHT_MAX, LORA_WEIGHT_MAX)


@st.composite
def fill_options(draw: st.DrawFn) -> FillOptions:
    """Any valid :class:`FillOptions`, strings up to their caps (also used by tests/test_protocol.py)."""
    return FillOptions(
        prompt=draw(_capped_text(MAX_PROMPT_CHARS)), negative_prompt=draw(_capped_text(MAX_PROMPT_CHARS)),
        engine=draw(_capped_text(MAX_ENGINE_NAME_CHARS)), scheduler=draw(st.sampled_from(Scheduler)),
        loras=draw(st.dictionaries(_capped_text(MAX_ENGINE_NAME_CHARS).filter(bool), _weights, max_size=MAX_LORAS)),
        strength=draw(st.floats(0.01, 1.0)), num_inference_steps=draw(st.integers(1, 500)),
        guidance_scale=draw(st.floats(0.0, 50.0)), refiner_strength=draw(st.floats(0.0, 0.99)),
        controlnet_conditioning_scale=draw(st.floats(0.0, 2.0)), seed=draw(st.integers(-1, SEED_MAX)),
        num_variants=draw(st.integers(1, MAX_VARIANTS)), grow=draw(st.integers(0, 1024)),
        feather=draw(st.integers(0, 1024)),
    )


def _request(options: FillOptions | None = None) -> InpaintRequest:
    return InpaintRequest("job", 3, 4, Plane(2, 2, 4, bytes(16)), Plane(2, 2, 1, b"\xff" * 4),
                          options if options is not None else FillOptions())


def _frame_with_options(options: dict[str, Any]) -> bytes:
    """A valid request's frame whose ``options`` map is ``options``."""
    wire = msgpack.unpackb(encode(_request()), raw=False)
    return msgpack.packb({**wire, "options": options}, use_bin_type=True)


def _refused(call: Any, code: ErrorCode) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call()
    assert caught.value.code is code, caught.value
    return caught.value


# -- the rows ----------------------------------------------------------------------------------------------------------

def test_every_field_of_both_records_has_a_row_in_field_order() -> None:
    for record, rows in RECORDS:
        assert list(rows) == [f.name for f in dataclasses.fields(record)]
        for f in dataclasses.fields(record):
            assert rows[f.name].name == f.name
    assert not set(FILL_OPTIONS) & set(EDITOR_OPTIONS)


@pytest.mark.parametrize(("record", "spec"), ROWS)
def test_each_row_is_complete_and_its_default_is_valid(record: type, spec: OptionSpec) -> None:
    assert re.fullmatch(r"[^_]*_[^_\s][^_]*", spec.label), f"{spec.label!r}: one “_” before its mnemonic"
    assert spec.help.strip() == spec.help and len(spec.help) > 5
    assert spec.flag == "--" + spec.name.replace("_", "-") and spec.argument == spec.flag[2:]
    assert all(alias.startswith("--") and alias != spec.flag for alias in spec.aliases)
    assert spec.check(spec.default) == spec.default
    if spec.type in (int, float):
        assert spec.minimum is not None and spec.maximum is not None and spec.minimum < spec.maximum
        assert type(spec.default) is spec.type and spec.minimum <= spec.default <= spec.maximum
        assert spec.max_chars is None
    elif spec.type is str:
        assert spec.max_chars is not None and len(spec.default) <= spec.max_chars
        assert spec.minimum is spec.maximum is None
    elif spec.type is bool:
        assert type(spec.default) is bool and spec.minimum is spec.maximum is None
    elif spec.type is dict:
        assert spec.default == {} and spec.minimum == -LORA_WEIGHT_MAX and spec.maximum == LORA_WEIGHT_MAX
    else:
        assert issubclass(spec.type, Enum) and isinstance(spec.default, spec.type)
        assert spec.minimum is spec.maximum is None


def test_labels_and_flags_are_unique_across_both_tables() -> None:
    specs = [spec for _, rows in RECORDS for spec in rows.values()]
    labels = [spec.label for spec in specs]
    assert len(set(labels)) == len(labels)
    flags = [flag for spec in specs for flag in (spec.flag, *spec.aliases)]
    assert len(set(flags)) == len(flags)


@pytest.mark.parametrize(("record", "rows"), RECORDS, ids=["FillOptions", "EditorOptions"])
def test_the_records_defaults_are_the_tables(record: type, rows: dict[str, OptionSpec]) -> None:
    built = record()
    for name, spec in rows.items():
        value = getattr(built, name)
        assert value == spec.default and type(value) is type(spec.default), name
    assert dataclasses.replace(built) == built


def test_the_loras_default_is_a_fresh_dict() -> None:
    first, second = FillOptions(), FillOptions()
    first.loras["mine"] = 1.0
    assert second.loras == {} and FILL_OPTIONS["loras"].default == {}


@pytest.mark.parametrize(("name", "default", "minimum", "maximum"), [
    ("strength", 1.0, 0.01, 1.0),
    ("num_inference_steps", 25, 1, 500),
    ("guidance_scale", 7.5, 0.0, 50.0),
    ("refiner_strength", 0.0, 0.0, 0.99),
    ("controlnet_conditioning_scale", 1.0, 0.0, 2.0),
    ("seed", -1, -1, 2**31 - 1),
    ("num_variants", 1, 1, 16),
    ("grow", 4, 0, 1024),
    ("feather", 12, 0, 1024),
])
def test_the_documented_ranges(name: str, default: float, minimum: float, maximum: float) -> None:
    spec = FILL_OPTIONS[name]
    assert (spec.default, spec.minimum, spec.maximum) == (default, minimum, maximum)
    assert SEED_MAX == 2**31 - 1 and MAX_VARIANTS == 16


def test_range_text() -> None:
    assert FILL_OPTIONS["strength"].range_text == "0.01…1"
    assert FILL_OPTIONS["grow"].range_text == "0…1024 pixels"
    assert FILL_OPTIONS["seed"].range_text == "-1…2147483647"
    assert FILL_OPTIONS["loras"].range_text == "-4…4"
    assert FILL_OPTIONS["prompt"].range_text == FILL_OPTIONS["scheduler"].range_text == ""


# -- validation: built, and decoded from a request ---------------------------------------------------------------------

@st.composite
def _outside(draw: st.DrawFn) -> tuple[type, OptionSpec, Any]:
    """A numeric row and a value of its type outside its range."""
    record, spec = draw(st.sampled_from(NUMBER_ROWS))
    low, high = spec.minimum, spec.maximum
    assert low is not None and high is not None
    if spec.type is int:
        value = draw(st.one_of(st.integers(max_value=int(low) - 1), st.integers(min_value=int(high) + 1),
                               st.sampled_from([int(low) - 1, int(high) + 1, -(2**63), 2**64 - 1, 10**400])))
    else:
        value = draw(st.one_of(st.floats(max_value=low, exclude_max=True), st.floats(min_value=high, exclude_min=True),
                               st.sampled_from([math.nan, math.inf, -math.inf, math.nextafter(low, -math.inf),
                                                math.nextafter(high, math.inf)])))
    return record, spec, value


@given(_outside())
@settings(max_examples=300)
def test_a_value_outside_its_range_is_an_invalid_request(case: tuple[type, OptionSpec, Any]) -> None:
    record, spec, value = case
    refused = _refused(lambda: record(**{spec.name: value}), ErrorCode.INVALID_REQUEST)
    assert spec.name in refused.message
    if record is FillOptions and (spec.type is float or -(2**63) <= value < 2**64):
        refused = _refused(lambda: decode(_frame_with_options({spec.name: value})), ErrorCode.INVALID_REQUEST)
        assert spec.name in refused.message


@pytest.mark.parametrize(("record", "spec"), [pytest.param(r, s, id=s.name) for r, s in NUMBER_ROWS])
def test_the_ends_of_each_range_are_valid(record: type, spec: OptionSpec) -> None:
    for end in (spec.minimum, spec.maximum):
        value = spec.type(end)
        assert getattr(record(**{spec.name: value}), spec.name) == value
        if record is FillOptions:
            options = FillOptions(**{spec.name: value})
            assert decode(encode(_request(options))).options == options  # type: ignore[union-attr]


@pytest.mark.parametrize(("record", "name", "value"), [
    (FillOptions, "strength", "0.5"),
    (FillOptions, "strength", True),
    (FillOptions, "strength", None),
    (FillOptions, "num_inference_steps", 2.5),
    (FillOptions, "num_inference_steps", 20.0),
    (FillOptions, "seed", True),
    (FillOptions, "num_variants", "2"),
    (FillOptions, "prompt", 5),
    (FillOptions, "prompt", b"bytes"),
    (FillOptions, "engine", None),
    (FillOptions, "loras", ["film"]),
    (FillOptions, "loras", "film:0.5"),
    (FillOptions, "loras", {"film": "strong"}),
    (FillOptions, "loras", {"film": True}),
    (FillOptions, "loras", {"film": None}),
    (FillOptions, "loras", {7: 1.0}),
    (FillOptions, "scheduler", 3),
    (FillOptions, "scheduler", None),
    (EditorOptions, "padding", 1.5),
    (EditorOptions, "padding", False),
    (EditorOptions, "sample_merged", 1),
    (EditorOptions, "sample_merged", "yes"),
    (EditorOptions, "sample_merged", None),
])
def test_a_value_of_the_wrong_type_is_an_invalid_request(record: type, name: str, value: object) -> None:
    message = _refused(lambda: record(**{name: value}), ErrorCode.INVALID_REQUEST).message
    assert name in message or "LoRA" in message, message


@pytest.mark.parametrize(("name", "value"), [
    ("strength", "0.5"), ("strength", True), ("strength", None), ("num_inference_steps", 2.5),
    ("num_inference_steps", 20.0), ("seed", True), ("num_variants", "2"), ("prompt", 5), ("prompt", b"bytes"),
    ("engine", None), ("loras", ["film"]), ("loras", "film:0.5"), ("loras", {"film": "strong"}),
    ("loras", {"film": True}), ("scheduler", 3), ("scheduler", None),
])
def test_a_wire_value_of_the_wrong_type_is_a_bad_message(name: str, value: object) -> None:
    """On the wire the codec checks types first (``bad_message``: "wrong types", :class:`ErrorCode`), as for every
    other field; the record's table then checks values (``invalid_request``)."""
    refused = _refused(lambda: decode(_frame_with_options({name: value})), ErrorCode.BAD_MESSAGE)
    assert f"inpaint.options.{name}" in refused.message


def test_an_int_is_widened_to_a_float_but_not_the_other_way() -> None:
    options = FillOptions(strength=1, guidance_scale=7, loras={"film": 1})
    assert type(options.strength) is float and type(options.guidance_scale) is float
    decoded = decode(_frame_with_options({"strength": 1, "guidance_scale": 7}))
    assert type(decoded.options.strength) is float and decoded.options.guidance_scale == 7.0  # type: ignore[union-attr]


def test_an_unknown_scheduler_is_an_invalid_request_and_a_known_name_its_member() -> None:
    refused = _refused(lambda: FillOptions(scheduler="karras-of-doom"), ErrorCode.INVALID_REQUEST)
    assert "karras-of-doom" in refused.message and "dpmpp_2m_karras" in refused.message
    refused = _refused(lambda: decode(_frame_with_options({"scheduler": "karras-of-doom"})),
                       ErrorCode.INVALID_REQUEST)
    assert "karras-of-doom" in refused.message
    assert FillOptions(scheduler="euler_a").scheduler is Scheduler.EULER_A  # type: ignore[arg-type]
    for member in Scheduler:
        decoded = decode(_frame_with_options({"scheduler": member.value}))
        assert decoded.options.scheduler is member  # type: ignore[union-attr]
        assert member.label and str(member) == f"{member}" == member.value


@pytest.mark.parametrize(("name", "cap"), [("prompt", MAX_PROMPT_CHARS), ("negative_prompt", MAX_PROMPT_CHARS),
                                           ("engine", MAX_ENGINE_NAME_CHARS)])
def test_a_string_longer_than_its_cap_is_an_invalid_request(name: str, cap: int) -> None:
    assert getattr(FillOptions(**{name: "\U0001f680" * cap}), name) == "\U0001f680" * cap
    for build in (lambda: FillOptions(**{name: "p" * (cap + 1)}),
                  lambda: decode(_frame_with_options({name: "p" * (cap + 1)}))):
        assert str(cap) in _refused(build, ErrorCode.INVALID_REQUEST).message


@pytest.mark.parametrize(("loras", "valid"), [
    ({f"l{i}": 1.0 for i in range(MAX_LORAS)}, True),
    ({f"l{i}": 1.0 for i in range(MAX_LORAS + 1)}, False),
    ({"n" * MAX_ENGINE_NAME_CHARS: 1.0}, True),
    ({"n" * (MAX_ENGINE_NAME_CHARS + 1): 1.0}, False),
    ({"": 1.0}, False),
    ({"film": LORA_WEIGHT_MAX, "grain": -LORA_WEIGHT_MAX}, True),
    ({"film": LORA_WEIGHT_MAX + 0.5}, False),
    ({"film": math.nextafter(-LORA_WEIGHT_MAX, -math.inf)}, False),
    ({"film": math.nan}, False),
    ({"film": math.inf}, False),
    ({"film": 10**400}, False),
])
def test_lora_limits(loras: dict[str, float], valid: bool) -> None:
    if valid:
        options = FillOptions(loras=loras)
        assert decode(encode(_request(options))).options == options  # type: ignore[union-attr]
        return
    _refused(lambda: FillOptions(loras=loras), ErrorCode.INVALID_REQUEST)
    if all(-(2**63) <= w < 2**64 for w in loras.values() if isinstance(w, int)):
        _refused(lambda: decode(_frame_with_options({"loras": loras})), ErrorCode.INVALID_REQUEST)


def test_an_int_beyond_a_floats_range_is_an_invalid_request_not_an_overflow() -> None:
    """``--seed`` with 400 digits is a valid Python int; the check must not raise OverflowError (math.isfinite)."""
    for build in (lambda: FillOptions(seed=10**400), lambda: FillOptions(num_inference_steps=-(10**400)),
                  lambda: EditorOptions(padding=10**400), lambda: FillOptions(loras={"film": 10**400})):
        _refused(build, ErrorCode.INVALID_REQUEST)


@given(st.data())
def test_any_value_in_range_is_accepted(data: st.DataObject) -> None:
    record, spec = data.draw(st.sampled_from(NUMBER_ROWS))
    low, high = spec.minimum, spec.maximum
    assert low is not None and high is not None
    value = data.draw(st.integers(int(low), int(high)) if spec.type is int else st.floats(low, high))
    assert getattr(record(**{spec.name: value}), spec.name) == value


@given(fill_options(), st.sets(st.sampled_from(list(FILL_OPTIONS))))
@settings(max_examples=150)
def test_option_keys_missing_on_the_wire_take_their_defaults(options: FillOptions, missing: set[str]) -> None:
    wire = msgpack.unpackb(encode(_request(options)), raw=False)["options"]
    assert set(wire) == set(FILL_OPTIONS)  # every request option travels, and no editor option
    decoded = decode(_frame_with_options({k: v for k, v in wire.items() if k not in missing}))
    assert isinstance(decoded, InpaintRequest)
    for name, spec in FILL_OPTIONS.items():
        assert getattr(decoded.options, name) == (spec.default if name in missing else getattr(options, name))


def test_a_request_without_options_takes_every_default() -> None:
    wire = msgpack.unpackb(encode(_request()), raw=False)
    del wire["options"]
    decoded = decode(msgpack.packb(wire, use_bin_type=True))
    assert isinstance(decoded, InpaintRequest) and decoded.options == FillOptions()


@pytest.mark.parametrize("key", ["steps", "variants", "padding", "sample_merged", "denoise", "a\nFORGED line"])
def test_an_unknown_key_inside_options_is_a_bad_message_naming_it(key: str) -> None:
    refused = _refused(lambda: decode(_frame_with_options({"prompt": "x", key: 1})), ErrorCode.BAD_MESSAGE)
    assert "inpaint.options" in refused.message and repr(key) in refused.message and "\n" not in refused.message


def test_options_must_be_a_map() -> None:
    for value in ("prompt", [1, 2], None, 3):
        _refused(lambda value=value: decode(_frame_with_options(value)), ErrorCode.BAD_MESSAGE)  # type: ignore


# -- the LoRA field's text ---------------------------------------------------------------------------------------------

_lora_names = st.text(st.characters(blacklist_characters=",", blacklist_categories=("Cs",)), min_size=1,
                      max_size=MAX_ENGINE_NAME_CHARS).filter(lambda name: name == name.strip() != "")


@given(st.dictionaries(_lora_names, st.integers(-4000, 4000).map(lambda n: n / 1000), max_size=MAX_LORAS))
def test_format_then_parse_gives_back_the_loras(loras: dict[str, float]) -> None:
    text = format_loras(loras)
    parsed = parse_loras(text)
    assert list(parsed.items()) == list(loras.items())  # names, weights and the user's order
    assert FillOptions(loras=parsed).loras == loras
    assert format_loras(parsed) == text


@given(st.dictionaries(_lora_names, _weights, max_size=MAX_LORAS))
def test_format_then_parse_keeps_any_weight_to_six_digits(loras: dict[str, float]) -> None:
    parsed = parse_loras(format_loras(loras))
    assert list(parsed) == list(loras)
    for name, weight in loras.items():
        assert math.isclose(parsed[name], weight, rel_tol=1e-5, abs_tol=1e-300)
    FillOptions(loras=parsed)


@pytest.mark.parametrize(("text", "loras"), [
    ("", {}),
    (" , ,", {}),
    ("detail:0.8, style", {"detail": 0.8, "style": 1.0}),
    ("detail=0.8,style:-1.5", {"detail": 0.8, "style": -1.5}),
    ("a:b:2", {"a:b": 2.0}),
])
def test_parse_loras(text: str, loras: dict[str, float]) -> None:
    assert list(parse_loras(text).items()) == list(loras.items())


@pytest.mark.parametrize("text", [":1", "detail:strong", "detail:inf", "detail:nan", "a:1, a:2", "a, a"])
def test_unreadable_lora_text_is_an_invalid_request(text: str) -> None:
    _refused(lambda: parse_loras(text), ErrorCode.INVALID_REQUEST)


def test_format_loras_writes_what_the_help_shows() -> None:
    assert format_loras({"detail": 0.8, "style": 1.0}) == "detail:0.8, style:1"
    assert format_loras({}) == ""


# -- the Markdown table ------------------------------------------------------------------------------------------------

def test_the_markdown_table_has_one_row_per_option() -> None:
    lines = markdown_table().splitlines()
    assert lines[:2] == ["| option | CLI flag | default | range | what it does |", "|---|---|---|---|---|"]
    specs = [spec for _, rows in RECORDS for spec in rows.values()]
    assert len(lines) == 2 + len(specs)
    for line, spec in zip(lines[2:], specs, strict=True):
        assert line.startswith(f"| `{spec.name}` | ") and line.count("|") == 6, line
        assert all(f"`{flag}`" in line for flag in (spec.flag, *spec.aliases))
        assert spec.help in line and spec.range_text in line
        assert (" (editor only, never sent) |" in line) == (spec.name in EDITOR_OPTIONS)


@pytest.mark.parametrize("options", [{"prompt": "a \udcff cat"}, {"engine": "\ud800"}, {"loras": {"x\udcff": 1.0}}],
                         ids=["prompt", "engine", "lora name"])
def test_text_that_utf8_cannot_carry_is_refused(options: dict[str, object]) -> None:
    """Python turns a command-line argument's undecodable bytes into lone surrogates; msgpack cannot send them."""
    with pytest.raises(ProtocolError) as caught:
        FillOptions(**options)  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.INVALID_REQUEST and "lone surrogate" in caught.value.message


@pytest.mark.parametrize(("prompt", "touches_edge", "covers_transparent", "expected"), [
    ("", False, False, FillMode.REMOVE),
    ("  \n", False, False, FillMode.REMOVE),
    ("a red boat", False, False, FillMode.FILL),
    ("a red boat", True, False, FillMode.EXPAND),
    ("", False, True, FillMode.EXPAND),
    ("", True, True, FillMode.EXPAND),
])
def test_auto_picks_the_fill_mode_from_the_prompt_and_the_selection(prompt, touches_edge, covers_transparent,
                                                                    expected):
    assert resolve_fill_mode(FillMode.AUTO, prompt, touches_edge=touches_edge,
                             covers_transparent=covers_transparent) is expected


@pytest.mark.parametrize("mode", [FillMode.FILL, FillMode.REMOVE, FillMode.EXPAND])
def test_a_chosen_fill_mode_is_kept_whatever_the_selection(mode):
    assert resolve_fill_mode(mode, "", touches_edge=True, covers_transparent=True) is mode


def test_every_labelled_enum_member_has_a_label() -> None:
    """The dialog's lists and the CLI's help read ``label``: a member missing from the one table would raise."""
    labels = [member.label for kind in (Scheduler, FillMode) for member in kind]
    assert all(labels) and len(set(labels)) == len(labels)
