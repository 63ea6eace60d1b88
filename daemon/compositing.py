"""Mask growth, the feathered blend mask and the final overlay: the same for every engine.

Pure NumPy/OpenCV/Pillow functions on ``uint8`` arrays (the images also ``uint16``, a 16-bit crop's: issue 12);
no I/O. The conventions are diffusers': a mask is ``H×W`` ``uint8`` with 255 = repaint and 0 = keep, whatever the
image's depth, ``feather`` is diffusers' ``blur_factor`` and the overlay keeps every pixel outside the blend mask
exactly, as ``VaeImageProcessor.apply_overlay`` does (diffusers/image_processor.py).

Speed (issue 10): the per-pixel work is done by single OpenCV calls (``cv2.threshold``, ``cv2.copyTo``,
``cv2.cvtColor``) instead of NumPy boolean indexing and ``np.where`` temporaries, and the neighbourhood
operations (dilation, blur) run only on the mask's bounding box plus their reach, outside which their
result is known to be 0. Every output is bit-identical to the plain NumPy/whole-image formulation, which
``tests/test_compositing.py`` keeps as its reference.
"""

from __future__ import annotations

import cv2
import numpy as np
from gimp_inpaint.protocol import feather_reach
from PIL import Image, ImageFilter

SAMPLE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
"""The sample types of the images here: ``uint8`` (an 8-bit crop, :attr:`protocol.Plane.bits` 8) and ``uint16``
(a 16-bit one)."""

LEVEL_STEP = 257
"""The 16-bit value of one 8-bit level: ``65535 / 255``, so 8-bit ``u`` is 16-bit ``257 × u`` and 16-bit ``v`` is
8-bit ``round(v / 257)``."""


def to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (any shape, ``uint16``) reduced to 8 bits: ``round(v / 257)`` per sample, by one
    ``cv2.convertScaleAbs`` (saturating and rounding to the nearest; ``v / 257`` is never halfway between levels).

    Returns:
        A new ``uint8`` array of the same shape (C-contiguous).

    Raises:
        ValueError: ``pixels`` is not ``uint16``.
    """
    if pixels.dtype != np.uint16:
        raise ValueError(f"to_8_bits needs uint16 samples, got {pixels.dtype}")
    return cv2.convertScaleAbs(pixels, alpha=1 / LEVEL_STEP)


def to_16_bits(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` (any shape, ``uint8``) at 16 bits: ``257 × u`` per sample (0 → 0, 255 → 65535, exact, and
    :func:`to_8_bits` gives ``pixels`` back).

    Raises:
        ValueError: ``pixels`` is not ``uint8``.
    """
    if pixels.dtype != np.uint8:
        raise ValueError(f"to_16_bits needs uint8 samples, got {pixels.dtype}")
    return np.multiply(pixels, LEVEL_STEP, dtype=np.uint16)


def transparency_alpha(image: np.ndarray) -> np.ndarray:
    """The alpha that :func:`repaint_mask` and the worker's masks read from an RGBA crop, which only ask whether a
    pixel is fully transparent: an 8-bit crop's alpha channel itself (a strided view, no copy); for a 16-bit one an
    H×W uint8 array, 0 where its alpha is 0 and 255 elsewhere (``cv2.inRange``), so a pixel of alpha 1/65535,
    which 8 bits would round to 0, still counts as visible.

    Args:
        image: H×W×4 uint8 or uint16 RGBA.

    Raises:
        ValueError: ``image`` is not that.
    """
    _check_samples(image, 4, "transparency_alpha")
    alpha = image[..., 3]
    return alpha if image.dtype == np.uint8 else cv2.inRange(alpha, 1, 65535)


def _check_samples(image: np.ndarray, channels: int, name: str) -> None:
    """Raises ValueError unless ``image`` is H×W×``channels`` of a type of :data:`SAMPLE_DTYPES`."""
    if image.ndim != 3 or image.shape[2] != channels or image.dtype not in SAMPLE_DTYPES:
        raise ValueError(f"{name} needs an H×W×{channels} uint8 or uint16 image, got {image.shape} {image.dtype}")


GROW_STEP = 32
"""Largest disc radius (pixels) dilated in one ``cv2.dilate`` call; larger growths are done in steps."""


