"""GIMP batch file: results that remember (issue 12, item 3). Run Generative Fill, then More Like This and Edit and
Regenerate… on its result layers, one step after the other, and record what each step did: the layers it added with
their parasites (the recorded requests), the stack and the selected layer; finally save the image as XCF, open it
again and read the parasites back.

``sys.argv[1]`` is a job file (JSON) in the I/O folder::

    {"image": "photo.png", "ellipse": [x, y, width, height], "selection_feather": 8.0, "display": false,
     "steps": [{"procedure": "python-fu-gimp-inpaint", "on": "photo", "arguments": {...}},
               {"select": "none"},
               {"procedure": "python-fu-gimp-inpaint-more-like-this", "on": [0, 0], "arguments": {...},
                "run_mode": "interactive"}, ...]}

A procedure step runs ``procedure`` (default run mode non-interactive) on ``"photo"`` (the photo layer), on
``"top"`` (a new plain layer added on top for that step) or on ``[j, k]``, the ``k``-th layer (top first) that step
``j`` added. ``{"select": "none"}`` drops the selection, ``{"select": "ellipse"}`` selects the job's ellipse again.
``{"read": [j, k]}`` reads the picture around that layer as the plug-in does, with the installed plug-in's own
modules (the job's ``"vendor"`` folder): ``plugin_gimp.gimp_document.result_origin`` of the layer, then the visible
picture of its request's crop read by a ``GimpDocument`` on its source, first plain (``read_plain.raw``), then as a
regeneration reads it (``GimpDocument.regenerate``: ``read_regenerate.raw``), both ``R'G'B'A u8``; the step records the
source's and the lineage's names and the seeds. With ``"display"`` (the GUI binary) the image gets a display, as a
user's would.

Writes into the I/O folder ``selection.raw`` (the feathered ellipse, image-sized ``Y u8``) and, for each layer a step
added, ``step{j}_layer{k}.raw`` (``R'G'B'A u8``) and ``step{j}_layer{k}_mask.raw`` (its layer mask, ``Y u8``); prints
``GIMP_INPAINT_SUMMARY {json}``: GIMP's version, the menus of the procedures on a result layer and, per step, its
status, message, the layers it added (:func:`batch_inpaint.layer_info` plus ``"request"``, the parasite's text), the
names of the whole stack and the selected layers' names after it; ``"reloaded"``: each layer's name and parasite text
after the XCF round trip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import batch_inpaint  # noqa: E402
from batch_inpaint import GRAY, RGBA, layer_info, read_pixels, run_procedure  # noqa: E402
from gi.repository import Gimp, Gio  # noqa: E402  (gi.require_version must come first)
from gimp_harness import SUMMARY_PREFIX  # noqa: E402

PARASITE = "gimp-inpaint-request"
"""``client.metadata.PARASITE_NAME`` (the batch runs in GIMP's Python, without the project on its path)."""

RESULT_PROCEDURES = ("python-fu-gimp-inpaint-more-like-this", "python-fu-gimp-inpaint-edit-and-regenerate")
RUN_MODES = {"interactive": Gimp.RunMode.INTERACTIVE, "noninteractive": Gimp.RunMode.NONINTERACTIVE}


def request_text(layer: Gimp.Layer) -> str | None:
    """The text of ``layer``'s request parasite, or None."""
    parasite = layer.get_parasite(PARASITE)
    return None if parasite is None else bytes(parasite.get_data()).decode("utf-8")


def select_ellipse(image: Gimp.Image, job: dict) -> None:
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *job["ellipse"])
    Gimp.Selection.feather(image, job["selection_feather"])


