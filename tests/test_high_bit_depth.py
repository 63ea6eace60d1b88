"""High bit depth in the daemon (issue 12): 16-bit crops through the compositing, the pre-fills, the colour match, the
worker (OpenCV at 8 bits, the tiny diffusion pipelines at 16) and the real daemon.

The pictures are scikit-image photos made 16-bit the way a deep image holds them: each 8-bit level × 257 plus a
smooth ramp of 0…256, so almost no sample is an 8-bit level (a multiple of 257). A fill that holds values that are
not multiples of 257 was computed deeper than 8 bits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from gimp_inpaint.daemon import prefill
from gimp_inpaint.daemon.compositing import (
    LEVEL_STEP,
    blend_mask,
    grow_mask,
    overlay,
    repaint_mask,
    rgb_channels,
    to_8_bits,
    to_16_bits,
    transparency_alpha,
)
from gimp_inpaint.daemon.engines.base import CancelCheck, EngineJob, LoadProgress, ProgressCallback
from gimp_inpaint.daemon.engines.migan import MiGanEngine
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.worker import request_image, run_job
from gimp_inpaint.protocol import FillOptions, InpaintRequest, Plane, Result, Variant
from skimage import data

RAMP = 256
"""The largest value the ramp adds to a photo's 16-bit samples (:func:`deep`): just under one 8-bit level."""


def deep(rgb: np.ndarray) -> np.ndarray:
    """H×W×C uint8 → uint16: each level × 257 plus a horizontal ramp of 0…:data:`RAMP` (clipped at 65535)."""
    ramp = np.linspace(0, RAMP, rgb.shape[1]).round().astype(np.uint32)[None, :, None]
    return np.minimum(rgb.astype(np.uint32) * LEVEL_STEP + ramp, 65535).astype(np.uint16)


def not_levels(samples: np.ndarray) -> float:
    """The share of ``samples`` (uint16) that are not 8-bit levels (multiples of 257)."""
    return float(np.count_nonzero(samples % LEVEL_STEP)) / samples.size


def fill_not_levels(samples: np.ndarray) -> float:
    """:func:`not_levels` of a fill's samples that are not saturated: a random-weight model drives some to 0 or
    65535, which are levels at any depth (most of the tiny pipelines' fill is not)."""
    between = samples[(samples > 0) & (samples < 65535)]
    assert between.size > samples.size / 2, (between.size, samples.size)
    return not_levels(between)


def cat_crop() -> tuple[np.ndarray, np.ndarray]:
    """The chelsea photo's 160×224 crop of the cat's head as 16-bit RGBA (:func:`deep`, opaque) and an elliptic
    mask (H×W uint8, 255 = fill)."""
    rgb = deep(np.ascontiguousarray(data.chelsea()[40:200, 110:334]))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 65535, np.uint16)])
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (112, 80), (40, 28), 20, 0, 360, 255, -1)
    return rgba, mask


def deep_request(engine: str, rgba: np.ndarray | None = None, job_id: str = "deep", **options: Any) -> InpaintRequest:
    """A request on :func:`cat_crop` (or ``rgba``, 8 or 16-bit) with ``options`` over grow 4 and feather 6."""
    crop, mask = cat_crop()
    pixels = crop if rgba is None else rgba
    height, width = mask.shape
    bits = 8 * pixels.dtype.itemsize
    return InpaintRequest(job_id=job_id, x=7, y=9,
                          image=Plane(width, height, 4, pixels.astype(pixels.dtype.newbyteorder("<")).tobytes(),
                                      bits=bits),
                          mask=Plane(width, height, 1, mask.tobytes()),
                          options=FillOptions(engine=engine, seed=3, grow=4, feather=6, **options))


def variant_pixels(variant: Variant) -> np.ndarray:
    """A variant's image as an H×W×4 array of its depth."""
    dtype = np.uint8 if variant.image.bits == 8 else np.dtype("<u2")
    return np.frombuffer(variant.image.data, dtype).reshape(variant.image.height, variant.image.width, 4)


