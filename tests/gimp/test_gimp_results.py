"""Results that remember in a real GIMP 3.0 and 3.2 (issue 12, item 3), installed by the installer, through a real
daemon with the opencv engine (:mod:`batch_results`, ``gimp-console``).

On scikit-image's astronaut photo with a feathered ellipse selected, Generative Fill adds a result layer whose
parasite holds its request: the options, engine, fill mode and seed the daemon got, the selection's coverage exactly
as GIMP had it, the crop sent, the job the daemon logged. With the selection dropped, More Like This with 2 variants
adds two layers directly above it with the next seeds, the same request otherwise and the same lineage, and (opencv
being deterministic, the first result hidden while the picture is read) the same pixels; a second More Like This
takes the two seeds after those. Edit and Regenerate…, run non-interactively on one of them, fills the recorded
selection with the arguments given. More Like This on a layer without a request says so. The plug-in's own
document, regenerating, reads the picture without the lineage's results: the photo itself. More Like This on a
Generative Expand result fills the recorded new area of the grown canvas again. The parasites survive an XCF save
and load.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from gimp_harness import PLUGIN_MOUNT, GimpChroot
from gimp_inpaint.client.metadata import RequestMetadata
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    EditorOptions,
    FillMode,
    FillOptions,
    Rect,
    context_crop,
    feather_reach,
)
from PIL import Image
from test_gimp_integration import (
    ELLIPSE,
    GIMP_TIMEOUT,
    SELECTION_FEATHER,
    assert_gimp_version,
    failure_text,
    installed_plugin,
    raw,
)

pytestmark = pytest.mark.gimp

HERE = Path(__file__).resolve().parent
MORE = "python-fu-gimp-inpaint-more-like-this"
EDIT = "python-fu-gimp-inpaint-edit-and-regenerate"
FILL_ARGUMENTS = {"engine": "opencv", "seed": 1234, "padding": 32, "grow": 2, "feather": 4, "num-variants": 1}
"""The first fill's arguments (GIMP names)."""
STEPS = [
    {"procedure": "python-fu-gimp-inpaint", "on": "photo", "arguments": FILL_ARGUMENTS},
    {"select": "none"},
    {"procedure": MORE, "on": [0, 0], "arguments": {"num-variants": 2}},
    {"procedure": MORE, "on": [0, 0], "arguments": {"num-variants": 2}},
    {"procedure": EDIT, "on": [2, 1], "arguments": {**FILL_ARGUMENTS, "seed": 77, "feather": 0}},
    {"procedure": MORE, "on": "top"},
    {"read": [2, 0]},
    {"procedure": "python-fu-gimp-inpaint-expand", "on": "photo",
     "arguments": {"engine": "opencv", "pixels": 32, "sides": "right", "seed": 5, "padding": 16}},
    {"procedure": MORE, "on": [7, 0], "arguments": {"num-variants": 1}},
]
"""What :mod:`batch_results` does, in order."""


def name(seed: int) -> str:
    return f"Generative fill: opencv (remove, seed {seed})"


def request(layer: dict) -> RequestMetadata:
    assert layer["request"] is not None, layer
    return RequestMetadata.from_json(layer["request"])


