"""GIMP batch file (issue 12, high bit depth): run ``python-fu-gimp-inpaint`` on an image deeper than 8 bits and
dump the result layers' samples at 16 bits.

Runs inside ``gimp-console``'s ``python-fu-eval`` (see :mod:`batch_inpaint`; no NumPy). ``sys.argv[1]`` is a job
file (JSON) in the I/O folder::

    {"width": 512, "height": 512,
     "pixels": "photo16.raw",               # width × height × 4 samples, R'G'B'A u16, little-endian
     "precision": "u16-non-linear",         # a Gimp.Precision nick the image is converted to first
     "ellipse": [x, y, width, height], "selection_feather": 8.0,
     "runs": [{"engine": "tiny", ...}, …]}  # the procedure's arguments (GIMP names), one run each

It makes an RGB image of that precision holding the pixels (``Gimp.Image.convert_precision``, then the layer's
buffer set as ``R'G'B'A u16``), selects the feathered ellipse, runs the procedure NONINTERACTIVE once per entry of
``runs`` on the photo layer, and writes into the I/O folder (raw, row-major):

- ``source_after.raw``: the photo layer after the runs, ``R'G'B'A u16`` (native order: the host is little-endian);
- ``run_K_layer_N.raw`` / ``run_K_layer_N_mask.raw``: the layers run K added, ``R'G'B'A u16``, and their masks
  (``Y u8``);

and prints ``GIMP_INPAINT_SUMMARY {json}``: GIMP's version, the image's precision, and per run the status, message
and for each new layer its geometry, the encoding of its own format (``Babl.format_get_encoding``) and its
precision as ``Gimp.Drawable.get_format`` says.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp  # noqa: E402  (gi.require_version must come first)
from gimp_harness import SUMMARY_PREFIX  # noqa: E402

PROCEDURE = "python-fu-gimp-inpaint"
DEEP = "R'G'B'A u16"
GRAY = "Y u8"


def read_pixels(drawable: Gimp.Drawable, fmt: str) -> bytes:
    """All of ``drawable``'s pixels in ``fmt``, in its own coordinates."""
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def precision_named(nick: str) -> Gimp.Precision:
    """The ``Gimp.Precision`` whose nick is ``nick`` (``"u16-non-linear"`` is ``U16_NON_LINEAR``, …)."""
    return getattr(Gimp.Precision, nick.upper().replace("-", "_"))


def run_procedure(image: Gimp.Image, layer: Gimp.Layer, arguments: dict) -> tuple[str, str | None]:
    """Run :data:`PROCEDURE` NONINTERACTIVE on ``layer``; returns (status nick, error message)."""
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for name, value in arguments.items():
        config.set_property(name, value)
    result = procedure.run(config)
    status = result.index(0)
    message = result.index(1) if status != Gimp.PDBStatusType.SUCCESS and result.length() > 1 else None
    return status.value_nick, message


def main() -> None:
    """Do the job described by ``sys.argv[1]`` (see the module docstring)."""
    job_file = Path(sys.argv[1])
    io = job_file.parent
    job = json.loads(job_file.read_text())
    width, height = job["width"], job["height"]
    summary: dict = {"gimp_version": Gimp.version(), "runs": []}

    image = Gimp.Image.new(width, height, Gimp.ImageBaseType.RGB)
    image.convert_precision(precision_named(job["precision"]))
    layer = Gimp.Layer.new(image, "photo", width, height, Gimp.ImageType.RGB_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, 0)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), DEEP, (io / job["pixels"]).read_bytes())
    buffer.flush()
    layer.update(0, 0, width, height)
    image.select_ellipse(Gimp.ChannelOps.REPLACE, *job["ellipse"])
    Gimp.Selection.feather(image, job["selection_feather"])
    (io / "selection.raw").write_bytes(read_pixels(image.get_selection(), GRAY))
    (io / "source_before.raw").write_bytes(read_pixels(layer, DEEP))
    image.set_selected_layers([layer])
    summary.update(precision=image.get_precision().value_nick,
                   source_format=Babl.format_get_encoding(layer.get_format()))

    for k, arguments in enumerate(job["runs"]):
        known = [item.get_id() for item in image.get_layers()]
        status, message = run_procedure(image, layer, arguments)
        added = []
        for n, new in enumerate(item for item in image.get_layers() if item.get_id() not in known):
            (io / f"run_{k}_layer_{n}.raw").write_bytes(read_pixels(new, DEEP))
            mask = new.get_mask()
            if mask is not None:
                (io / f"run_{k}_layer_{n}_mask.raw").write_bytes(read_pixels(mask, GRAY))
            _, x, y = new.get_offsets()
            added.append({"name": new.get_name(), "x": x, "y": y, "width": new.get_width(),
                          "height": new.get_height(), "has_mask": mask is not None,
                          "format": Babl.format_get_encoding(new.get_format())})
        summary["runs"].append({"status": status, "message": message, "new_layers": added})
    (io / "source_after.raw").write_bytes(read_pixels(layer, DEEP))
    image.delete()
    print(SUMMARY_PREFIX, json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