def box_of(variant: Variant, request: InpaintRequest) -> tuple[slice, slice]:
    top, left = variant.y - request.y, variant.x - request.x
    return slice(top, top + variant.image.height), slice(left, left + variant.image.width)


def run(request: InpaintRequest, engine: Any, remover: Any = None) -> list[Variant]:
    delivered: list[Variant] = []
    outcome = run_job(request, engine, lambda *report: None, lambda: False, delivered.append, remover=remover)
    assert outcome == Result(job_id=request.job_id, num_variants=request.options.num_variants), outcome
    return delivered


def test_levels_convert_exactly_and_16_bits_round_to_the_nearest_level() -> None:
    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_16_bits(levels), levels.astype(np.uint16) * 257)
    assert to_16_bits(levels)[-1] == 65535 and np.array_equal(to_8_bits(to_16_bits(levels)), levels)
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    assert np.array_equal(to_8_bits(every), np.rint(every / 257).astype(np.uint8))  # never halfway: no tie rule
    with pytest.raises(ValueError):
        to_8_bits(levels)
    with pytest.raises(ValueError):
        to_16_bits(every)


def test_the_overlay_at_16_bits_keeps_unmasked_pixels_exact_and_is_the_8_bit_overlay_on_levels() -> None:
    rgba, mask = cat_crop()
    rgba[:20, :30, 3] = 1  # nearly transparent, which 8 bits would round to 0
    rgba[20:40, :30, 3] = 0
    blend = blend_mask(grow_mask(mask, 4), 6)
    generated = deep(np.ascontiguousarray(255 - data.chelsea()[40:200, 110:334]))
    result = overlay(rgba, generated, blend)
    assert result.dtype == np.uint16
    keep = blend == 0
    assert np.array_equal(result[keep], rgba[keep])  # alpha included
    assert not_levels(result[keep][:, :3]) > 0.99
    assert np.array_equal(result[~keep][:, :3], generated[~keep]) and (result[~keep][:, 3] == 65535).all()
    levels = np.ascontiguousarray(data.chelsea()[40:200, 110:334])
    opaque = np.dstack([levels, np.full(mask.shape, 255, np.uint8)])
    assert np.array_equal(overlay(to_16_bits(opaque), to_16_bits(255 - levels), blend),
                          to_16_bits(overlay(opaque, 255 - levels, blend)))
    assert np.array_equal(rgb_channels(rgba), rgba[..., :3])
    with pytest.raises(ValueError):
        overlay(rgba, to_8_bits(generated), blend)


def test_alpha_of_one_in_65535_stays_visible() -> None:
    rgba, mask = cat_crop()
    rgba[:20, :30, 3] = 1
    rgba[20:40, :30, 3] = 0
    alpha = transparency_alpha(rgba)
    assert alpha.dtype == np.uint8 and (alpha[:20, :30] == 255).all() and (alpha[20:40, :30] == 0).all()
    assert (alpha[40:] == 255).all()
    repaint = repaint_mask(np.zeros(mask.shape, np.uint8), alpha)
    assert (repaint[20:40, :30] == 255).all() and not repaint[:20].any() and not repaint[40:].any()
    eight = to_8_bits(rgba)
    assert transparency_alpha(eight).base is not None  # an 8-bit crop's alpha: the view itself
    assert (to_8_bits(rgba)[:20, :30, 3] == 0).all()  # what reducing first would have said


@pytest.mark.parametrize("mode", ["fill", "expand"])
def test_the_prefills_at_16_bits_keep_the_known_pixels_and_follow_the_8_bit_ones(mode: str) -> None:
    rgba, mask = cat_crop()
    rgb = np.ascontiguousarray(rgba[..., :3])
    prefilled = getattr(prefill, mode)(rgb, mask)
    assert prefilled.dtype == np.uint16
    known = mask == 0
    assert np.array_equal(prefilled[known], rgb[known])
    hole = prefilled[~known].astype(np.int64)
    assert hole.min() >= rgb[known].min() and hole.max() <= rgb[known].max()
    eight = getattr(prefill, mode)(to_8_bits(rgb), mask)
    difference = np.abs(hole - eight[~known].astype(np.int64) * 257).mean() / 257
    assert difference < 2, difference  # the same fill, in 8-bit levels
    assert not_levels(prefilled[~known]) > 0.9  # but not rounded to them


