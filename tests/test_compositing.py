"""daemon.compositing on a real photo: grown masks, the feathered blend mask, and the exact overlay.

The fast (OpenCV, bounding-box) implementations are checked bit for bit against the plain NumPy /
whole-image ones they replaced (issue 10), kept here as ``_reference_*``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
from gimp_inpaint.daemon.compositing import (
    GROW_STEP,
    REPAINT_THRESHOLD,
    blend_mask,
    grow_mask,
    mask_box,
    overlay,
    repaint_mask,
    rgb_channels,
)
from gimp_inpaint.protocol import feather_reach
from PIL import Image, ImageFilter
from skimage import data


@pytest.fixture(scope="module")
def photo_rgba() -> np.ndarray:
    """The astronaut photo (512×512) as RGBA with a horizontal alpha ramp 0…255, so alpha is checked too."""
    rgb = data.astronaut()
    alpha = np.broadcast_to(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), rgb.shape[:2])
    return np.dstack([rgb, alpha])


@pytest.fixture(scope="module")
def selection() -> np.ndarray:
    """An irregular real-world selection: the dark pixels of the coffee photo's central area (H×W u8, 0/255)."""
    gray = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2GRAY)[:512, :512]
    mask = np.zeros((512, 512), np.uint8)
    mask[160:352, 160:352] = np.where(gray[160:352, 160:352] < 80, 255, 0)
    assert 1000 < np.count_nonzero(mask) < 192 * 192  # a real, partial selection
    return mask


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) of every pixel to the nearest mask pixel (0 on the mask)."""
    return cv2.distanceTransform(np.where(mask > 0, 0, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _chebyshev_outside(mask: np.ndarray) -> np.ndarray:
    """Chebyshev (max(|dx|, |dy|)) distance to the nearest mask pixel."""
    return cv2.distanceTransform(np.where(mask > 0, 0, 1).astype(np.uint8), cv2.DIST_C, 3)


@pytest.mark.parametrize("pixels", [1, 4, 17, GROW_STEP, 3 * GROW_STEP + 5])
def test_grow_mask_is_a_disc_dilation(selection: np.ndarray, pixels: int) -> None:
    grown = grow_mask(selection, pixels)
    distance = _distance_outside(selection)
    tolerance = -(-pixels // GROW_STEP)  # about a pixel of discretisation per dilation step
    assert grown.shape == selection.shape and grown.dtype == np.uint8
    assert np.all(grown[selection == 255] == 255)
    assert np.all(grown[distance <= pixels - tolerance] == 255)  # everything well inside the disc is covered …
    assert np.all(grown[distance > pixels + tolerance] == 0)  # … nothing beyond it
    assert np.count_nonzero(grown[distance > pixels - tolerance]) < np.count_nonzero(distance > pixels - tolerance)
    assert set(np.unique(grown)) <= {0, 255}


def test_grow_mask_keeps_soft_values_and_zero_is_a_copy(selection: np.ndarray) -> None:
    soft = (selection // 255 * 100).astype(np.uint8)
    grown = grow_mask(soft, 3)
    assert set(np.unique(grown)) == {0, 100}
    copy = grow_mask(selection, 0)
    assert np.array_equal(copy, selection) and copy is not selection
    with pytest.raises(ValueError):
        grow_mask(selection, -1)
    with pytest.raises(ValueError):
        grow_mask(selection.astype(np.float32), 2)


@pytest.mark.parametrize("feather", [1, 4, 12, 30])
def test_blend_mask_fades_outward_with_pillow_gaussian_blur(selection: np.ndarray, feather: int) -> None:
    grown = grow_mask(selection, 4)
    blend = blend_mask(grown, feather)
    assert blend.shape == grown.shape and blend.dtype == np.uint8
    assert np.all(blend >= grown)  # never less than the selection …
    assert np.all(blend[grown == 255] == 255)  # … so all of it is replaced, no ghost of its edge
    blurred = np.asarray(Image.fromarray(grown).filter(ImageFilter.GaussianBlur(feather)))
    ring = (grown == 0) & (_distance_outside(grown) <= feather)
    assert np.all(blend[ring] >= 10)  # a visible fade over (at least) one feather around the selection …
    fade = blurred > grown
    assert np.array_equal(blend[fade], blurred[fade])  # … which is Pillow's Gaussian blur of the mask
    assert np.all(blend[_chebyshev_outside(grown) > feather_reach(feather)] == 0)  # nothing beyond its reach
    assert np.all(blend[grown == 0] < 255)  # and it fades to below full outside


@pytest.mark.parametrize("feather", [2, 4, 12])
def test_blend_mask_fades_monotonically_from_a_straight_edge(feather: int) -> None:
    mask = np.zeros((64, 160), np.uint8)
    mask[:, :40] = 255
    blend = blend_mask(mask, feather)
    assert np.all(blend == blend[32])  # the same profile on every row: Pillow extends the image's borders
    assert np.all(blend[:, :40] == 255)
    profile = blend[32, 40:].astype(int)
    assert 96 <= profile[0] < 128  # half strength at the edge (the pixel centre is 0.5 px outside it) …
    steep = profile[: np.argmax(profile <= 2)]
    assert len(steep) >= 2 * feather and np.all(np.diff(steep) < 0)  # … falling strictly over the visible fade …
    assert np.all(np.diff(profile) <= 0)  # … never rising …
    assert np.all(profile[feather_reach(feather):] == 0)  # … and exactly 0 beyond feather_reach


def test_blend_mask_zero_feather_and_borders() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :20] = 255  # touches the left, top and bottom borders
    assert np.array_equal(blend_mask(mask, 0), mask)
    blend = blend_mask(mask, 6)
    assert np.all(blend[:, :5] == 255)  # Pillow extends the border: no fade along the crop's edge
    assert np.all(blend[:, 20 + feather_reach(6):] == 0)
    with pytest.raises(ValueError):
        blend_mask(mask, -2)


@pytest.mark.parametrize("feather", [0, 3, 12])
def test_repaint_mask_covers_the_visible_fade(selection: np.ndarray, feather: int) -> None:
    grown = grow_mask(selection, 2)
    blend = blend_mask(grown, feather)
    repaint = repaint_mask(blend)
    assert set(np.unique(repaint)) == {0, 255}
    assert np.all(repaint[grown >= 128] == 255)
    assert np.all(repaint[blend >= 40] == 255) and np.all(repaint[blend < 40] == 0)


def test_repaint_mask_reaches_one_feather_beyond_a_straight_edge() -> None:
    mask = np.zeros((64, 128), np.uint8)
    mask[:, :40] = 255
    repaint = repaint_mask(blend_mask(mask, 10))
    assert np.all(repaint[:, :50] == 255)  # 10 px (one standard deviation) beyond the edge …
    assert np.all(repaint[:, 52:] == 0)  # … and no farther


def test_overlay_keeps_unmasked_pixels_exactly(photo_rgba: np.ndarray, selection: np.ndarray) -> None:
    blend = blend_mask(grow_mask(selection, 4), 8)
    generated = cv2.GaussianBlur(cv2.resize(data.coffee(), (512, 512)), (0, 0), 5)  # any different picture
    result = overlay(photo_rgba, generated, blend)
    outside, inside = blend == 0, blend > 0
    assert result.shape == (512, 512, 4) and result.dtype == np.uint8
    assert np.array_equal(result[outside], photo_rgba[outside])  # RGB and alpha, bit for bit
    assert np.array_equal(result[inside, :3], generated[inside])
    assert np.all(result[inside, 3] == 255)
    assert np.count_nonzero(inside) > 0 and np.count_nonzero(outside) > 0


def test_overlay_rejects_mismatched_shapes(photo_rgba: np.ndarray) -> None:
    blend = np.zeros((512, 512), np.uint8)
    with pytest.raises(ValueError):
        overlay(photo_rgba, np.zeros((512, 511, 3), np.uint8), blend)
    with pytest.raises(ValueError):
        overlay(photo_rgba[..., :3], np.zeros((512, 512, 3), np.uint8), blend)


@pytest.mark.diffusers
def test_matches_diffusers_blur_and_apply_overlay(selection: np.ndarray) -> None:
    """The layer-mask composite of our overlay equals diffusers' own blur + apply_overlay on an opaque photo."""
    image_processor = pytest.importorskip("diffusers.image_processor")
    processor = image_processor.VaeImageProcessor()
    original = data.astronaut()
    generated = cv2.GaussianBlur(cv2.resize(data.coffee(), (512, 512)), (0, 0), 5)
    grown = grow_mask(selection, 4)
    blend = blend_mask(grown, 10)
    assert np.array_equal(blend, np.maximum(grown, np.asarray(processor.blur(Image.fromarray(grown), 10))))

    variant = overlay(np.dstack([original, np.full((512, 512), 255, np.uint8)]), generated, blend)
    weight = blend[..., None].astype(np.float64) / 255
    composed = original * (1 - weight) + variant[..., :3] * weight  # what GIMP's layer mask shows
    reference = np.asarray(processor.apply_overlay(Image.fromarray(blend), Image.fromarray(original),
                                                   Image.fromarray(generated)))
    assert np.array_equal(reference[blend == 0], original[blend == 0])
    assert np.abs(composed - reference.astype(np.float64)).max() <= 2.0  # Pillow's 8-bit premultiplication


