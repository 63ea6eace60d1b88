"""client.connection against the real daemon server (scripted engines) and a few scripted fake peers."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus

import msgpack
import numpy as np
import pytest
from gimp_inpaint.client.connection import (
    ConnectionConfig,
    ConnectionConfigError,
    DaemonError,
    DaemonUnavailable,
    InpaintClient,
    connect_or_start,
    pick_engine,
    read_connection_config,
    write_connection_config,
)
from gimp_inpaint.client.imaging import array_from_plane, plane_from_array
from gimp_inpaint.daemon.engines.base import CancelCheck, EngineJob, JobCancelled, ProgressCallback
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    EngineInfo,
    Error,
    ErrorCode,
    Family,
    FillOptions,
    InpaintRequest,
    Plane,
    Progress,
    Result,
    Scheduler,
    Stage,
    Variant,
    Welcome,
    decode,
    encode,
)
from running_daemon import BrokenEngine, LoadingEngine, MissingEngine, StepEngine, free_port, running_daemon
from skimage import data
from websockets.asyncio.server import ServerConnection, serve

pytestmark = pytest.mark.timeout(60)


REQUEST_FIELDS = {"job_id", "x", "y", "image", "mask"}


def make_request(engine: str, **overrides: object) -> InpaintRequest:
    """A 64×48 crop of the astronaut photo at (100, 80) with a 20×16 rectangle to repaint; ``overrides`` are the
    request's own fields (:data:`REQUEST_FIELDS`) or options (:class:`protocol.FillOptions`)."""
    crop = data.astronaut()[80:128, 100:164]
    rgba = np.dstack([crop, np.full(crop.shape[:2], 255, np.uint8)])
    mask = np.zeros(crop.shape[:2], np.uint8)
    mask[16:32, 20:40] = 255
    fields = {"job_id": uuid.uuid4().hex, "x": 100, "y": 80, "image": plane_from_array(rgba),
              "mask": plane_from_array(mask)}
    options = {"engine": engine, "seed": 7, "grow": 0, "feather": 0}
    for name, value in overrides.items():
        (fields if name in REQUEST_FIELDS else options)[name] = value
    return InpaintRequest(**fields, options=FillOptions(**options))  # type: ignore[arg-type]


def whole_crop(variant: Variant, request: InpaintRequest) -> tuple[np.ndarray, np.ndarray]:
    """The variant pasted into the request's crop: its RGBA and its blend mask as whole crops (the request's own
    pixels and 0 outside the variant's box, which is what a client keeps there)."""
    left, top = variant.x - request.x, variant.y - request.y
    box = slice(top, top + variant.image.height), slice(left, left + variant.image.width)
    image = np.array(array_from_plane(request.image))
    mask = np.zeros((request.image.height, request.image.width), np.uint8)
    image[box], mask[box] = array_from_plane(variant.image), array_from_plane(variant.mask)
    return image, mask


@pytest.fixture
def daemon(tmp_path):
    engines = [MissingEngine("missing"), StepEngine("steps", steps=5), OpenCVEngine(), BrokenEngine()]
    with running_daemon(tmp_path / "config", engines) as (url, token):
        yield url, token


def test_handshake_reports_the_daemon_and_its_engines(daemon):
    url, token = daemon
    with InpaintClient.connect(url, token, "pytest") as client:
        welcome = client.welcome
    assert [e.name for e in welcome.engines] == ["missing", "steps", "opencv", "broken"]
    assert [e.available for e in welcome.engines] == [False, True, True, True]
    assert welcome.max_pixels == 4096 * 4096
    assert welcome.device == "cpu"


