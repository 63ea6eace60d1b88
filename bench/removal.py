"""Removal benchmark (issue 11): holes cut from real photos, filled by every engine present, scored against the photo.

    .venv/bin/python bench/removal.py [--quick] [--grid PATH] [--config-dir DIR]

The photos are six of scikit-image's bundled colour photos (:data:`PHOTOS`, ``skimage.data``); each gets holes of
three shapes (:data:`SHAPES`: ellipses, thin strokes, rotated rectangles) in three sizes (:data:`SIZES`, the hole's
extent as a share of the photo's short side), :data:`PER_CELL` of each, placed from the fixed seed :data:`SEED`
(:func:`make_holes`), so the ground truth of every hole is the photo itself. A hole's pixels are cut (set to black)
before the fill; nothing of them reaches an engine.

Each fill is what the daemon does with the request a client sends: the context crop of :func:`client.fill.fill_crop`
(the hole's box plus ``grow``, the feather's reach and the default 64 px of padding), run by
:func:`daemon.worker.run_job`, then the variant blended over the cut photo through its blend mask
(:func:`client.imaging.compose`), as the plug-in's layer mask does; pixels beyond the blend mask are the photo's,
exactly. Each engine runs in the settings of :data:`SETTINGS`: the daemon's defaults (grow 4 px, feather 12 px, so
the engine repaints where the feathered blend mask reaches 16 %, about 16 px beyond the hole; colour match on, which
the daemon applies only after an engine that takes a prompt), the same with the colour match off (run only for those
engines: on the others it is the defaults), and the hole alone (grow 0, feather 0, no colour match).

The contenders (:func:`contenders`), interleaved per hole (the order rotated from hole to hole) after one warm-up
fill each:

- ``Telea``: the daemon's ``opencv`` engine (:class:`daemon.engines.opencv_engine.OpenCVEngine`, ``cv2.inpaint``
  with ``cv2.INPAINT_TELEA``);
- ``Navier-Stokes``: ``cv2.inpaint`` with ``cv2.INPAINT_NS`` (Bertalmio, Bertozzi and Sapiro, CVPR 2001), radius 3
  as the engine's, on the whole crop, a classical baseline;
- ``FSR fast``: opencv-contrib's ``cv2.xphoto.inpaint`` with ``INPAINT_FSR_FAST`` (frequency-selective
  reconstruction: Seiler, Jonscher, Schöberl and Kaup, IEEE TIP 2015; Genser, Seiler, Schilling, Heiland and Kaup,
  2018), only when ``cv2.xphoto`` is importable (opencv-contrib-python(-headless) installed, or put first on
  ``PYTHONPATH``); a line says it is absent otherwise;
- ``MI-GAN``: the daemon's ``migan`` engine (:mod:`daemon.engines.migan`) when its ONNX file is in the Hugging Face
  cache (the script never downloads: ``HF_HUB_OFFLINE=1`` unless set otherwise); else a line says where it looked
  and how to fetch it;
- every diffusion model of the daemon's registry (``daemon.toml``, or the daemon's default models when none is
  configured) whose weights are local (a folder or file, or ``model_index.json`` in the Hugging Face cache), run with
  the daemon's removal engine (:func:`daemon_remover`: ``migan``, which fills with Telea while its weights are
  absent) as its remove mode's pre-fill; a line names each one that is not.

Scores, for each fill, against the photo (:func:`score`): PSNR (``skimage.metrics.peak_signal_noise_ratio``, data
range 255, over the region's pixels and channels) and SSIM (``skimage.metrics.structural_similarity``, its default
7×7 window, RGB channels, the mean of its full map over the region) in the hole and in the band :data:`BAND` pixels
wide around it (where seams show), and seconds: the engine's own call (the variant's ``inference`` timing) and the
whole job in the worker (masks, engine, colour match, compositing). The tables give the means over the holes; a
second table the hole PSNR per shape and size, for the defaults and the hole alone.

It prints the Markdown tables and writes ``bench/results/removal-<UTC date-time>.md`` (``…-quick.md`` with
``--quick``) with the date, the command, the versions (Python, NumPy, OpenCV, onnxruntime, scikit-image, Pillow),
the git commit, the machine and the load average before and after. ``--grid PATH`` also draws a picture grid
(:func:`draw_grid`): rows of holes from :data:`GRID_HOLES`, columns the photo with its hole, each contender's fill
with the daemon's defaults, captioned with that fill's hole PSNR, and the ground truth. ``--quick`` (two photos, one
hole of each shape and size) only checks that everything runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from gimp_inpaint.client.fill import fill_crop
from gimp_inpaint.client.imaging import array_from_plane, compose, mask_bounds, plane_from_array
from gimp_inpaint.daemon.engines.base import WORKER_OPTIONS, CancelCheck, Engine, EngineJob, ProgressCallback
from gimp_inpaint.protocol import FILL_OPTIONS, EditorOptions, EngineInfo, Error, FillOptions, InpaintRequest, Variant
from PIL import Image, ImageDraw, ImageFont
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from speed import machine, quiet_hugging_face, read_loadavg, versions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": data.astronaut,
    "chelsea": data.chelsea,
    "coffee": data.coffee,
    "rocket": data.rocket,
    "motorcycle": lambda: data.stereo_motorcycle()[0],
    "immunohistochemistry": data.immunohistochemistry,
}
"""The photos, H×W×3 uint8 RGB, all bundled with scikit-image (no download): the astronaut Eileen Collins (512×512),
the cat Chelsea (451×300), a cup of coffee (600×400), a rocket launch (640×427), the left view of the Middlebury
stereo motorcycle (741×500) and a stained tissue under a microscope (512×512)."""

QUICK_PHOTOS = ("astronaut", "coffee")
"""The photos of ``--quick``."""

SHAPES = ("ellipse", "stroke", "rectangle")
"""The hole shapes (:func:`hole_mask`)."""

SIZES = {"small": 0.08, "medium": 0.16, "large": 0.28}
"""A hole's extent (an ellipse's long axis, a rectangle's long side, a stroke's span) as a share of the photo's short
side: 41, 82 and 143 px on the 512 px astronaut, 24, 48 and 84 px on the 300 px cat."""

PER_CELL = 2
"""Holes of each shape and size per photo (1 with ``--quick``): 6 photos × 3 shapes × 3 sizes × 2 = 108 holes."""

SEED = 11
"""The seed of the holes' places and proportions (:func:`make_holes`; issue 11), and the fills' seed."""

BAND = 8
"""Width (pixels) of the band scored around each hole: the photo's pixels within this (Euclidean) distance of it."""

