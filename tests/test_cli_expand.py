"""``gimp-inpaint expand`` (Generative Expand on a picture file), end to end against the real daemon server with the
opencv engine: the grown size, the new area filled, the old picture exact wherever the blend mask is 0.

(A file of its own beside ``tests/test_cli.py``, which holds ``fill``'s, ``demo``'s and ``status``'s.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.client.expand import EXPAND_OPTIONS
from gimp_inpaint.client.imaging import load_rgba
from gimp_inpaint.daemon.compositing import blend_mask, grow_mask
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import EDITOR_OPTIONS, FILL_OPTIONS, feather_reach
from PIL import Image
from running_daemon import running_daemon
from skimage import data
from test_cli import HEAVY, _imported_by

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """scikit-image's coffee photo (400×600 RGB) as a PNG file."""
    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(path)
    return path


@pytest.fixture
def daemon(tmp_path: Path):
    config = tmp_path / "daemon-config"
    with running_daemon(config, [OpenCVEngine()]) as (url, _):
        yield ["--url", url, "--config-dir", str(config), "--engine", "opencv"]


def _expand_actions() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in subparsers.choices["expand"]._actions}


def test_expand_has_the_growth_flags_and_the_fill_flags_but_the_fill_mode():
    actions = _expand_actions()
    assert {spec.name for spec in EXPAND_OPTIONS.values()} <= set(actions)
    assert [actions[name].option_strings for name in ("pixels", "sides", "size", "aspect")] == [
        ["--pixels"], ["--sides"], ["--size"], ["--aspect"]]
    rows = {spec.name for spec in (*FILL_OPTIONS.values(), *EDITOR_OPTIONS.values())}
    assert rows - set(actions) == set(cli.EXPAND_SKIPS) == {"fill_mode", "sample_merged"}
    assert actions["pixels"].default == 256 and actions["sides"].default == "all"


def test_expand_help_imports_neither_numpy_pillow_websockets_nor_msgpack():
    imported = _imported_by("from gimp_inpaint.client import cli\ntry:\n    cli.main(['expand', '--help'])\n"
                            "except SystemExit:\n    pass")
    assert "gimp_inpaint" in imported and not imported & HEAVY, imported & HEAVY


def _blend(mask: np.ndarray, grow: int, feather: int) -> np.ndarray:
    """The daemon's blend mask for a mask over the whole grown picture (the crop's is the same inside the crop:
    the crop holds the new area and more than the blend band around it)."""
    return blend_mask(grow_mask(mask, grow), feather)


def test_expand_to_the_right_fills_the_new_strip_and_keeps_the_picture(photo, daemon, tmp_path, capsys):
    out = tmp_path / "wide.png"
    assert cli.main(["expand", str(photo), "-o", str(out), *daemon, "--pixels", "96", "--sides", "right",
                     "--grow", "2", "--feather", "4", "--seed", "3"]) == 0
    assert f"{out}: seed 3" in capsys.readouterr().out
    original, result = load_rgba(photo), load_rgba(out)
    assert result.shape == (400, 696, 4)
    new = np.zeros(result.shape[:2], np.uint8)
    new[:, 600:] = 255
    blend = _blend(new, 2, 4)
    assert not blend[:, :600 - 2 - feather_reach(4)].any()
    keep = blend[:, :600] == 0
    np.testing.assert_array_equal(result[:, :600][keep], original[keep])  # the old pixels, exactly
    assert (result[:, 600:, 3] == 255).all()  # the new area is filled, opaque
    strip = result[:, 600:, :3].astype(int)
    assert strip.std() > 5  # not one flat colour: opencv continued the picture's edge into it
    edge = original[:, 590:600, :3].astype(int).mean(axis=(0, 1))
    assert np.abs(strip[:, :16].mean(axis=(0, 1)) - edge).max() < 40  # next to the edge it looks like the edge


def test_expand_to_an_aspect_ratio_on_every_side_centres_the_picture(photo, daemon, tmp_path):
    out = tmp_path / "square.png"
    assert cli.main(["expand", str(photo), "-o", str(out), *daemon, "--aspect", "1:1", "--grow", "0",
                     "--feather", "0"]) == 0
    original, result = load_rgba(photo), load_rgba(out)
    assert result.shape == (600, 600, 4)  # 400 px taller: 100 on top, 100 below
    np.testing.assert_array_equal(result[100:500], original)  # grow = feather = 0: no blend band at all
    assert (result[:100, :, 3] == 255).all() and (result[500:, :, 3] == 255).all()


def test_expand_to_a_size_grows_the_chosen_sides(photo, daemon, tmp_path):
    out = tmp_path / "bigger.png"
    assert cli.main(["expand", str(photo), "-o", str(out), *daemon, "--size", "640x420", "--sides", "top-left",
                     "--grow", "0", "--feather", "0"]) == 0
    result = load_rgba(out)
    assert result.shape == (420, 640, 4)
    np.testing.assert_array_equal(result[20:, 40:], load_rgba(photo))
    assert (result[:20, :, 3] == 255).all() and (result[:, :40, 3] == 255).all()


@pytest.mark.parametrize(("flags", "words"), [
    (["--size", "500x300"], "Cannot expand the canvas: the target size 500×300 is smaller than the 600×400 canvas"),
    (["--aspect", "3:2"], "Cannot expand the canvas: the 600×400 canvas already has the aspect ratio 1.5"),
    (["--pixels", "0"], "Cannot expand the canvas: the 600×400 canvas would keep its size (no pixels to add)"),
    (["--size", "700x400", "--sides", "top"], "neither the left nor the right side may grow"),
    (["--size", "700x400", "--aspect", "16:9"], "Invalid option: set a target size (700x400) or an aspect ratio"),
    (["--aspect", "wide"], "Invalid option: the aspect ratio 'wide' is not WIDTH:HEIGHT"),
    (["--pixels", "-4"], "Invalid option: pixels=-4 is outside [0, 524288]"),
])
def test_an_expansion_that_cannot_be_made_exits_2_before_anything_is_sent(photo, tmp_path, capsys, flags, words):
    out = tmp_path / "o.png"
    code = cli.main(["expand", str(photo), "-o", str(out), "--url", "ws://127.0.0.1:9", "--token", "t", *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
