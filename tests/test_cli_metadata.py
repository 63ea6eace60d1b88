"""``gimp-inpaint fill`` writes each result's request into its PNG (the ``gimp-inpaint`` text chunk) and ``--from``
reads it back as the flags' defaults, end to end against the real daemon server with the opencv engine.

(A file of its own beside ``tests/test_cli.py``, which holds ``fill``'s, ``demo``'s and ``status``'s.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.client.imaging import load_mask, load_rgba, read_png_text, save_image
from gimp_inpaint.client.metadata import PNG_TEXT_KEY, RequestMetadata
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import PROTOCOL_VERSION, EditorOptions, FillMode, FillOptions, Rect, Scheduler
from PIL import Image
from running_daemon import running_daemon
from skimage import data, draw, filters

pytestmark = pytest.mark.timeout(120)

PATCH = Rect(170, 190, 120, 100)
"""The mask's box on the 512×512 astronaut photo: the mission patch on the suit."""


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    """The astronaut photo and a soft mask (an ellipse over :data:`PATCH`, its edge blurred), as PNG files."""
    image_path, mask_path = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(data.astronaut()).save(image_path)
    mask = np.zeros((512, 512))
    rows, cols = draw.ellipse(PATCH.y + PATCH.height / 2, PATCH.x + PATCH.width / 2, PATCH.height / 2 - 4,
                              PATCH.width / 2 - 4, shape=mask.shape)
    mask[rows, cols] = 1.0
    Image.fromarray(np.rint(filters.gaussian(mask, sigma=2) * 255).astype(np.uint8)).save(mask_path)
    return image_path, mask_path


@pytest.fixture
def daemon(tmp_path: Path):
    config = tmp_path / "daemon-config"
    with running_daemon(config, [OpenCVEngine()]) as (url, _):
        yield ["--url", url, "--config-dir", str(config)]


def recorded(path: Path) -> RequestMetadata:
    """The request the PNG ``path`` carries."""
    text = read_png_text(path, PNG_TEXT_KEY)
    assert text is not None, f"{path} has no {PNG_TEXT_KEY} text chunk"
    return RequestMetadata.from_json(text)


def test_each_png_output_carries_its_request(inputs, daemon, tmp_path):
    out = tmp_path / "filled.png"
    assert cli.main(["fill", *map(str, inputs), "-o", str(out), *daemon, "--engine", "opencv", "--variants", "2",
                     "--seed", "3", "--grow", "2", "--feather", "6", "--padding", "40"]) == 0
    first, second = recorded(tmp_path / "filled-1.png"), recorded(tmp_path / "filled-2.png")
    assert (first.seed, second.seed) == (3, 4)
    assert first.options == FillOptions(engine="opencv", seed=3, num_variants=2, grow=2, feather=6)
    assert first.editor == EditorOptions(padding=40)
    assert (first.engine, first.fill_mode) == ("opencv", FillMode.REMOVE)  # auto without a prompt
    assert (first.client, first.protocol_version) == (cli.CLIENT_NAME, PROTOCOL_VERSION)
    assert first.job == first.origin == second.job
    mask = load_mask(inputs[1])
    ys, xs = np.nonzero(mask)
    assert first.selection.bounds == Rect(int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    assert first.selection.read(Rect(0, 0, 512, 512)) == mask.tobytes()  # the soft edge as it was
    assert first.crop.contains(first.selection.bounds) and (first.selection.canvas_width,
                                                           first.selection.canvas_height) == (512, 512)


def test_from_makes_the_same_file_again_and_flags_still_win(inputs, daemon, tmp_path, capsys):
    assert cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "first.png"), *daemon, "--engine", "opencv",
                     "--variants", "2", "--seed", "3", "--grow", "2", "--feather", "6", "--padding", "40"]) == 0
    source = tmp_path / "first-2.png"
    again = tmp_path / "again.png"
    capsys.readouterr()
    assert cli.main(["fill", *map(str, inputs), "-o", str(again), *daemon, "--from", str(source)]) == 0
    assert f"{again}: seed 4" in capsys.readouterr().out  # one variant, the file's seed
    assert np.array_equal(load_rgba(again), load_rgba(source))
    made = recorded(again)
    assert made.options == FillOptions(engine="opencv", seed=4, grow=2, feather=6)
    assert made.editor == EditorOptions(padding=40)

    changed = tmp_path / "changed.png"
    assert cli.main(["fill", *map(str, inputs), "-o", str(changed), *daemon, "--from", str(source), "--feather",
                     "0", "--seed", "-1", "--variants", "2"]) == 0
    first = recorded(tmp_path / "changed-1.png")
    assert first.options == FillOptions(engine="opencv", seed=-1, num_variants=2, grow=2, feather=0)
    assert first.editor == EditorOptions(padding=40)