EDGE_MARGIN = BAND + 8
"""Pixels kept between a hole's band and the photo's border, so that every band is whole."""

SSIM_REACH = 3
"""Pixels SSIM's 7×7 window reaches from its centre: the map is computed on the band's box widened by this, where
every scored pixel's window lies inside the box, so its values are those of the whole photo's map."""

SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "colour match off": {"color_match": False},
    "hole only": {"grow": 0, "feather": 0, "color_match": False},
}
"""The options each engine runs with, as changes to the daemon's defaults (:class:`protocol.FillOptions`): the
defaults (grow 4 px, feather 12 px, so the engine repaints a ring about 16 px wide around the hole, which the blend
mask mixes with the photo; colour match on, applied after engines that take a prompt only); the same with the colour
match off; and the engine on the hole alone
(no growth, no feather, no colour match: the band keeps the photo's pixels, so its PSNR is infinite and only its
SSIM, whose windows straddle the hole's edge, sees the seam)."""

GRID_HOLES = (("astronaut", "ellipse", "large"), ("chelsea", "rectangle", "large"), ("coffee", "stroke", "medium"),
              ("motorcycle", "ellipse", "medium"))
"""The picture grid's rows: the first hole of each (photo, shape, size) that the run has."""

GRID_CELL = 176
"""Side (pixels) of a picture grid's cell: a square crop around the hole, scaled with Pillow's Lanczos filter."""

HOLE_COLOUR = (255, 0, 255)
"""The colour the grid shows a hole's pixels in."""


# --------------------------------------------------------------------------------------------- holes


@dataclass(frozen=True)
class Hole:
    """One hole: its photo's name, shape, size name, number within its cell, and its H×W uint8 mask (255 = hole)."""

    photo: str
    shape: str
    size: str
    number: int
    mask: np.ndarray = field(repr=False)

    @property
    def name(self) -> str:
        return f"{self.photo} {self.shape} {self.size} {self.number}"


