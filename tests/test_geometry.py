"""The context crop: padding, clamping to the image, sides in multiples of 8."""

from __future__ import annotations

import pytest
from gimp_inpaint.protocol import Rect, context_crop
from hypothesis import given
from hypothesis import strategies as st


def test_padding_and_rounding_in_the_middle_of_the_image() -> None:
    crop = context_crop(Rect(100, 200, 50, 30), 1000, 800, padding=10)
    # 70×50 padded box, rounded up to 72×56, grown evenly around the padded box
    assert crop == Rect(89, 187, 72, 56)


def test_crop_slides_inside_the_image_at_its_borders() -> None:
    crop = context_crop(Rect(0, 790, 20, 10), 1000, 800, padding=16)
    assert crop.x == 0 and crop.bottom == 800
    assert crop.width % 8 == 0 and crop.height % 8 == 0
    assert crop.contains(Rect(0, 790, 20, 10))


def test_a_side_larger_than_the_image_takes_the_whole_side() -> None:
    crop = context_crop(Rect(5, 5, 990, 20), 1001, 600, padding=64)
    assert (crop.x, crop.width) == (0, 1001)
    assert crop.height % 8 == 0


def test_bounds_partly_outside_the_image_are_clipped() -> None:
    crop = context_crop(Rect(-50, -50, 100, 100), 640, 480, padding=0)
    assert crop == Rect(0, 0, 56, 56)


@pytest.mark.parametrize("bounds", [Rect(700, 0, 10, 10), Rect(0, 0, 0, 10), Rect(-20, -20, 10, 10)])
def test_bounds_outside_the_image_are_an_error(bounds: Rect) -> None:
    with pytest.raises(ValueError, match="do not intersect"):
        context_crop(bounds, 640, 480, padding=8)


def test_negative_padding_is_an_error() -> None:
    with pytest.raises(ValueError):
        context_crop(Rect(0, 0, 10, 10), 640, 480, padding=-1)


@given(
    st.integers(1, 3000), st.integers(1, 3000),
    st.data(), st.integers(0, 600), st.sampled_from([1, 8, 64]),
)
def test_crop_properties(image_width: int, image_height: int, draw: st.DataObject, padding: int, multiple: int) -> None:
    x = draw.draw(st.integers(0, image_width - 1))
    y = draw.draw(st.integers(0, image_height - 1))
    bounds = Rect(x, y, draw.draw(st.integers(1, image_width - x)), draw.draw(st.integers(1, image_height - y)))
    crop = context_crop(bounds, image_width, image_height, padding, multiple)
    assert Rect(0, 0, image_width, image_height).contains(crop)
    assert crop.contains(bounds)
    for side, limit in ((crop.width, image_width), (crop.height, image_height)):
        assert side % multiple == 0 or side == limit
    # the padding is there wherever the image has room for it
    assert crop.x <= max(0, bounds.x - padding) and crop.right >= min(image_width, bounds.right + padding)
    assert crop.y <= max(0, bounds.y - padding) and crop.bottom >= min(image_height, bounds.bottom + padding)
    # and the crop is no bigger than padding plus rounding needs
    assert crop.width < bounds.width + 2 * padding + multiple or crop.width == image_width