def test_a_hole_without_known_pixels_is_neutral_grey_at_16_bits() -> None:
    rgba, mask = cat_crop()
    everything = np.full(mask.shape, 255, np.uint8)
    for mode in (prefill.fill, prefill.expand):
        assert (mode(np.ascontiguousarray(rgba[..., :3]), everything) == prefill.NEUTRAL_GREY * 257).all()


def test_the_colour_match_at_16_bits_restores_the_rings_statistics() -> None:
    rgba, mask = cat_crop()
    blend = blend_mask(grow_mask(mask, 4), 6)
    shifted = rgba[..., :3].astype(np.int64)
    shifted[..., 2] += 40 * 257  # a blue cast
    shifted = np.minimum(shifted, 65535).astype(np.uint16)
    matched = prefill.match_colors(shifted, rgba, blend)
    assert matched.dtype == np.uint16
    outside = blend == 0
    assert np.array_equal(matched[outside], shifted[outside])
    eight = prefill.match_colors(to_8_bits(shifted), to_8_bits(rgba), blend)
    inside = ~outside
    difference = np.abs(matched[inside].astype(np.int64) - eight[inside].astype(np.int64) * 257).mean() / 257
    assert difference < 1.5, difference  # the 8-bit match, at 16 bits
    assert not_levels(matched[inside]) > 0.9
    blue = matched[inside][:, 2].mean() - rgba[..., 2][inside].mean()
    assert abs(blue) < 10 * 257, blue / 257  # the cast is gone (it was 40 levels)


class RecordingOpenCV(OpenCVEngine):
    """The OpenCV engine (Telea), recording the images it is given."""

    def __init__(self, name: str = "opencv") -> None:
        super().__init__(name)
        self.images: list[np.ndarray] = []

    def load(self, progress: LoadProgress | None = None) -> None:
        pass

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.images.append(job.image)
        return super().inpaint(job, progress, cancelled)


def test_an_8_bit_engine_fills_a_16_bit_crop_with_8_bit_levels_and_keeps_the_crops_own_pixels() -> None:
    """OpenCV (EngineInfo.bits 8) gets the crop reduced to 8 bits; the variant is 16-bit: the engine's levels × 257
    where the blend mask is > 0 (the 8-bit request's variant there, exactly), the request's 16-bit pixels elsewhere."""
    engine = RecordingOpenCV()
    assert engine.info().bits == 8 and MiGanEngine().info().bits == 8
    request = deep_request("opencv")
    (variant,) = run(request, engine)
    assert variant.image.bits == 16 and variant.mask.bits == 8 and engine.images[0].dtype == np.uint8
    crop = request_image(request)
    (eight_bit,) = run(deep_request("opencv", to_8_bits(crop), job_id="eight"), engine)
    assert eight_bit.image.bits == 8 and (eight_bit.x, eight_bit.y) == (variant.x, variant.y)
    assert np.array_equal(engine.images[0], engine.images[1])  # the same 8-bit input
    box = box_of(variant, request)
    pixels, blend = variant_pixels(variant), np.frombuffer(variant.mask.data, np.uint8).reshape(
        variant.image.height, variant.image.width)
    keep = blend == 0
    assert np.array_equal(pixels[keep], crop[box][keep]) and not_levels(pixels[keep][:, :3]) > 0.99
    assert not_levels(pixels[~keep]) == 0  # 8-bit levels …
    assert np.array_equal(pixels[~keep], to_16_bits(variant_pixels(eight_bit)[~keep]))  # … the 8-bit fill's


@pytest.fixture(scope="module")
def tiny_engine(tiny_inpaint_model: Path) -> Any:
    from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
    from gimp_inpaint.daemon.pool import ModelPool
    from gimp_inpaint.daemon.registry import ModelSpec, Registry

    return DiffusersEngine(ModelSpec("tiny", str(tiny_inpaint_model)), Registry(), ModelPool(100 * 10**9),
                           device="cpu")