def hole_mask(shape: str, height: int, width: int, centre: tuple[float, float], extent: float,
              rng: np.random.Generator) -> np.ndarray:
    """An H×W uint8 mask (255 inside) of one hole of ``shape`` centred at ``centre`` (x, y, pixels), ``extent`` px
    across:

    - ``ellipse``: long semi-axis ``extent / 2``, short one 0.4–1 × that, a random angle (``cv2.ellipse``);
    - ``stroke``: a polyline of three segments of ``extent / 3`` each, turning by up to ±1 rad at each joint, its
      bounding box centred, ``max(3, extent / 8)`` px wide (``cv2.polylines``);
    - ``rectangle``: ``extent × (0.4–1 × extent)``, at a random angle (``cv2.boxPoints``, ``cv2.fillPoly``).

    Raises:
        ValueError: an unknown shape.
    """
    mask = np.zeros((height, width), np.uint8)
    angle = rng.uniform(0.0, 180.0)
    if shape == "ellipse":
        axes = (round(extent / 2), round(extent / 2 * rng.uniform(0.4, 1.0)))
        cv2.ellipse(mask, (round(centre[0]), round(centre[1])), axes, angle, 0, 360, 255, thickness=-1)
    elif shape == "stroke":
        heading = np.radians(angle)
        points = [np.zeros(2)]
        for _ in range(3):
            heading += rng.uniform(-1.0, 1.0)
            points.append(points[-1] + extent / 3 * np.array([np.cos(heading), np.sin(heading)]))
        path = np.array(points)
        path += np.array(centre) - (path.min(axis=0) + path.max(axis=0)) / 2
        cv2.polylines(mask, [np.round(path).astype(np.int32)], isClosed=False, color=255,
                      thickness=max(3, round(extent / 8)))
    elif shape == "rectangle":
        box = cv2.boxPoints((centre, (extent, extent * rng.uniform(0.4, 1.0)), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 255)
    else:
        raise ValueError(f"unknown hole shape {shape!r}; known: {', '.join(SHAPES)}")
    return mask


def make_holes(photo: str, image: np.ndarray, per_cell: int) -> list[Hole]:
    """``per_cell`` holes of each shape and size (:data:`SHAPES`, :data:`SIZES`) for ``image`` (H×W×3), from a
    generator seeded with (:data:`SEED`, the photo's place in :data:`PHOTOS`): the same holes in every run. Each is
    centred uniformly where its extent's circle (√2 × the extent, a rotated rectangle's diagonal), its band and
    :data:`EDGE_MARGIN` fit inside the photo."""
    height, width = image.shape[:2]
    rng = np.random.default_rng([SEED, list(PHOTOS).index(photo)])
    holes = []
    for shape, (size, share), number in itertools.product(SHAPES, SIZES.items(), range(per_cell)):
        extent = share * min(height, width)
        reach = extent / np.sqrt(2) + EDGE_MARGIN
        centre = (rng.uniform(reach, width - reach), rng.uniform(reach, height - reach))
        holes.append(Hole(photo, shape, size, number, hole_mask(shape, height, width, centre, extent, rng)))
    return holes


def band_mask(hole: np.ndarray) -> np.ndarray:
    """The H×W uint8 band (255) of pixels outside ``hole`` within :data:`BAND` px of it (a disc's ``cv2.dilate``)."""
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BAND + 1, 2 * BAND + 1))
    return cv2.subtract(cv2.dilate(hole, disc), hole)


