"""Protocol messages: round trips, and every kind of bad frame rejected with its error code."""

from __future__ import annotations

import dataclasses
import resource
import time

import msgpack
import numpy as np
import pytest
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    SCHEDULERS,
    Accepted,
    Cancel,
    EngineInfo,
    Error,
    ErrorCode,
    Hello,
    InpaintRequest,
    Plane,
    Progress,
    ProtocolError,
    Result,
    Variant,
    Welcome,
    decode,
    encode,
    max_frame_bytes,
    peek_job_id,
    quote,
)
from gimp_inpaint.protocol.codec import MAX_DEPTH, MAX_MAP_LEN
from gimp_inpaint.protocol.messages import (
    LORA_WEIGHT_MAX,
    MAX_CLIENT_NAME_CHARS,
    MAX_ENGINE_NAME_CHARS,
    MAX_JOB_ID_CHARS,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_VARIANTS,
    SEED_MAX,
)
from gimp_inpaint.protocol.quoting import QUOTE_MAX_CHARS
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data


def _photo_request(width: int = 96, height: int = 64) -> InpaintRequest:
    """A request carrying a real crop of scikit-image's astronaut photo and an elliptic mask."""
    rgb = data.astronaut()[100:100 + height, 150:150 + width]
    rgba = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    yy, xx = np.mgrid[:height, :width]
    mask = ((((xx - width / 2) / (width / 3)) ** 2 + ((yy - height / 2) / (height / 3)) ** 2) <= 1) * 255
    return InpaintRequest(
        job_id="job-1", engine="opencv", x=150, y=100,
        image=Plane(width, height, 4, rgba.tobytes()), mask=Plane(width, height, 1, mask.astype(np.uint8).tobytes()),
        prompt="an astronaut, photo", negative_prompt="blurry", strength=0.8, guidance_scale=6.0,
        num_inference_steps=20, seed=1234, num_variants=2, grow=4, feather=12,
        scheduler="dpmpp_2m_karras", loras={"pixel-art": 0.8, "film": -0.5}, refiner_strength=0.2,
        controlnet_conditioning_scale=0.7,
    )


def _wire(message: object) -> dict:
    return msgpack.unpackb(encode(message), raw=False)  # type: ignore[arg-type]


def test_request_round_trip_keeps_pixels_exact() -> None:
    request = _photo_request()
    frame = encode(request)
    decoded = decode(frame)
    assert decoded == request
    assert isinstance(decoded, InpaintRequest)
    pixels = np.frombuffer(decoded.image.data, np.uint8).reshape(64, 96, 4)
    assert np.array_equal(pixels[..., :3], data.astronaut()[100:164, 150:246])
    # raw bytes on the wire: the frame is the pixel payload plus a small header, not base64 or PNG
    assert len(frame) - (96 * 64 * 5) < 512


