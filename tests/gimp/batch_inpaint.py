"""GIMP batch file: run ``python-fu-gimp-inpaint`` on a real photo inside GIMP 3 and dump the evidence.

Runs inside ``gimp-console``'s ``python-fu-eval`` (the chroot's Python, 3.13 with GIMP 3.0 in trixie, 3.14 with
GIMP 3.2 in forky; PyGObject, no NumPy), started by :meth:`gimp_harness.GimpChroot.run_batch`. ``sys.argv[1]``
is a job file (JSON) in the I/O folder::

    {"image": "photo.png",                 # file in the I/O folder
     "ellipse": [x, y, width, height],      # selection in image pixels
     "selection_feather": 8.0,              # Gimp.Selection.feather radius, pixels
     "arguments": {"prompt": "...", ...},   # the procedure's own arguments, GIMP names
     "repeats": [{"scheduler": "euler"}],   # optional: run again with these arguments changed, one run each
     "small_layer": [x, y, width, height],  # optional: the source is a new RGBA layer there, a copy of the photo
     "stripe": [x, y, width, height],       # optional: the photo gets an alpha channel, this area alpha 0 …
     "stripe_colour": "black",              # … storing black, or "cleared": painted red, then Edit ▸ Clear
     "run_mode": "interactive"}             # optional: the run mode (default noninteractive)

``"ellipse": null`` leaves the image without a selection. It opens the photo, prepares the layers, selects the
feathered ellipse, records the source layer, the layer stack, the selection and the undo state, exports
``composite_before.png``, runs the procedure in the job's run mode on the source layer, then writes into
the I/O folder (raw ``u8`` bytes, row-major):

- ``selection.raw``: the selection before the run, image-sized, 1 byte per pixel (``Y u8``, 255 = selected);
- ``source_after.raw``: the source layer after the run, ``R'G'B'A u8``;
- ``layer_N.raw`` / ``layer_N_mask.raw``: each new layer (``R'G'B'A u8``) and its layer mask (``Y u8``);
- ``composite.png``: the image as GIMP exports it (visible layers composited) after the first run;
- ``repeat_K_layer_N.raw``: the layers the K-th repeat (0-based) added, ``R'G'B'A u8``. A repeat runs on the
  same source layer and selection, after the first run's layers were dumped and the composite exported;

and prints one line ``GIMP_INPAINT_SUMMARY {json}`` with GIMP's version, statuses, geometry and names (see
``summary`` below; ``repeats`` holds ``{status, message, new_layers}`` per repeat; ``unset_strings`` holds, for
each string argument with an empty default that the job leaves unset, what a fresh config of the procedure holds:
``""`` when GIMP registered the procedure from the plug-in, ``None`` when from its cached ``pluginrc``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GObject  # noqa: E402  (gi.require_version must come first)
from gimp_harness import SUMMARY_PREFIX  # noqa: E402

PROCEDURE = "python-fu-gimp-inpaint"
RGBA = "R'G'B'A u8"
GRAY = "Y u8"
"""Native format of selections and layer masks (linear coverage; ``Y' u8`` would gamma-encode it)."""


def read_pixels(drawable: Gimp.Drawable, fmt: str) -> bytes:
    """All of ``drawable``'s pixels in ``fmt``, in its own coordinates (height × width × channels bytes)."""
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def layer_info(image: Gimp.Image, layer: Gimp.Layer) -> dict:
    """Name, id, stack position, parent, offsets, size, type and mask presence of ``layer``."""
    _, off_x, off_y = layer.get_offsets()
    parent = layer.get_parent()
    return {"id": layer.get_id(), "name": layer.get_name(), "position": image.get_item_position(layer),
            "parent": parent.get_id() if parent else None, "x": off_x, "y": off_y,
            "width": layer.get_width(), "height": layer.get_height(), "has_alpha": layer.has_alpha(),
            "mode": layer.get_mode().value_nick, "opacity": layer.get_opacity(), "visible": layer.get_visible(),
            "has_mask": layer.get_mask() is not None}


def dump_new_layers(image: Gimp.Image, known_ids: list[int], io: Path, prefix: str) -> list[dict]:
    """Write each layer of ``image`` whose id is not in ``known_ids`` (top first) as ``{prefix}_N.raw`` and its
    mask as ``{prefix}_N_mask.raw``; returns their :func:`layer_info`."""
    infos = []
    for n, layer in enumerate(layer for layer in image.get_layers() if layer.get_id() not in known_ids):
        (io / f"{prefix}_{n}.raw").write_bytes(read_pixels(layer, RGBA))
        mask = layer.get_mask()
        if mask is not None:
            (io / f"{prefix}_{n}_mask.raw").write_bytes(read_pixels(mask, GRAY))
        infos.append(layer_info(image, layer))
    return infos


def run_procedure(image: Gimp.Image, layer: Gimp.Layer, arguments: dict,
                  run_mode: Gimp.RunMode = Gimp.RunMode.NONINTERACTIVE) -> tuple[str, str | None, float]:
    """Run :data:`PROCEDURE` in ``run_mode`` on ``layer``; returns (status nick, error message, seconds)."""
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = procedure.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])     # set_property cannot convert a list here
    for name, value in arguments.items():
        config.set_property(name, value)
    start = time.monotonic()
    result = procedure.run(config)
    seconds = time.monotonic() - start
    status = result.index(0)
    message = result.index(1) if status != Gimp.PDBStatusType.SUCCESS and result.length() > 1 else None
    return status.value_nick, message, seconds


