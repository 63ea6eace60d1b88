"""Protocol messages: round trips, and every kind of bad frame rejected with its error code."""

from __future__ import annotations

import dataclasses
import resource
import time
from unittest import mock

import msgpack
import numpy as np
import pytest
from gimp_inpaint.protocol import (
    FILL_OPTIONS,
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    EngineInfo,
    Error,
    ErrorCode,
    Family,
    FillOptions,
    Hello,
    InpaintRequest,
    Message,
    Plane,
    Progress,
    ProtocolError,
    Result,
    Scheduler,
    Stage,
    Variant,
    Welcome,
    codec,
    decode,
    encode,
    max_frame_bytes,
    peek_job_id,
    quote,
)
from gimp_inpaint.protocol.codec import MAX_DEPTH, MAX_MAP_LEN
from gimp_inpaint.protocol.messages import MAX_CLIENT_NAME_CHARS, MAX_JOB_ID_CHARS
from gimp_inpaint.protocol.options import (
    LORA_WEIGHT_MAX,
    MAX_ENGINE_NAME_CHARS,
    MAX_LORAS,
    MAX_PROMPT_CHARS,
    MAX_VARIANTS,
    SEED_MAX,
)
from gimp_inpaint.protocol.quoting import QUOTE_MAX_CHARS
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data
from test_options import fill_options

PHOTO_OPTIONS = FillOptions(
    prompt="an astronaut, photo", negative_prompt="blurry", engine="opencv", scheduler=Scheduler.DPMPP_2M_KARRAS,
    loras={"pixel-art": 0.8, "film": -0.5}, strength=0.8, num_inference_steps=20, guidance_scale=6.0,
    refiner_strength=0.2, controlnet_conditioning_scale=0.7, seed=1234, num_variants=2, grow=4, feather=12)


def _photo_request(width: int = 96, height: int = 64) -> InpaintRequest:
    """A request carrying a real crop of scikit-image's astronaut photo and an elliptic mask."""
    rgb = data.astronaut()[100:100 + height, 150:150 + width]
    rgba = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    yy, xx = np.mgrid[:height, :width]
    mask = ((((xx - width / 2) / (width / 3)) ** 2 + ((yy - height / 2) / (height / 3)) ** 2) <= 1) * 255
    return InpaintRequest(
        job_id="job-1", x=150, y=100,
        image=Plane(width, height, 4, rgba.tobytes()), mask=Plane(width, height, 1, mask.astype(np.uint8).tobytes()),
        options=PHOTO_OPTIONS,
    )


def _wire(message: object) -> dict:
    return msgpack.unpackb(encode(message), raw=False)  # type: ignore[arg-type]


def _options(**changes: object):
    """A mutation of a request's wire map: ``changes`` into its ``options`` map."""
    return lambda w: {**w, "options": {**w["options"], **changes}}


def _without_options(*names: str):
    """A mutation of a request's wire map: ``names`` left out of its ``options`` map."""
    return lambda w: {**w, "options": {k: v for k, v in w["options"].items() if k not in names}}


def test_request_round_trip_keeps_pixels_exact() -> None:
    request = _photo_request()
    frame = encode(request)
    decoded = decode(frame)
    assert decoded == request
    assert isinstance(decoded, InpaintRequest)
    pixels = np.frombuffer(decoded.image.data, np.uint8).reshape(64, 96, 4)
    assert np.array_equal(pixels[..., :3], data.astronaut()[100:164, 150:246])
    assert decoded.options == PHOTO_OPTIONS and decoded.options.engine == "opencv"
    # raw bytes on the wire: the frame is the pixel payload plus a small header, not base64 or PNG
    assert len(frame) - (96 * 64 * 5) < 512


def test_every_message_type_round_trips() -> None:
    plane = Plane(2, 1, 4, bytes(range(8)))
    mask = Plane(2, 1, 1, b"\x00\xff")
    messages = [
        Hello(PROTOCOL_VERSION, "test", "secret"),
        Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", [EngineInfo("opencv", "opencv", "telea", True, False, options=[]),
                                                   EngineInfo("xl", "diffusers", "diffusers/sdxl", True, True, "",
                                                              Family.SDXL_INPAINT, ["film"], ["<cat>"], True,
                                                              ["prompt", "loras", "refiner_strength"])], 1 << 20),
        _photo_request(),
        InpaintRequest("j", 0, 0, plane, mask),
        Accepted("j", 3),
        Progress("j", 2, 5),
        Progress("j", 1 << 33, 1 << 34, Stage.DOWNLOAD),
        Progress("j", 0, 0, Stage.LOAD),
        Variant("j", 0, 4, 8, plane, mask, 42, {"inference": 0.5}),
        Variant("j", MAX_VARIANTS - 1, -4, -8, plane, mask, SEED_MAX),
        Result("j", 2),
        Cancel("j"),
        Error(ErrorCode.CANCELLED, "cancelled by the user", "j"),
        Error(ErrorCode.INTERNAL, "boom"),
    ]
    for message in messages:
        assert decode(encode(message)) == message