def test_every_message_type_round_trips() -> None:
    plane = Plane(2, 1, 4, bytes(range(8)))
    mask = Plane(2, 1, 1, b"\x00\xff")
    messages = [
        Hello(PROTOCOL_VERSION, "test", "secret"),
        Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", [EngineInfo("opencv", "opencv", "telea", True, False),
                                                   EngineInfo("xl", "diffusers", "diffusers/sdxl", True, True, "",
                                                              "sdxl-inpaint", ["film"], ["<cat>"], True)], 1 << 20),
        _photo_request(),
        Accepted("j", 3),
        Progress("j", 2, 5),
        Progress("j", 1 << 33, 1 << 34, "download"),
        Result("j", [Variant(4, 8, plane, mask, 42, {"inference": 0.5})]),
        Cancel("j"),
        Error(ErrorCode.CANCELLED.value, "cancelled by the user", "j"),
        Error(ErrorCode.INTERNAL.value, "boom"),
    ]
    for message in messages:
        assert decode(encode(message)) == message


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda w: w.pop("prompt") and w, None),  # optional fields may be omitted
        (lambda w: w.pop("job_id") and w, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "unexpected": 1}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "strength": "0.5"}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "num_inference_steps": 2.5}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "num_inference_steps": True}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "type": "launch-missiles"}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "image": {**w["image"], "data": w["image"]["data"][:-1]}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": {**w["image"], "channels": 2}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": {**w["image"], "extra": 0}}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "mask": {**w["mask"], "width": 48, "data": w["mask"]["data"][: 48 * 64]}},
         ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": "not a plane"}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "strength": 0.0}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "strength": float("nan")}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "guidance_scale": 1e9}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "num_variants": 0}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "seed": -2}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "seed": 2**40}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "job_id": ""}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": {**w["image"], "width": 5000, "height": 5000}}, ErrorCode.TOO_LARGE),
        (lambda w: {**w, "image": {**w["image"], "width": 100_000}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "scheduler": "karras-of-doom"}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "loras": {f"l{i}": 1.0 for i in range(MAX_LORAS + 1)}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "loras": {"film": LORA_WEIGHT_MAX + 0.5}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "loras": {"": 1.0}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "loras": {"film": "strong"}}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "loras": ["film"]}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "refiner_strength": 1.0}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "refiner_strength": -0.1}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "controlnet_conditioning_scale": 2.5}, ErrorCode.INVALID_REQUEST),
        (lambda w: w.pop("loras") and w.pop("scheduler") and w, None),  # version-1-style requests still decode
    ],
)
def test_bad_request_fields_get_their_code(mutate, code: ErrorCode | None) -> None:
    wire = mutate(_wire(_photo_request()))
    frame = msgpack.packb(wire, use_bin_type=True)
    if code is None:
        assert isinstance(decode(frame), InpaintRequest)
        return
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code is code


def test_plane_over_the_pixel_limit_is_too_large() -> None:
    frame = encode(_photo_request(96, 64))
    assert isinstance(decode(frame, max_pixels=96 * 64), InpaintRequest)
    with pytest.raises(ProtocolError) as caught:
        decode(frame, max_pixels=96 * 64 - 1)
    assert caught.value.code is ErrorCode.TOO_LARGE


@pytest.mark.parametrize(
    "frame",
    [b"", b"\xc1", b"\x93\x01\x02\x03", b"\xa5hello", msgpack.packb({"type": 5}), msgpack.packb({1: 2}),
     encode(Cancel("x")) + b"\x00", encode(_photo_request())[:-10], msgpack.packb(b"raw"),
     msgpack.packb({"type": "cancel", "job_id": ["nested"]})],
)
def test_malformed_frames_are_bad_messages(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_text_frames_are_rejected() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode("hello")  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_error_codes_are_stable_strings() -> None:
    # the values travel on the wire; renaming one breaks deployed clients
    assert {c.value for c in ErrorCode} == {
        "bad_message", "version_mismatch", "unauthorized", "too_large", "invalid_request", "unknown_engine",
        "engine_unavailable", "cancelled", "out_of_memory", "job_failed", "internal", "incompatible", "busy",
    }
    with pytest.raises(ProtocolError):
        Error("no_such_code", "x")


def test_frame_limit_fits_the_largest_request_and_result() -> None:
    """A request at every length cap (4-byte UTF-8 characters), with planes of exactly ``max_pixels``, and a
    result of :data:`MAX_VARIANTS` such variants, fit in :func:`max_frame_bytes` (small ``max_pixels``, so
    the text and headers are a large part of the frame)."""
    width, height = 64, 48
    max_pixels = width * height
    emoji = "\U0001f680"  # 4 bytes in UTF-8, the most a character takes
    assert len(emoji.encode()) == 4
    request = InpaintRequest(
        job_id=emoji * MAX_JOB_ID_CHARS, engine=emoji * MAX_ENGINE_NAME_CHARS, x=-10 * 16384, y=-10 * 16384,
        image=Plane(width, height, 4, bytes(max_pixels * 4)), mask=Plane(width, height, 1, bytes(max_pixels)),
        prompt=emoji * MAX_PROMPT_CHARS, negative_prompt=emoji * MAX_PROMPT_CHARS, strength=1 / 3,
        guidance_scale=1 / 7, num_inference_steps=500, seed=SEED_MAX, num_variants=MAX_VARIANTS, grow=1024,
        feather=1024, scheduler="dpmpp_2m_sde_karras",
        loras={emoji * (MAX_ENGINE_NAME_CHARS - 1) + str(i): -1 / 3 for i in range(MAX_LORAS)},
        refiner_strength=1 / 3, controlnet_conditioning_scale=1 / 3)
    frame = encode(request)
    assert len(frame) <= max_frame_bytes(max_pixels)
    assert decode(frame, max_pixels) == request
    timings = {"queue": 1 / 3, "load": 1 / 7, "inference": 1 / 9, "total": 1 / 11}  # what the daemon reports
    variant = Variant(-10 * 16384, -10 * 16384, request.image, request.mask, SEED_MAX, timings)
    result = Result(request.job_id, [variant] * MAX_VARIANTS)
    assert len(encode(result)) <= max_frame_bytes(max_pixels, MAX_VARIANTS)


@pytest.mark.parametrize(("field", "cap"), [("prompt", MAX_PROMPT_CHARS), ("negative_prompt", MAX_PROMPT_CHARS),
                                            ("engine", MAX_ENGINE_NAME_CHARS), ("job_id", MAX_JOB_ID_CHARS)])
def test_text_longer_than_its_cap_is_an_invalid_request(field: str, cap: int) -> None:
    at_cap = dataclasses.replace(_photo_request(), **{field: "p" * cap})
    assert decode(encode(at_cap)) == at_cap
    wire = {**_wire(at_cap), field: "p" * (cap + 1)}
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(wire, use_bin_type=True))
    assert caught.value.code is ErrorCode.INVALID_REQUEST and str(cap) in caught.value.message


