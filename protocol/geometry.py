"""Pure crop geometry shared by the editor side and the daemon (pixels, integer coordinates).

The editor reads only the *context crop* around the selection: the selection's bounding box grown
by the mask's own growth (``grow`` + :func:`feather_reach`, which the daemon applies) and by ``padding``
pixels of surrounding picture for the model to see, rounded to multiples of 8 (the latent grid of
SD-family VAEs) and kept inside the image. Compare diffusers' ``padding_mask_crop`` and Krita AI
Diffusion's ``resolution.compute_bounds``.

Generative Expand grows the canvas first (:func:`expand_canvas`, :func:`expand_to_size`, :func:`expand_to_aspect`:
a :class:`CanvasExpansion`, the new size and the old picture's place in it) and fills the new area as a selection,
whose context crop is :func:`context_crop`'s. That geometry lives here, beside the crop it feeds, rather than in
the client: it is as pure (integers and :class:`Rect`, standard library only), is vendored into the plug-in with
the rest of the package, and is tested with it; the daemon never needs it (it sees the crop only). Invalid
requests raise ``ValueError``, as :func:`context_crop` does; the editor turns them into its own errors.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from fractions import Fraction

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


CANVAS_SIDES = ("left", "top", "right", "bottom")
"""The names of a canvas's sides, as :func:`expand_to_size` and :func:`expand_to_aspect` take them."""

MAX_CANVAS_SIDE = 524288
"""Longest side (pixels) of a grown canvas: GIMP's largest image side, ``GIMP_MAX_IMAGE_SIZE``
(``libgimpbase/gimplimits.h``); the daemon's pixel limit stops far smaller requests anyway."""


@dataclass(frozen=True)
class CanvasExpansion:
    """A canvas grown on some of its sides (Generative Expand): its new size, and where the old picture lies in it.

    Attributes:
        width, height: the new canvas's size in pixels.
        picture: the old picture's place in the new canvas (its size is the old canvas's; ``picture.x`` pixels were
            added on the left, ``picture.y`` on top).
    """

    width: int
    height: int
    picture: Rect

    @property
    def left(self) -> int:
        """Pixels added on the left."""
        return self.picture.x

    @property
    def top(self) -> int:
        """Pixels added on top."""
        return self.picture.y

    @property
    def right(self) -> int:
        """Pixels added on the right."""
        return self.width - self.picture.right

    @property
    def bottom(self) -> int:
        """Pixels added at the bottom."""
        return self.height - self.picture.bottom

    @property
    def new_area(self) -> Rect:
        """The bounding box of the added pixels, in the new canvas (the strips on the grown sides; a strip on the
        left or right spans the whole height, so two grown sides that meet give the corner too)."""
        strips = [Rect(0, 0, self.width, self.top), Rect(0, self.picture.bottom, self.width, self.bottom),
                  Rect(0, 0, self.left, self.height), Rect(self.picture.right, 0, self.right, self.height)]
        grown = [strip for strip in strips if strip.width and strip.height]
        x, y = min(s.x for s in grown), min(s.y for s in grown)
        return Rect(x, y, max(s.right for s in grown) - x, max(s.bottom for s in grown) - y)


def expand_canvas(width: int, height: int, *, left: int = 0, top: int = 0, right: int = 0,
                  bottom: int = 0) -> CanvasExpansion:
    """The ``width × height`` canvas grown by the given pixels on each side.

    Raises:
        ValueError: a size below 1 or a side below 0, nothing added, or a new side over :data:`MAX_CANVAS_SIDE`.
    """
    if width < 1 or height < 1:
        raise ValueError(f"the canvas must be at least 1×1 pixels, got {width}×{height}")
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"pixels to add cannot be negative (left {left}, top {top}, right {right}, bottom {bottom})")
    if not left + top + right + bottom:
        raise ValueError(f"the {width}×{height} canvas would keep its size (no pixels to add)")
    new_width, new_height = width + left + right, height + top + bottom
    if max(new_width, new_height) > MAX_CANVAS_SIDE:
        raise ValueError(f"the canvas would be {new_width}×{new_height} pixels; GIMP's largest side is "
                         f"{MAX_CANVAS_SIDE}")
    return CanvasExpansion(new_width, new_height, Rect(left, top, width, height))


