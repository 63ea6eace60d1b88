"""daemon.prefill on real photos: each fill mode's pre-fill changes the hole as that mode defines and leaves every other
pixel bit-exact; the colour match gives a shifted engine output the CIELAB statistics of the ring around the hole."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from gimp_inpaint.daemon import prefill
from gimp_inpaint.daemon.compositing import blend_mask, grow_mask, overlay, repaint_mask
from skimage import data

PHOTOS = {
    "astronaut": data.astronaut(),  # 512×512
    "coffee": data.coffee(),  # 400×600
    "chelsea-crop": np.ascontiguousarray(data.chelsea()[40:137, 60:191]),  # 97×131
}


def hole_of(shape: str, height: int, width: int) -> np.ndarray:
    """An H×W uint8 hole (255) of the named shape: a tilted ellipse in the middle, a 9-pixel stroke across, three
    overlapping discs, or the right third (touching the canvas edge, as an expansion's)."""
    hole = np.zeros((height, width), np.uint8)
    if shape == "ellipse":
        cv2.ellipse(hole, (width // 2, height // 2), (width // 6, height // 5), 30, 0, 360, 255, -1)
    elif shape == "stroke":
        cv2.line(hole, (width // 8, height // 4), (7 * width // 8, 3 * height // 4), 255, 9)
    elif shape == "discs":
        for x, y, r in ((0.3, 0.4, 0.12), (0.45, 0.5, 0.15), (0.6, 0.35, 0.1)):
            cv2.circle(hole, (int(x * width), int(y * height)), int(r * min(height, width)), 255, -1)
    else:
        hole[:, 2 * width // 3:] = 255
    return hole


PREFILLS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"fill": prefill.fill,
                                                                       "expand": prefill.expand}


@pytest.mark.parametrize("mode", PREFILLS)
@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("shape", ["ellipse", "stroke", "discs", "right-third"])
def test_a_prefill_changes_the_hole_and_leaves_every_other_pixel_exact(mode: str, photo: str, shape: str) -> None:
    image = PHOTOS[photo]
    hole = hole_of(shape, *image.shape[:2])
    before = image.copy()
    out = PREFILLS[mode](image, hole)
    inside = hole > 0
    assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.array_equal(image, before)  # the input is not touched
    assert np.array_equal(out[~inside], image[~inside])  # every pixel outside the hole, bit-exact
    assert np.abs(out[inside].astype(int) - image[inside]).mean() > 3  # the hole's content is replaced


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("shape", ["ellipse", "stroke", "discs"])
def test_fill_is_a_smooth_blend_of_the_surroundings_alone(photo: str, shape: str) -> None:
    """The fill's hole is made of the known pixels only (painting the hole red first changes nothing), each a mix of
    them (within their range), close in colour to the ring around the hole, and smooth (its Laplacian a small share
    of the photo's there)."""
    image = PHOTOS[photo]
    hole = hole_of(shape, *image.shape[:2])
    inside = hole > 0
    out = prefill.fill(image, hole)
    red = image.copy()
    red[inside] = (255, 0, 0)
    assert np.array_equal(prefill.fill(red, hole), out)  # the hole's own pixels are not read
    known = image[~inside]
    assert (out[inside] >= known.min(axis=0)).all() and (out[inside] <= known.max(axis=0)).all()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17))
    ring = (cv2.dilate(hole, disc) > 0) & ~inside
    assert np.abs(out[inside].mean(axis=0) - image[ring].mean(axis=0)).max() < 15
    core = cv2.erode(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))) > 0

    def roughness(rgb: np.ndarray) -> float:
        return float(np.abs(cv2.Laplacian(rgb.astype(np.float32), cv2.CV_32F))[core].mean())

    assert roughness(out) < 0.15 * roughness(image), (roughness(out), roughness(image))


@pytest.mark.parametrize("photo", PHOTOS)
def test_expand_continues_the_border_colours_into_the_hole(photo: str) -> None:
    """The right third, as a canvas expanded to the right: each column of the hole follows the last known column's
    colours down the rows (that column blurred along itself as the pre-fill blurs: correlation over 0.8, a small
    difference beside that of the column shifted by half the height)."""
    image = PHOTOS[photo]
    height, width = image.shape[:2]
    hole = hole_of("right-third", height, width)
    start = 2 * width // 3
    out = prefill.expand(image, hole)
    border = cv2.GaussianBlur(image[:, start - 1:start].astype(np.float32), (1, prefill.BLUR_KERNEL),
                              prefill.BLUR_SIGMA)[:, 0]
    for offset in (0, 4, 16, width - start - 1):
        column = out[:, start + offset].astype(np.float32)
        assert min(np.corrcoef(column[:, c], border[:, c])[0, 1] for c in range(3)) > 0.8, offset
        near, shifted = np.abs(column - border).mean(), np.abs(column - np.roll(border, height // 2, axis=0)).mean()
        assert near < 10 and near < 0.5 * shifted, (offset, near, shifted)


@pytest.mark.parametrize("shape", ["ellipse", "discs", "right-third"])
def test_expand_is_navier_stokes_then_the_gaussian_of_the_whole_crop_in_the_hole(shape: str) -> None:
    """Blurring only the hole's box widened by half the kernel gives the whole crop's blur in the hole, bit for bit."""
    image = PHOTOS["coffee"]
    hole = hole_of(shape, *image.shape[:2])
    inside = hole > 0
    whole = cv2.GaussianBlur(cv2.inpaint(image, hole, prefill.NS_RADIUS, cv2.INPAINT_NS),
                             (prefill.BLUR_KERNEL, prefill.BLUR_KERNEL), prefill.BLUR_SIGMA)
    assert np.array_equal(prefill.expand(image, hole)[inside], whole[inside])
    assert (prefill.BLUR_KERNEL, prefill.BLUR_SIGMA, prefill.NS_RADIUS) == (65, 20.0, 3)  # Krita's, see the module


@pytest.mark.parametrize("mode", PREFILLS)
def test_a_hole_without_known_pixels_is_neutral_grey_and_no_hole_changes_nothing(mode: str) -> None:
    image = PHOTOS["chelsea-crop"]
    everything = np.full(image.shape[:2], 255, np.uint8)
    assert (PREFILLS[mode](image, everything) == prefill.NEUTRAL_GREY).all()
    nothing = np.zeros(image.shape[:2], np.uint8)
    assert np.array_equal(PREFILLS[mode](image, nothing), image)


@pytest.mark.parametrize("mode", PREFILLS)
def test_a_prefill_refuses_arrays_of_other_shapes(mode: str) -> None:
    image = PHOTOS["chelsea-crop"]
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        PREFILLS[mode](np.dstack([image, image[..., :1]]), np.zeros(image.shape[:2], np.uint8))
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        PREFILLS[mode](image, np.zeros((5, 5), np.uint8))


# -- colour match ------------------------------------------------------------------------------------------------------

def rgba_of(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (H×W×3) made opaque RGBA."""
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])


def lab_statistics(rgb: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of the CIELAB values of ``rgb`` (H×W×3 uint8) where ``where`` is
    True, by NumPy (the function under test uses ``cv2.meanStdDev``)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[where]
    return lab.mean(axis=0), lab.std(axis=0)


def ring_of(blend: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """The opaque pixels within :data:`prefill.RING_WIDTH` pixels outside the blend mask (H×W bool)."""
    outside = np.where(blend > 0, 0, 255).astype(np.uint8)
    ring = (cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= prefill.RING_WIDTH) & (blend == 0)
    return ring if alpha is None else ring & (alpha > 0)


def shifted(rgb: np.ndarray, b_shift: float = 30, contrast: float = 0.6) -> np.ndarray:
    """``rgb`` with a colour drift on purpose: ``b_shift`` added to b* and L* scaled by ``contrast`` around its
    mean, back to uint8 (clipped)."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    lab[..., 0] = (lab[..., 0] - lab[..., 0].mean()) * contrast + lab[..., 0].mean()
    lab[..., 2] += b_shift
    return np.clip(np.rint(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("shape", ["ellipse", "discs"])
@pytest.mark.parametrize(("b_shift", "contrast"), [(30, 0.6), (-20, 1.5)])
def test_the_colour_match_restores_the_rings_statistics(photo: str, shape: str, b_shift: float,
                                                        contrast: float) -> None:
    """An engine output drifted on purpose (Telea's fill with b* shifted and L*'s contrast changed) is given back
    the ring's CIELAB mean and spread inside the blend mask, so the composite's generated area has them (within
    1.5 units: the sRGB gamut clips some matched colours); the drift is undone (the match of the drifted output is
    near that of the undrifted one, which an affine change in CIELAB leaves alone but for clipping); outside the
    blend mask nothing changes."""
    image = PHOTOS[photo]
    original = rgba_of(image)
    blend = blend_mask(grow_mask(hole_of(shape, *image.shape[:2]), 3), 4)
    telea = cv2.inpaint(image, repaint_mask(blend), 3, cv2.INPAINT_TELEA)
    drifted = shifted(telea, b_shift, contrast)
    before = drifted.copy()
    matched = prefill.match_colors(drifted, original, blend)
    assert np.array_equal(drifted, before)  # a new array; the engine's is not touched
    generated = blend > 0
    assert np.array_equal(matched[~generated], drifted[~generated])
    composite = overlay(original, matched, blend)[..., :3]
    ring_mean, ring_std = lab_statistics(image, ring_of(blend))
    mean, std = lab_statistics(composite, generated)
    assert np.abs(mean - ring_mean).max() < 1.5 and np.abs(std - ring_std).max() < 1.5, (mean, ring_mean, std,
                                                                                          ring_std)
    drifted_mean, _ = lab_statistics(drifted, generated)
    assert np.abs(drifted_mean - ring_mean).max() > 5  # there was a drift to undo
    undrifted = prefill.match_colors(telea, original, blend)
    error = np.abs(matched[generated].astype(int) - undrifted[generated]).mean()
    assert error < 0.35 * np.abs(drifted[generated].astype(int) - telea[generated]).mean()


def test_transparent_pixels_are_not_part_of_the_ring() -> None:
    """What a transparent pixel stores is no colour: magenta or black under alpha 0 around the hole gives the same
    match, which is the match to the opaque part of the ring."""
    image = PHOTOS["coffee"]
    blend = blend_mask(grow_mask(hole_of("ellipse", *image.shape[:2]), 3), 4)
    drifted = shifted(cv2.inpaint(image, repaint_mask(blend), 3, cv2.INPAINT_TELEA))
    magenta, black = rgba_of(image), rgba_of(image)
    magenta[:, :300, 3] = black[:, :300, 3] = 0  # the ring's left half
    magenta[:, :300, :3] = (255, 0, 255)
    black[:, :300, :3] = 0
    matched = prefill.match_colors(drifted, magenta, blend)
    assert np.array_equal(matched, prefill.match_colors(drifted, black, blend))
    ring_mean, _ = lab_statistics(image, ring_of(blend, magenta[..., 3]))
    mean, _ = lab_statistics(matched, blend > 0)
    assert np.abs(mean - ring_mean).max() < 1.0


def test_no_ring_leaves_the_output_as_it_is() -> None:
    """A blend mask covering the whole crop, or a ring that is all transparent, has nothing to match: unchanged."""
    image = PHOTOS["chelsea-crop"]
    drifted = shifted(image)
    assert np.array_equal(prefill.match_colors(drifted, rgba_of(image), np.full(image.shape[:2], 255, np.uint8)),
                          drifted)
    blend = blend_mask(hole_of("ellipse", *image.shape[:2]), 2)
    clear = rgba_of(image)
    clear[..., 3] = 0
    assert np.array_equal(prefill.match_colors(drifted, clear, blend), drifted)


def test_a_flat_output_moves_to_the_rings_mean_colour() -> None:
    """One colour has no spread to scale (std 0): it only moves, every generated pixel to the ring's mean colour."""
    image = PHOTOS["astronaut"]
    blend = blend_mask(hole_of("ellipse", *image.shape[:2]), 4)
    flat = np.full_like(image, (20, 200, 40))
    matched = prefill.match_colors(flat, rgba_of(image), blend)
    generated = blend > 0
    assert len(np.unique(matched[generated], axis=0)) == 1
    ring_mean, _ = lab_statistics(image, ring_of(blend))
    mean, _ = lab_statistics(matched, generated)
    assert np.abs(mean - ring_mean).max() < 1.0


def test_the_colour_match_refuses_arrays_of_other_shapes() -> None:
    image = PHOTOS["chelsea-crop"]
    blend = hole_of("ellipse", *image.shape[:2])
    with pytest.raises(ValueError, match="match_colors needs"):
        prefill.match_colors(image, image, blend)  # RGB where RGBA is due
    with pytest.raises(ValueError, match="no non-zero pixel"):
        prefill.match_colors(image, rgba_of(image), np.zeros_like(blend))


@pytest.mark.parametrize("photo", PHOTOS)
def test_opencvs_in_place_lab_conversions_equal_its_out_of_place_ones(photo: str) -> None:
    """The colour match converts to CIELAB and back in place (``dst`` = the source: one float array instead of
    two); OpenCV does not document that it may, so this checks that both directions give its out-of-place result,
    bit for bit, in the same memory."""
    rgb = PHOTOS[photo].astype(np.float32) / 255
    lab = rgb.copy()
    assert cv2.cvtColor(lab, cv2.COLOR_RGB2Lab, dst=lab) is lab
    assert np.array_equal(lab, cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab))
    back = lab.copy()
    assert cv2.cvtColor(back, cv2.COLOR_Lab2RGB, dst=back) is back
    assert np.array_equal(back, cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))
