"""Image files ↔ protocol planes, result compositing and the file-backed :class:`ArrayDocument` for the
command-line client (NumPy + Pillow; OpenCV for 16-bit PNG files, which Pillow reads and writes only as 8-bit
colour).

Pictures are ``uint8`` (8-bit files) or ``uint16`` (16-bit PNG files: :func:`load_rgba`), and the document sends
and composes them at that depth (:attr:`protocol.Plane.bits`); masks are always ``uint8``.

Never vendored into the GIMP plug-in (GIMP composites with the layer mask itself).
"""

from __future__ import annotations

import math
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, cast

import cv2
import numpy as np
from gimp_inpaint.client.document import Document, ResultLayer
from gimp_inpaint.protocol import DEFAULT_MAX_PIXELS, CanvasExpansion, Plane, Rect
from PIL import Image, ImageMode, ImageOps, PngImagePlugin

MAX_IMAGE_PIXELS = 4 * DEFAULT_MAX_PIXELS
"""Most pixels of a picture or mask read from a file: 8192×8192, four times the daemon's default request limit
(:data:`protocol.DEFAULT_MAX_PIXELS`; only the crop around the mask is sent, so the picture may be larger than a
request). It bounds the command line's memory, 4 bytes per pixel (256 MiB) for each RGBA copy it holds, and lies
below Pillow's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``, about 89.5 million), so Pillow never
warns about a file that passes."""

_EIGHT_BIT_TYPES = ("u1", "b1")
"""NumPy type codes (without byte order) of Pillow modes with at most 8 bits per channel
(``ImageMode.getmode(mode).typestr``: ``|u1`` for L, RGB, RGBA, P, …; ``|b1`` for 1-bit)."""

_PNG_BIT_DEPTH_OFFSET = 24
"""Offset of the bit depth (bits per sample) byte in a PNG file: the 8-byte signature, then the IHDR chunk's length
and type (4 bytes each), width and height (4 each), then the bit depth (PNG specification, 11.2.2 IHDR)."""

_PNG_IHDR_END = 33
"""Offset of the end of a PNG file's first chunk, IHDR: the 8-byte signature, then its length and type (4 bytes
each), its 13 bytes of data and its CRC (4) (PNG specification, 5.2 and 11.2.2)."""

def _is_16_bit_png(path: Path, image: Image.Image) -> bool:
    """Whether ``image`` (opened from ``path`` by Pillow) is a PNG of 16 bits per sample, read from its IHDR."""
    if image.format != "PNG":
        return False
    with path.open("rb") as file:
        header = file.read(_PNG_BIT_DEPTH_OFFSET + 1)
    return len(header) > _PNG_BIT_DEPTH_OFFSET and header[_PNG_BIT_DEPTH_OFFSET] == 16


@contextmanager
def _open_8bit(path: Path, deep: bool = False) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow, check its size and depth from its header, and yield it upright.

    A file of more than :data:`MAX_IMAGE_PIXELS` is refused before its pixels are decoded (a decompression bomb
    is a small file that claims billions of pixels). Pillow opens 16-bit colour PNGs as 8-bit RGB/RGBA (keeping
    the high byte, a correct scaling), but 16-bit grayscale (``I;16``), 32-bit integer (``I``) and float (``F``)
    images keep their range, which ``Image.convert`` to an 8-bit mode clips instead of scaling: such files are
    refused, but with ``deep`` a 16-bit PNG of any colour type (the caller reads its samples with OpenCV,
    :func:`load_rgba`; it is yielded as opened, not turned). The picture is turned as its EXIF orientation says
    (``ImageOps.exif_transpose``: a phone photo is stored sideways and tagged), so it is read as every viewer shows
    it.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than :data:`MAX_IMAGE_PIXELS` pixels, or more than 8 bits per channel (other than a 16-bit
            PNG with ``deep``).
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
        if deep and _is_16_bit_png(path, image):
            yield image
            return
        if ImageMode.getmode(image.mode).typestr[1:] not in _EIGHT_BIT_TYPES:
            raise ValueError(f"{path} has {image.mode} pixels (16-bit, 32-bit or floating point); gimp-inpaint "
                             f"reads 8 bits per channel only. Convert it to 8 bits first (in GIMP: Image ▸ "
                             f"Precision ▸ 8 bit integer).")
        ImageOps.exif_transpose(image, in_place=True)
        yield image