def test_progress_stage_must_be_known() -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb({**_wire(Progress("j", 1, 2)), "stage": "dreaming"}))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_hello_client_name_is_capped() -> None:
    hello = Hello(PROTOCOL_VERSION, "n" * MAX_CLIENT_NAME_CHARS, "secret")
    assert decode(encode(hello)) == hello
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb({**_wire(hello), "client": "n" * (MAX_CLIENT_NAME_CHARS + 1)}))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


# ---------------------------------------------------------------- property-based tests

_text = st.text(max_size=40)
_planes = st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 4])).flatmap(
    lambda whc: st.binary(min_size=whc[0] * whc[1] * whc[2], max_size=whc[0] * whc[1] * whc[2]).map(
        lambda raw: Plane(whc[0], whc[1], whc[2], raw)))


@st.composite
def _requests(draw: st.DrawFn) -> InpaintRequest:
    width, height = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    return InpaintRequest(
        job_id=draw(st.text(min_size=1, max_size=128)), engine=draw(_text),
        x=draw(st.integers(-1000, 1000)), y=draw(st.integers(-1000, 1000)),
        image=Plane(width, height, 4, draw(st.binary(min_size=width * height * 4, max_size=width * height * 4))),
        mask=Plane(width, height, 1, draw(st.binary(min_size=width * height, max_size=width * height))),
        prompt=draw(_text), negative_prompt=draw(_text),
        strength=draw(st.floats(0.001, 1.0)), guidance_scale=draw(st.floats(0.0, 50.0)),
        num_inference_steps=draw(st.integers(1, 500)), seed=draw(st.integers(-1, SEED_MAX)),
        num_variants=draw(st.integers(1, 16)), grow=draw(st.integers(0, 1024)), feather=draw(st.integers(0, 1024)),
        scheduler=draw(st.sampled_from(SCHEDULERS)),
        loras=draw(st.dictionaries(st.text(min_size=1, max_size=20), st.floats(-LORA_WEIGHT_MAX, LORA_WEIGHT_MAX),
                                   max_size=MAX_LORAS)),
        refiner_strength=draw(st.floats(0.0, 0.99)), controlnet_conditioning_scale=draw(st.floats(0.0, 2.0)),
    )


@given(_requests())
def test_any_valid_request_round_trips(request: InpaintRequest) -> None:
    assert decode(encode(request)) == request


@given(st.lists(st.builds(Variant, st.integers(-99, 99), st.integers(-99, 99),
                          st.just(Plane(3, 2, 4, bytes(24))), st.just(Plane(3, 2, 1, bytes(6))),
                          st.integers(0, SEED_MAX),
                          st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=3)),
                max_size=4), st.text(min_size=1))
def test_any_result_round_trips(variants: list[Variant], job_id: str) -> None:
    assert decode(encode(Result(job_id, variants))) == Result(job_id, variants)


