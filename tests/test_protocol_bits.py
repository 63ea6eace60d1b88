"""16-bit planes (issue 12, high bit depth): their validation, the wire form (little-endian u16) and round trips."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    EngineInfo,
    ErrorCode,
    FillOptions,
    InpaintRequest,
    Plane,
    Preview,
    ProtocolError,
    Variant,
    Welcome,
    decode,
    encode,
    max_frame_bytes,
)
from gimp_inpaint.protocol.messages import SAMPLE_BITS
from gimp_inpaint.protocol.options import SEED_MAX
from skimage import data


def _deep_crop(width: int = 96, height: int = 64) -> np.ndarray:
    """H×W×4 uint16 RGBA: a crop of scikit-image's astronaut at 16 bits (its 8-bit levels × 257) with a smooth
    ramp of 0…256 added, so most samples are not 8-bit levels, and an alpha ramp."""
    rgb = data.astronaut()[100:100 + height, 150:150 + width].astype(np.uint32) * 257
    ramp = np.linspace(0, 256, width, dtype=np.float64).round().astype(np.uint32)[None, :, None]
    alpha = np.linspace(65535, 1, height).round().astype(np.uint32)[:, None, None] * np.ones((1, width, 1), np.uint32)
    return np.minimum(np.concatenate([rgb + ramp, alpha], axis=2), 65535).astype(np.uint16)


def _mask(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    return (((((xx - width / 2) / (width / 3)) ** 2 + ((yy - height / 2) / (height / 3)) ** 2) <= 1) * 255).astype(
        np.uint8)


def _request(pixels: np.ndarray, **changes: object) -> InpaintRequest:
    height, width = pixels.shape[:2]
    fields: dict[str, object] = {
        "job_id": "deep", "x": 150, "y": 100, "options": FillOptions(engine="opencv", seed=7),
        "image": Plane(width, height, 4, pixels.astype("<u2").tobytes(), bits=16),
        "mask": Plane(width, height, 1, _mask(width, height).tobytes()),
    }
    fields.update(changes)
    return InpaintRequest(**fields)  # type: ignore[arg-type]


def _wire(message: object) -> dict:
    return msgpack.unpackb(encode(message), raw=False)  # type: ignore[arg-type]


def test_a_16_bit_request_round_trips_exactly_as_little_endian_samples() -> None:
    pixels = _deep_crop()
    assert np.count_nonzero(pixels[..., :3] % 257) > 0.9 * pixels[..., :3].size  # mostly not 8-bit levels
    request = _request(pixels)
    frame = encode(request)
    wire = msgpack.unpackb(frame, raw=False)
    assert wire["image"]["bits"] == 16 and wire["mask"]["bits"] == 8
    little_endian = pixels.astype("<u2").tobytes()
    assert wire["image"]["data"] == little_endian
    assert little_endian[:2] == int(pixels[0, 0, 0]).to_bytes(2, "little")
    for views in (False, True):
        decoded = decode(frame, views=views)
        assert decoded == request
        assert isinstance(decoded, InpaintRequest) and decoded.image.bits == 16
        assert np.array_equal(np.frombuffer(decoded.image.data, "<u2").reshape(pixels.shape), pixels)
    assert len(frame) - pixels.shape[0] * pixels.shape[1] * 9 < 512  # raw samples, 8 bytes a pixel and the mask's 1


def test_a_plane_without_bits_is_8_bit() -> None:
    """A plane's ``bits`` defaults to 8, on the wire too: a frame that leaves it out means what it meant before."""
    plane = Plane(2, 1, 4, bytes(range(8)))
    assert plane.bits == 8 and plane.bytes_per_sample == 1
    wire = _wire(_request(_deep_crop(8, 8)))
    wire["image"] = {"width": 2, "height": 2, "channels": 4, "data": bytes(range(16))}
    wire["mask"] = {"width": 2, "height": 2, "channels": 1, "data": b"\xff" * 4}
    decoded = decode(msgpack.packb(wire, use_bin_type=True))
    assert isinstance(decoded, InpaintRequest) and decoded.image.bits == decoded.mask.bits == 8
    assert decoded.image.data == bytes(range(16))


@pytest.mark.parametrize(("channels", "length"), [(4, 2 * 3 * 4), (4, 2 * 3 * 4 * 2 - 1), (4, 2 * 3 * 4 * 2 + 2),
                                                   (1, 2 * 3), (3, 2 * 3 * 4 * 2)])