def _fill_actions(fill_defaults: dict) -> dict[str, argparse.Action]:
    parser = cli.build_parser(fill_defaults)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in subparsers.choices["fill"]._actions}


def test_recorded_loras_are_defaults_that_given_loras_replace():
    options = FillOptions(engine="sd15", prompt="a boat", scheduler=Scheduler.DPMPP_2M_KARRAS,
                          loras={"detail": 0.8, "style": -1.25}, seed=9)
    defaults = cli.flag_defaults(options, EditorOptions(padding=12, sample_merged=False))
    assert "sample_merged" not in defaults and defaults["scheduler"] == "dpmpp_2m_karras"
    assert defaults["loras"] == ["detail:0.8, style:-1.25"]
    assert _fill_actions(defaults)["prompt"].default == "a boat"
    base = ["fill", "p.png", "m.png", "-o", "o.png"]
    kept = cli.build_parser(defaults).parse_args(base)
    assert cli.options_from(kept) == (options, EditorOptions(padding=12))
    replaced = cli.build_parser(defaults).parse_args([*base, "--lora", "other=0.5", "--lora", "detail"])
    assert replaced.loras == ["other=0.5", "detail"]
    assert cli.options_from(replaced)[0].loras == {"other": 0.5, "detail": 1.0}
    cleared = cli.build_parser(defaults).parse_args([*base, "--lora", ""])
    assert cli.options_from(cleared)[0].loras == {}
    plain = cli.build_parser().parse_args([*base, "--lora", "a=0.5", "--lora", "b"])
    assert plain.loras == ["a=0.5", "b"]  # without --from: as before


def test_a_16_bit_output_carries_its_request_too(inputs, daemon, tmp_path):
    deep = tmp_path / "deep.png"
    save_image(deep, data.astronaut().astype(np.uint16) * 257)
    out = tmp_path / "deep-filled.png"
    assert cli.main(["fill", str(deep), str(inputs[1]), "-o", str(out), *daemon, "--engine", "opencv", "--seed",
                     "5"]) == 0
    assert load_rgba(out).dtype == np.uint16
    made = recorded(out)
    assert made.seed == 5 and made.engine == "opencv"


def _with_request(tmp_path: Path, name: str, request: str | None) -> Path:
    path = tmp_path / name
    save_image(path, data.astronaut(), text=None if request is None else {PNG_TEXT_KEY: request})
    return path


def test_from_a_file_without_a_readable_request_exits_2_with_a_message(inputs, tmp_path, capsys):
    made = RequestMetadata.from_json(json.dumps({
        "format": 1, "client": "c", "daemon_version": "d", "protocol_version": 5, "job": "j", "origin": "j",
        "engine": "opencv", "fill_mode": "remove", "seed": 1, "options": {}, "editor": {}, "canvas": [512, 512],
        "selection": [10, 10, 2, 1], "crop": [0, 0, 64, 64], "mask": "eJz7/x8AAv8B/w=="}))  # zlib of ff ff
    newer = json.loads(made.to_json()) | {"format": 2}
    cases = [(_with_request(tmp_path, "plain.png", None), "holds no gimp-inpaint request: --from takes a PNG"),
             (tmp_path / "missing.png", "Cannot read"),
             (_with_request(tmp_path, "newer.png", json.dumps(newer)), "of format 2, written by a newer gimp-inpaint"),
             (_with_request(tmp_path, "broken.png", "{"), "is not JSON")]
    jpeg = tmp_path / "result.jpg"
    Image.fromarray(data.astronaut()).save(jpeg)
    cases.append((jpeg, "holds no gimp-inpaint request"))
    for path, message in cases:
        assert cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "o.png"), "--from", str(path)]) == 2
        err = capsys.readouterr().err
        assert "gimp-inpaint: error: " in err and message in err, (path, err)
    assert not (tmp_path / "o.png").exists()


def test_from_notes_what_it_ignored(inputs, daemon, tmp_path, capsys):
    assert cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "first.png"), *daemon, "--engine", "opencv",
                     "--seed", "8"]) == 0
    later = json.loads(recorded(tmp_path / "first.png").to_json())
    later["options"]["sharpness"] = 0.5  # an option of a later version
    source = _with_request(tmp_path, "later.png", json.dumps(later))
    assert cli.main(["fill", *map(str, inputs), "-o", str(tmp_path / "again.png"), *daemon, "--from",
                     str(source)]) == 0
    assert (f"gimp-inpaint: note: {source}: the option 'sharpness' is unknown to this gimp-inpaint and was ignored"
            in capsys.readouterr().err)
    assert recorded(tmp_path / "again.png").seed == 8