@given(st.binary(max_size=512))
@settings(max_examples=400)
def test_garbage_never_crashes_the_decoder(frame: bytes) -> None:
    try:
        decode(frame)
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)


@given(_requests(), st.data())
@settings(max_examples=200)
def test_corrupted_requests_raise_protocol_errors_only(request: InpaintRequest, draw: st.DataObject) -> None:
    frame = bytearray(encode(request))
    for _ in range(draw.draw(st.integers(1, 4))):
        index = draw.draw(st.integers(0, len(frame) - 1))
        frame[index] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(1, len(frame)))
    try:
        decoded = decode(bytes(frame[:cut]))
    except ProtocolError as exc:
        assert isinstance(exc.code, ErrorCode)
    else:  # a corruption that still decodes is a complete, valid message: it survives a round trip unchanged
        assert decode(encode(decoded)) == decoded


@given(_planes)
def test_planes_round_trip_inside_a_result(plane: Plane) -> None:
    mask = Plane(plane.width, plane.height, 1, bytes(plane.pixels))
    if plane.channels != 4:
        with pytest.raises(ProtocolError):
            Variant(0, 0, plane, mask, 0)
        return
    result = Result("r", [Variant(0, 0, plane, mask, 7)])
    assert decode(encode(result)) == result


# -- client text in error messages -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("a\nFORGED line", r"'a\nFORGED line'"),
    ("tab\tcr\r esc\x1b nel\x85 ls\u2028", r"'tab\tcr\r esc\x1b nel\x85 ls\u2028'"),
    (b"raw\n", r"b'raw\n'"),
    (["x\ny", 3], r"['x\ny', 3]"),
    (None, "None"),
])
def test_quote_escapes_control_characters(value: object, expected: str) -> None:
    assert quote(value) == expected


@pytest.mark.parametrize("value", ["x" * 10**7, b"\n" * 10**7, bytearray(10**7), [["y" * 10**6] * 50] * 50,
                                   {str(i): "z" * 10**5 for i in range(60)}])
def test_quote_is_bounded(value: object) -> None:
    text = quote(value)
    assert len(text) <= QUOTE_MAX_CHARS + 1 and text.endswith("…") and "\n" not in text


def _lora_request_frame(**changes: object) -> bytes:
    wire = _wire(_photo_request())
    wire.update(changes)
    return msgpack.packb(wire, use_bin_type=True)


