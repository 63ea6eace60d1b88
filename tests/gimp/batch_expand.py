"""GIMP batch file for the GUI binary: run ``python-fu-gimp-inpaint-expand`` (Generative Expand) on a displayed
photo, dump the result, then watch one Undo.

Runs in the GUI binary (``gimp-3.0``, ``gimp-3.2``) on an X display, as :mod:`batch_undo` does, because only the
GUI can undo (the PDB has no undo procedure): the test on the host presses Ctrl+Z with ``xdotool`` once, when this
batch writes ``ready-undo`` into the I/O folder. ``sys.argv[1]`` is a job file (JSON) in the I/O folder::

    {"image": "photo.png",                 # file in the I/O folder
     "arguments": {"pixels": 48, ...},      # the procedure's own arguments, GIMP names
     "wait_seconds": 60}                    # how long to wait for the Undo

Steps:

1. open the photo in a display, record the canvas size, the layer stack and the source layer's pixels;
2. run the procedure NONINTERACTIVE on the source layer; record the canvas size and the stack; write the new layer
   (``layer_0.raw``, ``R'G'B'A u8``) and its mask (``layer_0_mask.raw``, ``Y u8``), the source layer's pixels
   after the run (``source_after.raw``) and the image as GIMP exports it (``composite.png``);
3. write ``ready-undo``, wait until the canvas size or the stack changes (the host pressed Ctrl+Z once), record
   both; print ``GIMP_INPAINT_SUMMARY {json}`` and close the display.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from batch_inpaint import RGBA, dump_new_layers, layer_info, read_pixels  # noqa: E402
from gi.repository import Gimp, Gio  # noqa: E402  (gi.require_version must come first)
from gimp_harness import SUMMARY_PREFIX  # noqa: E402

PROCEDURE = "python-fu-gimp-inpaint-expand"


def state(image: Gimp.Image) -> dict:
    """The canvas size and the layer stack (top first, :func:`batch_inpaint.layer_info`)."""
    return {"width": image.get_width(), "height": image.get_height(),
            "layers": [layer_info(image, layer) for layer in image.get_layers()]}


def run_expand(image: Gimp.Image, layer: Gimp.Layer, arguments: dict) -> tuple[str, str | None, float]:
    """Run :data:`PROCEDURE` NONINTERACTIVE on ``layer``; returns (status nick, error message, seconds)."""
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for name, value in arguments.items():
        config.set_property(name, value)
    start = time.monotonic()
    result = procedure.run(config)
    seconds = time.monotonic() - start
    status = result.index(0)
    message = result.index(1) if status != Gimp.PDBStatusType.SUCCESS and result.length() > 1 else None
    return status.value_nick, message, seconds


def main() -> None:
    """Do the job described by ``sys.argv[1]`` (see the module docstring)."""
    job_file = Path(sys.argv[1])
    io = job_file.parent
    job = json.loads(job_file.read_text())
    pdb = Gimp.get_pdb()
    summary: dict = {"gimp_version": Gimp.version(), "procedure_exists": pdb.procedure_exists(PROCEDURE)}
    if summary["procedure_exists"]:
        procedure = pdb.lookup_procedure(PROCEDURE)
        summary["menu_paths"] = list(procedure.get_menu_paths())
        summary["menu_label"] = procedure.get_menu_label()
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(str(io / job["image"])))
    display = Gimp.Display.new(image)
    source = image.get_layers()[0]
    image.set_selected_layers([source])
    Gimp.displays_flush()
    summary["before"] = state(image)
    known = [layer.get_id() for layer in image.get_layers()]
    source_before = read_pixels(source, RGBA)

    if summary["procedure_exists"]:
        status, message, seconds = run_expand(image, source, job["arguments"])
    else:
        status, message, seconds = "missing", None, 0.0
    Gimp.displays_flush()
    summary.update(status=status, message=message, procedure_seconds=round(seconds, 3), after=state(image))
    if status == "success":
        summary["new_layers"] = dump_new_layers(image, known, io, "layer")
        source_after = read_pixels(source, RGBA)
        (io / "source_after.raw").write_bytes(source_after)
        summary["source_pixels_unchanged"] = source_after == source_before
        summary["exported"] = Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image,
                                             Gio.File.new_for_path(str(io / "composite.png")), None)
        (io / "ready-undo").write_text(str(time.time()))
        start, current = time.monotonic(), state(image)
        while current == summary["after"] and time.monotonic() - start < job["wait_seconds"]:
            time.sleep(0.05)
            current = state(image)
        time.sleep(0.5)  # let a second, unexpected change show up too
        summary.update(after_undo=state(image), undo_wait_seconds=round(time.monotonic() - start, 2),
                       source_pixels_after_undo_unchanged=read_pixels(source, RGBA) == source_before)
    print(SUMMARY_PREFIX, json.dumps(summary), flush=True)
    image.clean_all()  # no "discard changes?" dialog when the display closes
    display.delete()


if __name__ == "__main__":
    main()
