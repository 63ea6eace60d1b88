"""Mask growth, the feathered blend mask and the final overlay: the same for every engine.

Pure NumPy/OpenCV/Pillow functions on ``uint8`` arrays; no I/O. The conventions are diffusers':
a mask is ``H×W`` ``uint8`` with 255 = repaint and 0 = keep, ``feather`` is diffusers'
``blur_factor`` and the overlay keeps every pixel outside the blend mask exactly, as
``VaeImageProcessor.apply_overlay`` does (diffusers/image_processor.py).
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter

GROW_STEP = 32
"""Largest disc radius (pixels) dilated in one ``cv2.dilate`` call; larger growths are done in steps."""


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate ``mask`` by a disc of radius ``pixels``.

    Each output pixel is the maximum of the input over an elliptic (disc) structuring element,
    ``cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2r+1, 2r+1))``, so soft mask values keep their
    shape and move outward. The cost of one dilation grows with the kernel's area, so a growth
    beyond :data:`GROW_STEP` is done as successive dilations of at most that radius (the Minkowski
    sum of discs is a disc; each step's discrete disc adds up to about a pixel of error along the
    edge, e.g. ±1.5 px for 101 px of growth).

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
    grown = mask.copy()
    remaining = pixels
    while remaining > 0:
        step = min(remaining, GROW_STEP)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * step + 1, 2 * step + 1))
        grown = cv2.dilate(grown, kernel)
        remaining -= step
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
    if feather == 0:
        return mask.copy()
    blurred = np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(feather)), dtype=np.uint8)
    return np.maximum(mask, blurred)


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

    Args:
        blend: H×W uint8 blend mask.
        alpha: H×W uint8, the context's alpha channel (straight alpha, 0 = fully transparent), or None for none.

    Returns:
        H×W uint8 with values 0 and 255 only.
    """
    repaint = blend >= REPAINT_THRESHOLD
    if alpha is not None:
        repaint |= alpha == 0
    return np.where(repaint, 255, 0).astype(np.uint8)


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
    - where ``blend`` > 0: the generated RGB with alpha 255 (a fill is opaque, also where the
      source was transparent; the layer mask supplies the transparency of the edge).

    Args:
        original: H×W×4 uint8 RGBA, the request's crop (straight alpha).
        generated: H×W×3 uint8 RGB from the engine, the same H×W.
        blend: H×W uint8 blend mask (:func:`blend_mask`).

    Returns:
        H×W×4 uint8 RGBA.

    Raises:
        ValueError: shapes or dtypes disagree.
    """
    height, width = blend.shape[:2]
    if (original.shape != (height, width, 4) or generated.shape != (height, width, 3) or blend.ndim != 2
            or not original.dtype == generated.dtype == blend.dtype == np.uint8):
        raise ValueError(f"overlay needs H×W×4, H×W×3 and H×W uint8 arrays, got {original.shape} {original.dtype}, "
                         f"{generated.shape} {generated.dtype}, {blend.shape} {blend.dtype}")
    result = original.copy()
    inside = blend > 0
    result[inside, :3] = generated[inside]
    result[inside, 3] = 255
    return result


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
