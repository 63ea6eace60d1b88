"""Generative Expand's request and document, editor-independent: what grows, and the document as it will be.

The request is an :class:`ExpandOptions` record (pixels on the sides that grow, or a target size, or an aspect
ratio), turned into a :class:`protocol.CanvasExpansion` by :mod:`protocol.geometry` for the document's size. The
fill itself is Generative Fill's, unchanged: :func:`client.fill.run_expand` hands :func:`client.fill.run_fill` an
:class:`ExpandedDocument`, the document as it will be once its canvas grew, whose selection is the new area (mask
255, transparent pixels) and whose picture is the old one at its new place, with ``fill_mode = expand``. So the
context crop is the new area plus ``padding + grow + feather reach`` pixels of the old picture, and the daemon's
blend mask (the new area grown by ``grow``, then feathered) makes the result layer cover the new area plus a blend
band into the old picture; where that mask is 0 the old pixels are kept exactly. Nothing changes in the image until
the result arrived: then :meth:`client.document.Document.add_result_layers` grows the canvas and adds the layers,
one undo step.

Its settings are a record of the options table's kind (:func:`protocol.options.option`, :data:`EXPAND_OPTIONS`),
so the GIMP procedure's arguments and the CLI's flags are made from its rows as they are for the fill's. Vendored
into the plug-in: standard library, :mod:`protocol` and :mod:`client.document` only (no connection, so that
``gimp-inpaint --help`` builds its ``expand`` flags without websockets or msgpack).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

from gimp_inpaint.protocol import (
    CANVAS_SIDES,
    MAX_CANVAS_SIDE,
    CanvasExpansion,
    ErrorCode,
    Preview,
    ProtocolError,
    Rect,
    expand_canvas,
    expand_to_aspect,
    expand_to_size,
)
from gimp_inpaint.protocol.options import OptionSpec, option, table

from .document import Document, ResultLayer


class GrowSides(Enum):
    """Which sides of the canvas grow: one, two or all four (the value is the side names of
    :data:`protocol.CANVAS_SIDES` joined by ``-``, or ``all``)."""

    ALL = "all"
    LEFT_RIGHT = "left-right"
    TOP_BOTTOM = "top-bottom"
    LEFT = "left"
    RIGHT = "right"
    TOP = "top"
    BOTTOM = "bottom"
    TOP_LEFT = "top-left"
    TOP_RIGHT = "top-right"
    BOTTOM_LEFT = "bottom-left"
    BOTTOM_RIGHT = "bottom-right"

    @property
    def sides(self) -> frozenset[str]:
        """The names of the sides that grow (:data:`protocol.CANVAS_SIDES`)."""
        return frozenset(CANVAS_SIDES) if self is GrowSides.ALL else frozenset(self.value.split("-"))

    @property
    def label(self) -> str:
        """The readable name shown in the GIMP dialog's list and the CLI's help, e.g. ``"Left and right"``."""
        if self is GrowSides.ALL:
            return "All four sides"
        first, *rest = self.value.split("-")
        return " and ".join([first.capitalize(), *rest])


_SIZE = re.compile(r"\s*(\d+)\s*[x×X*]\s*(\d+)\s*")
"""A target size as a person writes it: ``1920x1080``, ``1920 × 1080``, ``1920X1080``, ``1920*1080``."""

_NUMBER = r"\s*(\d+(?:\.\d*)?|\.\d+)\s*"
_ASPECT = re.compile(f"{_NUMBER}(?:[:/]{_NUMBER})?")
"""An aspect ratio (width to height): ``16:9``, ``1.85:1``, ``4/3`` or one number, ``1.5``."""


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, message)


@dataclass(frozen=True)
class ExpandOptions:
    """What Generative Expand grows: :data:`EXPAND_OPTIONS` is its table (the editor's, never sent to the daemon).

    The canvas grows to ``size`` when it is set, else to the aspect ratio ``aspect`` when that is set, else by
    ``pixels`` on each side of ``sides``; ``sides`` also says where a target size or an aspect ratio adds its pixels
    (:func:`protocol.expand_to_size`).

    Raises:
        ProtocolError(INVALID_REQUEST): a value of the wrong type or out of its range, a size or aspect ratio that
            cannot be read, or both set.
    """

    pixels: int = option(256, "Pi_xels to add", "Pixels added on each side that grows (not used when a target size "
                         "or an aspect ratio is set)", minimum=0, maximum=MAX_CANVAS_SIDE, unit="pixels")
    sides: GrowSides = option(GrowSides.ALL, "_Borders to grow", "The sides of the canvas that grow; with a target "
                              "size or an aspect ratio, an axis whose two sides grow grows by half on each")
    size: str = option("", "Target si_ze", "New canvas size WIDTHxHEIGHT in pixels, e.g. 1920x1080, at least the "
                       "current size on both axes (empty: not used)", max_chars=32)
    aspect: str = option("", "Aspect rati_o", "Grow one axis to this width:height ratio, e.g. 16:9 or 1.85:1 "
                         "(empty: not used)", max_chars=32)

    def __post_init__(self) -> None:
        for name, spec in table(ExpandOptions).items():
            object.__setattr__(self, name, spec.check(getattr(self, name)))
        if self.size.strip() and self.aspect.strip():
            raise _invalid(f"set a target size ({self.size}) or an aspect ratio ({self.aspect}), not both")
        self.target_size()
        self.aspect_ratio()

    def target_size(self) -> tuple[int, int] | None:
        """``size`` as ``(width, height)`` in pixels, or None when it is empty.

        Raises:
            ProtocolError(INVALID_REQUEST): it is not ``WIDTHxHEIGHT``.
        """
        if not self.size.strip():
            return None
        match = _SIZE.fullmatch(self.size)
        if match is None:
            raise _invalid(f"the target size {self.size!r} is not WIDTHxHEIGHT in pixels, e.g. 1920x1080")
        return int(match[1]), int(match[2])

    def aspect_ratio(self) -> Fraction | None:
        """``aspect`` as an exact width / height ratio (``16:9`` → ``Fraction(16, 9)``), or None when it is empty.

        Raises:
            ProtocolError(INVALID_REQUEST): it is not ``W:H`` (or ``W/H``, or one number) of positive numbers.
        """
        if not self.aspect.strip():
            return None
        match = _ASPECT.fullmatch(self.aspect)
        if match is None or not Fraction(match[1]) or (match[2] is not None and not Fraction(match[2])):
            raise _invalid(f"the aspect ratio {self.aspect!r} is not WIDTH:HEIGHT of positive numbers, e.g. 16:9")
        return Fraction(match[1]) / Fraction(match[2] or 1)

    def expansion(self, width: int, height: int) -> CanvasExpansion:
        """The grown canvas for a ``width × height`` one (:func:`protocol.expand_to_size`,
        :func:`protocol.expand_to_aspect` or :func:`protocol.expand_canvas`).

        Raises:
            ValueError: the request cannot be met for this canvas (a target smaller than it, no pixels to add, an
                axis that must grow on sides that may not, a canvas over GIMP's largest side).
        """
        size, aspect, sides = self.target_size(), self.aspect_ratio(), self.sides.sides
        if size is not None:
            return expand_to_size(width, height, *size, sides)
        if aspect is not None:
            return expand_to_aspect(width, height, aspect, sides)
        return expand_canvas(width, height, **{side: self.pixels for side in sides})


EXPAND_OPTIONS: dict[str, OptionSpec] = table(ExpandOptions)
"""The rows of :class:`ExpandOptions`, name → :class:`protocol.OptionSpec`."""


def _paste(target: bytearray, rect: Rect, box: Rect, data: bytes, channels: int) -> None:
    """Write ``data`` (``box``'s pixels, ``channels`` bytes each) into ``target`` (``rect``'s); ``box`` ⊆ ``rect``."""
    row, stride = box.width * channels, rect.width * channels
    for k in range(box.height):
        start = (box.y - rect.y + k) * stride + (box.x - rect.x) * channels
        target[start:start + row] = data[k * row:(k + 1) * row]


class ExpandedDocument(Document):
    """``document`` as it will be once its canvas grew as ``canvas`` says, with the new area as its selection.

    Reads are in the grown canvas's coordinates: the old picture's pixels (read from ``document``, moved by
    ``canvas.picture``'s offset) where it lies, transparent in the new area; the selection is 255 over the new area
    and 0 over the old picture. :meth:`add_result_layers` grows ``document``'s canvas and adds the layers in one
    step (:meth:`client.document.Document.add_result_layers` with ``canvas``). Progress, messages, cancelling and
    previews are ``document``'s.
    """

    def __init__(self, document: Document, canvas: CanvasExpansion) -> None:
        self._document = document
        self._canvas = canvas

    def size(self) -> tuple[int, int]:
        """The grown canvas's ``(width, height)``."""
        return self._canvas.width, self._canvas.height

    def selection_bounds(self) -> Rect:
        """The bounding box of the new area (:attr:`protocol.CanvasExpansion.new_area`)."""
        return self._canvas.new_area

    def _old_part(self, rect: Rect) -> Rect | None:
        """The part of ``rect`` (grown canvas) over the old picture, or None."""
        picture = self._canvas.picture
        x0, y0 = max(rect.x, picture.x), max(rect.y, picture.y)
        x1, y1 = min(rect.right, picture.right), min(rect.bottom, picture.bottom)
        return Rect(x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None

    @property
    def bits(self) -> int:
        """The document's depth (:attr:`client.document.Document.bits`)."""
        return self._document.bits

    def _read(self, rect: Rect, read: Callable[[Rect], bytes]) -> bytes:
        """``rect``'s R'G'B'A pixels at :attr:`bits`: ``read`` (in the old canvas's coordinates) over the old picture,
        transparent (all samples 0) elsewhere."""
        pixel = 4 * self.bits // 8
        pixels = bytearray(rect.width * rect.height * pixel)
        old = self._old_part(rect)
        if old is not None:
            picture = self._canvas.picture
            _paste(pixels, rect, old, read(Rect(old.x - picture.x, old.y - picture.y, old.width, old.height)), pixel)
        return bytes(pixels)

    def read_rgba(self, rect: Rect) -> bytes:
        """The source layer's pixels in ``rect`` of the grown canvas (the new area transparent)."""
        return self._read(rect, self._document.read_rgba)

    def read_visible(self, rect: Rect) -> bytes:
        """The visible picture in ``rect`` of the grown canvas (the new area transparent)."""
        return self._read(rect, self._document.read_visible)

    def read_mask(self, rect: Rect) -> bytes:
        """``rect``'s selection: 255 over the new area, 0 over the old picture."""
        mask = bytearray(b"\xff" * (rect.width * rect.height))
        old = self._old_part(rect)
        if old is not None:
            _paste(mask, rect, old, bytes(old.width * old.height), 1)
        return bytes(mask)

    def add_result_layers(self, layers: Sequence[ResultLayer], canvas: CanvasExpansion | None = None) -> list[str]:
        """Grow the document's canvas and add ``layers`` (grown-canvas coordinates), one undo step.

        Raises:
            ValueError: ``canvas`` is given: this document's canvas is its own.
        """
        if canvas is not None:
            raise ValueError("an expanded document grows its canvas once, as it was made")
        return self._document.add_result_layers(layers, self._canvas)

    def progress(self, fraction: float, text: str) -> None:
        """The document's progress."""
        self._document.progress(fraction, text)

    def message(self, text: str) -> None:
        """The document's message."""
        self._document.message(text)

    def cancel_requested(self) -> bool:
        """The document's cancel request."""
        return self._document.cancel_requested()

    @property
    def preview_every(self) -> int:
        """The document's preview rate."""
        return self._document.preview_every

    @property
    def preview_size(self) -> int:
        """The document's preview size."""
        return self._document.preview_size

    def show_preview(self, preview: Preview) -> None:
        """The document's preview (of the crop of the grown canvas)."""
        self._document.show_preview(preview)