def read_around(image: Gimp.Image, layer: Gimp.Layer, vendor: str, io: Path) -> dict:
    """The ``{"read": …}`` step (see the module docstring)."""
    sys.path.insert(0, vendor)
    from gimp_inpaint.plugin_gimp.gimp_document import GimpDocument, result_origin

    origin = result_origin(image, [layer], "the test")
    document = GimpDocument(image, origin.source)
    crop = origin.request.crop
    (io / "read_plain.raw").write_bytes(document.read_visible(crop))
    document.regenerate(origin)
    (io / "read_regenerate.raw").write_bytes(document.read_visible(crop))
    return {"source": origin.source.get_name(), "lineage": [item.get_name() for item in origin.lineage],
            "seeds": sorted(origin.seeds), "crop": [crop.x, crop.y, crop.width, crop.height]}


def main() -> None:
    """Do the job described by ``sys.argv[1]`` (see the module docstring)."""
    job_file = Path(sys.argv[1])
    io = job_file.parent
    job = json.loads(job_file.read_text())
    pdb = Gimp.get_pdb()
    procedures = [pdb.lookup_procedure(name) for name in RESULT_PROCEDURES if pdb.procedure_exists(name)]
    summary: dict = {"gimp_version": Gimp.version(), "menus": {
        procedure.get_name(): {"paths": procedure.get_menu_paths(), "label": procedure.get_menu_label(),
                               "arguments": [spec.name for spec in procedure.get_arguments()]}
        for procedure in procedures}}
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(str(io / job["image"])))
    display = Gimp.Display.new(image) if job.get("display") else None
    photo = image.get_layers()[0]
    select_ellipse(image, job)
    (io / "selection.raw").write_bytes(read_pixels(image.get_selection(), GRAY))
    added: list[list[Gimp.Layer]] = []
    steps = []
    for j, step in enumerate(job["steps"]):
        if "select" in step:
            if step["select"] == "none":
                Gimp.Selection.none(image)
            else:
                select_ellipse(image, job)
            added.append([])
            steps.append({"select": step["select"]})
            continue
        if "read" in step:
            added.append([])
            steps.append(read_around(image, added[step["read"][0]][step["read"][1]], job["vendor"], io))
            continue
        target = step["on"]
        if target == "photo":
            layer = photo
        elif target == "top":
            layer = Gimp.Layer.new(image, "plain layer", 64, 64, Gimp.ImageType.RGBA_IMAGE, 100.0,
                                   Gimp.LayerMode.NORMAL)
            image.insert_layer(layer, None, 0)
        else:
            layer = added[target[0]][target[1]]
        image.set_selected_layers([layer])
        known = {item.get_id() for item in image.get_layers()}
        batch_inpaint.PROCEDURE = step["procedure"]  # what run_procedure looks up
        status, message, seconds = run_procedure(image, layer, step.get("arguments", {}),
                                                 RUN_MODES[step.get("run_mode", "noninteractive")])
        Gimp.displays_flush()
        new = [item for item in image.get_layers() if item.get_id() not in known]
        added.append(new)
        for k, item in enumerate(new):
            (io / f"step{j}_layer{k}.raw").write_bytes(read_pixels(item, RGBA))
            if item.get_mask() is not None:
                (io / f"step{j}_layer{k}_mask.raw").write_bytes(read_pixels(item.get_mask(), GRAY))
        steps.append({"status": status, "message": message, "seconds": round(seconds, 3),
                      "new_layers": [{**layer_info(image, item), "request": request_text(item)} for item in new],
                      "stack": [item.get_name() for item in image.get_layers()],
                      "selected": [item.get_name() for item in image.get_selected_layers()],
                      "has_selection": not Gimp.Selection.is_empty(image)})
    summary["steps"] = steps
    saved = Gio.File.new_for_path(str(io / "results.xcf"))
    summary["saved"] = Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, saved, None)
    reopened = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, saved)
    summary["reloaded"] = [[item.get_name(), request_text(item)] for item in reopened.get_layers()]
    reopened.delete()
    print(SUMMARY_PREFIX, json.dumps(summary), flush=True)
    image.clean_all()  # no "discard changes?" dialog when the display closes
    if display is not None:
        display.delete()
    else:
        image.delete()


if __name__ == "__main__":
    main()