def test_results_remember_their_request_and_regenerate_from_it(gimp_chroot: GimpChroot, tmp_path: Path) -> None:
    io = tmp_path / "io"
    io.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(io / "photo.png")
    (io / "job.json").write_text(json.dumps({"image": "photo.png", "ellipse": list(ELLIPSE),
                                             "selection_feather": SELECTION_FEATHER, "steps": STEPS,
                                             "vendor": f"{PLUGIN_MOUNT}/0/gimp-inpaint/vendor"}))
    with installed_plugin(tmp_path, {}, diffusers=False) as installed:
        result = gimp_chroot.run_batch(HERE / "batch_results.py", io, ["/mnt/io/job.json"],
                                       plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT)
        log = installed.daemon_log.read_text()
    print(f"[gimp] results batch {result.seconds:.1f} s")
    failure = failure_text(result, installed)
    assert result.returncode == 0, failure
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    for procedure, label in ((MORE, "More _Like This"), (EDIT, "_Edit and Regenerate…")):
        menus = summary["menus"][procedure]
        assert menus["paths"] == ["<Image>/Layer/Generative Fill", "<Layers>/Generative Fill"], menus
        assert menus["label"] == label
    assert summary["menus"][MORE]["arguments"] == ["run-mode", "image", "drawables", "num-variants", "server-url"]
    fill, _, more, again, edit, plain, read, expand, more_expand = summary["steps"]
    for step in (fill, more, again, edit, expand, more_expand):
        assert step["status"] == "success", f"{step['message']}\n{failure}"

    # the fill's layer holds the request the daemon got
    [first] = fill["new_layers"]
    made = request(first)
    assert first["name"] == name(1234)
    assert made.request_options() == FillOptions(engine="opencv", seed=1234, grow=2, feather=4,
                                                 fill_mode=FillMode.REMOVE)
    assert made.options == dataclasses.replace(made.request_options(), engine="opencv", fill_mode=FillMode.AUTO)
    assert made.editor == EditorOptions(padding=32) and (made.engine, made.seed) == ("opencv", 1234)
    selection = raw(io / "selection.raw", 512, 512, 1)
    ys, xs = np.nonzero(selection)
    bounds = Rect(int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
    assert made.selection.bounds == bounds and made.selection.read(Rect(0, 0, 512, 512)) == selection.tobytes()
    assert made.crop == context_crop(bounds, 512, 512, 32 + 2 + feather_reach(4))
    assert made.job == made.origin and re.search(rf"job '{made.job}' on opencv", log), log
    assert made.client == "gimp-inpaint-plugin/0.1" and made.protocol_version == PROTOCOL_VERSION

    # More Like This, without a selection: two layers directly above it, the next seeds, the same request and pixels
    assert [layer["name"] for layer in more["new_layers"]] == [name(1235), name(1236)]
    assert more["stack"] == [name(1235), name(1236), name(1234), "Background"]
    assert more["selected"] == [name(1234)] and not more["has_selection"]
    first_pixels = raw(io / "step0_layer0.raw", first["height"], first["width"], 4)
    first_mask = raw(io / "step0_layer0_mask.raw", first["height"], first["width"], 1)
    for k, layer in enumerate(more["new_layers"]):
        recorded = request(layer)
        assert recorded.seed == 1235 + k and recorded.origin == made.job != recorded.job
        assert recorded.request_options() == dataclasses.replace(made.request_options(), seed=1235, num_variants=2)
        assert (recorded.selection, recorded.crop, recorded.editor) == (made.selection, made.crop, made.editor)
        assert re.search(rf"job '{recorded.job}' on opencv", log), log
        assert {key: layer[key] for key in ("x", "y", "width", "height", "has_mask")} == {
            key: first[key] for key in ("x", "y", "width", "height", "has_mask")}
        np.testing.assert_array_equal(raw(io / f"step2_layer{k}.raw", first["height"], first["width"], 4),
                                      first_pixels)  # read without the first result: the same picture
        np.testing.assert_array_equal(raw(io / f"step2_layer{k}_mask.raw", first["height"], first["width"], 1),
                                      first_mask)

    # again: the two seeds past the lineage's, again directly above the chosen layer
    assert [request(layer).seed for layer in again["new_layers"]] == [1237, 1238]
    assert again["stack"][:5] == [name(1235), name(1236), name(1237), name(1238), name(1234)]

    # Edit and Regenerate…, non-interactive: the arguments given, on the recorded selection, above the chosen layer
    [edited] = edit["new_layers"]
    recorded = request(edited)
    assert edited["name"] == name(77) and recorded.seed == 77 and recorded.options.feather == 0
    assert recorded.selection == made.selection and recorded.origin == made.job
    assert edit["stack"].index(name(77)) == edit["stack"].index(name(1236)) - 1
    assert edit["selected"] == [name(1236)]

    # a layer without a request
    assert plain["status"] == "execution-error" and plain["new_layers"] == []
    assert "More Like This works on a result of Generative Fill: the layer “plain layer” holds no request" in \
        plain["message"]

    # a regeneration reads the picture as the first fill saw it: the lineage's layers hidden, the photo alone shows
    assert read["source"] == "Background" and read["seeds"] == [77, 1234, 1235, 1236, 1237, 1238]
    assert set(read["lineage"]) == {name(seed) for seed in read["seeds"]}
    x, y, width, height = read["crop"]
    photo = skimage.data.astronaut()[y:y + height, x:x + width]
    regenerate = raw(io / "read_regenerate.raw", height, width, 4)
    np.testing.assert_array_equal(regenerate[..., :3], photo)
    assert (regenerate[..., 3] == 255).all()
    assert (raw(io / "read_plain.raw", height, width, 4)[..., :3] != photo).any()  # the results show there

    # More Like This on an expand result: the recorded new area of the grown canvas, the expand mode, the same box
    [grown] = expand["new_layers"]
    recorded = request(grown)
    assert (recorded.selection.canvas_width, recorded.selection.canvas_height) == (544, 512)
    assert recorded.selection.bounds == Rect(512, 0, 32, 512) and recorded.fill_mode is FillMode.EXPAND
    [grown_again] = more_expand["new_layers"]
    assert request(grown_again).seed == 6 and request(grown_again).fill_mode is FillMode.EXPAND
    assert {key: grown_again[key] for key in ("x", "y", "width", "height")} == {
        key: grown[key] for key in ("x", "y", "width", "height")}

    # the parasites are saved in the XCF file
    assert summary["saved"]
    reloaded = dict(summary["reloaded"])
    for step in (fill, more, again, edit, expand, more_expand):
        for layer in step["new_layers"]:
            assert reloaded[layer["name"]] == layer["request"]
