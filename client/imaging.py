"""Image files ↔ protocol planes and result compositing for the command-line client (NumPy + Pillow).

Never vendored into the GIMP plug-in (GIMP composites with the layer mask itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gimp_inpaint.protocol import Plane, Rect
from PIL import Image, ImageMode

_EIGHT_BIT_TYPES = ("u1", "b1")
"""NumPy type codes (without byte order) of Pillow modes with at most 8 bits per channel
(``ImageMode.getmode(mode).typestr``: ``|u1`` for L, RGB, RGBA, P, …; ``|b1`` for 1-bit)."""


def _open_8bit(path: Path) -> Image.Image:
    """Open ``path`` with Pillow and check that its pixels have at most 8 bits per channel.

    Pillow opens 16-bit colour PNGs as 8-bit RGB/RGBA (keeping the high byte, a correct scaling), but
    16-bit grayscale (``I;16``), 32-bit integer (``I``) and float (``F``) images keep their range,
    which ``Image.convert`` to an 8-bit mode clips instead of scaling: such files are refused.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: the image has more than 8 bits per channel.
    """
    image = Image.open(path)
    if ImageMode.getmode(image.mode).typestr[1:] not in _EIGHT_BIT_TYPES:
        image.close()
        raise ValueError(f"{path} has {image.mode} pixels (16-bit, 32-bit or floating point); gimp-inpaint reads "
                         f"8 bits per channel only. Convert it to 8 bits first (in GIMP: Image ▸ Precision ▸ "
                         f"8 bit integer).")
    return image


def load_rgba(path: Path) -> np.ndarray:
    """Read an 8-bit image as H×W×4 uint8 RGBA (straight alpha; opaque when the file has none).

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than 8 bits per channel (Pillow modes ``I;16``, ``I``, ``F``), which a conversion
            would clip rather than scale.
    """
    with _open_8bit(path) as image:
        return np.asarray(image.convert("RGBA")).copy()


def load_mask(path: Path) -> np.ndarray:
    """Read an 8-bit mask image as H×W uint8 (255 = repaint, 0 = keep); colour images become luminance.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
        ValueError: more than 8 bits per channel (Pillow modes ``I;16``, ``I``, ``F``), which a conversion
            would clip rather than scale.
    """
    with _open_8bit(path) as image:
        return np.asarray(image.convert("L")).copy()


def save_image(path: Path, pixels: np.ndarray) -> None:
    """Write H×W (gray), H×W×3 (RGB) or H×W×4 (RGBA) uint8 pixels; the format follows the file's extension.

    RGBA pixels that are all opaque are written as RGB, so formats without alpha (JPEG) work.

    Raises:
        OSError: the file cannot be written.
        ValueError: Pillow knows no format for the extension.
    """
    if pixels.ndim == 3 and pixels.shape[2] == 4 and bool(np.all(pixels[..., 3] == 255)):
        pixels = pixels[..., :3]
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)


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
