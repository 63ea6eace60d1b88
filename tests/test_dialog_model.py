"""The run-time dialog's pure half (:mod:`plugin_gimp.dialog_model`) and what it reads from the handshake: each
engine's per-family defaults (:attr:`protocol.EngineInfo.defaults`)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from gimp_inpaint.client.connection import write_connection_config
from gimp_inpaint.client.expand import EXPAND_OPTIONS, ExpandOptions, GrowSides
from gimp_inpaint.daemon.engines.base import WORKER_OPTIONS
from gimp_inpaint.daemon.engines.families import FAMILY_STRATEGIES
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.plugin_gimp.arguments import (
    SERVER_URL,
    expand_arguments,
    gimp_default,
    procedure_arguments,
    read_options,
    record_arguments,
)
from gimp_inpaint.plugin_gimp.dialog_model import (
    FIRST_AVAILABLE,
    VISIBLE_ROWS,
    EngineEntry,
    TimeLeft,
    Visibility,
    engine_entries,
    engine_note,
    list_engines,
    load_engines,
    preview_size,
    save_engines,
    sections,
    status_line,
    switch_engine,
    time_left_text,
    values_to_send,
    visibility,
)
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    EditorOptions,
    EngineInfo,
    ErrorCode,
    Family,
    FillOptions,
    OptionSpec,
    ProtocolError,
    Scheduler,
    Welcome,
    decode,
    encode,
)
from running_daemon import StepEngine, free_port, running_daemon


def engine(name: str = "sd", **fields: object) -> EngineInfo:
    """An available prompt engine named ``name`` with ``fields`` changed."""
    return EngineInfo(**{"name": name, "kind": "diffusers", "model": "m", "available": True, "uses_prompt": True,
                         **fields})


@pytest.mark.parametrize("family", list(FAMILY_STRATEGIES))
def test_each_family_reports_its_steps_and_guidance_and_they_travel(family: Family) -> None:
    strategy = FAMILY_STRATEGIES[family]
    defaults = strategy.defaults()  # guidance only where the family takes it (not the step-distilled FLUX.2 klein)
    assert set(defaults) == {"num_inference_steps", "guidance_scale"} & strategy.used_options()
    welcome = Welcome(5, "0", "cpu", [engine(family=family, defaults=defaults)], 1 << 20)
    assert decode(encode(welcome)).engines[0].defaults == defaults


def test_sdxl_and_kandinsky_defaults_differ_from_the_table() -> None:
    table = {name: FILL_OPTIONS[name].default for name in ("num_inference_steps", "guidance_scale")}
    assert FAMILY_STRATEGIES[Family.SD_INPAINT].defaults() == table
    assert FAMILY_STRATEGIES[Family.SDXL_INPAINT].defaults() == {"num_inference_steps": 20, "guidance_scale": 8.0}
    assert FAMILY_STRATEGIES[Family.KANDINSKY22_INPAINT].defaults() == {"num_inference_steps": 100,
                                                                        "guidance_scale": 4.0}


@pytest.mark.parametrize("defaults", [{"prompt": 1.0}, {"seed": 2.5}, {"num_inference_steps": 0},
                                      {"guidance_scale": float("nan")}, {"nonsense": 1.0}])
def test_a_default_that_is_no_value_of_a_number_row_is_refused(defaults: dict[str, float]) -> None:
    with pytest.raises(ProtocolError) as caught:
        engine(defaults=defaults)
    assert caught.value.code is ErrorCode.BAD_MESSAGE


# --- which rows show, and their values ---

def test_the_visible_rows_come_first_and_the_rest_is_advanced_in_the_tables_order() -> None:
    visible, advanced = sections(procedure_arguments())
    assert [spec.name for spec in visible] == ["prompt", "negative_prompt", "engine", "num_variants", "seed"]
    assert [spec.name for spec in advanced] == [spec.name for spec in procedure_arguments()
                                                if spec.name not in VISIBLE_ROWS]
    assert advanced[-1] is SERVER_URL


def test_generative_expand_shows_what_grows_after_the_prompts() -> None:
    visible, advanced = sections(expand_arguments())
    assert [spec.name for spec in visible] == ["prompt", "negative_prompt", *EXPAND_OPTIONS, "engine",
                                               "num_variants", "seed"]
    assert "fill_mode" not in {spec.name for spec in visible + advanced}


def shown(engine_info: EngineInfo | None, how: Visibility = Visibility.SHOWN) -> set[str]:
    return {spec.name for spec in procedure_arguments() if visibility(spec, engine_info) is how}


def test_an_engine_shows_the_options_it_takes_and_the_editors_rows() -> None:
    opencv = engine("opencv", kind="opencv", uses_prompt=False, options=[
        name for name in FILL_OPTIONS if name in WORKER_OPTIONS])
    editor_rows = {*EDITOR_OPTIONS, SERVER_URL.name}
    assert shown(opencv) == {*WORKER_OPTIONS, *editor_rows}
    assert shown(opencv, Visibility.INSENSITIVE) == {"prompt", "negative_prompt"}
    assert "num_inference_steps" in shown(opencv, Visibility.HIDDEN)
    sd = engine(options=FAMILY_STRATEGIES[Family.SD_INPAINT].options(), loras=["detail"])
    assert shown(sd) == {*FAMILY_STRATEGIES[Family.SD_INPAINT].options(), *editor_rows}
    assert "controlnet_conditioning_scale" in shown(sd, Visibility.HIDDEN)
    assert shown(None) == {spec.name for spec in procedure_arguments()}  # the list is not known: everything shows


def test_the_loras_row_shows_only_when_the_daemon_has_loras_for_the_engine() -> None:
    options = FAMILY_STRATEGIES[Family.SD_INPAINT].options()
    assert "loras" in options
    assert "loras" in shown(engine(options=options, loras=["detail"]))
    assert "loras" in shown(engine(options=options, loras=[]), Visibility.HIDDEN)


def arguments_by_name() -> dict[str, OptionSpec]:
    return {spec.name: spec for spec in procedure_arguments()}


def table_values() -> dict[str, object]:
    return {spec.argument: gimp_default(spec) for spec in procedure_arguments()}


def test_the_family_defaults_follow_the_engine_until_the_user_sets_them() -> None:
    sd = engine("sd", defaults=FAMILY_STRATEGIES[Family.SD_INPAINT].defaults())
    sdxl = engine("sdxl", defaults=FAMILY_STRATEGIES[Family.SDXL_INPAINT].defaults())
    arguments = procedure_arguments()
    values = table_values()
    opened = switch_engine(arguments, values, None, sdxl)  # the dialog opens with SDXL chosen
    assert opened == {"num-inference-steps": 20, "guidance-scale": 8.0}
    assert isinstance(opened["num-inference-steps"], int)
    values.update(opened)
    assert switch_engine(arguments, values, sdxl, sd) == {"num-inference-steps": 25, "guidance-scale": 7.5}
    values["num-inference-steps"] = 40  # the user's own value stays, the guidance still follows
    assert switch_engine(arguments, values, sdxl, sd) == {"guidance-scale": 7.5}
    assert switch_engine(arguments, values, sdxl, None) == {"guidance-scale": 7.5}  # unknown: the table's


def test_a_row_the_engine_does_not_take_is_sent_at_its_default() -> None:
    opencv = engine("opencv", kind="opencv", uses_prompt=False, options=sorted(WORKER_OPTIONS))
    values = {**table_values(), "eta": 0.5, "prompt": "a boat", "seed": 7, "padding": 12}
    sent = values_to_send(procedure_arguments(), values, opencv)
    assert sent == {**values, "eta": 0.0}  # the prompt (greyed out), the worker's and the editor's rows stay
    assert values_to_send(procedure_arguments(), values, None) == values
    options, editor = read_options(sent.__getitem__)
    assert (options.eta, options.seed, options.prompt, editor.padding) == (0.0, 7, "a boat", 12)


def test_records_fill_the_arguments_they_hold() -> None:
    options = FillOptions(prompt="a red boat", engine="sd", scheduler=Scheduler.EULER, loras={"detail": 0.5},
                          seed=42, num_inference_steps=30)
    editor = EditorOptions(padding=8, sample_merged=False)
    values = record_arguments(procedure_arguments(), [options, editor])
    assert SERVER_URL.argument not in values
    assert values["scheduler"] == "euler" and values["loras"] == "detail:0.5" and values["padding"] == 8
    assert read_options({**values, SERVER_URL.argument: ""}.__getitem__) == (options, editor)  # the round trip
    expand = ExpandOptions(pixels=48, sides=GrowSides.LEFT)
    values = record_arguments(expand_arguments(), [options, editor, expand])
    assert "fill-mode" not in values and values["pixels"] == 48 and values["sides"] == "left"


# --- the engine list ---

def test_the_engine_list_starts_with_the_daemons_choice_and_keeps_an_unknown_engine() -> None:
    engines = [engine("sdxl", available=False, family=Family.SDXL_INPAINT, detail="pip install torch"),
               engine("opencv", kind="opencv", uses_prompt=False)]
    entries = engine_entries(engines, "gone")
    assert [entry.name for entry in entries] == [FIRST_AVAILABLE, "sdxl", "opencv", "gone"]
    assert entries[0].label == "First available (opencv)" and entries[0].info is engines[1]
    assert entries[1].label == "sdxl — sdxl-inpaint, unavailable"
    assert entries[2].label == "opencv — opencv" and entries[3].info is None
    assert [entry.name for entry in engine_entries(engines, "opencv")] == [FIRST_AVAILABLE, "sdxl", "opencv"]
    assert engine_entries([], "").pop().label == "First available"


def test_the_engine_note_gives_the_state_the_prompt_and_the_licence() -> None:
    sd = engine("sd15-inpaint", model="stable-diffusion-v1-5/stable-diffusion-inpainting", detail="loads on first use",
                licence="CreativeML OpenRAIL-M")
    assert engine_note(EngineEntry("sd15-inpaint", "", sd)) == "loads on first use; licence CreativeML OpenRAIL-M."
    fill = engine("flux-fill", detail="loads on first use", licence="FLUX.1 [dev] Non-Commercial License",
                  non_commercial=True)
    assert engine_note(EngineEntry("flux-fill", "", fill)) == (
        "loads on first use; licence FLUX.1 [dev] Non-Commercial License, non-commercial use only.")
    opencv = engine("opencv", kind="opencv", uses_prompt=False, detail="cv2.inpaint (Telea), radius 3 px",
                    licence="Apache 2.0 (OpenCV 4.5 and later)")
    assert engine_note(EngineEntry("opencv", "", opencv)) == (
        "cv2.inpaint (Telea), radius 3 px; no prompt: it fills from the surroundings; licence Apache 2.0 (OpenCV 4.5 "
        "and later).")
    assert engine_note(EngineEntry("mine", "", engine(model="./mine"))) == ""
    on_disk = replace(sd, state="on disk")
    assert engine_note(EngineEntry("sd15-inpaint", "", on_disk)) == (
        "model on disk; loads on first use; licence CreativeML OpenRAIL-M.")
    assert "did not list “gone”" in engine_note(EngineEntry("gone", "", None))


# --- the list kept for a dialog without a daemon, and the status line ---

def test_the_engine_list_is_kept_and_read_back(tmp_path: Path) -> None:
    welcome = Welcome(5, "0.1.0", "cpu", [engine("sd", defaults={"guidance_scale": 4.0}), engine("opencv")], 1 << 20)
    cache = tmp_path / "gimp-inpaint" / "engines.msgpack"
    assert load_engines(cache) is None
    save_engines(cache, "ws://127.0.0.1:1", welcome, now=1000.0)
    assert load_engines(cache) == ("ws://127.0.0.1:1", 1000.0, welcome)
    cache.write_bytes(cache.read_bytes()[:-3])  # damaged: as if there were none
    assert load_engines(cache) is None


def connection_file(tmp_path: Path, url: str, token: str, command: list[str] | None = None) -> Path:
    path = tmp_path / "connection.json"
    write_connection_config(path, url, token, command)
    return path


def test_the_daemons_engines_are_listed_and_kept(tmp_path: Path) -> None:
    cache = tmp_path / "engines.msgpack"
    with running_daemon(tmp_path / "config", [StepEngine("steps"), OpenCVEngine()]) as (url, token):
        listing = list_engines(connection_file(tmp_path, url, token), "", "pytest", cache)
    assert listing.live and listing.problem is None and listing.url == url
    assert [info.name for info in listing.engines] == ["steps", "opencv"]
    assert status_line(listing) == f"gimp-inpaint {listing.welcome.daemon_version} at {url} on " \
                                   f"{listing.welcome.device}: 2 engines, 2 available."
    kept = load_engines(cache)
    assert kept is not None and kept[0] == url and kept[2] == listing.welcome

    # the daemon is gone: the kept list, and a status line that says what happens on OK
    again = list_engines(connection_file(tmp_path, url, token, ["gimp-inpaint-daemon"]), "", "pytest", cache)
    assert not again.live and again.starts_on_ok and again.welcome == listing.welcome
    saved = time.strftime("%Y-%m-%d at %H:%M", time.localtime(kept[1]))
    assert status_line(again) == (f"No daemon answers at {url}: it starts when you press OK. The engines are those "
                                  f"it listed on {saved}.")


def test_without_a_daemon_or_a_kept_list_the_status_line_says_so(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    listing = list_engines(connection_file(tmp_path, url, "x"), "", "pytest", tmp_path / "none.msgpack")
    assert listing.welcome is None and not listing.starts_on_ok  # no command to start it
    assert status_line(listing).startswith(f"Cannot reach the gimp-inpaint daemon at {url} (")
    assert status_line(listing).endswith("Its engines are not known yet: “First available” runs the daemon's first.")
    missing = list_engines(tmp_path / "missing.json", "", "pytest", tmp_path / "none.msgpack")
    assert "missing.json is missing" in status_line(missing)


def test_a_wrong_token_is_named_in_the_status_line(tmp_path: Path) -> None:
    with running_daemon(tmp_path / "config", [OpenCVEngine()]) as (url, _):
        listing = list_engines(connection_file(tmp_path, url, "wrong"), "", "pytest", tmp_path / "c.msgpack")
    assert not listing.live and not listing.starts_on_ok and "token" in status_line(listing)


# --- the progress window's time left ---

def test_the_time_left_is_the_rate_since_the_first_step_extrapolated() -> None:
    left = TimeLeft()
    assert left.update(0.0, 0.0) is None  # connecting, loading: no rate yet
    assert left.update(0.04, 10.0) is None  # step 1 of 25 after a 10 s load: the clock starts here
    assert left.update(0.08, 11.0) == pytest.approx(23.0)  # a step a second, 23 to go
    assert left.update(0.5, 21.5) == pytest.approx(12.5)
    assert left.update(0.0, 22.0) is None  # the next stage starts over
    assert time_left_text(None) == "" and time_left_text(0.4) == "Almost done"
    assert time_left_text(12.2) == "About 13 s left" and time_left_text(200) == "About 4 min left"


def test_a_preview_is_fitted_to_its_box() -> None:
    assert preview_size(512, 384, 256) == (256, 192)
    assert preview_size(64, 32, 256) == (256, 128)
    assert preview_size(1000, 1, 256) == (256, 1)
