"""The context crop: padding, clamping to the image, sides in multiples of 8; Generative Expand's canvas growth."""

from __future__ import annotations

from fractions import Fraction

import pytest
from gimp_inpaint.protocol import (
    CANVAS_SIDES,
    MAX_CANVAS_SIDE,
    CanvasExpansion,
    Rect,
    context_crop,
    expand_canvas,
    expand_to_aspect,
    expand_to_size,
)
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


def test_pixels_per_side_give_the_new_size_and_the_old_pictures_offset() -> None:
    grown = expand_canvas(640, 480, left=10, top=20, right=30, bottom=40)
    assert grown == CanvasExpansion(680, 540, Rect(10, 20, 640, 480))
    assert (grown.left, grown.top, grown.right, grown.bottom) == (10, 20, 30, 40)
    assert grown.new_area == Rect(0, 0, 680, 540)


@pytest.mark.parametrize(("sides", "area"), [
    ({"right": 64}, Rect(640, 0, 64, 480)),
    ({"left": 64}, Rect(0, 0, 64, 480)),
    ({"top": 8}, Rect(0, 0, 640, 8)),
    ({"bottom": 8}, Rect(0, 480, 640, 8)),
    ({"right": 64, "bottom": 8}, Rect(0, 0, 704, 488)),  # the two strips' box: the whole canvas
    ({"left": 5, "right": 7}, Rect(0, 0, 652, 480)),
])
def test_the_new_area_is_the_box_of_the_strips_added(sides: dict[str, int], area: Rect) -> None:
    assert expand_canvas(640, 480, **sides).new_area == area


def test_a_target_size_grows_the_chosen_sides_and_centres_on_an_axis_with_both() -> None:
    assert expand_to_size(512, 512, 768, 512) == CanvasExpansion(768, 512, Rect(128, 0, 512, 512))
    odd = expand_to_size(512, 512, 513, 515)  # the odd pixel goes right and down, as GIMP's Canvas Size centres
    assert (odd.left, odd.right, odd.top, odd.bottom) == (0, 1, 1, 2)
    assert expand_to_size(512, 512, 700, 600, ["left", "bottom"]) == CanvasExpansion(700, 600, Rect(188, 0, 512, 512))


@pytest.mark.parametrize(("width", "height", "aspect", "size"), [
    (1080, 1080, Fraction(16, 9), (1920, 1080)),
    (1920, 1080, Fraction(1), (1920, 1920)),
    (1000, 2000, 1.85, (3700, 2000)),
    (3, 2, Fraction(3, 1), (6, 2)),
    (1920, 1000, Fraction(16, 9), (1920, 1080)),  # wider than 16:9: it grows down
])
def test_an_aspect_ratio_grows_one_axis_to_it(width: int, height: int, aspect: Fraction | float,
                                              size: tuple[int, int]) -> None:
    grown = expand_to_aspect(width, height, aspect)
    assert (grown.width, grown.height) == size
    assert grown.picture.width == width and grown.picture.height == height


@pytest.mark.parametrize(("call", "words"), [
    (lambda: expand_canvas(640, 480), "would keep its size"),
    (lambda: expand_canvas(640, 480, left=-1, right=5), "cannot be negative"),
    (lambda: expand_canvas(0, 480, left=1), "at least 1×1"),
    (lambda: expand_canvas(640, 480, right=MAX_CANVAS_SIDE), "GIMP's largest side"),
    (lambda: expand_to_size(640, 480, 600, 800), "smaller than the 640×480 canvas"),
    (lambda: expand_to_size(640, 480, 640, 480), "would keep its size"),
    (lambda: expand_to_size(640, 480, 700, 480, ["top", "bottom"]), "neither the left nor the right side"),
    (lambda: expand_to_size(640, 480, 640, 500, ["middle"]), "sides must be some of left, top, right, bottom"),
    (lambda: expand_to_size(640, 480, 640, 500, []), "got none"),
    (lambda: expand_to_aspect(1920, 1080, Fraction(16, 9)), "already has the aspect ratio 1.77778"),
    (lambda: expand_to_aspect(1920, 1080, 0.0), "positive number"),
    (lambda: expand_to_aspect(1920, 1080, float("nan")), "positive number"),
    (lambda: expand_to_aspect(1920, 1080, 1e-300), "GIMP's largest side"),
])
def test_requests_that_cannot_be_met_are_value_errors(call, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        call()


@given(st.integers(1, 5000), st.integers(1, 5000), st.lists(st.integers(0, 3000), min_size=4, max_size=4))
def test_expansion_properties(width: int, height: int, pixels: list[int]) -> None:
    """The old picture lies inside the new canvas at its offset, the new area is the canvas minus it, bounded."""
    left, top, right, bottom = pixels
    if not sum(pixels):
        return
    grown = expand_canvas(width, height, left=left, top=top, right=right, bottom=bottom)
    canvas = Rect(0, 0, grown.width, grown.height)
    assert canvas.contains(grown.picture) and canvas.contains(grown.new_area)
    assert (grown.left, grown.top, grown.right, grown.bottom) == (left, top, right, bottom)
    area = grown.new_area
    # every added strip is in the box, and the box holds no column or row made only of old picture
    assert area.x == (0 if left or top or bottom else width)
    assert area.right == (grown.width if right or top or bottom else left)
    assert area.y == (0 if top or left or right else height)
    assert area.bottom == (grown.height if bottom or left or right else top)


@given(st.integers(1, 4000), st.integers(1, 4000), st.integers(1, 64), st.integers(1, 64),
       st.sets(st.sampled_from(CANVAS_SIDES), min_size=1))
def test_aspect_properties(width: int, height: int, numerator: int, denominator: int, sides: set[str]) -> None:
    """Where it can, the canvas grows one axis only, to the nearest pixel of the ratio, on the chosen sides."""
    ratio = Fraction(numerator, denominator)
    try:
        grown = expand_to_aspect(width, height, ratio, sides)
    except ValueError as exc:
        assert "already has" in str(exc) or "neither" in str(exc) or "largest side" in str(exc)
        return
    assert (grown.width == width) != (grown.height == height)
    if grown.width != width:
        assert abs(grown.width - height * ratio) <= Fraction(1, 2)
        assert (grown.left == 0 or "left" in sides) and (grown.right == 0 or "right" in sides)
    else:
        assert abs(grown.height - width / ratio) <= Fraction(1, 2)
        assert (grown.top == 0 or "top" in sides) and (grown.bottom == 0 or "bottom" in sides)
