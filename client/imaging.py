"""Image files ↔ protocol planes and result compositing for the command-line client (NumPy + Pillow).

Never vendored into the GIMP plug-in (GIMP composites with the layer mask itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from protocol import Plane, Rect


def load_rgba(path: Path) -> np.ndarray:
    """Read any image Pillow opens as H×W×4 uint8 RGBA (straight alpha; opaque when the file has none).

    Raises:
        OSError: the file is missing or not an image Pillow can read.
    """
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA")).copy()


def load_mask(path: Path) -> np.ndarray:
    """Read a mask image as H×W uint8 (255 = repaint, 0 = keep); colour images are converted to luminance.

    Raises:
        OSError: the file is missing or not an image Pillow can read.
    """
    with Image.open(path) as image:
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
    """Bounding box of the non-zero pixels of an H×W mask, or None when the mask is all zero."""
    rows, cols = np.nonzero(np.any(mask, axis=1))[0], np.nonzero(np.any(mask, axis=0))[0]
    if rows.size == 0:
        return None
    return Rect(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


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
