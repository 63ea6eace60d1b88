"""Generative Expand in a real GIMP 3.0 and 3.2 (issue 11, item 4), installed by the installer, through a real daemon
with the opencv engine.

One GUI run per release (``gimp-3.0`` in trixie, ``gimp-3.2`` in forky, on Xvfb, :mod:`batch_expand`): the
procedure sits next to Generative Fill in *Filters ▸ Generative*; run on scikit-image's astronaut photo (512×512)
with 48 pixels on the left and at the bottom, the canvas is 560×560, the photo layer keeps its size and pixels and
moved 48 px right, one new layer with a layer mask covers the new area, opaque and fully shown there, and blends
into the photo over the mask's band; the exported picture is the photo exactly wherever that mask is 0. One Ctrl+Z
then restores the 512×512 canvas and the layer stack as it was (the new layer gone, the photo back at 0, 0).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from gimp_harness import GimpChroot, press_keys, xvfb
from gimp_inpaint.daemon.compositing import blend_mask, grow_mask
from gimp_inpaint.protocol import Rect
from PIL import Image
from test_gimp_integration import GIMP_TIMEOUT, IMAGE_WINDOW, assert_gimp_version, failure_text, installed_plugin, raw

pytestmark = pytest.mark.gimp

HERE = Path(__file__).resolve().parent
SIDE = 512
"""The astronaut photo's width and height."""
ADDED = 48
"""Pixels the canvas grows on the left and at the bottom."""
GROW, FEATHER = 2, 4
"""The procedure's ``grow`` and ``feather``: the blend band reaches ``grow`` + ``feather_reach(feather)`` pixels into
the photo."""
ARGUMENTS = {"engine": "opencv", "pixels": ADDED, "sides": "bottom-left", "grow": GROW, "feather": FEATHER,
             "padding": 16, "seed": 1234}
"""The procedure's arguments (GIMP names)."""


def test_generative_expand_grows_the_canvas_fills_the_new_area_and_is_one_undo_step(
        gimp_chroot: GimpChroot, gui_tools: None, tmp_path: Path) -> None:
    io = tmp_path / "io"
    io.mkdir()
    original = skimage.data.astronaut()
    Image.fromarray(original).save(io / "photo.png")
    (io / "job.json").write_text(json.dumps({"image": "photo.png", "arguments": ARGUMENTS, "wait_seconds": 60}))
    # xvfb() last: it ends first when something fails, and GIMP, losing its display, exits too
    with installed_plugin(tmp_path, {}, diffusers=False) as installed, ThreadPoolExecutor(1) as pool, \
            xvfb() as display:
        run = pool.submit(gimp_chroot.run_batch, HERE / "batch_expand.py", io, ["/mnt/io/job.json"],
                          plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT, display=display)
        deadline = time.monotonic() + GIMP_TIMEOUT
        while not (io / "ready-undo").exists() and not run.done() and time.monotonic() < deadline:
            time.sleep(0.1)
        if (io / "ready-undo").exists() and not run.done():
            press_keys(display, IMAGE_WINDOW, ["ctrl+z"])
        result = run.result()
    print(f"[gimp] Generative Expand GUI run {result.seconds:.1f} s")
    assert result.returncode == 0, failure_text(result, installed)
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    assert summary["procedure_exists"], failure_text(result, installed)
    assert summary["menu_paths"] == ["<Image>/Filters/Generative"] and summary["menu_label"] == "Generative _Expand…"
    assert summary["status"] == "success", f"{summary['message']}\n{failure_text(result, installed)}"
    print(f"[gimp] the procedure ran {summary['procedure_seconds']:.2f} s inside GIMP")

    # the canvas grew; the photo layer kept its size and pixels and moved with the picture; one layer on top
    before, after = summary["before"], summary["after"]
    size = SIDE + ADDED
    assert (before["width"], before["height"]) == (SIDE, SIDE) and (after["width"], after["height"]) == (size, size)
    [photo] = before["layers"]
    [new, moved] = after["layers"]
    assert moved == {**photo, "x": ADDED, "y": 0, "position": 1}
    assert summary["source_pixels_unchanged"]
    assert new["name"] == "Generative fill: opencv (expand, seed 1234)"
    assert new["has_mask"] and new["has_alpha"] and new["visible"] and new["position"] == 0
    assert summary["new_layers"] == [new]

    # the layer covers the new area plus the blend band: the box of the daemon's blend mask over the grown canvas
    added = np.zeros((size, size), np.uint8)
    added[:, :ADDED] = added[SIDE:, :] = 255
    blend = blend_mask(grow_mask(added, GROW), FEATHER)
    ys, xs = np.nonzero(blend)
    box = Rect(int(xs.min()), int(ys.min()), int(xs.max()) + 1 - int(xs.min()), int(ys.max()) + 1 - int(ys.min()))
    assert (new["x"], new["y"], new["width"], new["height"]) == (box.x, box.y, box.width, box.height) == (
        0, 0, size, size)
    layer = raw(io / "layer_0.raw", size, size, 4)
    mask = raw(io / "layer_0_mask.raw", size, size, 1)
    np.testing.assert_array_equal(mask, blend)  # the layer mask is the blend mask, band included
    new_area = added == 255
    assert (layer[new_area][:, 3] == 255).all() and (mask[new_area] == 255).all()  # the new area is filled
    assert layer[new_area][:, :3].astype(int).std() > 5  # with the photo's continuation, not one flat colour

    # the exported picture: opaque everywhere, the photo exactly where the mask is 0, the layer where it is 255
    composite = np.asarray(Image.open(io / "composite.png").convert("RGBA"))
    assert composite.shape == (size, size, 4) and (composite[..., 3] == 255).all()
    old = np.zeros((size, size), bool)
    old[:SIDE, ADDED:] = True
    placed = np.zeros((size, size, 3), np.uint8)
    placed[:SIDE, ADDED:] = original
    untouched = old & (mask == 0)
    assert untouched.sum() > 0.8 * SIDE * SIDE
    np.testing.assert_array_equal(composite[..., :3][untouched], placed[untouched])
    np.testing.assert_array_equal(composite[..., :3][mask == 255], layer[..., :3][mask == 255])
    source_after = raw(io / "source_after.raw", SIDE, SIDE, 4)
    np.testing.assert_array_equal(source_after[..., :3], original)

    # one Undo: the canvas size and the layer stack of before the run (the layer gone, the photo back at 0, 0)
    assert summary["after_undo"] == before, failure_text(result, installed)
    assert summary["source_pixels_after_undo_unchanged"]