@pytest.mark.diffusers
@pytest.mark.parametrize("color_match", [True, False])
def test_the_tiny_diffusion_model_fills_a_16_bit_crop_at_16_bits(tiny_engine: Any, color_match: bool) -> None:
    """The diffusers engine (EngineInfo.bits 16) gets the 16-bit crop and returns 16 bits: the fill holds values
    that are not 8-bit levels, with the colour match or without; unmasked pixels are the request's; an 8-bit request
    of the same picture gets about the same fill at 8 bits."""
    assert tiny_engine.info().bits == 16
    request = deep_request("tiny", prompt="fur", num_inference_steps=3, color_match=color_match, num_variants=2)
    variants = run(request, tiny_engine)
    crop = request_image(request)
    (eight_bit,) = run(deep_request("tiny", to_8_bits(crop), job_id="eight", prompt="fur", num_inference_steps=3,
                                    color_match=color_match), tiny_engine)
    assert eight_bit.image.bits == 8
    for variant in variants:
        assert variant.image.bits == 16
        pixels = variant_pixels(variant)
        blend = np.frombuffer(variant.mask.data, np.uint8).reshape(pixels.shape[:2])
        keep = blend == 0
        assert np.array_equal(pixels[keep], crop[box_of(variant, request)][keep])
        assert fill_not_levels(pixels[blend == 255][:, :3]) > 0.98
    first = variant_pixels(variants[0])[..., :3].astype(np.int64)
    repainted = np.frombuffer(variants[0].mask.data, np.uint8).reshape(first.shape[:2]) == 255
    difference = np.abs(first[repainted] - variant_pixels(eight_bit)[..., :3][repainted].astype(np.int64) * 257)
    assert difference.mean() / 257 < 4, difference.mean() / 257  # the same picture (seed 3), deeper


@pytest.mark.diffusers
def test_remove_at_16_bits_runs_the_8_bit_remover_on_the_reduced_crop(tiny_engine: Any) -> None:
    remover = RecordingOpenCV("remover")
    request = deep_request("tiny", num_inference_steps=4)  # auto, blank prompt: remove
    (variant,) = run(request, tiny_engine, remover)
    assert [image.dtype for image in remover.images] == [np.uint8]
    assert np.array_equal(remover.images[0], to_8_bits(np.ascontiguousarray(request_image(request)[..., :3])))
    pixels = variant_pixels(variant)
    blend = np.frombuffer(variant.mask.data, np.uint8).reshape(pixels.shape[:2])
    assert variant.image.bits == 16 and fill_not_levels(pixels[blend == 255][:, :3]) > 0.98


@pytest.fixture(scope="module")
def daemon(tiny_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    from running_daemon import running_daemon

    with running_daemon(tmp_path_factory.mktemp("config"), [tiny_engine, OpenCVEngine()]) as served:
        yield served


@pytest.mark.diffusers
def test_through_the_daemon_a_16_bit_fill_comes_back_at_16_bits(daemon: tuple[str, str]) -> None:
    """The real daemon and client: a 16-bit request's variants are 16-bit; the handshake says each engine's
    depth."""
    from gimp_inpaint.client.connection import InpaintClient

    url, token = daemon
    request = deep_request("tiny", prompt="fur", num_inference_steps=2)
    with InpaintClient.connect(url, token, "pytest", timeout=60) as client:
        assert {engine.name: engine.bits for engine in client.welcome.engines} == {"tiny": 16, "opencv": 8}
        (variant,) = client.inpaint(request)
        (opencv,) = client.inpaint(dataclasses.replace(request, job_id="cv", options=dataclasses.replace(
            request.options, engine="opencv")))
    for sent, diffused in ((variant, True), (opencv, False)):
        pixels = variant_pixels(sent)
        blend = np.frombuffer(sent.mask.data, np.uint8).reshape(pixels.shape[:2])
        assert sent.image.bits == 16
        assert np.array_equal(pixels[blend == 0], request_image(request)[box_of(sent, request)][blend == 0])
        filled = pixels[blend == 255][:, :3]
        assert fill_not_levels(filled) > 0.98 if diffused else not_levels(filled) == 0
