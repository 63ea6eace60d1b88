"""Pure crop geometry shared by the editor side and the daemon (pixels, integer coordinates).

The editor reads only the *context crop* around the selection: the selection's bounding box grown
by the mask's own growth (``grow`` + :func:`feather_reach`, which the daemon applies) and by ``padding``
pixels of surrounding picture for the model to see, rounded to multiples of 8 (the latent grid of
SD-family VAEs) and kept inside the image. Compare diffusers' ``padding_mask_crop`` and Krita AI
Diffusion's ``resolution.compute_bounds``.
"""

from __future__ import annotations

from dataclasses import dataclass

LATENT_MULTIPLE = 8
"""SD/SDXL VAEs downsample by 8, so model inputs have sides that are multiples of 8."""


@dataclass(frozen=True)
class Rect:
    """An axis-aligned rectangle: top-left ``(x, y)`` and ``width × height`` in pixels (right/bottom exclusive)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        """Exclusive right edge, ``x + width``."""
        return self.x + self.width

    @property
    def bottom(self) -> int:
        """Exclusive bottom edge, ``y + height``."""
        return self.y + self.height

    def contains(self, other: Rect) -> bool:
        """True when ``other`` lies entirely inside this rectangle."""
        return (self.x <= other.x and self.y <= other.y
                and other.right <= self.right and other.bottom <= self.bottom)


def _span(start: int, end: int, pad: int, limit: int, multiple: int) -> tuple[int, int]:
    """One axis of :func:`context_crop`: returns ``(origin, length)`` inside ``[0, limit)``."""
    lo, hi = max(0, start - pad), min(limit, end + pad)
    length = -(-(hi - lo) // multiple) * multiple  # round up to the multiple
    if length >= limit:
        return 0, limit
    extra = length - (hi - lo)
    lo -= extra // 2                       # grow both sides evenly …
    lo = min(max(0, lo), limit - length)   # … then slide back inside the image
    return lo, length


def feather_reach(feather: int) -> int:
    """Farthest distance (pixels, along x or y) at which a mask feathered by ``feather`` is non-zero beyond the mask.

    The daemon feathers with Pillow's ``GaussianBlur(feather)``, three successive box blurs
    (Gwosdek et al., "Theoretical foundations of Gaussian convolution by extended box filtering",
    2011; Pillow's ``src/libImaging/BoxBlur.c``), each of radius below ``feather + 1``: a finite
    support of ``3 × (feather + 1)``. (Rounding to ``uint8`` makes the visible reach about
    ``2.6 × feather``.) A context crop needs this margin around the grown selection to hold the
    whole fade.
    """
    return 3 * (feather + 1) if feather > 0 else 0


def context_crop(bounds: Rect, image_width: int, image_height: int, padding: int,
                 multiple: int = LATENT_MULTIPLE) -> Rect:
    """The region of the image to send for inpainting the selection whose bounding box is ``bounds``.

    Args:
        bounds: the selection's bounding box in image pixels (GIMP's ``Gimp.Selection.bounds``).
        image_width, image_height: the image's size in pixels.
        padding: pixels of context added on every side of ``bounds`` (≥ 0); callers include the
            mask's ``grow + feather_reach(feather)`` in it so the feathered edge fits in the crop.
        multiple: the crop's sides are rounded up to a multiple of this (default 8).

    Returns:
        A rectangle that contains ``bounds ∩ image``, lies inside the image, and whose sides are
        multiples of ``multiple`` — except a side that spans the whole image, which is the image's
        side (the daemon scales the crop to the model's resolution anyway, so nothing is lost).

    Raises:
        ValueError: ``bounds`` does not intersect the image, or a negative padding or size.
    """
    if padding < 0 or image_width <= 0 or image_height <= 0 or multiple <= 0:
        raise ValueError("padding must be ≥ 0 and the image and multiple positive")
    x0, y0 = max(0, bounds.x), max(0, bounds.y)
    x1, y1 = min(image_width, bounds.right), min(image_height, bounds.bottom)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"selection bounds {bounds} do not intersect the {image_width}×{image_height} image")
    x, width = _span(x0, x1, padding, image_width, multiple)
    y, height = _span(y0, y1, padding, image_height, multiple)
    return Rect(x, y, width, height)
