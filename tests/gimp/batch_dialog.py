"""GIMP batch file for the GUI binary: run ``python-fu-gimp-inpaint`` interactively (its own dialog and progress
window, driven by :mod:`ui_driver` inside the plug-in) and non-interactively, one call after the other, on a
displayed photo with a feathered selection; record what each call did.

``sys.argv[1]`` is a job file (JSON) in the I/O folder::

    {"image": "photo.png", "ellipse": [x, y, width, height], "selection_feather": 8.0,
     "calls": [{"run_mode": "interactive", "arguments": {...}}, {"run_mode": "noninteractive", ...},
               {"run_mode": "interactive", "procedure": "python-fu-gimp-inpaint-expand", ...}]}

Each call runs its procedure (default ``python-fu-gimp-inpaint``) on the photo layer with the call's arguments (GIMP
names) set in a fresh config; an interactive call's dialog shows them (GIMP has no last values: no interactive call
of the test succeeds before it, and the configuration folder is fresh). It prints ``GIMP_INPAINT_SUMMARY {json}``:
GIMP's version and, per call, its status, message, the wall-clock times it started and ended and the layers it
added.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import batch_inpaint  # noqa: E402
from batch_inpaint import layer_info, run_procedure  # noqa: E402
from gi.repository import Gimp, Gio  # noqa: E402  (gi.require_version must come first)
from gimp_harness import SUMMARY_PREFIX  # noqa: E402

RUN_MODES = {"interactive": Gimp.RunMode.INTERACTIVE, "noninteractive": Gimp.RunMode.NONINTERACTIVE}


def main() -> None:
    """Do the job described by ``sys.argv[1]`` (see the module docstring)."""
    job_file = Path(sys.argv[1])
    io = job_file.parent
    job = json.loads(job_file.read_text())
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(str(io / job["image"])))
    display = Gimp.Display.new(image)
    photo = image.get_layers()[0]
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *job["ellipse"])
    Gimp.Selection.feather(image, job["selection_feather"])
    image.set_selected_layers([photo])
    Gimp.displays_flush()
    calls = []
    for call in job["calls"]:
        known = [layer.get_id() for layer in image.get_layers()]
        started = time.time()
        batch_inpaint.PROCEDURE = call.get("procedure", "python-fu-gimp-inpaint")  # what run_procedure looks up
        status, message, seconds = run_procedure(image, photo, call["arguments"], RUN_MODES[call["run_mode"]])
        Gimp.displays_flush()
        calls.append({"status": status, "message": message, "started": started, "ended": time.time(),
                      "seconds": round(seconds, 3),
                      "new_layers": [layer_info(image, layer) for layer in image.get_layers()
                                     if layer.get_id() not in known]})
    print(SUMMARY_PREFIX, json.dumps({"gimp_version": Gimp.version(), "calls": calls}), flush=True)
    image.clean_all()  # no "discard changes?" dialog when the display closes
    display.delete()


if __name__ == "__main__":
    main()