def test_enums_travel_as_their_strings_and_decode_to_members() -> None:
    welcome = Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", [EngineInfo("xl", "diffusers", "m", True, True,
                                                                    family=Family.SDXL)], 1)
    wire = _wire(welcome)
    assert wire["engines"][0]["family"] == "sdxl" and type(wire["engines"][0]["family"]) is str
    assert decode(encode(welcome)).engines[0].family is Family.SDXL  # type: ignore[union-attr]
    assert _wire(Progress("j", 0, 0, Stage.LOAD))["stage"] == "load"
    assert decode(encode(Progress("j", 0, 0, Stage.LOAD))).stage is Stage.LOAD  # type: ignore[union-attr]
    assert _wire(Error(ErrorCode.BUSY, "x"))["code"] == "busy"
    assert decode(encode(Error(ErrorCode.BUSY, "x"))).code is ErrorCode.BUSY  # type: ignore[union-attr]
    assert _wire(_photo_request())["options"]["scheduler"] == "dpmpp_2m_karras"
    assert decode(encode(_photo_request())).options.scheduler is Scheduler.DPMPP_2M_KARRAS  # type: ignore[union-attr]
    # built from a wire string, a message holds the member too
    assert Error("busy", "x").code is ErrorCode.BUSY  # type: ignore[arg-type]
    assert Progress("j", 0, 0, "download").stage is Stage.DOWNLOAD  # type: ignore[arg-type]


@pytest.mark.parametrize(("message", "field", "value"), [
    (Error(ErrorCode.BUSY, "x"), "code", "no_such_code"),
    (Error(ErrorCode.BUSY, "x"), "code", 3),
    (Progress("j", 1, 2), "stage", "dreaming"),
    (Progress("j", 1, 2), "stage", None),
])
def test_an_unknown_enum_value_outside_options_is_a_bad_message(message: object, field: str, value: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb({**_wire(message), field: value}))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(("changes", "words"), [
    ({"family": "auto"}, "family"),
    ({"family": ""}, "family"),
    ({"options": ["prompt", "denoise"]}, "denoise"),
    ({"options": "prompt"}, "options"),
])
def test_an_engine_with_an_unknown_family_or_option_is_a_bad_message(changes: dict, words: str) -> None:
    welcome = Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", [EngineInfo("sd", "diffusers", "m", True, True)], 1)
    wire = _wire(welcome)
    wire["engines"][0].update(changes)
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(wire))
    assert caught.value.code is ErrorCode.BAD_MESSAGE and words in caught.value.message