def test_a_16_bit_plane_of_the_wrong_length_is_refused(channels: int, length: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        Plane(2, 3, channels, bytes(length), bits=16)
    assert caught.value.code is ErrorCode.INVALID_REQUEST
    assert f"needs {2 * 3 * channels * 2} bytes, got {length}" in caught.value.message
    assert Plane(2, 3, channels, bytes(2 * 3 * channels * 2), bits=16).bytes_per_sample == 2


@pytest.mark.parametrize("bits", [0, 1, 4, 12, 24, 32, -16])
def test_a_sample_depth_other_than_8_or_16_is_refused(bits: int) -> None:
    assert bits not in SAMPLE_BITS
    with pytest.raises(ProtocolError) as caught:
        Plane(2, 1, 4, bytes(8 * max(bits, 1) // 8 or 8), bits=bits)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and f"{bits}-bit samples" in caught.value.message
    wire = _wire(_request(_deep_crop(8, 8)))
    wire["image"]["bits"] = bits
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(wire, use_bin_type=True))
    assert caught.value.code is ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(("value", "words"), [(True, "must be an integer"), ("16", "must be of type int"),
                                              (16.0, "must be of type int"), (None, "must be of type int")])
def test_a_sample_depth_that_is_not_an_integer_is_a_bad_message(value: object, words: str) -> None:
    wire = _wire(_request(_deep_crop(8, 8)))
    wire["image"]["bits"] = value
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(wire, use_bin_type=True))
    assert caught.value.code is ErrorCode.BAD_MESSAGE and "inpaint.image.bits" in caught.value.message
    assert words in caught.value.message


def test_masks_and_previews_stay_8_bit() -> None:
    pixels = _deep_crop(16, 8)
    deep_mask = Plane(16, 8, 1, bytes(16 * 8 * 2), bits=16)
    with pytest.raises(ProtocolError) as caught:
        _request(pixels, mask=deep_mask)
    assert caught.value.code is ErrorCode.INVALID_REQUEST and "mask must have 8-bit samples" in caught.value.message
    image = Plane(16, 8, 4, pixels.astype("<u2").tobytes(), bits=16)
    with pytest.raises(ProtocolError) as caught:
        Variant("deep", 0, 0, 0, image, deep_mask, 1)
    assert caught.value.code is ErrorCode.BAD_MESSAGE
    with pytest.raises(ProtocolError) as caught:
        Preview("deep", 1, 2, image)
    assert caught.value.code is ErrorCode.BAD_MESSAGE and "8-bit" in caught.value.message


def test_a_16_bit_variant_round_trips() -> None:
    pixels = _deep_crop(40, 30)
    variant = Variant("deep", 1, 160, 110, Plane(40, 30, 4, pixels.astype("<u2").tobytes(), bits=16),
                      Plane(40, 30, 1, _mask(40, 30).tobytes()), 8, {"inference": 0.5})
    for views in (False, True):
        decoded = decode(encode(variant), views=views)
        assert decoded == variant and isinstance(decoded, Variant) and decoded.image.bits == 16
        assert np.array_equal(np.frombuffer(decoded.image.data, "<u2").reshape(30, 40, 4), pixels)


def test_the_frame_limit_fits_a_16_bit_request_and_its_variant() -> None:
    """:func:`protocol.max_frame_bytes` is the 16-bit request's bound: 8 bytes of RGBA and 1 of mask a pixel."""
    width, height = 64, 48
    request = _request(_deep_crop(width, height), options=FillOptions(prompt="é" * 4096, negative_prompt="é" * 4096,
                                                                      num_variants=16))
    frame = encode(request)
    assert width * height * 9 < len(frame) <= max_frame_bytes(width * height)
    assert decode(frame, width * height) == request
    variant = Variant(request.job_id, 15, -(2**63), -(2**63), request.image, request.mask, SEED_MAX,
                      {"queue": 1.0, "load": 1.0, "prefill": 1.0, "inference": 1.0, "total": 1.0})
    assert len(encode(variant)) <= max_frame_bytes(width * height)
    with pytest.raises(ProtocolError) as caught:
        decode(frame, width * height - 1)
    assert caught.value.code is ErrorCode.TOO_LARGE


def test_engine_info_says_the_depth_its_engine_generates() -> None:
    engines = [EngineInfo("opencv", "opencv", "telea", True, False, options=[]),
               EngineInfo("sd", "diffusers", "some/model", True, True, bits=16)]
    assert engines[0].bits == 8
    welcome = Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", engines, 4096 * 4096)
    decoded = decode(encode(welcome))
    assert isinstance(decoded, Welcome) and [engine.bits for engine in decoded.engines] == [8, 16]
    with pytest.raises(ProtocolError) as caught:
        EngineInfo("odd", "diffusers", "some/model", True, True, bits=32)
    assert caught.value.code is ErrorCode.BAD_MESSAGE and "32-bit" in caught.value.message
