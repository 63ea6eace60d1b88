"""The OpenCV engine runs Telea on the part of the crop it reads: the same pixels as on the whole crop, bit for bit."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from gimp_inpaint.daemon.engines.base import EngineJob
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import FillOptions
from skimage import data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _masks(shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    """Ellipses at random places (some over a border), one crossed by a 1-pixel line to the crop's edges, a single
    pixel in a corner, and an almost full mask."""
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(6):
        mask = np.zeros(shape, np.uint8)
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        axes = (int(rng.integers(3, 90)), int(rng.integers(3, 90)))
        cv2.ellipse(mask, centre, axes, float(rng.integers(0, 180)), 0, 360, 255, -1)
        if k == 0:
            cv2.line(mask, (0, centre[1]), (shape[1] - 1, centre[1]), 255, 1)
        masks.append(mask)
    corner = np.zeros(shape, np.uint8)
    corner[-1, -1] = 255
    almost = np.full(shape, 255, np.uint8)
    almost[shape[0] // 2, shape[1] // 2] = 0
    return [*masks, corner, almost]


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("radius", [1, 3, 8])
def test_telea_on_its_reach_equals_telea_on_the_whole_crop(photo: str, radius: int) -> None:
    image = np.ascontiguousarray(getattr(data, photo)()[..., :3])
    engine = OpenCVEngine(radius=radius)
    for mask in _masks(image.shape[:2], seed=radius):
        job = EngineJob(image=image, mask=mask, options=FillOptions(engine="opencv"), seed=0)
        whole = cv2.inpaint(image, mask, radius, cv2.INPAINT_TELEA)
        np.testing.assert_array_equal(engine.inpaint(job, lambda step, total: None, lambda: False), whole)


def test_the_reach_is_the_masks_box_and_the_radius_inside_the_crop() -> None:
    mask = np.zeros((100, 120), np.uint8)
    mask[40:50, 60:70] = 255
    assert OpenCVEngine(radius=3).reach(mask) == (slice(35, 55), slice(55, 75))
    mask[0, 0] = 255
    assert OpenCVEngine(radius=3).reach(mask) == (slice(0, 55), slice(0, 75))
