"""Live previews (issue 12, item 2): the Preview message and the request's preview fields, the daemon's previews
through the real server (a scripted stepping engine and the tiny diffusion pipeline), and the client's side."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from gimp_inpaint.protocol import (
    DEFAULT_PREVIEW_SIZE,
    MAX_PREVIEW_EVERY,
    MAX_PREVIEW_SIZE,
    MIN_PREVIEW_SIZE,
    ErrorCode,
    InpaintRequest,
    Plane,
    Preview,
    ProtocolError,
    decode,
    encode,
    preview_dimensions,
)
from hypothesis import given
from hypothesis import strategies as st
from skimage import data


def photo_preview(width: int = 96, height: int = 64, step: int = 4, total: int = 10) -> Preview:
    """A preview of a real picture: scikit-image's astronaut scaled with OpenCV to ``width × height``, opaque."""
    import cv2

    rgb = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    rgba = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    return Preview("job-1", step, total, Plane(width, height, 4, rgba.tobytes()))


def rewired(message: object, **changes: Any) -> bytes:
    """``message``'s frame with ``changes`` to its top-level map (a nested map given as a dict replaces one key)."""
    wire = msgpack.unpackb(encode(message), raw=False)  # type: ignore[arg-type]
    for key, value in changes.items():
        wire[key] = {**wire[key], **value} if isinstance(value, dict) else value
    return msgpack.packb(wire, use_bin_type=True)


def tiny_request(**fields: Any) -> InpaintRequest:
    """A 40×30 request (a photo crop, a rectangle masked) with ``fields``."""
    rgba = np.dstack([data.astronaut()[:30, :40], np.full((30, 40), 255, np.uint8)])
    mask = np.zeros((30, 40), np.uint8)
    mask[5:25, 10:30] = 255
    return InpaintRequest("j", 0, 0, Plane(40, 30, 4, rgba.tobytes()), Plane(40, 30, 1, mask.tobytes()), **fields)


# ---------------------------------------------------------------------------------------------------- protocol


def test_a_preview_round_trips_with_its_pixels_exact() -> None:
    preview = photo_preview()
    decoded = decode(encode(preview))
    assert decoded == preview and isinstance(decoded, Preview)
    assert np.array_equal(np.frombuffer(decoded.image.data, np.uint8), np.frombuffer(preview.image.data, np.uint8))


def test_a_preview_at_the_size_cap_decodes() -> None:
    assert decode(encode(photo_preview(MAX_PREVIEW_SIZE, 300))) == photo_preview(MAX_PREVIEW_SIZE, 300)


@pytest.mark.parametrize(("changes", "words"), [
    ({"step": 0}, "step 0/10"),
    ({"step": 11}, "step 11/10"),
    ({"image": {"width": MAX_PREVIEW_SIZE + 1, "height": 1, "channels": 4, "data": bytes(4 * (MAX_PREVIEW_SIZE + 1))}},
     f"exceeds {MAX_PREVIEW_SIZE} pixels"),
    ({"image": {"width": 2, "height": MAX_PREVIEW_SIZE + 1, "channels": 4, "data": bytes(8 * (MAX_PREVIEW_SIZE + 1))}},
     f"exceeds {MAX_PREVIEW_SIZE} pixels"),
    ({"image": {"width": 96, "height": 64, "channels": 3, "data": bytes(96 * 64 * 3)}}, "must be RGBA"),
    ({"image": {"width": 96, "height": 64, "channels": 1, "data": bytes(96 * 64)}}, "must be RGBA"),
])
def test_an_inconsistent_preview_is_a_bad_message(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        decode(rewired(photo_preview(), **changes))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_a_preview_over_the_pixel_limit_is_too_large() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(encode(photo_preview(96, 64)), max_pixels=96 * 64 - 1)
    assert caught.value.code is ErrorCode.TOO_LARGE


def test_a_request_asks_for_no_previews_by_default_and_carries_its_preview_fields() -> None:
    request = tiny_request()
    assert (request.preview_every, request.preview_size) == (0, DEFAULT_PREVIEW_SIZE)
    asking = tiny_request(preview_every=3, preview_size=MIN_PREVIEW_SIZE)
    assert decode(encode(asking)) == asking
    assert asking.preview_dimensions() == (16, 12)


@pytest.mark.parametrize(("field", "value", "words"), [
    ("preview_every", -1, "preview_every -1 is outside"),
    ("preview_every", MAX_PREVIEW_EVERY + 1, f"preview_every {MAX_PREVIEW_EVERY + 1} is outside"),
    ("preview_size", MIN_PREVIEW_SIZE - 1, f"preview_size {MIN_PREVIEW_SIZE - 1} is outside"),
    ("preview_size", MAX_PREVIEW_SIZE + 1, f"preview_size {MAX_PREVIEW_SIZE + 1} is outside"),
])
def test_preview_fields_out_of_range_are_invalid_requests(field: str, value: int, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as caught:
        decode(rewired(tiny_request(), **{field: value}))
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(ProtocolError, match=words):
        tiny_request(**{field: value})


def test_preview_fields_must_be_integers() -> None:
    with pytest.raises(ProtocolError, match="preview_every must be of type int") as caught:
        decode(rewired(tiny_request(), preview_every="2"))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(("width", "height", "size", "expected"), [
    (1024, 768, 256, (256, 192)),
    (768, 1024, 256, (192, 256)),
    (100, 40, 256, (100, 40)),  # never enlarged
    (4000, 8, 16, (16, 1)),  # at least a pixel
    (512, 512, 512, (512, 512)),
])
def test_preview_dimensions(width: int, height: int, size: int, expected: tuple[int, int]) -> None:
    assert preview_dimensions(width, height, size) == expected


@given(st.integers(1, 16384), st.integers(1, 16384), st.integers(MIN_PREVIEW_SIZE, MAX_PREVIEW_SIZE))
def test_previews_keep_the_crops_shape_within_the_size_asked(width: int, height: int, size: int) -> None:
    preview_width, preview_height = preview_dimensions(width, height, size)
    assert max(preview_width, preview_height) == min(size, max(width, height))
    assert min(preview_width, preview_height) >= 1
    scale = min(size, max(width, height)) / max(width, height)
    for side, exact in ((preview_width, width * scale), (preview_height, height * scale)):
        assert abs(side - exact) <= 0.5 or (side == 1 and exact < 1)  # rounded, a pixel at least