def test_an_engine_uses_every_option_unless_it_says_otherwise() -> None:
    assert EngineInfo("x", "test", "m", True, True).options == list(FILL_OPTIONS)
    with pytest.raises(ProtocolError) as built:
        EngineInfo("sd", "diffusers", "m", True, True, options=["prompt", "denoise"])
    assert built.value.code is ErrorCode.BAD_MESSAGE and "denoise" in built.value.message


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (_without_options("prompt"), None),  # optional fields may be omitted
        (lambda w: w.pop("options") and w, None),  # all of them
        (lambda w: w.pop("job_id") and w, ErrorCode.BAD_MESSAGE),
        (lambda w: w.pop("image") and w, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "unexpected": 1}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "prompt": "flat"}, ErrorCode.BAD_MESSAGE),  # a protocol-3 request's flat option field
        (lambda w: {**w, "engine": "opencv"}, ErrorCode.BAD_MESSAGE),  # the engine is an option now
        (_options(unexpected=1), ErrorCode.BAD_MESSAGE),
        (_options(padding=64), ErrorCode.BAD_MESSAGE),  # editor options are never sent
        (lambda w: {**w, "options": "opencv"}, ErrorCode.BAD_MESSAGE),
        (_options(strength="0.5"), ErrorCode.BAD_MESSAGE),
        (_options(num_inference_steps=2.5), ErrorCode.BAD_MESSAGE),
        (_options(num_inference_steps=True), ErrorCode.BAD_MESSAGE),
        (_options(scheduler=3), ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "type": "launch-missiles"}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "image": {**w["image"], "data": w["image"]["data"][:-1]}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": {**w["image"], "channels": 2}}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": {**w["image"], "extra": 0}}, ErrorCode.BAD_MESSAGE),
        (lambda w: {**w, "mask": {**w["mask"], "width": 48, "data": w["mask"]["data"][: 48 * 64]}},
         ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": "not a plane"}, ErrorCode.BAD_MESSAGE),
        (_options(strength=0.0), ErrorCode.INVALID_REQUEST),
        (_options(strength=float("nan")), ErrorCode.INVALID_REQUEST),
        (_options(guidance_scale=1e9), ErrorCode.INVALID_REQUEST),
        (_options(num_variants=0), ErrorCode.INVALID_REQUEST),
        (_options(num_variants=MAX_VARIANTS + 1), ErrorCode.INVALID_REQUEST),
        (_options(seed=-2), ErrorCode.INVALID_REQUEST),
        (_options(seed=2**40), ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "job_id": ""}, ErrorCode.INVALID_REQUEST),
        (lambda w: {**w, "image": {**w["image"], "width": 5000, "height": 5000}}, ErrorCode.TOO_LARGE),
        (lambda w: {**w, "image": {**w["image"], "width": 100_000}}, ErrorCode.INVALID_REQUEST),
        (_options(scheduler="karras-of-doom"), ErrorCode.INVALID_REQUEST),
        (_options(loras={f"l{i}": 1.0 for i in range(MAX_LORAS + 1)}), ErrorCode.INVALID_REQUEST),
        (_options(loras={"film": LORA_WEIGHT_MAX + 0.5}), ErrorCode.INVALID_REQUEST),
        (_options(loras={"": 1.0}), ErrorCode.INVALID_REQUEST),
        (_options(loras={"film": "strong"}), ErrorCode.BAD_MESSAGE),
        (_options(loras=["film"]), ErrorCode.BAD_MESSAGE),
        (_options(refiner_strength=1.0), ErrorCode.INVALID_REQUEST),
        (_options(refiner_strength=-0.1), ErrorCode.INVALID_REQUEST),
        (_options(controlnet_conditioning_scale=2.5), ErrorCode.INVALID_REQUEST),
        (_without_options("loras", "scheduler"), None),  # version-1-style options still decode
    ],
)
def test_bad_request_fields_get_their_code(mutate, code: ErrorCode | None) -> None:
    wire = mutate(_wire(_photo_request()))
    frame = msgpack.packb(wire, use_bin_type=True)
    if code is None:
        decoded = decode(frame)
        assert isinstance(decoded, InpaintRequest)
        for name, spec in FILL_OPTIONS.items():  # what was sent is kept, what was left out is the default
            sent = wire.get("options", {})
            assert getattr(decoded.options, name) == (getattr(PHOTO_OPTIONS, name) if name in sent else spec.default)
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
        "paused",
    }
    with pytest.raises(ProtocolError) as caught:
        Error("no_such_code", "x")  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.BAD_MESSAGE
    assert all(str(c) == f"{c}" == c.value for c in ErrorCode)


EMOJI = "\U0001f680"
"""4 bytes in UTF-8, the most a character takes."""

DAEMON_TIMINGS = {"queue": 1 / 3, "load": 1 / 7, "inference": 1 / 9, "total": 1 / 11}
"""The timings a daemon's variant reports (daemon/worker.py), each a float64 on the wire."""


def _largest_request(width: int, height: int) -> InpaintRequest:
    """A request at every length cap (4-byte UTF-8 characters) and the widest numbers, with planes of exactly
    ``width × height`` pixels."""
    pixels = width * height
    options = FillOptions(
        prompt=EMOJI * MAX_PROMPT_CHARS, negative_prompt=EMOJI * MAX_PROMPT_CHARS, engine=EMOJI * MAX_ENGINE_NAME_CHARS,
        scheduler=Scheduler.DPMPP_2M_SDE_KARRAS,
        loras={EMOJI * (MAX_ENGINE_NAME_CHARS - 1) + str(i): -1 / 3 for i in range(MAX_LORAS)},
        strength=1 / 3, num_inference_steps=500, guidance_scale=1 / 7, refiner_strength=1 / 3,
        controlnet_conditioning_scale=1 / 3, seed=SEED_MAX, num_variants=MAX_VARIANTS, grow=1024, feather=1024)
    return InpaintRequest(job_id=EMOJI * MAX_JOB_ID_CHARS, x=-10 * 16384, y=-10 * 16384,
                          image=Plane(width, height, 4, bytes(pixels * 4)), mask=Plane(width, height, 1, bytes(pixels)),
                          options=options)