def _split(extra: int, first: str, second: str, sides: frozenset[str]) -> tuple[int, int]:
    """``extra`` pixels of one axis shared by its two sides ``first`` (left or top) and ``second`` among ``sides``:
    half each when both grow (the odd pixel on ``second``, as GIMP's Canvas Size centres), all on the one that does.

    Raises:
        ValueError: ``extra`` > 0 and neither side may grow.
    """
    if not extra:
        return 0, 0
    if first in sides and second in sides:
        return extra // 2, extra - extra // 2
    if first in sides or second in sides:
        return (extra, 0) if first in sides else (0, extra)
    raise ValueError(f"the canvas must grow {extra} pixels {'wider' if first == 'left' else 'taller'}, but "
                     f"neither the {first} nor the {second} side may grow")


def _checked_sides(sides: Collection[str]) -> frozenset[str]:
    unknown = set(sides) - set(CANVAS_SIDES)
    if unknown or not sides:
        raise ValueError(f"sides must be some of {', '.join(CANVAS_SIDES)}, got {', '.join(sorted(sides)) or 'none'}")
    return frozenset(sides)


def expand_to_size(width: int, height: int, target_width: int, target_height: int,
                   sides: Collection[str] = CANVAS_SIDES) -> CanvasExpansion:
    """The ``width × height`` canvas grown to ``target_width × target_height``, on ``sides`` (names of
    :data:`CANVAS_SIDES`): an axis with both its sides among them grows by half on each (the old picture centred
    on it), one with one side grows on that side.

    Raises:
        ValueError: a target side smaller than the canvas's (Generative Expand only grows), the target equal to the
            canvas, an axis that must grow without a side that may, an unknown side, or a failure of
            :func:`expand_canvas`.
    """
    wanted = _checked_sides(sides)
    if target_width < width or target_height < height:
        raise ValueError(f"the target size {target_width}×{target_height} is smaller than the {width}×{height} "
                         f"canvas on a side; Generative Expand only grows it")
    left, right = _split(target_width - width, "left", "right", wanted)
    top, bottom = _split(target_height - height, "top", "bottom", wanted)
    return expand_canvas(width, height, left=left, top=top, right=right, bottom=bottom)


def expand_to_aspect(width: int, height: int, aspect: Fraction | float, sides: Collection[str] = CANVAS_SIDES,
                     ) -> CanvasExpansion:
    """The ``width × height`` canvas grown along one axis to the aspect ratio ``aspect`` (width / height), on
    ``sides`` as :func:`expand_to_size`: a canvas narrower than ``aspect`` gets the width
    ``round(height × aspect)``, a wider one the height ``round(width / aspect)`` (Python's ``round``, ties to even,
    computed exactly with :class:`fractions.Fraction`); the other side stays.

    Raises:
        ValueError: ``aspect`` is not a positive finite number, the canvas already has it (to the pixel), or a
            failure of :func:`expand_to_size`.
    """
    if not (isinstance(aspect, Fraction) or math.isfinite(aspect)) or aspect <= 0:
        raise ValueError(f"the aspect ratio must be a positive number, got {aspect}")
    ratio = Fraction(aspect)
    target_width, target_height = width, height
    if Fraction(width, height) < ratio:
        target_width = round(height * ratio)
    else:
        target_height = round(width / ratio)
    if (target_width, target_height) == (width, height):
        raise ValueError(f"the {width}×{height} canvas already has the aspect ratio {float(ratio):g}")
    return expand_to_size(width, height, target_width, target_height, sides)
