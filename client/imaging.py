"""Image files ↔ protocol planes, result compositing and the file-backed :class:`ArrayDocument` for the
command-line client (NumPy + Pillow).

Never vendored into the GIMP plug-in (GIMP composites with the layer mask itself).
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, cast

import numpy as np
from gimp_inpaint.client.document import Document, ResultLayer
from gimp_inpaint.protocol import DEFAULT_MAX_PIXELS, CanvasExpansion, Plane, Rect
from PIL import Image, ImageMode, ImageOps

MAX_IMAGE_PIXELS = 4 * DEFAULT_MAX_PIXELS
"""Most pixels of a picture or mask read from a file: 8192×8192, four times the daemon's default request limit
(:data:`protocol.DEFAULT_MAX_PIXELS`; only the crop around the mask is sent, so the picture may be larger than a
request). It bounds the command line's memory, 4 bytes per pixel (256 MiB) for each RGBA copy it holds, and lies
below Pillow's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``, about 89.5 million), so Pillow never
warns about a file that passes."""

_EIGHT_BIT_TYPES = ("u1", "b1")
"""NumPy type codes (without byte order) of Pillow modes with at most 8 bits per channel
(``ImageMode.getmode(mode).typestr``: ``|u1`` for L, RGB, RGBA, P, …; ``|b1`` for 1-bit)."""


@contextmanager
def _open_8bit(path: Path) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow, check its size and depth from its header, and yield it upright.

    A file of more than :data:`MAX_IMAGE_PIXELS` is refused before its pixels are decoded (a decompression bomb
    is a small file that claims billions of pixels). Pillow opens 16-bit colour PNGs as 8-bit RGB/RGBA (keeping
    the high byte, a correct scaling), but 16-bit grayscale (``I;16``), 32-bit integer (``I``) and float (``F``)
    images keep their range, which ``Image.convert`` to an 8-bit mode clips instead of scaling: such files are
    refused. The picture is turned as its EXIF orientation says (``ImageOps.exif_transpose``: a phone photo is
    stored sideways and tagged), so it is read as every viewer shows it.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than :data:`MAX_IMAGE_PIXELS` pixels, or more than 8 bits per channel.
    """
    side = math.isqrt(MAX_IMAGE_PIXELS)
    too_large = ValueError(f"{path} has more than {MAX_IMAGE_PIXELS:,} pixels ({side}×{side}), the most "
                           f"gimp-inpaint reads from a file; scale it down first, or fill it in GIMP.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own, higher thresholds
        raise too_large from None
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise too_large
        if ImageMode.getmode(image.mode).typestr[1:] not in _EIGHT_BIT_TYPES:
            raise ValueError(f"{path} has {image.mode} pixels (16-bit, 32-bit or floating point); gimp-inpaint "
                             f"reads 8 bits per channel only. Convert it to 8 bits first (in GIMP: Image ▸ "
                             f"Precision ▸ 8 bit integer).")
        ImageOps.exif_transpose(image, in_place=True)
        yield image


def load_rgba(path: Path) -> np.ndarray:
    """Read an 8-bit image as H×W×4 uint8 RGBA (straight alpha; opaque when the file has none), upright as its
    EXIF orientation says.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than :data:`MAX_IMAGE_PIXELS` pixels, or more than 8 bits per channel (Pillow modes
            ``I;16``, ``I``, ``F``), which a conversion would clip rather than scale.
    """
    with _open_8bit(path) as image:
        return np.asarray(image.convert("RGBA")).copy()


def load_mask(path: Path) -> np.ndarray:
    """Read an 8-bit mask image as H×W uint8 (255 = repaint, 0 = keep), upright as its EXIF orientation says.

    The rule: white or opaque = fill. The mask is the image's luminance (colour images too: white = fill,
    black = keep, gray = partly), except for a mask drawn only in its alpha channel, whose colour is the same
    everywhere while its alpha varies: then it is the alpha (opaque = fill, transparent = keep).

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than :data:`MAX_IMAGE_PIXELS` pixels, or more than 8 bits per channel (Pillow modes
            ``I;16``, ``I``, ``F``), which a conversion would clip rather than scale.
    """
    with _open_8bit(path) as image:
        if "A" in image.getbands() or "transparency" in image.info:
            rgba = image.convert("RGBA")
            # Pillow's union includes a one-band image's (low, high); RGBA's is one (low, high) per band
            *colour, alpha = cast(tuple[tuple[int, int], ...], rgba.getextrema())
            if all(low == high for low, high in colour) and alpha[0] != alpha[1]:
                return np.asarray(rgba.getchannel("A")).copy()
        return np.asarray(image.convert("L")).copy()


def save_image(path: Path, pixels: np.ndarray, png_compression: int | None = None) -> None:
    """Write H×W (gray), H×W×3 (RGB) or H×W×4 (RGBA) uint8 pixels; the format follows the file's extension.

    RGBA pixels that are all opaque are written as RGB, so formats without alpha (JPEG) work.

    Args:
        png_compression: zlib level 0…9 of a PNG file (Pillow's ``compress_level``; None = Pillow's default, 6);
            the pixels are the same at every level, only the size and the time differ. Other formats ignore it
            and keep their defaults.

    Raises:
        OSError: the file cannot be written.
        ValueError: Pillow knows no format for the extension, or ``png_compression`` is not 0…9.
    """
    if png_compression is not None and png_compression not in range(10):
        raise ValueError(f"the PNG compression level must be 0 to 9, got {png_compression!r}")
    if pixels.ndim == 3 and pixels.shape[2] == 4 and bool(np.all(pixels[..., 3] == 255)):
        pixels = pixels[..., :3]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    if png_compression is not None and Image.registered_extensions().get(path.suffix.lower()) == "PNG":
        image.save(path, compress_level=png_compression)
    else:
        image.save(path)


def check_writable(path: Path) -> None:
    """Check, before any work, that :func:`save_image` can write ``path``: Pillow writes a format with its
    extension, and the file can be created in its folder (or, when it exists, opened for writing). A file the
    check creates is removed again; an existing one is left as it was.

    Raises:
        OSError: it cannot be written: the folder is missing or read-only, ``path`` is a folder, …
        ValueError: Pillow writes no format with that extension.
    """
    existed = path.exists()
    with path.open("ab"):
        pass
    if not existed:
        path.unlink()
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE:
        extension = f"the extension “{path.suffix}”" if path.suffix else "no extension"
        raise ValueError(f"Pillow writes no format with {extension}; name it e.g. .png, .jpg, .webp or .tif")


def plane_from_array(pixels: np.ndarray) -> Plane:
    """Wrap H×W (1 channel) or H×W×C (C = 3 or 4) uint8 pixels as a :class:`protocol.Plane` (raw bytes, row-major).

    Raises:
        ValueError: not uint8, or not 2-D/3-D.
    """
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"expected H×W or H×W×C uint8 pixels, got {pixels.dtype} of shape {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return Plane(width=pixels.shape[1], height=pixels.shape[0], channels=channels,
                 data=np.ascontiguousarray(pixels).tobytes())


