"""GIMP batch file for the GUI binary: run ``python-fu-gimp-inpaint`` on a displayed image, then watch Undo and Redo.

GIMP offers no procedure that undoes, nor one that counts undo steps (the PDB's image-undo group is
group-start/-end, freeze/thaw, enable/disable, is-enabled), so a plug-in cannot check its own undo step.
The real Edit ▸ Undo is an action of the GUI: this batch runs in the GUI binary (``gimp-3.0``, ``gimp-3.2``) on
an X display, while the test on the host presses Ctrl+Z and later Ctrl+Y with ``xdotool`` once each, when told
to through files in the I/O folder:

1. open the photo in a display, select the feathered ellipse, run the procedure NONINTERACTIVE,
   record the layers, write ``ready-undo``;
2. wait until the layer stack changes (the host pressed Ctrl+Z once), record it, write ``ready-redo``;
3. wait until it changes again (Ctrl+Y once), record it, print ``GIMP_INPAINT_SUMMARY {json}`` and close.

One undo step holding the whole fill means: after one Undo the stack is exactly the stack before the run
and the selection (itself made of two undo steps before the run) is unchanged; after one Redo the new
layer is back with its layer mask. ``sys.argv[1]`` is the same job file as for ``batch_inpaint.py`` plus
``"wait_seconds"``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from batch_inpaint import GRAY, RGBA, layer_info, read_pixels, run_procedure  # noqa: E402
from gi.repository import Gimp, Gio  # noqa: E402  (gi.require_version must come first)
from gimp_harness import SUMMARY_PREFIX  # noqa: E402


def stack(image: Gimp.Image) -> list[dict]:
    """The image's layers, top first, as :func:`batch_inpaint.layer_info` dicts."""
    return [layer_info(image, layer) for layer in image.get_layers()]


def wait_for_change(image: Gimp.Image, previous: list[dict], seconds: float) -> tuple[list[dict], float]:
    """Poll the layer stack every 50 ms until it differs from ``previous``; returns it and the seconds waited."""
    start = time.monotonic()
    current = stack(image)
    while current == previous and time.monotonic() - start < seconds:
        time.sleep(0.05)
        current = stack(image)
    time.sleep(0.5)                      # let a second, unexpected change show up too
    return stack(image), time.monotonic() - start


def main() -> None:
    """Do the job described by ``sys.argv[1]`` (see the module docstring)."""
    job_file = Path(sys.argv[1])
    io = job_file.parent
    job = json.loads(job_file.read_text())
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(str(io / job["image"])))
    display = Gimp.Display.new(image)
    source = image.get_layers()[0]
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *job["ellipse"])
    Gimp.Selection.feather(image, job["selection_feather"])
    image.set_selected_layers([source])
    Gimp.displays_flush()
    summary: dict = {"gimp_version": Gimp.version(), "before": stack(image)}
    before = (read_pixels(image.get_selection(), GRAY), read_pixels(source, RGBA))

    status, message, seconds = run_procedure(image, source, job["arguments"])
    Gimp.displays_flush()
    summary.update(status=status, message=message, procedure_seconds=round(seconds, 3), after_fill=stack(image))
    if status == "success":
        watch_undo_redo(io, image, source, before, summary, job["wait_seconds"])
    print(SUMMARY_PREFIX, json.dumps(summary), flush=True)
    image.clean_all()                    # no "discard changes?" dialog when the display closes
    display.delete()


def watch_undo_redo(io: Path, image: Gimp.Image, source: Gimp.Layer, before: tuple[bytes, bytes], summary: dict,
                    seconds: float) -> None:
    """Steps 2 and 3 of the module docstring: ``before`` holds the selection and the source layer's pixels from
    before the fill; adds ``after_undo``, ``after_redo`` and the comparisons to ``summary``."""
    selection, source_pixels = before
    (io / "ready-undo").write_text(str(time.time()))

    summary["after_undo"], summary["undo_wait_seconds"] = wait_for_change(image, summary["after_fill"], seconds)
    summary.update(selection_after_undo_unchanged=read_pixels(image.get_selection(), GRAY) == selection,
                   source_after_undo_unchanged=read_pixels(source, RGBA) == source_pixels)
    (io / "ready-redo").write_text(str(time.time()))

    summary["after_redo"], summary["redo_wait_seconds"] = wait_for_change(image, summary["after_undo"], seconds)
    summary["selection_after_redo_unchanged"] = read_pixels(image.get_selection(), GRAY) == selection


if __name__ == "__main__":
    main()