def test_inpaint_relays_progress_and_returns_every_variant(daemon):
    url, token = daemon
    request = make_request("steps", num_variants=2, color_match=False)  # the engine's own pixels
    progress = []
    with InpaintClient.connect(url, token, "pytest") as client:
        variants = client.inpaint(request, on_progress=lambda *report: progress.append(report))
    assert [(v.job_id, v.index) for v in variants] == [(request.job_id, 0), (request.job_id, 1)]
    assert [v.seed for v in variants] == [7, 8]
    assert progress == [(step, 10, Stage.INFERENCE) for step in range(11)]
    assert all(stage is Stage.INFERENCE for _, _, stage in progress)
    original = array_from_plane(request.image)
    for variant in variants:
        # cut to the blend mask's box: the 20×16 hole at (20, 16) of the crop at (100, 80) (no grow, no feather)
        assert (variant.x, variant.y, variant.image.width, variant.image.height) == (120, 96, 20, 16)
        image, mask = whole_crop(variant, request)
        assert np.array_equal(image[mask == 0], original[mask == 0])  # untouched outside the blend mask
        inside = mask == 255
        assert inside.sum() == 20 * 16
        assert np.array_equal(image[inside][:, :3], 255 - original[inside][:, :3])  # the engine's inverted pixels


def test_opencv_engine_fills_a_real_photo(daemon):
    url, token = daemon
    request = make_request("opencv")
    with InpaintClient.connect(url, token, "pytest") as client:
        (variant,) = client.inpaint(request)
    image, mask = whole_crop(variant, request)
    original = array_from_plane(request.image)
    hole = array_from_plane(request.mask) == 255
    assert np.array_equal(mask == 255, hole)
    assert not np.array_equal(image[hole], original[hole])
    assert np.array_equal(image[~hole], original[~hole])
    assert set(variant.timings) >= {"inference", "total"}


def test_a_feathered_variant_is_its_blend_masks_box_and_keeps_every_other_pixel(daemon):
    url, token = daemon
    request = make_request("steps", grow=2, feather=5, color_match=False)  # the engine's own pixels
    with InpaintClient.connect(url, token, "pytest") as client:
        (variant,) = client.inpaint(request)
    image, mask = whole_crop(variant, request)
    original = array_from_plane(request.image)
    sent = array_from_plane(variant.mask)
    assert sent[0].any() and sent[-1].any() and sent[:, 0].any() and sent[:, -1].any()  # the tightest box
    assert variant.image.width > 20 + 2 * 2 and variant.image.height > 16 + 2 * 2  # grown, then feathered outward
    assert np.array_equal(image[mask == 0], original[mask == 0])  # alpha included, bit-exact
    hole, full = array_from_plane(request.mask) == 255, mask == 255
    assert full[hole].all() and full.sum() > hole.sum()  # the hole and more are wholly repainted …
    assert np.array_equal(image[full][:, :3], 255 - original[full][:, :3])  # … with the engine's inverted pixels


def test_cancel_sends_cancel_and_raises_cancelled_then_the_connection_still_works(tmp_path):
    with running_daemon(tmp_path, [StepEngine("slow", steps=400, delay=0.01), StepEngine("fast")]) as (url, token):
        seen = []
        with InpaintClient.connect(url, token, "pytest") as client:
            with pytest.raises(DaemonError) as caught:
                client.inpaint(make_request("slow"), on_progress=lambda step, total, stage: seen.append(step),
                               should_cancel=lambda: len(seen) >= 3, poll_interval=0.01)
            assert caught.value.code is ErrorCode.CANCELLED
            assert 3 <= max(seen) < 400
            again = client.inpaint(make_request("fast"))
    assert len(again) == 1


def test_wrong_token_is_unauthorized(daemon):
    url, _ = daemon
    with pytest.raises(DaemonError) as caught:
        InpaintClient.connect(url, "not-the-token", "pytest")
    assert caught.value.code is ErrorCode.UNAUTHORIZED
    assert "token" in caught.value.message


@pytest.mark.parametrize(("engine", "code", "words"), [
    ("nope", ErrorCode.UNKNOWN_ENGINE, "nope"),
    ("missing", ErrorCode.ENGINE_UNAVAILABLE, "pip install something"),
    ("broken", ErrorCode.JOB_FAILED, "broken on purpose"),
])
def test_daemon_errors_become_daemon_error_with_their_code(daemon, engine, code, words):
    url, token = daemon
    with InpaintClient.connect(url, token, "pytest") as client, pytest.raises(DaemonError) as caught:
        client.inpaint(make_request(engine))
    assert caught.value.code is code
    assert words in caught.value.message