def test_frame_limit_fits_the_largest_request_and_variant() -> None:
    """The largest valid request, and the largest variant (its planes of the crop's size, the widest integers
    msgpack has for its offset), fit in :func:`max_frame_bytes` (small ``max_pixels``, so the text and headers are
    a large part of the frame)."""
    width, height = 64, 48
    max_pixels = width * height
    assert len(EMOJI.encode()) == 4
    request = _largest_request(width, height)
    frame = encode(request)
    assert len(frame) <= max_frame_bytes(max_pixels)
    assert decode(frame, max_pixels) == request
    variant = Variant(request.job_id, MAX_VARIANTS - 1, -(2**63), -(2**63), request.image, request.mask, SEED_MAX,
                      DAEMON_TIMINGS)
    frame = encode(variant)
    assert len(frame) <= max_frame_bytes(max_pixels)
    assert decode(frame, max_pixels) == variant
    assert max_frame_bytes(max_pixels + 1) - max_frame_bytes(max_pixels) == 9  # 16-bit RGBA + mask: 9 bytes a pixel


@given(st.integers(1, 24), st.integers(1, 24), fill_options(), st.data())
@settings(max_examples=60, deadline=None)
def test_frame_limit_fits_any_valid_request_and_its_variants(width: int, height: int, options: FillOptions,
                                                            data: st.DataObject) -> None:
    request = InpaintRequest(
        job_id=data.draw(st.text(min_size=1, max_size=MAX_JOB_ID_CHARS)),
        x=data.draw(st.integers(-10 * 16384, 10 * 16384)), y=data.draw(st.integers(-10 * 16384, 10 * 16384)),
        image=Plane(width, height, 4, bytes(width * height * 4)), mask=Plane(width, height, 1, bytes(width * height)),
        options=options)
    assert len(encode(request)) <= max_frame_bytes(width * height)
    left, top = data.draw(st.integers(0, width - 1)), data.draw(st.integers(0, height - 1))
    box_width, box_height = data.draw(st.integers(1, width - left)), data.draw(st.integers(1, height - top))
    variant = Variant(request.job_id, data.draw(st.integers(0, options.num_variants - 1)), request.x + left,
                      request.y + top, Plane(box_width, box_height, 4, bytes(box_width * box_height * 4)),
                      Plane(box_width, box_height, 1, bytes(box_width * box_height)),
                      data.draw(st.integers(0, SEED_MAX)),
                      data.draw(st.fixed_dictionaries({k: st.floats(allow_nan=False) for k in DAEMON_TIMINGS})))
    assert len(encode(variant)) <= max_frame_bytes(width * height)


@pytest.mark.parametrize(("field", "cap"), [("prompt", MAX_PROMPT_CHARS), ("negative_prompt", MAX_PROMPT_CHARS),
                                            ("engine", MAX_ENGINE_NAME_CHARS), ("job_id", MAX_JOB_ID_CHARS)])
def test_text_longer_than_its_cap_is_an_invalid_request(field: str, cap: int) -> None:
    request = _photo_request()
    if field == "job_id":
        at_cap = dataclasses.replace(request, job_id="p" * cap)
        wire = {**_wire(at_cap), field: "p" * (cap + 1)}
    else:
        at_cap = dataclasses.replace(request, options=dataclasses.replace(request.options, **{field: "p" * cap}))
        wire = _options(**{field: "p" * (cap + 1)})(_wire(at_cap))
    assert decode(encode(at_cap)) == at_cap
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
def _small_options(draw: st.DrawFn) -> FillOptions:
    return FillOptions(
        prompt=draw(_text), negative_prompt=draw(_text), engine=draw(_text), scheduler=draw(st.sampled_from(Scheduler)),
        loras=draw(st.dictionaries(st.text(min_size=1, max_size=20), st.floats(-LORA_WEIGHT_MAX, LORA_WEIGHT_MAX),
                                   max_size=MAX_LORAS)),
        strength=draw(st.floats(0.01, 1.0)), num_inference_steps=draw(st.integers(1, 500)),
        guidance_scale=draw(st.floats(0.0, 50.0)), refiner_strength=draw(st.floats(0.0, 0.99)),
        controlnet_conditioning_scale=draw(st.floats(0.0, 2.0)), seed=draw(st.integers(-1, SEED_MAX)),
        num_variants=draw(st.integers(1, 16)), grow=draw(st.integers(0, 1024)), feather=draw(st.integers(0, 1024)),
    )