def _numpy_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), bottom and right exclusive, of the non-zero pixels, by NumPy."""
    rows, columns = np.nonzero(mask)
    return int(rows.min()), int(rows.max()) + 1, int(columns.min()), int(columns.max()) + 1


def test_mask_box_is_the_bounding_box_of_every_non_zero_pixel(selection: np.ndarray) -> None:
    """The faint tail of the fade counts (a value of 1 is still blended), so outside the box the blend is 0."""
    blend = blend_mask(grow_mask(selection, 4), 12)
    rows, columns = mask_box(blend)
    assert (rows.start, rows.stop, columns.start, columns.stop) == _numpy_box(blend)
    outside = np.ones(blend.shape, bool)
    outside[rows, columns] = False
    assert not blend[outside].any() and (blend[rows, columns] > 0).any()
    assert blend[rows, columns].shape[0] < 512 and blend[rows, columns].shape[1] < 512  # smaller than the crop
    faint = np.zeros((40, 50), np.uint8)
    faint[3, 7] = 1
    faint[30, 44] = 255
    assert mask_box(faint) == (slice(3, 31), slice(7, 45))
    edge = np.zeros((40, 50), np.uint8)
    edge[39, :] = 9  # touching the crop's bottom, left and right borders
    assert mask_box(edge) == (slice(39, 40), slice(0, 50))


def test_mask_box_refuses_an_empty_or_wrong_mask() -> None:
    with pytest.raises(ValueError, match="no non-zero pixel"):
        mask_box(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError):
        mask_box(np.ones((8, 8), np.float32))
    with pytest.raises(ValueError):
        mask_box(np.ones((8, 8, 1), np.uint8))


# --- bit-identical to the implementations the OpenCV/bounding-box ones replaced (issue 10) ---


def _reference_grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The former grow_mask: successive elliptic dilations of the whole array."""
    grown = mask.copy()
    remaining = pixels
    while remaining > 0:
        step = min(remaining, GROW_STEP)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * step + 1, 2 * step + 1))
        grown = cv2.dilate(grown, kernel)
        remaining -= step
    return grown