@pytest.mark.parametrize(("frame", "escaped"), [
    (_lora_request_frame(loras={"a\nFORGED line": "heavy"}), r"a\nFORGED line"),
    (_lora_request_frame(**{"x\nFORGED line": 1}), r"x\nFORGED line"),
    (msgpack.packb({"type": "tele\nFORGED port"}), r"tele\nFORGED port"),
])
def test_client_text_in_decode_errors_is_escaped(frame: bytes, escaped: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert "\n" not in caught.value.message and escaped in caught.value.message, caught.value.message


@pytest.mark.parametrize("frame", [
    msgpack.packb({"type": b"\n" * 20_000_000}, use_bin_type=True),
    _lora_request_frame(**{"k" * 900_000: 1, "j" * 900_000: 2}),
    _lora_request_frame(loras={"l" * 900_000: "heavy"}),
    _lora_request_frame(scheduler="s" * 900_000),
])
def test_decode_errors_are_bounded(frame: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert len(caught.value.message) < 600, len(caught.value.message)


# -- the job id of a frame that does not decode ------------------------------------------------------------------------

def _sorted_wire(request: InpaintRequest, **changes: object) -> bytes:
    """``request``'s wire map with ``changes``, keys in alphabetical order: job_id after the big image plane."""
    wire = {**_wire(request), **changes}
    return msgpack.packb(dict(sorted(wire.items())), use_bin_type=True)


@pytest.mark.parametrize(("frame", "job_id"), [
    (encode(_photo_request()), "job-1"),
    (_sorted_wire(_photo_request(), num_variants="two"), "job-1"),
    (_sorted_wire(dataclasses.replace(_photo_request(), job_id="é\n" * 64)), "é\n" * 64),
    (_sorted_wire(_photo_request(), image={"width": 1, "height": 1, "channels": 4, "data": b"\0" * 10**6}), "job-1"),
    (msgpack.packb({"job_id": "x", "type": "inpaint", "extra": [[1, 2], {"a": [None, True, 1.5, -7]}]}), "x"),
    (msgpack.packb({"type": "cancel", "job_id": "x"}), None),  # only a request's refusal ends a job
    (msgpack.packb({"job_id": "x"}), None),
    (msgpack.packb({"type": "inpaint", "job_id": "x" * (MAX_JOB_ID_CHARS + 1)}), None),
    (msgpack.packb({"type": "inpaint", "job_id": ""}), None),
    (msgpack.packb({"type": "inpaint", "job_id": 7}), None),
    (msgpack.packb({"type": "inpaint", "job_id": b"x"}, use_bin_type=True), None),
    (msgpack.packb({"type": "inpaint", "extra": [[]] * 10_000, "job_id": "x"}), None),  # too much to walk
    (msgpack.packb({"type": "inpaint", "job_id": "x"})[:-1], None),
    (msgpack.packb([{"type": "inpaint", "job_id": "x"}]), None),
    (b"\xc1\xff", None),
    (b"", None),
    ("text", None),
])
def test_peek_job_id(frame: bytes, job_id: str | None) -> None:
    assert peek_job_id(frame) == job_id


@given(_requests(), st.data())
@settings(max_examples=200)
def test_peek_job_id_agrees_with_decode_and_never_raises(request: InpaintRequest, draw: st.DataObject) -> None:
    frame = bytearray(encode(request))
    for _ in range(draw.draw(st.integers(0, 4))):
        index = draw.draw(st.integers(0, len(frame) - 1))
        frame[index] = draw.draw(st.integers(0, 255))
    frame = frame[:draw.draw(st.integers(1, len(frame)))]
    peeked = peek_job_id(bytes(frame))
    try:
        decoded = decode(bytes(frame))
    except ProtocolError:
        return
    if isinstance(decoded, InpaintRequest):
        assert peeked == decoded.job_id


# -- bounded decoding --------------------------------------------------------------------------------------------------

def _nested_empty_arrays(levels: int, width: int = 1024) -> bytes:
    """``levels`` levels of arrays of ``width`` arrays, the innermost empty (one byte each): 11.5 MB for 3 × 1024."""
    frame = b"\x90"
    for _ in range(levels):
        frame = b"\xdc" + width.to_bytes(2, "big") + frame * width
    return frame


NESTED_FRAME = b"\x81\xa4type" + _nested_empty_arrays(3)
"""The issue's 11.5 MB frame: ``{"type": <11.8 million nested empty arrays>}``, 4 levels deep, so only the count
of objects refuses it (decoding it used to take 5.6 s and 920 MB here)."""


@pytest.mark.parametrize(("frame", "words"), [
    (NESTED_FRAME, "too many objects"),
    (msgpack.packb({"type": [[None] * 1000] * 17}), "too many objects"),  # 17,018 objects, 3 levels
    (b"\x91" * 5 + b"\x90", "nested deeper than 4 levels"),
    (msgpack.packb({"type": [[[[[]]]]]}), "nested deeper than 4 levels"),
], ids=["11.5 MB of nested empty arrays", "17k nils", "5 arrays deep", "map and 5 arrays deep"])
def test_decoding_is_bounded_before_objects_are_built(frame: bytes, words: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ProtocolError) as refused:
        decode(frame)
    elapsed = time.perf_counter() - started
    assert refused.value.code is ErrorCode.BAD_MESSAGE and words in refused.value.message
    assert elapsed < 0.5  # a bound, not a speed test: building the 11.5 MB frame's lists took 5.6 s and 920 MB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20 * 1024  # KiB: < 20 MB


def test_a_valid_message_at_the_limits_still_decodes() -> None:
    request = _photo_request()
    deepest = Result("r", [Variant(0, 0, request.image, request.mask, 1, {"queue": 0.0})] * MAX_VARIANTS)
    assert decode(encode(deepest)) == deepest  # map → variants → variant → plane: 4 levels
    assert MAX_DEPTH == 4 and len(msgpack.unpackb(encode(request))) <= MAX_MAP_LEN