WHOLE_ARRAY_SHARE = 0.75
"""A widened bounding box (:func:`_reach_box`) holding at least this share of the array's pixels is taken as the
whole array: the work saved would not pay for the strided views and copies (measured at 2048², issue 10)."""


def _reach_box(mask: np.ndarray, reach: int) -> tuple[slice, slice] | None:
    """``(rows, columns)`` slices of the bounding box of ``mask``'s non-zero pixels widened by ``reach`` pixels on
    every side and clipped to the array (the whole array once that box holds :data:`WHOLE_ARRAY_SHARE` of it), or
    None when ``mask`` is all zero.

    Args:
        mask: H×W uint8.
        reach: margin in pixels, ≥ 0.
    """
    x, y, width, height = cv2.boundingRect(mask)
    if not width:
        return None
    rows, columns = mask.shape
    top, bottom = max(y - reach, 0), min(y + height + reach, rows)
    left, right = max(x - reach, 0), min(x + width + reach, columns)
    if (bottom - top) * (right - left) >= WHOLE_ARRAY_SHARE * rows * columns:
        return slice(0, rows), slice(0, columns)
    return slice(top, bottom), slice(left, right)


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate ``mask`` by a disc of radius ``pixels``.

    Each output pixel is the maximum of the input over an elliptic (disc) structuring element,
    ``cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2r+1, 2r+1))``, so soft mask values keep their
    shape and move outward. The cost of one dilation grows with the kernel's area, so a growth
    beyond :data:`GROW_STEP` is done as successive dilations of at most that radius (the Minkowski
    sum of discs is a disc; each step's discrete disc adds up to about a pixel of error along the
    edge, e.g. ±1.5 px for 101 px of growth).

    Only the mask's bounding box widened by ``pixels`` is dilated: no disc of the successive steps
    reaches farther (their radii add up to ``pixels``), every pixel beyond is 0 in the output, and
    ``cv2.dilate``'s default border ignores what lies outside the array it is given, which there holds
    only zeros (a maximum with 0 changes no ``uint8`` value). The result is the whole-array dilation's,
    bit for bit.

    Args:
        mask: H×W uint8, 255 = repaint.
        pixels: growth radius in pixels, ≥ 0 (0 returns a copy).

    Returns:
        H×W uint8, ≥ ``mask`` everywhere.

    Raises:
        ValueError: ``pixels`` < 0 or ``mask`` is not a 2-D uint8 array.
    """
    if pixels < 0 or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"grow_mask needs a 2-D uint8 mask and pixels ≥ 0, got {mask.shape} {mask.dtype}, {pixels}")
    box = _reach_box(mask, pixels) if pixels else None
    if box is None:  # nothing to grow: no growth, or no mask pixel
        return mask.copy()
    grown = np.zeros_like(mask)
    target = grown[box]
    region = mask[box]
    remaining = pixels
    while remaining > 0:
        step = min(remaining, GROW_STEP)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * step + 1, 2 * step + 1))
        remaining -= step
        region = cv2.dilate(region, kernel, dst=target if remaining == 0 else None)  # the last step into ``grown``
    if region is not target:  # OpenCV writes into a ``dst`` view it can use as it is; otherwise copy
        target[...] = region
    return grown


def blend_mask(mask: np.ndarray, feather: int) -> np.ndarray:
    """The blend mask of a (grown) mask: full inside it, fading out over about ``2.6 × feather`` pixels beyond it.

    The fade is diffusers' ``blur_factor``: ``VaeImageProcessor.blur`` applies
    ``PIL.ImageFilter.GaussianBlur(blur_factor)`` to the mask, and so does this function (Pillow's
    radius is the standard deviation, in pixels). Unlike diffusers, the result is the maximum of
    the mask and its blur, so the fade lies *outside* the mask: diffusers' blur is centred on the
    edge and leaves the selection's own border half original, a visible ghost of a removed object
    (Krita AI Diffusion likewise grows before it feathers). Soft (feathered) selections keep their
    own values where they exceed the blur. Image borders are extended (Pillow clamps), so a mask
    touching the crop's border stays full up to it.

    Bounds: the blur never reaches farther than :func:`protocol.geometry.feather_reach`
    (``3 × (feather + 1)``) pixels from ``mask``; every pixel farther away is exactly 0, which is
    what keeps the original pixels there bit-exact (:func:`overlay`).

    Speed: only the mask's bounding box widened by ``feather_reach(feather)`` is blurred, by the
    same Pillow call. Pillow's ``GaussianBlur`` is three horizontal, then three vertical, box blurs
    (``src/libImaging/BoxBlur.c``; Gwosdek et al. 2011): integer fixed-point passes, each rounded to
    ``uint8``, each reading at most ``feather`` pixels either side along its line and repeating the
    line's end pixels beyond its ends. Along either axis the input of every pass is 0 farther than
    ``2 × feather`` pixels from the bounding box, so at the widened box's edge the repeated end pixels
    are the zeros the whole image holds there: each pass, hence the blur, equals the whole image's
    inside the widened box, and the whole image's blur is 0 outside it. The result is the
    whole-image blur's bit for bit (``tests/test_compositing.py`` compares them).

    Args:
        mask: H×W uint8, 255 = repaint (normally :func:`grow_mask`'s output).
        feather: blur radius in pixels, ≥ 0; 0 returns a copy of ``mask``.

    Returns:
        H×W uint8 blend mask, ≥ ``mask`` everywhere: 255 = generated pixel, 0 = original pixel, between = mixed.

    Raises:
        ValueError: ``feather`` < 0 or ``mask`` is not a 2-D uint8 array.
    """
    if feather < 0 or mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"blend_mask needs a 2-D uint8 mask and feather ≥ 0, got {mask.shape} {mask.dtype}, {feather}")
    blend = mask.copy()
    box = _reach_box(mask, feather_reach(feather)) if feather else None
    if box is None:  # no feather, or no mask pixel: the blur of zeros is zeros
        return blend
    region = np.ascontiguousarray(mask[box])  # Pillow reads a contiguous buffer
    blurred = np.asarray(Image.fromarray(region).filter(ImageFilter.GaussianBlur(feather)), dtype=np.uint8)
    window = blend[box]
    np.maximum(window, blurred, out=window)  # in place, within ``blend``
    return blend


REPAINT_THRESHOLD = 40
"""Blend-mask values ≥ this (≈ 16 %, the Gaussian's weight one standard deviation out: 1 − Φ(1)) are repainted."""


def repaint_mask(blend: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """The binary mask an engine repaints: wherever the blend mask is ≥ :data:`REPAINT_THRESHOLD`, and every fully
    transparent pixel of the context.

    The blend mask (:func:`blend_mask`) fades out beyond the grown selection; the engine must
    generate new content under that fade, or the fade would only mix the original with itself
    (OpenCV) or with its VAE reconstruction (diffusers). On a straight edge this reaches about
    ``feather`` pixels beyond the selection, farther into concave corners where the fade is
    stronger; the fainter tail is mixed with the engine's output there, which is the original
    (OpenCV) or its VAE reconstruction (diffusers).

    A pixel with alpha 0 shows nothing, so its colour (whatever it stores) is no context: the engine fills it from
    the visible pixels like the hole, and the blend mask still decides how much of it is shown (outside the fade
    it stays transparent, :func:`overlay`). A selection reaching past a layer, or over empty canvas, is generated
    from the picture, not from transparent black.

    Computed by ``cv2.threshold`` (``blend`` > ``REPAINT_THRESHOLD`` − 1, ``alpha`` ≤ 0) and
    ``cv2.bitwise_or``, in ``uint8`` throughout.

    Args:
        blend: H×W uint8 blend mask.
        alpha: H×W uint8, the context's alpha channel (straight alpha, 0 = fully transparent), or None for none;
            a strided view (``rgba[..., 3]``) will do.

    Returns:
        H×W uint8 with values 0 and 255 only.

    Raises:
        ValueError: ``blend`` is not H×W uint8, or ``alpha`` is not uint8 of its shape.
    """
    if blend.ndim != 2 or blend.dtype != np.uint8 or (alpha is not None and (alpha.shape != blend.shape
                                                                             or alpha.dtype != np.uint8)):
        found = "none" if alpha is None else f"{alpha.shape} {alpha.dtype}"
        raise ValueError(f"repaint_mask needs an H×W uint8 blend mask and alpha, got {blend.shape} {blend.dtype}, "
                         f"{found}")
    _, repaint = cv2.threshold(blend, REPAINT_THRESHOLD - 1, 255, cv2.THRESH_BINARY)
    if alpha is not None:
        _, transparent = cv2.threshold(alpha, 0, 255, cv2.THRESH_BINARY_INV)
        cv2.bitwise_or(repaint, transparent, dst=repaint)
    return repaint


def rgb_channels(image: np.ndarray) -> np.ndarray:
    """The colour channels of an RGBA image, as the engines take them: ``image[..., :3]`` copied into a
    C-contiguous array, by ``cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)`` (a channel copy; about 25× faster than
    ``np.ascontiguousarray`` of the strided view at 2048², issue 10).

    Args:
        image: H×W×4 uint8 or uint16 RGBA (straight alpha; read-only will do).

    Returns:
        H×W×3 RGB of ``image``'s type, C-contiguous and writable, sharing no memory with ``image``.

    Raises:
        ValueError: ``image`` is not H×W×4 uint8 or uint16.
    """
    _check_samples(image, 4, "rgb_channels")
    return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)


def overlay(original: np.ndarray, generated: np.ndarray, blend: np.ndarray) -> np.ndarray:
    """The variant image sent back: generated pixels where ``blend`` > 0, the original's exactly elsewhere.

    diffusers' ``VaeImageProcessor.apply_overlay`` pastes the original over the generated image
    through the inverted mask, so pixels outside the mask are the original's bit for bit; it also
    mixes the two along the feathered edge. Here that mixing is left to the consumer, which
    applies ``blend`` as the new layer's mask (GIMP) or computes
    ``original × (1 − blend/255) + variant × blend/255`` (:func:`client.imaging.compose`); mixing
    here as well would apply the feather twice. So the variant image is:

    - where ``blend`` == 0: the original RGBA, exactly (alpha included), so the layer is identical
      to its source there even if its mask were removed;
    - where ``blend`` > 0: the generated RGB with alpha 255 (65535 at 16 bits: a fill is opaque, also where the
      source was transparent; the layer mask supplies the transparency of the edge).

    Computed as ``cv2.cvtColor(generated, cv2.COLOR_RGB2RGBA)`` (alpha the type's maximum) with ``original``
    copied over it by ``cv2.copyTo`` wherever ``blend`` == 0; at either depth, as the crop's (a 16-bit crop keeps
    its 16-bit pixels exactly).

    Args:
        original: H×W×4 uint8 or uint16 RGBA, the request's crop (straight alpha).
        generated: H×W×3 RGB from the engine (at the crop's depth: :func:`to_16_bits` of an 8-bit engine's
            output for a 16-bit crop), the same H×W and type.
        blend: H×W uint8 blend mask (:func:`blend_mask`).

    Returns:
        H×W×4 RGBA of ``original``'s type.

    Raises:
        ValueError: shapes or dtypes disagree.
    """
    height, width = blend.shape[:2]
    if (original.shape != (height, width, 4) or generated.shape != (height, width, 3) or blend.ndim != 2
            or original.dtype != generated.dtype or original.dtype not in SAMPLE_DTYPES or blend.dtype != np.uint8):
        raise ValueError(f"overlay needs H×W×4 and H×W×3 arrays of one type (uint8 or uint16) and an H×W uint8 "
                         f"mask, got {original.shape} {original.dtype}, {generated.shape} {generated.dtype}, "
                         f"{blend.shape} {blend.dtype}")
    result = cv2.cvtColor(generated, cv2.COLOR_RGB2RGBA)  # the generated RGB, alpha the type's maximum
    _, outside = cv2.threshold(blend, 0, 255, cv2.THRESH_BINARY_INV)  # 255 where blend == 0
    return cv2.copyTo(original, outside, result)  # into ``result`` itself


def mask_box(mask: np.ndarray) -> tuple[slice, slice]:
    """``(rows, columns)`` slices of the bounding box of ``mask``'s non-zero pixels (``cv2.boundingRect``).

    Outside this box a variant is the request's own pixels (:func:`overlay`), so only the box travels back.

    Args:
        mask: H×W uint8 with at least one non-zero pixel.

    Raises:
        ValueError: ``mask`` is all zero (nothing to send) or not H×W uint8.
    """
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask_box needs an H×W uint8 mask, got {mask.shape} {mask.dtype}")
    x, y, width, height = cv2.boundingRect(mask)
    if not width:
        raise ValueError("the mask has no non-zero pixel")
    return slice(y, y + height), slice(x, x + width)