def _reference_blend_mask(mask: np.ndarray, feather: int) -> np.ndarray:
    """The former blend_mask: Pillow's GaussianBlur of the whole array, then the maximum with the mask."""
    if feather == 0:
        return mask.copy()
    blurred = np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(feather)), dtype=np.uint8)
    return np.maximum(mask, blurred)


def _reference_repaint_mask(blend: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """The former repaint_mask: boolean arrays and an int64 ``np.where``."""
    repaint = blend >= REPAINT_THRESHOLD
    if alpha is not None:
        repaint |= alpha == 0
    return np.where(repaint, 255, 0).astype(np.uint8)


def _reference_overlay(original: np.ndarray, generated: np.ndarray, blend: np.ndarray) -> np.ndarray:
    """The former overlay: boolean-mask fancy indexing into a copy of the original."""
    result = original.copy()
    inside = blend > 0
    result[inside, :3] = generated[inside]
    result[inside, 3] = 255
    return result


SIZES = [(97, 131), (512, 512), (1024, 1536)]
"""(height, width): odd, square, and a large landscape crop."""

SHAPES = ["ellipse", "thin_line", "border", "soft", "pixel", "faint_corner", "almost_full", "photo", "empty"]

AMOUNTS = [0, 1, 4, 12, 64]
"""Grow and feather values (pixels); 64 is two GROW_STEP dilations and a blur wider than the smallest crop."""

PHOTOS = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea, "rocket": data.rocket}


