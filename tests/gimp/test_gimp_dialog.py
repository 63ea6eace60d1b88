"""The plug-in's own dialog and progress window in a real GIMP 3.0 and 3.2 (issue 12, items 1 and 2), on Xvfb, with a
real daemon serving the tiny diffusers model beside migan and opencv.

One GUI run per release (``gimp-3.0`` in trixie, ``gimp-3.2`` in forky; :mod:`batch_dialog`), with the plug-in's
test hook (``plugin_gimp.dialog.UI_TEST_HOOK``) loading :mod:`ui_driver` into the plug-in to look at its windows and
press their buttons, three calls of Generative Fill on the astronaut photo with a feathered ellipse selected:

1. interactive, engine ``tiny``: the dialog opens, lists the daemon's engines (the daemon's own list, behind "First
   available"), shows the rows the tiny model takes (steps, guidance, scheduler…); switching to opencv hides them and
   greys out the prompts; back on tiny, 400 steps, OK. The progress window shows the steps, the time left and the
   daemon's previews of the picture forming; the driver presses its Cancel a few steps in: the call ends
   ``cancel``, no layer was added, and the daemon's log shows the cancel (``signalled`` to the running job, which
   ended ``cancelled``);
2. non-interactive, engine opencv: it runs at once and adds its layer (the daemon was free);
3. interactive with a Server URL where nothing answers: the dialog still opens, with the engine list the first
   dialog saw and a status line that says no daemon answers and that it starts on OK; the driver cancels it;
4. Generative Expand, interactive: the same dialog, with its own rows (what grows) and no fill mode; cancelled.

``GIMP_INPAINT_WRITE_DOCS=1`` also copies the screenshots of GIMP 3.0's run into ``docs/images/`` (``dialog.png``:
the dialog with the tiny model chosen and *Advanced* open; ``dialog-progress.png``: the progress window).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import skimage.data
from gimp_harness import GimpChroot, xvfb
from gimp_inpaint.client.connection import InpaintClient, read_connection_config
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

pytestmark = [pytest.mark.gimp, pytest.mark.diffusers]

HERE = Path(__file__).resolve().parent
DRIVER = "/mnt/batch/ui_driver.py"
""":mod:`ui_driver` inside the chroot (the batch file's folder is mounted at ``gimp_harness.BATCH_MOUNT``)."""
STEPS = 400
"""The cancelled job's steps: far more than the driver lets it run (it cancels after 2 % of them)."""
DEAD_URL = "ws://127.0.0.1:9"
"""A loopback URL where nothing listens (the discard port), for the dialog without a daemon."""
DOCS = REPO / "docs" / "images"

SCRIPTS = [
    {"dialog": [["wait_answered"], ["record", "dialog-tiny"], ["expand"], ["screenshot", "dialog-tiny"],
                ["engine", "opencv"], ["record", "dialog-opencv"], ["screenshot", "dialog-opencv"],
                ["engine", "tiny"], ["set", "num-inference-steps", STEPS], ["record", "dialog-accepted"], ["ok"]],
     "progress": [["wait_fraction", 0.02], ["wait_preview"], ["record", "progress"], ["screenshot", "progress"],
                  ["cancel"]]},
    {"dialog": [["wait_answered"], ["record", "dialog-offline"], ["screenshot", "dialog-offline"], ["cancel"]]},
    {"dialog": [["wait_answered"], ["record", "dialog-expand"], ["screenshot", "dialog-expand"], ["cancel"]]},
]
"""What :mod:`ui_driver` does in the two interactive calls."""


def test_the_dialog_lists_the_engines_shows_their_rows_and_cancels_a_job(
        gimp_chroot: GimpChroot, gui_tools: None, tiny_model: Path, tmp_path: Path) -> None:
    io = tmp_path / "io"
    io.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(io / "photo.png")
    common = {"seed": 1234, "padding": 32, "grow": 0, "feather": 0}
    calls = [{"run_mode": "interactive", "arguments": {**common, "engine": "tiny", "prompt": "orange fabric"}},
             {"run_mode": "noninteractive", "arguments": {**common, "engine": "opencv"}},
             {"run_mode": "interactive", "arguments": {**common, "engine": "tiny", "server-url": DEAD_URL}},
             {"run_mode": "interactive", "procedure": "python-fu-gimp-inpaint-expand",
              "arguments": {**common, "engine": "tiny", "pixels": 48}}]
    (io / "job.json").write_text(json.dumps({"image": "photo.png", "ellipse": list(ELLIPSE),
                                             "selection_feather": SELECTION_FEATHER, "calls": calls}))
    (io / "ui-job.json").write_text(json.dumps({"calls": SCRIPTS}))
    with installed_plugin(tmp_path, {"tiny": tiny_model}) as installed:
        config = read_connection_config(installed.plugin_dir / "gimp-inpaint" / "connection.json")
        with InpaintClient.connect(installed.url, config.token, "pytest") as client:
            engines = [engine.name for engine in client.welcome.engines]
        with xvfb() as display:
            result = gimp_chroot.run_batch(HERE / "batch_dialog.py", io, ["/mnt/io/job.json"],
                                           plugin_dirs=[installed.plugin_dir], timeout=GIMP_TIMEOUT,
                                           display=display, fresh_config=True,
                                           environment={"GIMP_INPAINT_UI_TEST": DRIVER})
    print(f"[gimp] dialog GUI run {result.seconds:.1f} s")
    failure = failure_text(result, installed)
    assert not (io / "ui-error.txt").exists(), (io / "ui-error.txt").read_text() + failure
    assert result.returncode == 0, failure
    summary = result.summary()
    assert_gimp_version(gimp_chroot, summary)
    cancelled, opencv, offline, expand = summary["calls"]

    # the dialog: the daemon's engines behind "First available"; the rows of the engine chosen
    tiny = json.loads((io / "dialog-tiny.json").read_text())
    assert tiny["engines"] == ["", *engines] and {"tiny", "opencv"} <= set(engines)
    assert tiny["engine"] == "tiny" and tiny["status"].startswith("gimp-inpaint ") and tiny["answered"]
    assert {"prompt", "negative-prompt", "num-inference-steps", "guidance-scale", "scheduler", "strength", "seed",
            "num-variants", "grow", "feather", "padding", "server-url"} <= set(tiny["shown"])
    assert "controlnet-conditioning-scale" in tiny["hidden"]  # an SD model has no ControlNet
    assert tiny["values"]["prompt"] == "orange fabric" and tiny["values"]["seed"] == 1234
    switched = json.loads((io / "dialog-opencv.json").read_text())
    assert switched["engine"] == "opencv"
    assert {"num-inference-steps", "guidance-scale", "scheduler", "strength", "eta"} <= set(switched["hidden"])
    assert set(switched["insensitive"]) == {"prompt", "negative-prompt"}
    assert {"seed", "num-variants", "grow", "feather", "fill-mode", "color-match"} <= set(switched["shown"])
    assert set(switched["shown"]) < set(tiny["shown"])  # switching the engine changed the visible rows
    assert "licence Apache 2.0" in switched["note"]
    accepted = json.loads((io / "dialog-accepted.json").read_text())
    assert accepted["engine"] == "tiny" and accepted["values"]["num-inference-steps"] == STEPS
    assert (io / "dialog-tiny.png").stat().st_size > 0 and (io / "dialog-opencv.png").stat().st_size > 0

    # the progress window's Cancel ended the job: cancel status, no layer, the daemon's log says so
    progress = json.loads((io / "progress.json").read_text())
    assert re.search(r"step \d+ of \d+", progress["text"]), progress
    assert 0.02 < progress["fraction"] < 0.5
    step, total = progress["preview_step"]  # the picture forming: a preview of the daemon's, fitted to the window
    assert 1 <= step < total and max(progress["preview_size"]) == 256
    assert cancelled["status"] == "cancel" and cancelled["new_layers"] == [], cancelled
    log = installed.daemon_log.read_text()
    job = re.search(r"job '([0-9a-f]+)' on tiny", log)
    assert job, log
    job_id = job.group(1)
    assert re.search(rf"cancel '{job_id}' → signalled", log), log
    assert re.search(rf"job '{job_id}': cancelled in", log), log

    # the next job ran at once, on a free daemon
    assert opencv["status"] == "success", f"{opencv['message']}\n{failure}"
    assert [layer["name"] for layer in opencv["new_layers"]] == ["Generative fill: opencv (remove, seed 1234)"]
    assert log.index(f"job '{job_id}': cancelled") < log.index("on opencv")

    # without a daemon the dialog opens with the list it saw last and says what happens
    away = json.loads((io / "dialog-offline.json").read_text())
    assert away["engines"] == tiny["engines"] and away["engine"] == "tiny"
    assert away["status"].startswith(f"No daemon answers at {DEAD_URL}: it starts when you press OK. The engines "
                                     f"are those it listed on "), away["status"]
    assert offline["status"] == "cancel" and offline["new_layers"] == []

    # Generative Expand's dialog is the same one, with what grows after the prompts and no fill mode
    grows = json.loads((io / "dialog-expand.json").read_text())
    assert grows["engines"] == tiny["engines"] and grows["values"]["pixels"] == 48
    assert {"prompt", "negative-prompt", "pixels", "sides", "size", "aspect", "engine"} <= set(grows["shown"])
    assert "fill-mode" not in grows["values"] and "num-inference-steps" in grows["shown"]
    assert expand["status"] == "cancel" and expand["new_layers"] == []

    if os.environ.get("GIMP_INPAINT_WRITE_DOCS") == "1" and gimp_chroot.release == "trixie":
        shutil.copyfile(io / "dialog-tiny.png", DOCS / "dialog.png")
        shutil.copyfile(io / "progress.png", DOCS / "dialog-progress.png")