def add_small_layer(image: Gimp.Image, photo: Gimp.Layer, x: int, y: int, width: int, height: int) -> Gimp.Layer:
    """A new RGBA layer ``width × height`` at ``(x, y)`` on top, holding the photo's pixels there (so the picture
    looks unchanged, and every pixel of the image outside it reads as transparent from the layer alone)."""
    layer = Gimp.Layer.new(image, "small layer", width, height, Gimp.ImageType.RGBA_IMAGE, 100.0,
                           Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    layer.set_offsets(x, y)
    pixels = photo.get_buffer().get(Gegl.Rectangle.new(x, y, width, height), 1.0, RGBA, Gegl.AbyssPolicy.NONE)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), RGBA, bytes(pixels))
    buffer.flush()
    layer.update(0, 0, width, height)
    return layer


def make_stripe(image: Gimp.Image, photo: Gimp.Layer, rect: list[int], colour: str) -> None:
    """Add an alpha channel to ``photo`` and make ``rect`` fully transparent: written as transparent black
    (``"black"``), or painted red and then cleared with Edit ▸ Clear (``"cleared"``: GIMP keeps the red)."""
    photo.add_alpha()
    x, y, width, height = rect
    if colour == "black":
        buffer = photo.get_buffer()
        buffer.set(Gegl.Rectangle.new(x, y, width, height), RGBA, bytes(width * height * 4))
        buffer.flush()
    else:
        image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, width, height)
        Gimp.context_push()
        Gimp.context_set_foreground(Gegl.Color.new("#e01020"))
        photo.edit_fill(Gimp.FillType.FOREGROUND)
        Gimp.context_pop()
        photo.edit_clear()
        Gimp.Selection.none(image)
    photo.update(x, y, width, height)


def main() -> None:
    """Do the job described by ``sys.argv[1]`` (see the module docstring)."""
    job_file = Path(sys.argv[1])
    io = job_file.parent
    job = json.loads(job_file.read_text())
    summary: dict = {"gimp_version": Gimp.version(), "python": sys.version.split()[0]}
    pdb = Gimp.get_pdb()
    summary["procedure_exists"] = pdb.procedure_exists(PROCEDURE)
    if not summary["procedure_exists"]:
        print(SUMMARY_PREFIX, json.dumps(summary), flush=True)
        return
    procedure = pdb.lookup_procedure(PROCEDURE)
    specs = procedure.get_arguments()
    summary["procedure_arguments"] = [spec.name for spec in specs]
    summary["procedure_specs"] = [  # what GIMP registered: compared with the options table by the test
        {"name": spec.name, "default": spec.get_default_value(), "minimum": getattr(spec, "minimum", None),
         "maximum": getattr(spec, "maximum", None)}
        for spec in specs if spec.name not in ("run-mode", "image", "drawables")]
    unset = procedure.create_config()
    summary["unset_strings"] = {spec.name: unset.get_property(spec.name) for spec in specs
                                if spec.value_type == GObject.TYPE_STRING and not spec.get_default_value()
                                and spec.name not in job["arguments"]}

    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(str(io / job["image"])))
    source = image.get_layers()[0]
    if job.get("stripe"):
        make_stripe(image, source, job["stripe"], job["stripe_colour"])
    if job.get("small_layer"):
        source = add_small_layer(image, source, *job["small_layer"])
    if job["ellipse"]:
        image.select_ellipse(Gimp.ChannelOps.REPLACE, *job["ellipse"])
        Gimp.Selection.feather(image, job["selection_feather"])
    _, _, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    selection = read_pixels(image.get_selection(), GRAY)
    (io / "selection.raw").write_bytes(selection)
    source_before = read_pixels(source, RGBA)
    before_ids = [layer.get_id() for layer in image.get_layers()]
    image.set_selected_layers([source])
    image.clean_all()
    summary.update(image_width=image.get_width(), image_height=image.get_height(),
                   selection_bounds=[x1, y1, x2 - x1, y2 - y1], source=layer_info(image, source),
                   layers_before=len(before_ids), undo_enabled_before=image.undo_is_enabled(),
                   dirty_before=image.is_dirty(), open_images_before=len(Gimp.get_images()))

    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(str(io / "composite_before.png")), None)
    run_mode = Gimp.RunMode.INTERACTIVE if job.get("run_mode") == "interactive" else Gimp.RunMode.NONINTERACTIVE
    status, message, seconds = run_procedure(image, source, job["arguments"], run_mode)
    summary.update(status=status, message=message, procedure_seconds=round(seconds, 3),
                   open_images_after=len(Gimp.get_images()))

    layers = image.get_layers()
    summary["layers_after"] = [layer_info(image, layer) for layer in layers]
    summary["new_layers"] = dump_new_layers(image, before_ids, io, "layer")
    (io / "source_after.raw").write_bytes(read_pixels(source, RGBA))
    summary.update(source_unchanged_in_gimp=read_pixels(source, RGBA) == source_before,
                   selection_unchanged=read_pixels(image.get_selection(), GRAY) == selection,
                   undo_enabled_after=image.undo_is_enabled(), dirty_after=image.is_dirty(),
                   selected_layers=[layer.get_id() for layer in image.get_selected_layers()])
    summary["exported"] = Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image,
                                         Gio.File.new_for_path(str(io / "composite.png")), None)
    summary["repeats"] = []
    for k, changes in enumerate(job.get("repeats", [])):
        known = [layer.get_id() for layer in image.get_layers()]
        status, message, seconds = run_procedure(image, source, {**job["arguments"], **changes})
        summary["repeats"].append({"status": status, "message": message, "procedure_seconds": round(seconds, 3),
                                   "new_layers": dump_new_layers(image, known, io, f"repeat_{k}_layer")})
    image.delete()
    print(SUMMARY_PREFIX, json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