def cut(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The H×W×4 uint8 RGBA picture a fill starts from: ``image`` (H×W×3) opaque, its hole's pixels black."""
    rgba = cv2.cvtColor(image, cv2.COLOR_RGB2RGBA)
    rgba[hole > 0, :3] = 0
    return rgba


# --------------------------------------------------------------------------------------------- contenders


class FunctionEngine(Engine):
    """A prompt-less engine around one function of (H×W×3 uint8 RGB, H×W uint8 mask, 255 = repaint) → H×W×3 uint8
    RGB, so that a bare OpenCV method is composited by the worker as the daemon's engines are."""

    def __init__(self, name: str, model: str, function: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        self.name = name
        self.model = model
        self.function = function

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, kind="bench", model=self.model, available=True, uses_prompt=False,
                          detail=self.model, options=[option for option in FILL_OPTIONS if option in WORKER_OPTIONS])

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        return self.function(job.image, job.mask)


def navier_stokes(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``cv2.inpaint`` with ``cv2.INPAINT_NS`` and the opencv engine's default radius, 3 px."""
    return cv2.inpaint(image, mask, 3, cv2.INPAINT_NS)


def fsr_fast(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """opencv-contrib's ``cv2.xphoto.inpaint`` with ``INPAINT_FSR_FAST``, which takes BGR and a mask of the *known*
    pixels (its documentation: "non-zero pixels indicate valid image area")."""
    xphoto = cv2.xphoto  # type: ignore[attr-defined]  # opencv-contrib only
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    result = np.empty_like(bgr)
    xphoto.inpaint(bgr, cv2.bitwise_not(mask), result, xphoto.INPAINT_FSR_FAST)
    return cv2.cvtColor(result, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Contender:
    """An engine as the benchmark runs it: its label, the engine, the name of its setting (:data:`SETTINGS`), and the
    removal engine that pre-fills a diffusion engine's remove mode (None for a prompt-less engine, which gets no
    pre-fill)."""

    label: str
    engine: Engine
    setting: str
    remover: Engine | None = None

    @property
    def options(self) -> FillOptions:
        """The daemon's default options but the engine, the seed (:data:`SEED`) and the setting's changes."""
        return FillOptions(engine=self.engine.name, seed=SEED, **SETTINGS[self.setting])

    @property
    def title(self) -> str:
        return f"{self.label}, {self.setting}"


def migan_weights() -> Path | None:
    """The cached path of MI-GAN's ONNX file (:data:`daemon.engines.migan.FILENAME` at its pinned revision) in the
    Hugging Face cache, or None."""
    from gimp_inpaint.daemon.engines import migan
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(migan.REPO_ID, migan.FILENAME, revision=migan.REVISION)
    return Path(found) if isinstance(found, str) else None


def migan_absent() -> str:
    """The line saying that MI-GAN's weights are absent, where the script looked and how to fetch them."""
    from gimp_inpaint.daemon.engines import migan
    from huggingface_hub import constants

    return (f"MI-GAN: absent, its weights are not in the Hugging Face cache ({constants.HF_HUB_CACHE}: "
            f"`{migan.FILENAME}` of `{migan.REPO_ID}` at revision `{migan.REVISION}`). Fetch them on a machine with "
            f"network with `hf download {migan.REPO_ID} {migan.FILENAME} --revision {migan.REVISION}`, or by one "
            "fill with the daemon's `migan` engine (it downloads them on first use), then rerun.")


def local_diffusion(model: str) -> str:
    """Why a diffusers engine's ``model`` (:attr:`daemon.registry.ModelSpec.model`) is not local, or "" when it is: a
    local folder or file, or a Hub id whose ``model_index.json`` is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    if Path(model).expanduser().exists():
        return ""
    if isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        return ""
    return f"`{model}` is neither a local path nor in the Hugging Face cache"


def daemon_remover(engines: Sequence[Engine]) -> Engine | None:
    """The removal engine the daemon gives a job (:meth:`daemon.server.DaemonServer.remover`): the first of
    ``engines`` that is available and takes no prompt (``migan``, which fills with Telea while its weights are
    absent, else ``opencv``)."""
    return next((engine for engine in engines if not (info := engine.info()).uses_prompt and info.available), None)


def contenders(config_dir: Path | None) -> tuple[list[Contender], list[str]]:
    """The contenders present here (each engine in every setting of :data:`SETTINGS`, but "colour match off" only
    for an engine that takes a prompt: the daemon never colour-matches the others) and a line for each one absent.

    The daemon's own engines come from :func:`daemon.__main__.build_engines` on the daemon's settings
    (``config_dir``, or the daemon's default folder), so they are the ones a fill would use.
    """
    from gimp_inpaint.daemon.__main__ import build_engines
    from gimp_inpaint.daemon.config import load_settings
    from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
    from gimp_inpaint.daemon.engines.migan import MiGanEngine
    from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine

    settings = load_settings(config_dir)
    engines = build_engines(settings)
    telea = next(engine for engine in engines if isinstance(engine, OpenCVEngine))
    migan = next(engine for engine in engines if isinstance(engine, MiGanEngine))
    present: list[tuple[str, Engine, Engine | None]] = [
        ("Telea", telea, None),
        ("Navier-Stokes", FunctionEngine("navier-stokes", "cv2.inpaint (cv2.INPAINT_NS, radius 3)", navier_stokes),
         None)]
    absent: list[str] = []
    if hasattr(cv2, "xphoto"):
        present.append(("FSR fast", FunctionEngine("fsr-fast", "cv2.xphoto.inpaint (INPAINT_FSR_FAST)", fsr_fast),
                        None))
    else:
        absent.append(f"FSR fast: absent, `cv2.xphoto` is not in this OpenCV ({cv2.__file__}); install "
                      "opencv-contrib-python-headless (or put it first on PYTHONPATH) to run it.")
    if migan_weights() is not None:
        migan.load()
        if migan.using_fallback:
            raise RuntimeError(f"MI-GAN's weights are cached but the engine fell back to OpenCV: {migan.info()}")
        present.append(("MI-GAN", migan, None))
    else:
        absent.append(migan_absent())
    diffusion = [engine for engine in engines if isinstance(engine, DiffusersEngine)]
    for engine in diffusion:
        missing = local_diffusion(engine.model)
        if missing:
            absent.append(f"diffusion `{engine.name}`: absent, {missing}.")
        else:
            present.append((f"{engine.name} (remove mode)", engine, daemon_remover(engines)))
    if not diffusion:
        absent.append(f"diffusion: absent, no model in the daemon's registry ({settings.config_dir}) and diffusers "
                      "is not installed.")
    return [Contender(label, engine, setting, pre_fill) for label, engine, pre_fill in present
            for setting in SETTINGS if engine.info().uses_prompt or setting != "colour match off"], absent


# --------------------------------------------------------------------------------------------- fills and scores


@dataclass(frozen=True)
class Fill:
    """One fill: the H×W×3 uint8 RGB photo with the hole filled and composited, the engine call's seconds and the
    whole job's in the worker."""

    result: np.ndarray
    engine_seconds: float
    job_seconds: float


def context_window(mask: np.ndarray, options: FillOptions) -> tuple[slice, slice]:
    """The (rows, columns) of the context crop a client sends for ``mask`` (H×W uint8, non-zero = selected) with
    ``options``: :func:`client.fill.fill_crop` with the default :class:`protocol.EditorOptions` (64 px of padding).

    Raises:
        ValueError: the mask is empty.
    """
    bounds = mask_bounds(mask)
    if bounds is None:
        raise ValueError("the mask selects nothing")
    crop = fill_crop(bounds, mask.shape[1], mask.shape[0], options, EditorOptions())
    return slice(crop.y, crop.bottom), slice(crop.x, crop.right)


def run_request(engine: Engine, picture: np.ndarray, mask: np.ndarray, options: FillOptions,
                remover: Engine | None = None) -> tuple[Variant, float]:
    """The request a client sends for ``mask`` (H×W uint8, 255 = selected) of ``picture`` (H×W×4 uint8 RGBA), on its
    context crop (:func:`context_window`), run by
    :func:`daemon.worker.run_job` on ``engine`` (``remover``: the daemon's removal engine); (its one variant, the
    job's seconds).

    Raises:
        ValueError: the mask is empty.
        RuntimeError: the job ended in an :class:`protocol.Error`.
    """
    from gimp_inpaint.daemon.worker import run_job

    window = context_window(mask, options)
    request = InpaintRequest(job_id="bench", x=window[1].start, y=window[0].start,
                             image=plane_from_array(picture[window]), mask=plane_from_array(mask[window]),
                             options=options)
    variants: list[Variant] = []
    start = time.perf_counter()
    outcome = run_job(request, engine, lambda step, total, stage: None, lambda: False, variants.append,
                      remover=remover)
    seconds = time.perf_counter() - start
    if isinstance(outcome, Error):
        raise RuntimeError(f"{engine.name}: {outcome.code.value}: {outcome.message}")
    (variant,) = variants
    return variant, seconds


def daemon_fill(contender: Contender, image: np.ndarray, hole: np.ndarray) -> Fill:
    """Fill ``hole`` (H×W uint8) of ``image`` (H×W×3 uint8 RGB), its pixels cut first (:func:`cut`), as the daemon
    and the plug-in do: :func:`run_request`, then the variant blended over the cut photo through its blend mask
    (:func:`client.imaging.compose`).

    Raises:
        RuntimeError: the job ended in an :class:`protocol.Error`.
    """
    picture = cut(image, hole)
    variant, job_seconds = run_request(contender.engine, picture, hole, contender.options, contender.remover)
    box = (slice(variant.y, variant.y + variant.image.height), slice(variant.x, variant.x + variant.image.width))
    picture[box] = compose(picture[box], array_from_plane(variant.image), array_from_plane(variant.mask))
    return Fill(np.ascontiguousarray(picture[..., :3]), variant.timings["inference"], job_seconds)


@dataclass(frozen=True)
class Score:
    """One fill's scores: PSNR (dB) and SSIM in the hole and in its band, and its seconds."""

    hole_psnr: float
    hole_ssim: float
    band_psnr: float
    band_ssim: float
    engine_seconds: float
    job_seconds: float


def region_scores(truth: np.ndarray, result: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, mean SSIM) of ``result`` against ``truth`` (H×W×3 uint8) over ``region`` (H×W uint8, non-zero):
    ``peak_signal_noise_ratio`` of the region's pixels (data range 255), and ``structural_similarity``'s full map
    (7×7 window, channels averaged) averaged over them, computed on the region's box widened by
    :data:`SSIM_REACH`."""
    inside = region > 0
    with np.errstate(divide="ignore"):  # a region left exactly as it was: infinite PSNR, no warning
        psnr = float(peak_signal_noise_ratio(truth[inside], result[inside], data_range=255))
    x, y, w, h = cv2.boundingRect(region)
    box = (slice(max(y - SSIM_REACH, 0), y + h + SSIM_REACH), slice(max(x - SSIM_REACH, 0), x + w + SSIM_REACH))
    _, ssim_map = structural_similarity(truth[box], result[box], data_range=255, channel_axis=2, full=True)
    return psnr, float(ssim_map[inside[box]].mean())


def score(truth: np.ndarray, fill: Fill, hole: np.ndarray) -> Score:
    """The scores of ``fill`` of ``hole`` (H×W uint8) against the photo ``truth`` (H×W×3 uint8)."""
    hole_psnr, hole_ssim = region_scores(truth, fill.result, hole)
    band_psnr, band_ssim = region_scores(truth, fill.result, band_mask(hole))
    return Score(hole_psnr, hole_ssim, band_psnr, band_ssim, fill.engine_seconds, fill.job_seconds)


# --------------------------------------------------------------------------------------------- the grid


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (its scalable default font where Pillow has FreeType)."""
    return ImageFont.load_default(size=size)


def square_around(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """A square window around ``mask``'s box (H×W uint8) widened by ``margin`` px, inside the picture (shifted, and
    shrunk only when the picture is narrower)."""
    x, y, w, h = cv2.boundingRect(mask)
    side = min(max(w, h) + 2 * margin, *mask.shape)
    left = int(np.clip(x + w / 2 - side / 2, 0, mask.shape[1] - side))
    top = int(np.clip(y + h / 2 - side / 2, 0, mask.shape[0] - side))
    return slice(top, top + side), slice(left, left + side)


def cell(pixels: np.ndarray, caption: str = "") -> Image.Image:
    """A :data:`GRID_CELL`-px square tile of ``pixels`` (a square H×W×3 uint8 crop; Lanczos), ``caption`` on a dark
    strip at its bottom."""
    tile = Image.fromarray(pixels).resize((GRID_CELL, GRID_CELL), Image.Resampling.LANCZOS)
    if caption:
        draw = ImageDraw.Draw(tile)
        draw.rectangle((0, GRID_CELL - 18, GRID_CELL, GRID_CELL), fill=(0, 0, 0))
        draw.text((4, GRID_CELL - 16), caption, fill=(255, 255, 255), font=font(12))
    return tile


def draw_grid(path: Path, holes: Sequence[tuple[Hole, np.ndarray]], fills: dict[tuple[str, str], tuple[Fill, Score]],
              shown: Sequence[Contender]) -> None:
    """Write the picture grid to ``path`` (PNG): a header of column names, then one row per hole of ``holes``
    ((hole, its photo)): the photo with the hole in :data:`HOLE_COLOUR`, each of ``shown``'s fills (from ``fills``,
    keyed by (hole name, contender title)) captioned with its hole PSNR, and the photo itself."""
    columns = ["hole", *(contender.label for contender in shown), "ground truth"]
    header = 24
    grid = Image.new("RGB", (GRID_CELL * len(columns), header + GRID_CELL * len(holes)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for column, name in enumerate(columns):
        draw.text((column * GRID_CELL + 4, 5), name, fill=(0, 0, 0), font=font(14))
    for row, (hole, photo) in enumerate(holes):
        window = square_around(hole.mask, 24)
        shown_hole = photo.copy()
        shown_hole[hole.mask > 0] = HOLE_COLOUR
        tiles = [cell(shown_hole[window], f"{hole.photo}, {hole.size} {hole.shape}")]
        for contender in shown:
            fill, result = fills[hole.name, contender.title]
            tiles.append(cell(fill.result[window], f"hole {result.hole_psnr:.1f} dB"))
        tiles.append(cell(photo[window]))
        for column, tile in enumerate(tiles):
            grid.paste(tile, (column * GRID_CELL, header + row * GRID_CELL))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)


# --------------------------------------------------------------------------------------------- report


def decibels(values: Sequence[float]) -> str:
    """The mean of PSNR values in dB, two decimals; "∞" when some is infinite (a region left exactly as it was)."""
    average = statistics.fmean(values)
    return "∞" if np.isinf(average) else f"{average:.2f}"


GROUPED = ("defaults", "hole only")
"""The settings whose hole PSNR the second table gives per shape and size."""


def tables(run: Sequence[Contender], scores: dict[str, list[tuple[Hole, Score]]]) -> list[str]:
    """The Markdown tables: the means per contender, then the hole PSNR per shape and size of the
    :data:`GROUPED` settings."""
    lines = ["| engine | setting | hole PSNR (dB) | hole SSIM | band PSNR (dB) | band SSIM | engine s/fill "
             "| job s/fill |", "|---|---|---|---|---|---|---|---|"]
    for contender in run:
        rows = [result for _, result in scores[contender.title]]
        lines.append(f"| {contender.label} | {contender.setting} | {decibels([r.hole_psnr for r in rows])} "
                     f"| {statistics.fmean(r.hole_ssim for r in rows):.3f} | {decibels([r.band_psnr for r in rows])} "
                     f"| {statistics.fmean(r.band_ssim for r in rows):.3f} "
                     f"| {statistics.fmean(r.engine_seconds for r in rows):.3f} "
                     f"| {statistics.fmean(r.job_seconds for r in rows):.3f} |")
    grouped = [contender for contender in run if contender.setting in GROUPED]
    lines += ["", f"Hole PSNR (dB) per shape and size (the mean of each group's holes; settings "
              f"{' and '.join(GROUPED)}):", "",
              "| hole (count) | " + " | ".join(f"{contender.label}, {contender.setting}" for contender in grouped)
              + " |", "|---|" + "---|" * len(grouped)]
    for shape, size in itertools.product(SHAPES, SIZES):
        groups = [[result.hole_psnr for hole, result in scores[contender.title]
                   if (hole.shape, hole.size) == (shape, size)] for contender in grouped]
        lines.append(f"| {shape}, {size} ({len(groups[0])}) | " + " | ".join(map(decibels, groups)) + " |")
    return lines


def versions_line(diffusion: bool) -> tuple[str, str]:
    """("Versions: …", the git commit) for the results' header; torch and diffusers only when a diffusion model ran."""
    found = versions()
    shown = {"Python": platform.python_version(), "NumPy": found["NumPy"],
             "OpenCV": cv2.__version__ + (" with contrib (cv2.xphoto)" if hasattr(cv2, "xphoto") else "")}
    for label, package in (("onnxruntime", "onnxruntime"), ("scikit-image", "scikit-image"), ("Pillow", "pillow"),
                           ("huggingface_hub", "huggingface_hub")):
        try:
            shown[label] = metadata.version(package)
        except metadata.PackageNotFoundError:
            shown[label] = "not installed"
    if diffusion:
        shown.update({"torch": found["torch"], "diffusers": found["diffusers"]})
    return "Versions: " + ", ".join(f"{label} {version}" for label, version in shown.items()), found["commit"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{len(QUICK_PHOTOS)} photos, one hole of each shape and size: check that it runs")
    parser.add_argument("--grid", type=Path, metavar="PATH", help="also write the picture grid (PNG) there")
    parser.add_argument("--config-dir", type=Path, metavar="DIR",
                        help="the daemon's configuration folder whose daemon.toml lists the diffusion models "
                             "(default: the daemon's own)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: never download here

    now = datetime.now(timezone.utc)
    load_before = read_loadavg()
    started = time.monotonic()
    run, absent = contenders(args.config_dir)
    diffusion = any(contender.engine.info().uses_prompt for contender in run)
    if diffusion:
        quiet_hugging_face()
    versions_text, commit = versions_line(diffusion)
    names = QUICK_PHOTOS if args.quick else tuple(PHOTOS)
    photos = {name: PHOTOS[name]() for name in names}
    holes = [(hole, photos[name]) for name in names
             for hole in make_holes(name, photos[name], 1 if args.quick else PER_CELL)]
    quick = " (--quick: two photos, not a measurement)" if args.quick else ""
    python_path = f" with PYTHONPATH={os.environ['PYTHONPATH']}" if os.environ.get("PYTHONPATH") else ""
    machine_line = f"Machine: {machine()}; load average (1, 5, 15 min, running/total tasks) {load_before} at the start"
    method = (f"Holes: {len(holes)} ({len(names)} photos: {', '.join(names)}; {len(SHAPES)} shapes × {len(SIZES)} "
              f"sizes × {1 if args.quick else PER_CELL}, seed {SEED}); band {BAND} px around each hole. Each fill: "
              "the client's context crop, `daemon.worker.run_job` with the default options (grow 4, feather 12, "
              f"seed {SEED}; colour match as shown), the variant blended over the cut photo through its blend mask "
              "(`client.imaging.compose`). Engines interleaved per hole after one warm-up fill each; means over the "
              "holes.")
    header = [f"# bench/removal.py, {now:%Y-%m-%d %H:%M} UTC{quick}", "",
              f"Command: `{' '.join(['bench/removal.py', *sys.argv[1:]])}`{python_path}.", "",
              f"{versions_text}; commit {commit}.", "", machine_line, "", method, "", "Absent here:", "",
              *[f"- {line}" for line in absent or ["nothing"]]]
    print("\n".join(header), flush=True)
    print(f"\nrunning {len(run)} contenders × {len(holes)} holes …", flush=True)

    first_hole, first_photo = holes[0]
    for contender in run:  # warm-up: loads, first calls
        daemon_fill(contender, first_photo, first_hole.mask)
    grid_rows = [next((hole, photo) for hole, photo in holes if (hole.photo, hole.shape, hole.size) == wanted)
                 for wanted in GRID_HOLES if any((h.photo, h.shape, h.size) == wanted for h, _ in holes)]
    in_grid = {hole.name for hole, _ in grid_rows}
    scores: dict[str, list[tuple[Hole, Score]]] = {contender.title: [] for contender in run}
    kept: dict[tuple[str, str], tuple[Fill, Score]] = {}
    for index, (hole, photo) in enumerate(holes):
        shift = index % len(run)
        for contender in [*run[shift:], *run[:shift]]:
            fill = daemon_fill(contender, photo, hole.mask)
            result = score(photo, fill, hole.mask)
            scores[contender.title].append((hole, result))
            if hole.name in in_grid:
                kept[hole.name, contender.title] = (fill, result)
        if (index + 1) % 9 == 0:
            print(f"  {index + 1}/{len(holes)} holes, load average {read_loadavg()}", flush=True)

    load_after = read_loadavg()
    header[header.index(machine_line)] += f", {load_after} at the end; {time.monotonic() - started:.0f} s in all."
    text = "\n".join([*header, "", "## Results", "", *tables(run, scores)]) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"removal-{now:%Y-%m-%dT%H%MZ}{'-quick' if args.quick else ''}.md"
    path.write_text(text, encoding="utf-8")
    print("\n" + "\n".join(tables(run, scores)))
    print(f"\nload average {load_before} at the start, {load_after} at the end")
    print(f"results: {path.relative_to(ROOT)}")
    if args.grid:
        draw_grid(args.grid, grid_rows, kept, [contender for contender in run if contender.setting == "defaults"])
        print(f"grid: {args.grid} ({args.grid.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