def load_rgba(path: Path) -> np.ndarray:
    """Read an image as H×W×4 RGBA (straight alpha; opaque when the file has none), upright as its EXIF orientation
    says: uint8 for a file of at most 8 bits per channel; uint16 for a 16-bit PNG (gray, gray and alpha, RGB or
    RGBA), decoded by OpenCV (``cv2.IMREAD_UNCHANGED``, which keeps its samples and its alpha) and turned as Pillow
    turns a picture (:func:`_upright`).

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than :data:`MAX_IMAGE_PIXELS` pixels, or more than 8 bits per channel (Pillow modes
            ``I;16``, ``I``, ``F``) other than a 16-bit PNG, which a conversion would clip rather than scale.
    """
    with _open_8bit(path, deep=True) as image:
        if not _is_16_bit_png(path, image):
            return np.asarray(image.convert("RGBA")).copy()
        samples = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)  # a path OpenCV may not open
        if samples is None or samples.dtype != np.uint16:
            raise OSError(f"{path}: OpenCV could not decode this 16-bit PNG")
        if samples.ndim == 2:
            samples = samples[..., None]
        conversion = {1: cv2.COLOR_GRAY2RGBA, 3: cv2.COLOR_BGR2RGBA, 4: cv2.COLOR_BGRA2RGBA}.get(samples.shape[2])
        if conversion is None:
            raise OSError(f"{path}: a 16-bit PNG of {samples.shape[2]} channels")
        return _upright(cv2.cvtColor(samples, conversion), image)


def _upright(pixels: np.ndarray, image: Image.Image) -> np.ndarray:
    """``pixels`` (H×W×C, the samples of ``image``, a file Pillow opened) turned as its EXIF orientation says, by
    Pillow's own rule (``ImageOps.exif_transpose``) applied to an image of pixel indices (mode ``I``), whose result
    picks the samples: no rotation table of our own (a new array, or ``pixels`` when it is upright)."""
    orientation = image.getexif().get(0x0112, 1)  # EXIF's Orientation tag
    if orientation == 1:
        return pixels
    height, width = pixels.shape[:2]
    index = Image.fromarray(np.arange(height * width, dtype=np.int32).reshape(height, width))
    index.info["exif"] = image.getexif().tobytes()
    turned = np.asarray(ImageOps.exif_transpose(index))
    return pixels.reshape(height * width, -1)[turned].reshape(*turned.shape, pixels.shape[2])


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


def save_image(path: Path, pixels: np.ndarray, png_compression: int | None = None,
               text: Mapping[str, str] | None = None) -> None:
    """Write H×W (gray), H×W×3 (RGB) or H×W×4 (RGBA) uint8 or uint16 pixels; the format follows the file's
    extension.

    RGBA pixels that are all opaque are written as RGB, so formats without alpha (JPEG) work. uint16 pixels are
    written as a 16-bit PNG to a PNG file (``cv2.imencode``, Pillow writing no 16-bit colour PNG) and reduced to 8
    bits (``round(v / 257)``) for any other format.

    Args:
        png_compression: zlib level 0…9 of a PNG file (Pillow's ``compress_level``; None = Pillow's default, 6);
            the pixels are the same at every level, only the size and the time differ. Other formats ignore it
            and keep their defaults.
        text: keyword (Latin-1, 1…79 characters) → text, each written into a PNG file as a compressed ``iTXt``
            chunk (UTF-8; Pillow's ``PngInfo.add_itxt``), e.g. :data:`client.metadata.PNG_TEXT_KEY`'s request
            record; :func:`read_png_text` reads it back. Other formats get none.

    Raises:
        OSError: the file cannot be written.
        ValueError: Pillow knows no format for the extension, or ``png_compression`` is not 0…9.
    """
    if png_compression is not None and png_compression not in range(10):
        raise ValueError(f"the PNG compression level must be 0 to 9, got {png_compression!r}")
    if pixels.ndim == 3 and pixels.shape[2] == 4 and bool(np.all(pixels[..., 3] == np.iinfo(pixels.dtype).max)):
        pixels = pixels[..., :3]
    png = Image.registered_extensions().get(path.suffix.lower()) == "PNG"
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value, zip=True)
    if pixels.dtype == np.uint16:
        if png:
            _save_16_bit_png(path, pixels, png_compression, info)
            return
        pixels = cv2.convertScaleAbs(pixels, alpha=1 / 257)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    options: dict[str, Any] = {}
    if png and png_compression is not None:
        options["compress_level"] = png_compression
    if png and text:
        options["pnginfo"] = info
    image.save(path, **options)