@st.composite
def _requests(draw: st.DrawFn) -> InpaintRequest:
    width, height = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    return InpaintRequest(
        job_id=draw(st.text(min_size=1, max_size=128)),
        x=draw(st.integers(-1000, 1000)), y=draw(st.integers(-1000, 1000)),
        image=Plane(width, height, 4, draw(st.binary(min_size=width * height * 4, max_size=width * height * 4))),
        mask=Plane(width, height, 1, draw(st.binary(min_size=width * height, max_size=width * height))),
        options=draw(_small_options()),
    )


@given(_requests())
def test_any_valid_request_round_trips(request: InpaintRequest) -> None:
    assert decode(encode(request)) == request


@given(fill_options())
@settings(max_examples=50)
def test_any_valid_options_round_trip_inside_a_request(options: FillOptions) -> None:
    request = InpaintRequest("j", 0, 0, Plane(1, 1, 4, bytes(4)), Plane(1, 1, 1, b"\xff"), options)
    decoded = decode(encode(request))
    assert decoded == request and decoded.options.scheduler is options.scheduler  # type: ignore[union-attr]


_variants = st.builds(Variant, st.text(min_size=1, max_size=MAX_JOB_ID_CHARS), st.integers(0, MAX_VARIANTS - 1),
                      st.integers(-99, 99), st.integers(-99, 99),
                      st.just(Plane(3, 2, 4, bytes(range(24)))), st.just(Plane(3, 2, 1, bytes(range(6)))),
                      st.integers(0, SEED_MAX),
                      st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=4))


@given(_variants)
def test_any_variant_round_trips(variant: Variant) -> None:
    assert decode(encode(variant)) == variant


@given(st.text(min_size=1), st.integers(1, MAX_VARIANTS))
def test_any_result_round_trips(job_id: str, count: int) -> None:
    assert decode(encode(Result(job_id, count))) == Result(job_id, count)
    assert set(_wire(Result(job_id, count))) == {"type", "job_id", "num_variants"}


@pytest.mark.parametrize("count", [0, -1, MAX_VARIANTS + 1])
def test_a_result_of_no_or_too_many_variants_is_a_bad_message(count: int) -> None:
    frame = msgpack.packb({"type": "result", "job_id": "j", "num_variants": count})
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def _plane_wire(width: int, height: int, channels: int) -> dict:
    return dataclasses.asdict(Plane(width, height, channels, bytes(width * height * channels)))


def _variant_wire(**changes: object) -> dict:
    variant = Variant("v", 1, 10, 20, Plane(3, 2, 4, bytes(24)), Plane(3, 2, 1, bytes(6)), 5, {"total": 1.0})
    return {**_wire(variant), **changes}


@pytest.mark.parametrize("changes", [
    {"index": MAX_VARIANTS},
    {"index": 2**40},
    {"index": -1},
    {"seed": -1},  # a variant reports the seed it used, never "random"
    {"seed": SEED_MAX + 1},
    {"image": _plane_wire(3, 2, 3)},  # RGB, not RGBA
    {"image": _plane_wire(3, 2, 1)},
    {"mask": _plane_wire(3, 2, 4)},  # an RGBA mask
    {"mask": _plane_wire(2, 3, 1)},  # same bytes, other shape
    {"mask": _plane_wire(3, 1, 1)},
    {"image": _plane_wire(4, 2, 4)},
    {"index": 1.0},
    {"timings": {"total": "fast"}},
    {"timings": [1.0]},
    {"num_variants": 2},
])
def test_an_inconsistent_variant_is_a_bad_message(changes: dict) -> None:
    assert isinstance(decode(msgpack.packb(_variant_wire(), use_bin_type=True)), Variant)
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(_variant_wire(**changes), use_bin_type=True))
    assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_a_variant_is_refused_when_built_inconsistent_too() -> None:
    image, mask = Plane(3, 2, 4, bytes(24)), Plane(3, 2, 1, bytes(6))
    for build in (lambda: Variant("v", MAX_VARIANTS, 0, 0, image, mask, 0),
                  lambda: Variant("v", 0, 0, 0, mask, mask, 0),
                  lambda: Variant("v", 0, 0, 0, image, image, 0),
                  lambda: Variant("v", 0, 0, 0, image, Plane(2, 3, 1, bytes(6)), 0),
                  lambda: Variant("v", 0, 0, 0, image, mask, -1)):
        with pytest.raises(ProtocolError) as caught:
            build()
        assert caught.value.code is ErrorCode.BAD_MESSAGE


