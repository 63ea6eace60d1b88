"""What each fill mode's pre-fill gives a prompt engine (issue 11): one picture, made through the daemon's worker.

    .venv/bin/python bench/fill_modes.py [PATH]   (default: docs/images/fill-modes.png)

A diffusion engine repaints the hole of its input, and what that hole holds first shapes what it paints
(:mod:`daemon.prefill`). This script shows it on one of scikit-image's photos (:data:`PHOTO`): an ellipse is selected
over the cat's face (:data:`HOLE`), and a request in each fill mode is run by :func:`daemon.worker.run_job` on
:class:`InputProbe`, an engine that takes a prompt and returns its input unchanged, keeping it: what the worker's
pre-fill gave the engine, in the context crop the client sends (:func:`removal.run_request`, the default grow,
feather and padding; colour match off, so that the picture is the pre-fill alone). The modes:

- ``fill``: the hole holds a blur of its surroundings (:func:`daemon.prefill.fill`);
- ``remove``: the hole holds the daemon's removal engine's fill (:meth:`daemon.server.DaemonServer.remover`: MI-GAN,
  or OpenCV's Telea while MI-GAN's weights are absent, which the caption then says);
- ``expand``: the canvas grown by :data:`EXPAND_PIXELS` on the right (:func:`protocol.expand_canvas`), the new area
  transparent and selected, as Generative Expand sends it; the hole holds its border's colours continued and blurred
  (:func:`daemon.prefill.expand`).

The picture's panels, each :data:`PANEL_HEIGHT` px high: the context crop with the selection shown, and the fill and
remove pre-fills in it; the whole grown canvas (its new area as a checkerboard), and the same with the expand mode's
context crop, pre-filled, in its place.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
from gimp_inpaint.daemon.engines.base import WORKER_OPTIONS, CancelCheck, Engine, EngineJob, ProgressCallback
from gimp_inpaint.daemon.engines.migan import MiGanEngine
from gimp_inpaint.protocol import FILL_OPTIONS, EngineInfo, FillMode, FillOptions, expand_canvas
from PIL import Image, ImageDraw
from removal import HOLE_COLOUR, ROOT, SEED, context_window, daemon_remover, font, run_request
from skimage import data

PHOTO = "chelsea"
"""The photo (``skimage.data.chelsea``, 451×300): a cat, whose face is selected."""

HOLE = ((265, 145), (62, 50), 0.0)
"""The selection: an ellipse's centre (x, y), semi-axes and angle (pixels, degrees; ``cv2.ellipse``) over the face."""

EXPAND_PIXELS = 128
"""Pixels the canvas grows by on the right for the expand mode."""

PANEL_HEIGHT = 220
"""Height (pixels) each panel is scaled to (Pillow, Lanczos)."""

CHECKER = 12
"""Side (pixels) of the checkerboard's squares that show transparent canvas."""


class InputProbe(Engine):
    """A prompt engine that paints nothing: it keeps a copy of each input it is given (H×W×3 uint8 RGB, the worker's
    pre-fill in its hole) in :attr:`inputs` and returns it unchanged."""

    name = "probe"

    def __init__(self) -> None:
        self.inputs: list[np.ndarray] = []

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, kind="bench", model="input probe", available=True, uses_prompt=True,
                          detail="returns its input", options=[name for name in FILL_OPTIONS if name in WORKER_OPTIONS])

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.inputs.append(job.image.copy())
        return job.image.copy()


def engine_input(mode: FillMode, picture: np.ndarray, mask: np.ndarray, remover: Engine) -> np.ndarray:
    """The H×W×3 uint8 RGB context crop that a prompt engine gets for ``mask`` (H×W uint8) of ``picture`` (H×W×4
    uint8 RGBA) in ``mode``, the colour match off, at strength 0.75 (at 1.0 no pre-fill could reach a diffusion
    model's output, and the daemon writes none)."""
    probe = InputProbe()
    run_request(probe, picture, mask, FillOptions(engine=probe.name, seed=SEED, fill_mode=mode, strength=0.75,
                                                  color_match=False), remover)
    (seen,) = probe.inputs
    return seen