def _save_16_bit_png(path: Path, pixels: np.ndarray, png_compression: int | None,
                     info: PngImagePlugin.PngInfo) -> None:
    """Write H×W, H×W×3 or H×W×4 uint16 pixels (gray, RGB, RGBA) as a 16-bit PNG with OpenCV (``cv2.imencode``,
    whose colour order is BGR; the bytes written by Python, so any path works), at zlib level ``png_compression``
    (None: 6, Pillow's default), with ``info``'s chunks (its text) right after the IHDR chunk, written by Pillow's
    ``PngImagePlugin.putchunk`` (OpenCV writes no text)."""
    conversion = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}.get(pixels.shape[2] if pixels.ndim == 3 else 1)
    samples = cv2.cvtColor(pixels, conversion) if conversion is not None else pixels
    level = 6 if png_compression is None else png_compression
    ok, encoded = cv2.imencode(".png", samples, [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode a 16-bit PNG")
    png = encoded.tobytes()
    with path.open("wb") as file:
        file.write(png[:_PNG_IHDR_END])
        for chunk_type, data, *_ in info.chunks:
            PngImagePlugin.putchunk(file, chunk_type, data)
        file.write(png[_PNG_IHDR_END:])


def read_png_text(path: Path, key: str) -> str | None:
    """The text of ``path``'s PNG text chunk ``key`` (``tEXt``, ``zTXt`` or ``iTXt``, as Pillow reads them, e.g.
    what :func:`save_image` wrote with ``text``); None when the file has no such chunk or is not a PNG.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: the chunk decompresses to more than Pillow reads (``PngImagePlugin.MAX_TEXT_CHUNK``, 1 MiB).
    """
    with Image.open(path) as image:
        if not isinstance(image, PngImagePlugin.PngImageFile):
            return None
        value = image.text.get(key)
    return None if value is None else str(value)


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


def _sample_type(bits: int) -> np.dtype:
    """The NumPy type of a plane's samples: uint8, or little-endian uint16 (``<u2``) for 16 bits."""
    return np.dtype(np.uint8) if bits == 8 else np.dtype("<u2")


def plane_from_array(pixels: np.ndarray) -> Plane:
    """Wrap H×W (1 channel) or H×W×C (C = 3 or 4) uint8 or uint16 pixels as a :class:`protocol.Plane` (raw samples,
    row-major; uint16 as 16-bit little-endian samples).

    Raises:
        ValueError: not uint8 or uint16, or not 2-D/3-D.
    """
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3):
        raise ValueError(f"expected H×W or H×W×C uint8 or uint16 pixels, got {pixels.dtype} of shape {pixels.shape}")
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    bits = 8 * pixels.dtype.itemsize
    return Plane(width=pixels.shape[1], height=pixels.shape[0], channels=channels,
                 data=np.ascontiguousarray(pixels, dtype=_sample_type(bits)).tobytes(), bits=bits)


def array_from_plane(plane: Plane) -> np.ndarray:
    """The pixels of ``plane`` as a read-only H×W (1 channel) or H×W×C array (no copy): uint8, or uint16
    (little-endian) for a 16-bit plane."""
    pixels = np.frombuffer(plane.data, dtype=_sample_type(plane.bits))
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
    the original where ``m == 0`` and exactly ``image`` where ``m == 255``. At 8 bits this is Pillow's
    ``Image.composite`` (integer blend with exact rounding); at 16 bits (uint16, which Pillow cannot composite)
    the same formula in float32 (exact at both ends: an integer below 2²⁴ times 1.0 plus 0.0), rounded to the
    nearest. Mixing is in the sRGB-encoded values, whereas GIMP 3 mixes layer masks
    in linear light, so partly masked pixels differ slightly from GIMP's rendering.

    Args:
        original: H×W×4 uint8 or uint16 RGBA.
        image: H×W×4 RGBA of ``original``'s type, e.g. a :class:`protocol.Variant`'s image.
        blend_mask: H×W uint8, 0…255.

    Returns:
        H×W×4 RGBA of ``original``'s type.

    Raises:
        ValueError: the shapes or types disagree.
    """
    if original.shape != image.shape or original.shape[:2] != blend_mask.shape or original.shape[2:] != (4,) \
            or original.dtype != image.dtype:
        raise ValueError(f"compose needs H×W×4 images of one type and an H×W mask, got {original.shape} "
                         f"{original.dtype}, {image.shape} {image.dtype} and {blend_mask.shape}")
    if original.dtype == np.uint16:
        weights = np.multiply(blend_mask, np.float32(1 / 255), dtype=np.float32)[..., None]
        mixed = original * (1 - weights) + image * weights  # float32 (cv2.blendLinear divides by w1 + w2 + 1e-5)
        return np.rint(mixed, out=mixed).astype(np.uint16)
    composed = Image.composite(Image.fromarray(np.ascontiguousarray(image)),
                               Image.fromarray(np.ascontiguousarray(original)),
                               Image.fromarray(np.ascontiguousarray(blend_mask)))
    return np.asarray(composed).copy()


class ArrayDocument(Document):
    """A :class:`client.document.Document` over an H×W×4 uint8 or uint16 RGBA picture (its :attr:`bits`: 8 or 16)
    and an H×W uint8 mask (the "selection"): the command line's document.

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

    @property
    def bits(self) -> int:
        """16 for a uint16 picture, else 8."""
        return 8 * self.image.dtype.itemsize

    def read_rgba(self, rect: Rect) -> bytes:
        """The picture's RGBA samples inside ``rect`` (16-bit ones little-endian)."""
        return self.image[rect.y:rect.bottom, rect.x:rect.right].astype(_sample_type(self.bits), copy=False).tobytes()

    def read_mask(self, rect: Rect) -> bytes:
        """The mask's bytes inside ``rect``."""
        return self.mask[rect.y:rect.bottom, rect.x:rect.right].tobytes()

    def add_result_layers(self, layers: Sequence[ResultLayer], canvas: CanvasExpansion | None = None) -> list[str]:
        """Keep the layers for :meth:`composite`; with ``canvas``, first grow :attr:`image` to it (the old picture at
        ``canvas.picture``, the new area transparent: all four bytes 0) and :attr:`mask` likewise (0 there)."""
        if canvas is not None:
            box = (slice(canvas.picture.y, canvas.picture.bottom), slice(canvas.picture.x, canvas.picture.right))
            image = np.zeros((canvas.height, canvas.width, 4), self.image.dtype)
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
        """The whole H×W×4 picture with ``layer`` composed through its mask at its offset (a copy, of the picture's
        type; an 8-bit layer on a 16-bit picture is scaled to it, × 257)."""
        box = (slice(layer.y, layer.y + layer.height), slice(layer.x, layer.x + layer.width))
        pixels = np.frombuffer(layer.rgba, _sample_type(layer.bits)).reshape(layer.height, layer.width, 4)
        if pixels.dtype.itemsize < self.image.dtype.itemsize:
            pixels = np.multiply(pixels, 257, dtype=np.uint16)
        pixels = pixels.astype(self.image.dtype, copy=False)
        mask = np.frombuffer(layer.mask, np.uint8).reshape(layer.height, layer.width)
        result = self.image.copy()
        result[box] = compose(self.image[box], pixels, mask)
        return result