def test_a_variant_over_the_pixel_limit_is_too_large() -> None:
    variant = Variant("v", 0, 0, 0, Plane(8, 8, 4, bytes(256)), Plane(8, 8, 1, bytes(64)), 0)
    assert decode(encode(variant), max_pixels=64) == variant
    with pytest.raises(ProtocolError) as caught:
        decode(encode(variant), max_pixels=63)
    assert caught.value.code is ErrorCode.TOO_LARGE


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
def test_planes_round_trip_inside_a_variant(plane: Plane) -> None:
    mask = Plane(plane.width, plane.height, 1, bytes(plane.pixels))
    if plane.channels != 4:
        with pytest.raises(ProtocolError):
            Variant("r", 0, 0, 0, plane, mask, 0)
        return
    variant = Variant("r", 0, 0, 0, plane, mask, 7)
    assert decode(encode(variant)) == variant


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


def _lora_request_frame(top: dict | None = None, **option_changes: object) -> bytes:
    """The photo request's frame with ``top`` in its map and ``option_changes`` in its options."""
    wire = _options(**option_changes)(_wire(_photo_request()))
    wire.update(top or {})
    return msgpack.packb(wire, use_bin_type=True)


@pytest.mark.parametrize(("frame", "escaped"), [
    (_lora_request_frame(loras={"a\nFORGED line": "heavy"}), r"a\nFORGED line"),
    (_lora_request_frame({"x\nFORGED line": 1}), r"x\nFORGED line"),
    (_lora_request_frame(**{"o\nFORGED line": 1}), r"o\nFORGED line"),
    (_lora_request_frame(scheduler="s\nFORGED line"), r"s\nFORGED line"),
    (msgpack.packb({"type": "tele\nFORGED port"}), r"tele\nFORGED port"),
])
def test_client_text_in_decode_errors_is_escaped(frame: bytes, escaped: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode(frame)
    assert "\n" not in caught.value.message and escaped in caught.value.message, caught.value.message


@pytest.mark.parametrize("frame", [
    msgpack.packb({"type": b"\n" * 20_000_000}, use_bin_type=True),
    _lora_request_frame({"k" * 900_000: 1, "j" * 900_000: 2}),
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
    (_sorted_wire(_photo_request(), options={**_wire(_photo_request())["options"], "num_variants": "two"}), "job-1"),
    (_sorted_wire(_photo_request(), engine="opencv"), "job-1"),  # a protocol-3 request
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
    engine = EngineInfo("sd", "diffusers", "m", True, True, family=Family.SD_INPAINT, loras=[f"l{i}" for i in range(8)],
                        embeddings=["<cat>"])
    deepest = Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", [engine] * 64, 1 << 20)
    assert decode(encode(deepest)) == deepest  # map → engines → engine → its LoRAs: 4 levels
    request = _largest_request(8, 8)
    assert decode(encode(request)) == request  # map → options → loras: 3 levels
    variant = Variant("r", 0, 0, 0, request.image, request.mask, 1, DAEMON_TIMINGS)
    assert decode(encode(variant)) == variant  # map → plane: 2 levels
    assert MAX_DEPTH == 4 and len(msgpack.unpackb(encode(request))) <= MAX_MAP_LEN
    assert len(_wire(request)["options"]) == len(FILL_OPTIONS) <= MAX_MAP_LEN


# -- issue 10: the encoder's pieces and the decoder's views of the frame -----------------------------------------------

def _packb_frame(message: Message) -> bytes:
    """What msgpack itself makes of ``message``'s wire map (its fields in order, then its type)."""
    return msgpack.packb({**dataclasses.asdict(message), "type": message.type}, use_bin_type=True)


def _plane_pair(width: int, height: int) -> tuple[Plane, Plane]:
    """An RGBA plane and a mask of ``width × height`` pixels, of varied bytes."""
    pixels = width * height
    return (Plane(width, height, 4, bytes(range(256)) * (pixels * 4 // 256) + bytes(pixels * 4 % 256)),
            Plane(width, height, 1, bytes(range(255, -1, -1)) * (pixels // 256) + bytes(pixels % 256)))


_SIZED_PLANES = [_plane_pair(width, height) for width, height in
                 [(2048, 2048), (255, 257), (4, 16384), (128, 128), (127, 129), (8, 4096)]]
"""Planes on both sides of the join's threshold (:data:`protocol.codec.JOINED_BIN_BYTES`, 65,536 bytes) and of the
bin 16 → bin 32 header: data of 16 MiB and 4 MiB (2048²), 262,140 and 65,535 (255 × 257: its mask packed by msgpack
as bin 16), 262,144 and 65,536 (4 × 16384), 65,536 and 16,384, 65,532 and 16,383, 131,072 and 32,768 bytes."""


def _real_messages() -> list[Message]:
    photo = _photo_request()
    return [
        photo, _largest_request(512, 512), _largest_request(8, 8),
        *[InpaintRequest("big", 3, -4, image, mask, PHOTO_OPTIONS) for image, mask in _SIZED_PLANES],
        *[Variant("big", 1, 7, 9, image, mask, 42, DAEMON_TIMINGS) for image, mask in _SIZED_PLANES],
        Variant("job-1", 0, 150, 100, photo.image, photo.mask, SEED_MAX, DAEMON_TIMINGS),
        Hello(PROTOCOL_VERSION, "test", "secret"),
        Welcome(PROTOCOL_VERSION, "0.1.0", "cpu", [EngineInfo("sd", "diffusers", "m", True, True, "",
                                                              Family.SD_INPAINT, ["film"], ["<cat>"], True)], 1 << 24),
        Accepted("j", 3), Progress("j", 1 << 33, 1 << 34, Stage.DOWNLOAD), Result("j", 2), Cancel("j"),
        Error(ErrorCode.INTERNAL, "boom", "j"),
    ]


def test_encode_writes_the_bytes_msgpack_writes() -> None:
    for message in _real_messages():
        frame = encode(message)
        assert frame == _packb_frame(message), message.type
        assert decode(frame, max_pixels=1 << 28) == message


@given(st.one_of(_requests(), _variants), st.sampled_from([0, 1, 2, 16, 256]))
@settings(max_examples=200)
def test_encode_writes_msgpacks_bytes_wherever_it_joins(message: InpaintRequest | Variant, threshold: int) -> None:
    """With the join's threshold low, every plane (and a LoRA name of bytes, never) is joined: bin 8 and bin 16
    headers written by the codec too."""
    with mock.patch.object(codec, "JOINED_BIN_BYTES", threshold):
        assert encode(message) == _packb_frame(message)


@pytest.mark.parametrize("fragment_bytes", [4096, 65536, codec.FRAGMENT_BYTES])
def test_fragments_join_into_the_frame_and_none_is_longer_than_asked(fragment_bytes: int) -> None:
    for message in _real_messages():
        fragments = codec.encode_fragments(message, fragment_bytes)
        assert b"".join(fragments) == _packb_frame(message), message.type
        assert all(1 <= len(fragment) <= max(fragment_bytes, codec.JOINED_BIN_BYTES - 1) for fragment in fragments)


def test_fragments_view_the_planes_instead_of_copying_them() -> None:
    request = InpaintRequest("big", 0, 0, *_SIZED_PLANES[0], PHOTO_OPTIONS)
    views = [f for f in codec.encode_fragments(request, 1 << 16) if isinstance(f, memoryview)]
    assert views and all(f.readonly and f.obj in (request.image.data, request.mask.data) for f in views)
    assert sum(map(len, views)) == len(request.image.data) + len(request.mask.data)


def test_a_plane_viewing_an_array_is_encoded_as_its_bytes_without_msgpack() -> None:
    """The daemon's worker sends each variant's pixels as a byte view of its array (``daemon.worker.plane_data``)."""
    image, mask = _SIZED_PLANES[0]
    viewed = Variant("big", 1, 7, 9, Plane(image.width, image.height, 4, memoryview(image.data).toreadonly()),
                     Plane(mask.width, mask.height, 1, memoryview(mask.data)), 42, DAEMON_TIMINGS)
    copied = Variant("big", 1, 7, 9, image, mask, 42, DAEMON_TIMINGS)
    assert encode(viewed) == b"".join(codec.encode_fragments(viewed)) == _packb_frame(copied)
    packer = mock.Mock(wraps=msgpack.Packer(use_bin_type=True))
    out: list[bytes | memoryview] = []
    codec._chunks(viewed.image.data, packer, out)
    assert packer.pack.call_count == 0 and out[1] is viewed.image.data


def test_fragments_of_no_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="fragment_bytes"):
        codec.encode_fragments(Cancel("j"), 0)


@pytest.mark.parametrize("length", [0, 1, 255, 256, 65535, 65536, 70000])
def test_bin_headers_are_msgpacks(length: int) -> None:
    packed = msgpack.packb(bytes(length), use_bin_type=True)
    assert codec._bin_header(length) == packed[:len(packed) - length]


def test_a_viewed_request_shares_the_frames_memory_and_equals_the_copied_one() -> None:
    request = InpaintRequest("big", 0, 0, *_SIZED_PLANES[0], PHOTO_OPTIONS)
    frame = encode(request)
    viewed, copied = decode(frame, views=True), decode(frame)
    assert viewed == copied == request and isinstance(viewed, InpaintRequest)
    for plane in (viewed.image, viewed.mask):
        view = plane.data
        assert isinstance(view, memoryview) and view.obj is frame and view.readonly, type(view)
        assert np.shares_memory(np.frombuffer(view, np.uint8), np.frombuffer(frame, np.uint8))
    assert hash(viewed.image) == hash(copied.image)  # a read-only view hashes as its bytes
    assert encode(viewed) == frame
    small = decode(encode(_photo_request()), views=True)  # planes under VIEW_BIN_BYTES are bytes
    assert type(small.image.data) is bytes and small == _photo_request()  # type: ignore[union-attr]
    for mutable in (bytearray(frame), memoryview(bytearray(frame))):  # only an immutable frame is viewed
        assert type(decode(mutable, views=True).image.data) is bytes  # type: ignore[arg-type, union-attr]
    grown = bytearray(frame)  # the daemon's frame of several fragments, handed over read-only
    read_only = decode(memoryview(grown).toreadonly(), views=True)
    assert read_only == request and isinstance(read_only, InpaintRequest)
    assert isinstance(read_only.image.data, memoryview) and read_only.image.data.obj is grown


def _both_decodings(frame: bytes) -> tuple[object, object]:
    """``decode(frame)`` and ``decode(frame, views=True)`` (each its message or its ProtocolError's code and text),
    the views' threshold at 1 byte so that every map, array and bin of the frame is walked or viewed."""
    outcomes = []
    for views in (False, True):
        try:
            with mock.patch.object(codec, "VIEW_BIN_BYTES", 1):
                outcomes.append(decode(frame, max_pixels=1 << 20, views=views))
        except ProtocolError as exc:
            outcomes.append((exc.code, exc.message))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb({"type": 5}), msgpack.packb({1: 2}), msgpack.packb({(1,): 2}),
    encode(Cancel("x")) + b"\x00", encode(_photo_request())[:-10], msgpack.packb(b"raw"),
    msgpack.packb({"type": "cancel", "job_id": ["nested"]}), msgpack.packb({"type": "cancel", "job_id": b"bin"}),
    msgpack.packb({"type": "inpaint", "job_id": b"x", "image": b"y"}),
    msgpack.packb({"type": "x", "k": [0] * (MAX_MAP_LEN * 20)}), msgpack.packb({str(i): i for i in range(65)}),
    msgpack.packb({"type": msgpack.ExtType(1, b"e")}), msgpack.packb({"type": "s" * 70_000}),
    msgpack.packb({b"type": "cancel", "job_id": "x"}), b"\x82\xa4type\xa6cancel\xa6job_id\xa1\xff",  # not UTF-8
    NESTED_FRAME, b"\x91" * 5 + b"\x90", msgpack.packb({"type": [[None] * 1000] * 17}),
    _lora_request_frame(loras={"a\nFORGED line": "heavy"}), _lora_request_frame({"x": b"\0" * 10}),
    _sorted_wire(_photo_request(), image={"width": 1, "height": 1, "channels": 4, "data": b"\0" * 10**6}),
    msgpack.packb({**_wire(_photo_request()), "image": {**_wire(_photo_request())["image"], "width": 5000,
                                                        "height": 5000}}),
    msgpack.packb({**_wire(_photo_request()), "mask": {**_wire(_photo_request())["mask"], "data": "text"}}),
    encode(_largest_request(8, 8)), encode(Variant("v", 1, 10, 20, Plane(3, 2, 4, bytes(24)), Plane(3, 2, 1, bytes(6)),
                                                   5, {"total": 1.0})),
], ids=lambda frame: f"{len(frame)} bytes")
def test_views_decode_as_copies_do(frame: bytes) -> None:
    copied, viewed = _both_decodings(frame)
    assert viewed == copied


@given(_requests(), st.data())
@settings(max_examples=300)
def test_views_decode_corrupted_frames_as_copies_do(request: InpaintRequest, draw: st.DataObject) -> None:
    frame = bytearray(encode(request))
    for _ in range(draw.draw(st.integers(0, 4))):
        frame[draw.draw(st.integers(0, len(frame) - 1))] = draw.draw(st.integers(0, 255))
    copied, viewed = _both_decodings(bytes(frame[:draw.draw(st.integers(1, len(frame)))]))
    assert viewed == copied


@given(st.binary(max_size=512))
@settings(max_examples=300)
def test_views_decode_garbage_as_copies_do(frame: bytes) -> None:
    copied, viewed = _both_decodings(frame)
    assert viewed == copied