@pytest.mark.timeout(10)
def test_nothing_listening_is_daemon_unavailable():
    url = f"ws://127.0.0.1:{free_port()}"
    with pytest.raises(DaemonUnavailable) as caught:
        InpaintClient.connect(url, "token", "pytest", timeout=2)
    assert url in caught.value.message
    assert "gimp-inpaint-daemon" in caught.value.message


@pytest.mark.timeout(10)
def test_a_peer_that_never_answers_times_out_as_unavailable():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"ws://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(DaemonUnavailable) as caught:
            InpaintClient.connect(url, "token", "pytest", timeout=0.5)
    assert "no answer within 0.5 s" in caught.value.message


@contextmanager
def scripted_peer(handler: Callable[[ServerConnection], Awaitable[None]], **options: object) -> Iterator[str]:
    """A websockets server running ``handler`` for each connection, on a free port; yields its URL."""
    started, stop, urls = threading.Event(), threading.Event(), []

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, **options) as server:
            urls.append(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
            started.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield urls[0]
    finally:
        stop.set()
        thread.join(10)


WELCOME = Welcome(protocol_version=PROTOCOL_VERSION, daemon_version="test", device="cpu", max_pixels=1 << 20,
                  engines=[EngineInfo("opencv", "opencv", "telea", True, False)])


async def _welcome_then(websocket: ServerConnection, reply: Callable[[bytes], Awaitable[None]]) -> None:
    await websocket.recv()
    await websocket.send(encode(WELCOME))
    await reply(await websocket.recv())


def test_an_http_server_is_not_a_daemon():
    def not_found(connection, request):
        return connection.respond(HTTPStatus.NOT_FOUND, "no websockets here\n")

    async def never(websocket: ServerConnection) -> None:  # pragma: no cover - the handshake is refused
        await websocket.close()

    with scripted_peer(never, process_request=not_found) as url, pytest.raises(DaemonUnavailable) as caught:
        InpaintClient.connect(url, "token", "pytest")
    assert "not as a gimp-inpaint daemon" in caught.value.message


def test_an_invalid_frame_is_a_bad_message_error():
    async def handler(websocket: ServerConnection) -> None:
        await _welcome_then(websocket, lambda frame: websocket.send(b"\xc1 not msgpack"))

    with scripted_peer(handler) as url, InpaintClient.connect(url, "token", "pytest") as client:
        assert client.welcome == WELCOME
        with pytest.raises(DaemonError) as caught:
            client.inpaint(make_request("opencv"))
    assert caught.value.code is ErrorCode.BAD_MESSAGE
    assert "invalid message" in caught.value.message


Script = Callable[[InpaintRequest], list[object]]
"""What a scripted daemon sends for a request: messages, or the string ``"await cancel"`` (wait for the client's
:class:`protocol.Cancel` of that job and record it)."""


@contextmanager
def scripted_job(script: Script) -> Iterator[tuple[str, list[object]]]:
    """A fake daemon that welcomes the client, reads one request and answers with ``script(request)``; yields its
    URL and the list of what it received after the request."""
    received: list[object] = []

    async def handler(websocket: ServerConnection) -> None:
        await websocket.recv()
        await websocket.send(encode(WELCOME))
        request = decode(await websocket.recv())
        assert isinstance(request, InpaintRequest)
        for step in script(request):
            if step == "await cancel":
                received.append(decode(await websocket.recv()))
            else:  # a message, or a frame no message can be built into
                await websocket.send(step if isinstance(step, bytes) else encode(step))  # type: ignore[arg-type]
        await websocket.wait_closed()

    with scripted_peer(handler) as url:
        yield url, received


def fake_variant(request: InpaintRequest, index: int, left: int = 20, top: int = 16, width: int = 20,
                 height: int = 16, job_id: str | None = None) -> Variant:
    """Variant ``index`` of ``request``: a ``width × height`` box at (``left``, ``top``) of its crop."""
    pixels = width * height
    return Variant(job_id or request.job_id, index, request.x + left, request.y + top,
                   Plane(width, height, 4, bytes([index + 1]) * (pixels * 4)),
                   Plane(width, height, 1, b"\xff" * pixels),
                   seed=7 + index, timings={"total": 0.5})


def test_variants_are_collected_in_index_order_until_the_result():
    sent: list[Variant] = []

    def script(request: InpaintRequest) -> list[object]:
        sent[:] = [fake_variant(request, 0), fake_variant(request, 1, 0, 0, 64, 48)]  # the second: the whole crop
        return [Accepted(request.job_id, 0), Progress(request.job_id, 0, 2), sent[0],
                fake_variant(request, 0, job_id="an earlier job"), Result("an earlier job", 1),  # not this job's
                Progress(request.job_id, 1, 2), sent[1], Progress(request.job_id, 2, 2),
                Result(request.job_id, 2)]

    progress = []
    with scripted_job(script) as (url, _), InpaintClient.connect(url, "token", "pytest") as client:
        variants = client.inpaint(make_request("opencv", num_variants=2),
                                  on_progress=lambda *report: progress.append(report))
    assert variants == sent
    assert progress == [(0, 2, Stage.INFERENCE), (1, 2, Stage.INFERENCE), (2, 2, Stage.INFERENCE)]


def _ending(request: InpaintRequest, *variants: tuple[int, ...], count: int | None = None) -> list[object]:
    """``variants`` (``fake_variant`` arguments after the request), then a Result of ``count`` (their number)."""
    return [*(fake_variant(request, *v) for v in variants),
            Result(request.job_id, len(variants) if count is None else count)]


@pytest.mark.parametrize(("script", "words"), [
    (lambda r: _ending(r, (1,), (0,)), "variant 1 (20×16 at (120, 96)) where variant 0"),
    (lambda r: _ending(r, (0,), (0,)), "variant 0 (20×16 at (120, 96)) where variant 1"),
    (lambda r: _ending(r, (0,), (2,)), "where variant 1"),
    (lambda r: _ending(r, (0, -1)), "inside the 64×48 crop at (100, 80)"),
    (lambda r: _ending(r, (0, 20, -1)), "inside the 64×48 crop"),
    (lambda r: _ending(r, (0, 45, 16, 20, 16)), "inside the 64×48 crop"),  # one column beyond the right edge
    (lambda r: _ending(r, (0, 20, 33, 20, 16)), "inside the 64×48 crop"),  # one row beyond the bottom
    (lambda r: _ending(r, (0, 0, 0, 65, 48)), "inside the 64×48 crop"),
    (lambda r: _ending(r, (0, 1000, 1000)), "inside the 64×48 crop"),
    (lambda r: _ending(r, (0,), (1,), (2,)), "variant 2 after the 2 requested"),
    (lambda r: _ending(r, (0,), (1,), count=1), "a result of 1 variants after sending 2 of the 2 requested"),
    (lambda r: _ending(r, (0,), (1,), count=3), "a result of 3 variants after sending 2"),
    (lambda r: _ending(r, (0,)), "a result of 1 variants after sending 1 of the 2 requested"),
    (lambda r: [msgpack.packb({"type": "result", "job_id": r.job_id, "num_variants": 0})],
     "invalid message: a result of 0 variants is out of range"),
], ids=["out of order", "twice", "one skipped", "left of the crop", "above the crop", "past the right edge",
        "past the bottom", "wider than the crop", "far away", "more than requested", "result counts fewer",
        "result counts more", "fewer than requested", "no variant"])
def test_a_daemon_breaking_the_variant_rules_is_a_bad_message(script: Script, words: str):
    with scripted_job(script) as (url, _), InpaintClient.connect(url, "token", "pytest") as client, \
            pytest.raises(DaemonError) as caught:
        client.inpaint(make_request("opencv", num_variants=2))
    assert caught.value.code is ErrorCode.BAD_MESSAGE
    assert words in caught.value.message, caught.value.message


def test_the_whole_crop_is_a_valid_variant_box():
    with scripted_job(lambda r: _ending(r, (0, 0, 0, 64, 48))) as (url, _), \
            InpaintClient.connect(url, "token", "pytest") as client:
        (variant,) = client.inpaint(make_request("opencv"))
    assert (variant.x, variant.y, variant.image.width, variant.image.height) == (100, 80, 64, 48)


@pytest.mark.parametrize("confirm", ["result", "error"])
def test_variants_after_a_cancel_are_ignored_and_the_call_ends_cancelled(confirm: str):
    def script(request: InpaintRequest) -> list[object]:
        late = [fake_variant(request, 1), fake_variant(request, 7, 1000, 1000)]  # even one that breaks the rules
        end = Result(request.job_id, 2) if confirm == "result" else Error(ErrorCode.CANCELLED, "cancelled",
                                                                          request.job_id)
        return [Accepted(request.job_id, 0), fake_variant(request, 0), Progress(request.job_id, 1, 2),
                "await cancel", *late, end]

    progress = []
    request = make_request("opencv", num_variants=2)
    with scripted_job(script) as (url, received), InpaintClient.connect(url, "token", "pytest") as client, \
            pytest.raises(DaemonError) as caught:
        client.inpaint(request, on_progress=lambda *report: progress.append(report),
                       should_cancel=lambda: bool(progress), poll_interval=0.01)
    assert caught.value.code is ErrorCode.CANCELLED
    assert received == [Cancel(request.job_id)]
    assert progress == [(1, 2, Stage.INFERENCE)]


def test_a_connection_dropped_during_a_job_is_unavailable():
    async def handler(websocket: ServerConnection) -> None:
        await _welcome_then(websocket, lambda frame: websocket.close(1011, "worker crashed"))

    with scripted_peer(handler) as url, InpaintClient.connect(url, "token", "pytest") as client, \
            pytest.raises(DaemonUnavailable) as caught:
        client.inpaint(make_request("opencv"))
    assert "code 1011: worker crashed" in caught.value.message


BAD_URLS = [
    ("http://127.0.0.1:7869", "the scheme must be ws:// or wss://"),
    ("127.0.0.1:7869", "the scheme must be ws:// or wss://"),
    ("ws://127.0.0.1:99999", "the port must be a whole number from 1 to 65535"),
    ("ws://127.0.0.1:0", "the port must be a whole number from 1 to 65535"),
    ("ws://127.0.0.1:-1", "the port must be a whole number from 1 to 65535"),
    ("ws://127.0.0.1:port", "the port must be a whole number from 1 to 65535"),
    ("ws://[::1", "the host is malformed"),
    ("ws://:7869", "it names no host"),
    ("ws://127.0.0.1:7869#here", "fragment identifier is meaningless"),  # websockets' own rules
    ("ws://me@127.0.0.1:7869", "username provided without password"),
    ("ws://ü..example:7869", "the host is not a valid domain name"),
]
"""URLs the client refuses before connecting, with the reason its :class:`ConnectionConfigError` gives (also used
by tests/test_cli.py)."""


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_a_malformed_url_is_a_config_error_naming_the_reason(url, reason, tmp_path):
    with pytest.raises(ConnectionConfigError) as caught:
        InpaintClient.connect(url, "token", "pytest")
    assert caught.value.message.startswith(f"“{url}” is not a WebSocket URL such as ws://127.0.0.1:7869: ")
    assert reason in caught.value.message and "\n" not in caught.value.message
    # the plug-in's way in: the same error, and no daemon is started for it
    config = ConnectionConfig(url, "token", (sys.executable, "-c", "raise SystemExit('started')"))
    with pytest.raises(ConnectionConfigError) as caught_too:
        connect_or_start(config, "pytest", tmp_path / "daemon-start.log", start_timeout=1)
    assert caught_too.value.message == caught.value.message
    assert not (tmp_path / "daemon-start.log").exists()


def test_an_old_daemon_refusing_the_protocol_says_to_restart_it():
    """A daemon started before an update speaks the old protocol and refuses the hello with VERSION_MISMATCH."""
    async def handler(websocket: ServerConnection) -> None:
        await websocket.recv()
        await websocket.send(encode(Error(ErrorCode.VERSION_MISMATCH, "the client speaks protocol 2, this "
                                          "daemon 1; install the same gimp-inpaint version for both")))
        await websocket.close(1008, "version_mismatch")

    with scripted_peer(handler) as url, pytest.raises(DaemonError) as caught:
        InpaintClient.connect(url, "token", "pytest")
    assert caught.value.code is ErrorCode.VERSION_MISMATCH
    assert "restart the daemon after updating" in caught.value.message
    assert "this daemon 1" in caught.value.message and url in caught.value.message


def test_progress_stages_and_request_options_reach_the_engine(tmp_path):
    engine = LoadingEngine()
    request = make_request("loading", num_variants=2, scheduler=Scheduler.DPMPP_2M_KARRAS,
                           loras={"detail": 0.8, "x": -1.0}, refiner_strength=0.25, controlnet_conditioning_scale=1.5)
    progress = []
    with running_daemon(tmp_path, [engine]) as (url, token), InpaintClient.connect(url, token, "pytest") as client:
        client.inpaint(request, on_progress=lambda *report: progress.append(report))
    assert progress == [(0, 3_000_000, Stage.DOWNLOAD), (1_500_000, 3_000_000, Stage.DOWNLOAD),
                        (3_000_000, 3_000_000, Stage.DOWNLOAD), (0, 0, Stage.LOAD),
                        *((step, 6, Stage.INFERENCE) for step in range(7))]
    assert all(isinstance(stage, Stage) for _, _, stage in progress)
    assert [(job.seed, job.options.scheduler, dict(job.options.loras), job.options.refiner_strength,
             job.options.controlnet_conditioning_scale)
            for job in engine.jobs] == [(7, "dpmpp_2m_karras", {"detail": 0.8, "x": -1.0}, 0.25, 1.5),
                                        (8, "dpmpp_2m_karras", {"detail": 0.8, "x": -1.0}, 0.25, 1.5)]
    assert all(job.options == request.options and job.options.scheduler is Scheduler.DPMPP_2M_KARRAS
               for job in engine.jobs)  # the request's options reach the engine unchanged


def _welcome(*engines: tuple[str, bool]) -> Welcome:
    return Welcome(protocol_version=PROTOCOL_VERSION, daemon_version="t", device="cpu", max_pixels=100,
                   engines=[EngineInfo(name, "test", "m", available, True, "no torch",
                                       family=Family.SD_INPAINT if name.startswith("sd") else None)
                            for name, available in engines])


def test_pick_engine_prefers_the_first_available_and_lists_engines_on_failure():
    welcome = _welcome(("sd15-inpaint", False), ("opencv", True), ("other", True))
    assert pick_engine(welcome, "") == "opencv"
    assert pick_engine(welcome, "other") == "other"
    with pytest.raises(DaemonError) as unknown:
        pick_engine(welcome, "sdxl")
    assert unknown.value.code is ErrorCode.UNKNOWN_ENGINE
    assert "“sdxl”. Engines: sd15-inpaint (sd-inpaint, unavailable: no torch), opencv, other " \
           "(`gimp-inpaint status`" in unknown.value.message
    assert pick_engine(welcome, "sd15-inpaint") == "sd15-inpaint"  # the daemon retries loading it
    with pytest.raises(DaemonError) as none:
        pick_engine(_welcome(("sd15-inpaint", False)), "")
    assert none.value.code is ErrorCode.ENGINE_UNAVAILABLE


def test_connection_config_round_trip_is_private(tmp_path, monkeypatch):
    path = tmp_path / "connection.json"
    path.write_text("{}")
    path.chmod(0o644)
    modes_when_written = []
    dump = json.dump

    def recording_dump(*args: object, **kwargs: object) -> None:
        modes_when_written.append(stat.S_IMODE(path.stat().st_mode))
        dump(*args, **kwargs)

    monkeypatch.setattr(json, "dump", recording_dump)
    write_connection_config(path, "ws://127.0.0.1:9999", "s3cret")
    assert modes_when_written == [0o600]  # the old 0644 file is tightened before the token goes in
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": "ws://127.0.0.1:9999", "token": "s3cret"}
    assert read_connection_config(path) == ConnectionConfig("ws://127.0.0.1:9999", "s3cret", None)


def test_connection_config_keeps_the_daemon_command(tmp_path):
    path = tmp_path / "connection.json"
    write_connection_config(path, "ws://127.0.0.1:9999", "s3cret", daemon_command=["/venv/python", "-m", "x"])
    assert json.loads(path.read_text())["daemon_command"] == ["/venv/python", "-m", "x"]
    assert read_connection_config(path).daemon_command == ("/venv/python", "-m", "x")


@pytest.mark.parametrize(("content", "words"), [
    (None, "gimp-inpaint-install"),
    ("{not json", "Cannot read"),
    ('{"url": "ws://x:1"}', "“token”"),
    ("[1, 2]", "“url”"),
    ('{"url": "ws://x:1", "token": "t", "daemon_command": "gimp-inpaint-daemon"}', "list of strings"),
    ('{"url": "ws://x:1", "token": "t", "daemon_command": []}', "list of strings"),
])
def test_bad_connection_config_is_a_config_error(tmp_path, content, words):
    path = tmp_path / "connection.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConnectionConfigError) as caught:
        read_connection_config(path)
    assert words in caught.value.message


def test_a_frame_over_the_daemons_size_limit_is_too_large(tmp_path):
    """The daemon's WebSocket ``max_size`` follows its pixel limit; a bigger frame closes with code 1009."""
    photo = data.astronaut()[:256, :256]
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    big = make_request("opencv", image=plane_from_array(rgba), mask=plane_from_array(np.full((256, 256), 255,
                                                                                               np.uint8)))
    rim = np.pad(np.full((30, 30), 255, np.uint8), 1)  # opencv fills from the unmasked 1-pixel rim
    small = make_request("opencv", image=plane_from_array(rgba[:32, :32]), mask=plane_from_array(rim))
    with running_daemon(tmp_path, [OpenCVEngine()], max_pixels=64 * 64) as (url, token):
        with InpaintClient.connect(url, token, "pytest") as client, pytest.raises(DaemonError) as caught:
            client.inpaint(big)  # 256 × 256 × 5 bytes > max_frame_bytes(64 × 64)
        with InpaintClient.connect(url, token, "pytest") as client:  # the daemon serves the next connection
            assert len(client.inpaint(small)) == 1
    assert caught.value.code is ErrorCode.TOO_LARGE
    assert "too large" in caught.value.message and "code 1009" in caught.value.message


class HoldEngine(StepEngine):
    """Sets ``started`` when a job begins, then holds it until the daemon cancels it (sets ``saw_cancel``)."""

    def __init__(self) -> None:
        super().__init__("hold")
        self.started = threading.Event()
        self.saw_cancel = threading.Event()

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if cancelled():
                self.saw_cancel.set()
                raise JobCancelled("cancelled")
            time.sleep(0.005)
        raise TimeoutError("the job was never cancelled")


KILLED_CLIENT = textwrap.dedent("""
    import sys
    from gimp_inpaint.client.connection import InpaintClient
    from gimp_inpaint.protocol import FillOptions, InpaintRequest, Plane
    with InpaintClient.connect(sys.argv[1], sys.argv[2], "to-be-killed") as client:
        client.inpaint(InpaintRequest("j", 0, 0, Plane(8, 8, 4, bytes(256)), Plane(8, 8, 1, b"\\xff" * 64),
                                      FillOptions(engine="hold")))
""")


def test_a_killed_client_process_cancels_its_job(tmp_path):
    """GIMP's progress Cancel kills the plug-in with SIGKILL (no close frame): the daemon must drop its job."""
    engine = HoldEngine()
    with running_daemon(tmp_path, [engine, StepEngine("fast")]) as (url, token):
        process = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, url, token])
        try:
            assert engine.started.wait(30)
        finally:
            process.kill()
            process.wait(10)
        assert engine.saw_cancel.wait(30)
        with InpaintClient.connect(url, token, "pytest") as client:
            assert len(client.inpaint(make_request("fast"))) == 1