def array_from_plane(plane: Plane) -> np.ndarray:
    """The pixels of ``plane`` as a read-only H×W (1 channel) or H×W×C uint8 array (no copy)."""
    pixels = np.frombuffer(plane.data, dtype=np.uint8)
    if plane.channels == 1:
        return pixels.reshape(plane.height, plane.width)
    return pixels.reshape(plane.height, plane.width, plane.channels)


def mask_bounds(mask: np.ndarray) -> Rect | None:
    """Bounding box of the non-zero pixels of an H×W uint8 mask, or None when the mask is all zero.

    Pillow's ``Image.getbbox`` (left, upper, exclusive right, exclusive lower) as a :class:`protocol.Rect`.
    """
    box = Image.fromarray(np.ascontiguousarray(mask)).getbbox()
    if box is None:
        return None
    left, upper, right, lower = box
    return Rect(left, upper, right - left, lower - upper)


def compose(original: np.ndarray, image: np.ndarray, blend_mask: np.ndarray) -> np.ndarray:
    """Blend ``image`` over ``original`` through ``blend_mask``, as the layer mask of a new layer would.

    Every channel (alpha included) becomes ``round(original × (1 − m/255) + image × m/255)``: exactly
    the original where ``m == 0`` and exactly ``image`` where ``m == 255``. This is Pillow's
    ``Image.composite`` (integer blend with exact rounding); mixing is in the sRGB-encoded values,
    whereas GIMP 3 mixes layer masks in linear light, so partly masked pixels differ slightly from
    GIMP's rendering.

    Args:
        original: H×W×4 uint8 RGBA.
        image: H×W×4 uint8 RGBA, e.g. a :class:`protocol.Variant`'s image.
        blend_mask: H×W uint8, 0…255.

    Returns:
        H×W×4 uint8 RGBA.

    Raises:
        ValueError: the shapes disagree.
    """
    if original.shape != image.shape or original.shape[:2] != blend_mask.shape or original.shape[2:] != (4,):
        raise ValueError(f"compose needs H×W×4 images and an H×W mask, got {original.shape}, "
                         f"{image.shape} and {blend_mask.shape}")
    composed = Image.composite(Image.fromarray(np.ascontiguousarray(image)),
                               Image.fromarray(np.ascontiguousarray(original)),
                               Image.fromarray(np.ascontiguousarray(blend_mask)))
    return np.asarray(composed).copy()


