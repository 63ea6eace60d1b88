"""Edit and Regenerate… opens the Generative Fill dialog pre-filled from a result layer's request, and More Like This
runs from the menu without a dialog, in a real GIMP 3.0 and 3.2 on Xvfb (issue 12, item 3), through a real daemon with
the opencv engine.

One GUI run per release (``gimp-3.0`` in trixie, ``gimp-3.2`` in forky; :mod:`batch_results` with a display), with the
plug-in's test hook (``plugin_gimp.dialog.UI_TEST_HOOK``) loading :mod:`ui_driver` into the plug-in: a non-interactive
Generative Fill of two variants with settings far from the defaults; the selection dropped; Edit and Regenerate… on the
second result, interactive: the dialog shows that result's settings (its engine, its seed, one variant, the prompts,
grow, feather, padding, fill mode, colour match); the driver changes the seed and the feather and presses OK, and one
layer with those values and the rest of the request comes directly above it, on the recorded selection; then More Like
This, interactive, on the first result: no dialog, the progress window, two layers with the seeds past the lineage's.

``GIMP_INPAINT_WRITE_DOCS=1`` also copies GIMP 3.0's screenshot of the pre-filled dialog into
``docs/images/edit-and-regenerate.png``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import skimage.data
from gimp_harness import GimpChroot, xvfb
from gimp_inpaint.client.metadata import RequestMetadata
from gimp_inpaint.protocol import FillMode
from PIL import Image
from test_gimp_integration import (
    ELLIPSE,
    GIMP_TIMEOUT,
    REPO,
    SELECTION_FEATHER,
    assert_gimp_version,
    failure_text,
    installed_plugin,
)

pytestmark = pytest.mark.gimp

HERE = Path(__file__).resolve().parent
DRIVER = "/mnt/batch/ui_driver.py"
""":mod:`ui_driver` inside the chroot (the batch file's folder is mounted at ``gimp_harness.BATCH_MOUNT``)."""
EDIT = "python-fu-gimp-inpaint-edit-and-regenerate"
MORE = "python-fu-gimp-inpaint-more-like-this"
FILL_ARGUMENTS = {"engine": "opencv", "prompt": "a red kite", "negative-prompt": "blur, text", "seed": 4242,
                  "num-variants": 2, "grow": 3, "feather": 5, "padding": 24, "color-match": False, "fill-mode": "fill"}
"""The first fill's arguments (GIMP names): far from the defaults, so that a pre-filled dialog shows."""
STEPS = [
    {"procedure": "python-fu-gimp-inpaint", "on": "photo", "arguments": FILL_ARGUMENTS},
    {"select": "none"},
    {"procedure": EDIT, "on": [0, 1], "run_mode": "interactive"},
    {"procedure": MORE, "on": [0, 0], "run_mode": "interactive"},
]
"""What :mod:`batch_results` does, in order (the interactive calls' configs are fresh: the dialog shows the layer's
request, not GIMP's last values)."""
UI_SCRIPTS = [
    {"dialog": [["wait_answered"], ["record", "edit-dialog"], ["screenshot", "edit-dialog"], ["set", "seed", 99],
                ["set", "feather", 2], ["record", "edit-accepted"], ["ok"]]},
    {"dialog": [["record", "unexpected-dialog"], ["cancel"]]},
]
"""What :mod:`ui_driver` does in the two interactive calls (More Like This must open no dialog)."""


def test_edit_and_regenerate_prefills_the_dialog_and_more_like_this_has_none(
        gimp_chroot: GimpChroot, gui_tools: None, tmp_path: Path) -> None:
    io = tmp_path / "io"
    io.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(io / "photo.png")
    (io / "job.json").write_text(json.dumps({"image": "photo.png", "ellipse": list(ELLIPSE), "display": True,
                                             "selection_feather": SELECTION_FEATHER, "steps": STEPS}))
    (io / "ui-job.json").write_text(json.dumps({"calls": UI_SCRIPTS}))
    with installed_plugin(tmp_path, {}, diffusers=False) as installed, xvfb() as display:
        result = gimp_chroot.run_batch(HERE / "batch_results.py", io, ["/mnt/io/job.json"],
                                       plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT, display=display,
                                       fresh_config=True, environment={"GIMP_INPAINT_UI_TEST": DRIVER})
    print(f"[gimp] regenerate GUI run {result.seconds:.1f} s")
    failure = failure_text(result, installed)
    assert not (io / "ui-error.txt").exists(), (io / "ui-error.txt").read_text() + failure
    assert result.returncode == 0, failure
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    fill, _, edit, more = summary["steps"]
    for step in (fill, edit, more):
        assert step["status"] == "success", f"{step['message']}\n{failure}"
    first, second = (RequestMetadata.from_json(layer["request"]) for layer in fill["new_layers"])
    assert (first.seed, second.seed) == (4242, 4243)

    # the dialog shows the second result's request: its engine and seed, one variant, every setting as recorded
    shown = json.loads((io / "edit-dialog.json").read_text())
    values = shown["values"]
    assert shown["engine"] == "opencv" and shown["answered"]
    assert {name: values[name] for name in FILL_ARGUMENTS} == {**FILL_ARGUMENTS, "seed": 4243, "num-variants": 1}
    assert values["sample-merged"] is True and values["scheduler"] == "default"
    assert (io / "edit-dialog.png").stat().st_size > 0

    # OK with the seed and the feather changed: one layer directly above the result, on the recorded selection
    [edited] = edit["new_layers"]
    made = RequestMetadata.from_json(edited["request"])
    assert (made.seed, made.options.feather, made.options.grow, made.options.prompt) == (99, 2, 3, "a red kite")
    assert (made.options.fill_mode, made.options.color_match, made.editor.padding) == (FillMode.FILL, False, 24)
    assert made.selection == second.selection and made.origin == second.origin == second.job
    assert edit["stack"].index(edited["name"]) == edit["stack"].index(fill["new_layers"][1]["name"]) - 1

    # More Like This from the menu: no dialog, two layers with the seeds past the lineage's (4242, 4243, 99)
    assert not (io / "unexpected-dialog.json").exists()
    assert [RequestMetadata.from_json(layer["request"]).seed for layer in more["new_layers"]] == [4244, 4245]
    assert more["selected"] == [fill["new_layers"][0]["name"]]

    if os.environ.get("GIMP_INPAINT_WRITE_DOCS") == "1" and gimp_chroot.release == "trixie":
        shutil.copyfile(io / "edit-dialog.png", REPO / "docs" / "images" / "edit-and-regenerate.png")