def checkerboard(rgba: np.ndarray) -> np.ndarray:
    """H×W×3 uint8: ``rgba`` (H×W×4) over a grey checkerboard of :data:`CHECKER` px squares (alpha 0 or 255)."""
    rows, columns = np.indices(rgba.shape[:2]) // CHECKER
    board = np.where(((rows + columns) % 2 == 0)[..., None], np.uint8(204), np.uint8(153)).repeat(3, axis=2)
    return np.where(rgba[..., 3:] > 0, rgba[..., :3], board)


def panel(pixels: np.ndarray, caption: str) -> Image.Image:
    """``pixels`` (H×W×3 uint8) scaled to :data:`PANEL_HEIGHT` px high, ``caption`` in a white strip above it."""
    width = round(pixels.shape[1] * PANEL_HEIGHT / pixels.shape[0])
    tile = Image.new("RGB", (width, PANEL_HEIGHT + 22), (255, 255, 255))
    tile.paste(Image.fromarray(pixels).resize((width, PANEL_HEIGHT), Image.Resampling.LANCZOS), (0, 22))
    ImageDraw.Draw(tile).text((2, 3), caption, fill=(0, 0, 0), font=font(14))
    return tile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, default=ROOT / "docs" / "images" / "fill-modes.png",
                        help="the PNG to write (default: docs/images/fill-modes.png)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: MI-GAN from the cache only

    from gimp_inpaint.daemon.__main__ import build_engines
    from gimp_inpaint.daemon.config import load_settings

    photo: np.ndarray = getattr(data, PHOTO)()
    height, width = photo.shape[:2]
    picture = cv2.cvtColor(photo, cv2.COLOR_RGB2RGBA)
    hole = np.zeros((height, width), np.uint8)
    cv2.ellipse(hole, *HOLE, 0, 360, 255, thickness=-1)
    remover = daemon_remover(build_engines(load_settings()))
    if remover is None:
        raise RuntimeError("the daemon has no removal engine")
    filled = engine_input(FillMode.FILL, picture, hole, remover)
    removed = engine_input(FillMode.REMOVE, picture, hole, remover)
    if isinstance(remover, MiGanEngine) and remover.using_fallback:
        removal = "remove: Telea (no MI-GAN weights)"
    else:
        removal = f"remove: {remover.name}"

    canvas = expand_canvas(width, height, right=EXPAND_PIXELS)
    grown = np.zeros((canvas.height, canvas.width, 4), np.uint8)
    grown[canvas.picture.y:canvas.picture.bottom, canvas.picture.x:canvas.picture.right] = picture
    new_area = np.zeros(grown.shape[:2], np.uint8)
    area = canvas.new_area
    new_area[area.y:area.bottom, area.x:area.right] = 255
    expanded = engine_input(FillMode.EXPAND, grown, new_area, remover)

    shown = photo.copy()
    shown[hole > 0] = HOLE_COLOUR
    crop = context_window(hole, FillOptions())
    grown_shown = checkerboard(grown)
    prefilled = grown_shown.copy()
    prefilled[context_window(new_area, FillOptions())] = expanded
    rows = [[panel(shown[crop], "the selection"), panel(filled, "fill: blur of the surroundings"),
             panel(removed, removal)],
            [panel(grown_shown, f"expand: the canvas grown {EXPAND_PIXELS} px to the right"),
             panel(prefilled, "expand: its border continued and blurred")]]
    gap = 8
    figure = Image.new("RGB", (max(sum(tile.width for tile in row) + gap * (len(row) - 1) for row in rows),
                               sum(row[0].height for row in rows) + gap * (len(rows) - 1)), (255, 255, 255))
    top = 0
    for row in rows:
        left = 0
        for tile in row:
            figure.paste(tile, (left, top))
            left += tile.width + gap
        top += row[0].height + gap
    args.path.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.path, optimize=True)
    print(f"{args.path} ({args.path.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