class ArrayDocument(Document):
    """A :class:`client.document.Document` over an H×W×4 uint8 RGBA picture and an H×W uint8 mask (the
    "selection"): the command line's document.

    Result layers are kept in :attr:`layers` instead of being pasted; :meth:`composite` renders one.
    Progress and messages go to ``stream`` (default: ``sys.stderr``).
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray, stream: TextIO | None = None) -> None:
        self.image = image
        self.mask = mask
        self.layers: list[ResultLayer] = []
        self.cancel = threading.Event()
        self._stream = stream or sys.stderr
        self._last_text = ""

    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the picture."""
        return self.image.shape[1], self.image.shape[0]

    def selection_bounds(self) -> Rect | None:
        """Bounding box of the mask's non-zero pixels."""
        return mask_bounds(self.mask)

    def read_rgba(self, rect: Rect) -> bytes:
        """The picture's RGBA bytes inside ``rect``."""
        return self.image[rect.y:rect.bottom, rect.x:rect.right].tobytes()

    def read_mask(self, rect: Rect) -> bytes:
        """The mask's bytes inside ``rect``."""
        return self.mask[rect.y:rect.bottom, rect.x:rect.right].tobytes()

    def add_result_layers(self, layers: Sequence[ResultLayer], canvas: CanvasExpansion | None = None) -> list[str]:
        """Keep the layers for :meth:`composite`; with ``canvas``, first grow :attr:`image` to it (the old picture at
        ``canvas.picture``, the new area transparent: all four bytes 0) and :attr:`mask` likewise (0 there)."""
        if canvas is not None:
            box = (slice(canvas.picture.y, canvas.picture.bottom), slice(canvas.picture.x, canvas.picture.right))
            image = np.zeros((canvas.height, canvas.width, 4), np.uint8)
            mask = np.zeros((canvas.height, canvas.width), np.uint8)
            image[box], mask[box] = self.image, self.mask
            self.image, self.mask = image, mask
        self.layers = list(layers)
        return [layer.name for layer in layers]

    def progress(self, fraction: float, text: str) -> None:
        """Print ``text`` when it changes."""
        if text != self._last_text:
            print(text, file=self._stream, flush=True)
            self._last_text = text

    def message(self, text: str) -> None:
        """Print ``text`` as a note."""
        print(f"note: {text}", file=self._stream, flush=True)

    def cancel_requested(self) -> bool:
        """True after Ctrl+C."""
        return self.cancel.is_set()

    def composite(self, layer: ResultLayer) -> np.ndarray:
        """The whole H×W×4 picture with ``layer`` composed through its mask at its offset (a copy)."""
        box = (slice(layer.y, layer.y + layer.height), slice(layer.x, layer.x + layer.width))
        pixels = np.frombuffer(layer.rgba, np.uint8).reshape(layer.height, layer.width, 4)
        mask = np.frombuffer(layer.mask, np.uint8).reshape(layer.height, layer.width)
        result = self.image.copy()
        result[box] = compose(self.image[box], pixels, mask)
        return result