@functools.cache
def _photo(name: str, height: int, width: int) -> np.ndarray:
    """The skimage photo ``name`` resized to height×width (H×W×3 uint8, read-only)."""
    rgb = cv2.resize(PHOTOS[name](), (width, height), interpolation=cv2.INTER_AREA)
    rgb.setflags(write=False)
    return rgb


@functools.cache
def _mask(shape: str, height: int, width: int) -> np.ndarray:
    """An H×W uint8 mask (read-only, so a function that wrote into its input would fail)."""
    mask = np.zeros((height, width), np.uint8)
    if shape == "ellipse":  # a tilted ellipse well inside the crop
        cv2.ellipse(mask, (width // 2, height // 2), (max(width // 5, 2), max(height // 4, 2)), 30, 0, 360, 255, -1)
    elif shape == "thin_line":  # one pixel wide, diagonal, a few pixels from the borders
        cv2.line(mask, (3, height // 3), (width - 4, 2 * height // 3), 255, 1)
    elif shape == "border":  # touching the top, left and bottom borders
        mask[: height // 2, : width // 3] = 255
        mask[-2:, width // 4: 3 * width // 4] = 255
    elif shape == "soft":  # a feathered selection: grey values 1…255, and a flat grey patch
        cv2.ellipse(mask, (2 * width // 3, height // 2), (max(width // 6, 2), max(height // 5, 2)), 0, 0, 360, 255, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(min(height, width) / 40, 1))
        mask[height // 5: height // 3, width // 8: width // 4] = 100
    elif shape == "pixel":
        mask[height // 2, width // 3] = 255
    elif shape == "faint_corner":  # one faint pixel in the top-right corner
        mask[0, width - 1] = 1
    elif shape == "almost_full":  # everything but a hole and a one-pixel column
        mask[:] = 255
        mask[height // 3: height // 2, width // 2: 2 * width // 3] = 0
        mask[:, width // 5] = 0
    elif shape == "photo":  # an irregular real-world selection: the cat's dark pixels, with soft values
        gray = cv2.cvtColor(_photo("chelsea", height, width), cv2.COLOR_RGB2GRAY)
        mask = np.where(gray < 70, 255, np.where(gray < 90, 128, 0)).astype(np.uint8)
        mask[:, : width // 6] = 0
    else:
        assert shape == "empty"
    mask.setflags(write=False)
    return mask


def _assert_identical(fast: np.ndarray, reference: np.ndarray) -> None:
    assert fast.dtype == reference.dtype == np.uint8
    assert fast.shape == reference.shape
    assert fast.flags.c_contiguous and fast.flags.writeable
    if not np.array_equal(fast, reference):
        rows, columns = np.nonzero(fast != reference)
        pytest.fail(f"{rows.size} pixels differ, first at ({rows[0]}, {columns[0]})")


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pixels", AMOUNTS)
def test_grow_mask_is_bit_identical_to_the_whole_array_dilation(size: tuple[int, int], shape: str,
                                                                  pixels: int) -> None:
    mask = _mask(shape, *size)
    grown = grow_mask(mask, pixels)
    _assert_identical(grown, _reference_grow_mask(mask, pixels))
    assert not np.shares_memory(grown, mask)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("feather", AMOUNTS)
def test_blend_mask_is_bit_identical_to_the_whole_image_blur(size: tuple[int, int], shape: str,
                                                              feather: int) -> None:
    mask = _mask(shape, *size)
    blend = blend_mask(mask, feather)
    _assert_identical(blend, _reference_blend_mask(mask, feather))
    assert not np.shares_memory(blend, mask)


def test_grow_and_blend_are_bit_identical_on_random_masks_near_the_borders() -> None:
    """Random soft blobs anywhere (also within the reach of a border, where the box is clipped), random amounts."""
    rng = np.random.default_rng(10)
    for _ in range(40):
        height, width = (int(n) for n in rng.integers(20, 260, 2))
        mask = np.zeros((height, width), np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
            mask[y: y + int(rng.integers(1, 9)), x: x + int(rng.integers(1, 9))] = rng.integers(1, 256)
        pixels, feather = (int(n) for n in rng.integers(0, 70, 2))
        grown = grow_mask(mask, pixels)
        _assert_identical(grown, _reference_grow_mask(mask, pixels))
        _assert_identical(blend_mask(grown, feather), _reference_blend_mask(grown, feather))


def _alpha(kind: str, height: int, width: int) -> np.ndarray | None:
    """None, or an H×W uint8 alpha channel with fully transparent regions (read-only)."""
    if kind == "none":
        return None
    if kind == "photo":  # transparent where the coffee photo is dark, a ramp elsewhere, a transparent left strip
        gray = cv2.cvtColor(_photo("coffee", height, width), cv2.COLOR_RGB2GRAY)
        ramp = np.broadcast_to(np.linspace(1, 255, width).astype(np.uint8), (height, width))
        alpha = np.where(gray < 60, 0, ramp).astype(np.uint8)
        alpha[:, : width // 7] = 0
    else:
        assert kind == "transparent"
        alpha = np.zeros((height, width), np.uint8)
    alpha.setflags(write=False)
    return alpha


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("alpha_kind", ["none", "photo", "transparent"])
def test_repaint_mask_is_bit_identical_to_the_numpy_threshold(size: tuple[int, int], shape: str,
                                                              alpha_kind: str) -> None:
    blend = _reference_blend_mask(_reference_grow_mask(_mask(shape, *size), 4), 12)
    alpha = _alpha(alpha_kind, *size)
    repaint = repaint_mask(blend, alpha)
    _assert_identical(repaint, _reference_repaint_mask(blend, alpha))
    if alpha is not None:  # the worker passes the request's alpha as a strided, read-only view of its RGBA
        rgba = np.dstack([_photo("rocket", *size), alpha])
        view = np.frombuffer(rgba.tobytes(), np.uint8).reshape(rgba.shape)[..., 3]
        _assert_identical(repaint_mask(blend, view), _reference_repaint_mask(blend, alpha))
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every value, on both sides of the threshold
    _assert_identical(repaint_mask(every, every[::-1]), _reference_repaint_mask(every, every[::-1]))


def test_repaint_mask_rejects_wrong_arrays() -> None:
    blend = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError):
        repaint_mask(blend.astype(np.float32))
    with pytest.raises(ValueError):
        repaint_mask(blend, np.zeros((8, 9), np.uint8))
    with pytest.raises(ValueError):
        repaint_mask(blend, np.zeros((8, 8), np.uint16))


def _request_rgba(size: tuple[int, int]) -> np.ndarray:
    """The astronaut at ``size`` with the photo alpha, as the worker sees a request: read-only, from bytes."""
    alpha = _alpha("photo", *size)
    assert alpha is not None
    rgba = np.dstack([_photo("astronaut", *size), alpha])
    return np.frombuffer(rgba.tobytes(), np.uint8).reshape(rgba.shape)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_rgb_channels_is_the_contiguous_copy_of_the_colour_channels(size: tuple[int, int]) -> None:
    image = _request_rgba(size)
    rgb = rgb_channels(image)
    _assert_identical(rgb, np.ascontiguousarray(image[..., :3]))
    assert not np.shares_memory(rgb, image)
    with pytest.raises(ValueError):
        rgb_channels(image[..., :3])


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
@pytest.mark.parametrize("shape", SHAPES)
def test_overlay_is_bit_identical_to_the_boolean_indexing(size: tuple[int, int], shape: str) -> None:
    original = _request_rgba(size)
    generated = _photo("coffee", *size)
    blend = _reference_blend_mask(_reference_grow_mask(_mask(shape, *size), 4), 12)
    result = overlay(original, generated, blend)
    _assert_identical(result, _reference_overlay(original, generated, blend))
    assert not np.shares_memory(result, original) and not np.shares_memory(result, generated)
    if blend.any():  # as the worker calls it: strided views of the blend mask's box
        box = mask_box(blend)
        _assert_identical(overlay(original[box], generated[box], blend[box]),
                          _reference_overlay(original[box], generated[box], blend[box]))
