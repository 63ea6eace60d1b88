"""The daemon over a real loopback WebSocket: handshake, validation, jobs, progress, cancel, errors, several clients.

The server runs in a background thread on port 0 with small fake engines; the tests talk to it with
websockets' sync client and the project's protocol.encode/decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import msgpack
import numpy as np
import pytest
from gimp_inpaint.daemon import server as server_module
from gimp_inpaint.daemon import worker as worker_module
from gimp_inpaint.daemon.compositing import blend_mask, grow_mask, repaint_mask
from gimp_inpaint.daemon.config import Settings, is_loopback_host
from gimp_inpaint.daemon.engines.base import (
    CancelCheck,
    Engine,
    EngineJob,
    JobCancelled,
    LoadProgress,
    ProgressCallback,
)
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.server import HELLO_MAX_BYTES, DaemonServer
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    SEED_MAX,
    Accepted,
    Cancel,
    EngineInfo,
    Error,
    ErrorCode,
    FillOptions,
    Hello,
    InpaintRequest,
    Message,
    Plane,
    Progress,
    Result,
    Variant,
    Welcome,
    decode,
    encode,
)
from gimp_inpaint.protocol.messages import MAX_CLIENT_NAME_CHARS
from gimp_inpaint.protocol.options import MAX_PROMPT_CHARS
from running_daemon import (
    WAIT,
    BrokenEngine,
    MissingEngine,
    StepEngine,
    assert_box_loses_nothing,
    crop_arrays,
    daemon_process,
    serving,
    variant_box,
)
from skimage import data
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

TOKEN = "0123456789abcdef" * 4


# -- fake engines (the shared ones are in running_daemon.py) -----------------------------------------------------------

class GateEngine(StepEngine):
    """Signals ``started`` when a job begins, then holds it until ``release`` is set or the job is cancelled."""

    def __init__(self, name: str = "gate") -> None:
        super().__init__(name, steps=1)
        self.started = threading.Event()
        self.release = threading.Event()
        self.saw_cancel = threading.Event()

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.seen.append((job.options.prompt, job.seed))
        self.started.set()
        deadline = time.monotonic() + WAIT
        while not self.release.wait(0.005):
            if cancelled():
                self.saw_cancel.set()
                raise JobCancelled("cancelled")
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released the gate")
        self.started.clear()
        return self.paint(job, progress, cancelled)


class OutOfMemoryError(RuntimeError):
    """Named like torch.OutOfMemoryError; the daemon recognises it by name."""


class OomEngine(StepEngine):
    """Runs out of (GPU) memory on every job, with ``error`` (default: an exception named like torch's)."""

    def __init__(self, name: str, error: type[BaseException] = OutOfMemoryError) -> None:
        super().__init__(name)
        self.error = error

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")


def torch_oom() -> type[BaseException]:
    """torch's own ``OutOfMemoryError`` (``torch.cuda.OutOfMemoryError``), skipping the case without torch."""
    return pytest.importorskip("torch").OutOfMemoryError


# -- harness -----------------------------------------------------------------------------------------------------------

def daemon(engines: list[Engine], tmp_path: Path,
           max_pixels: int = 512 * 512) -> contextlib.AbstractContextManager[DaemonServer]:
    """Serve ``engines`` with the token :data:`TOKEN` on a free port of 127.0.0.1 (see running_daemon.serving)."""
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0,
                        max_pixels=max_pixels)
    return serving(DaemonServer(settings, engines, TOKEN, device="cpu"))


class Client:
    """A test client over an open connection: raw frames in and out, decoded with the project's codec."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.reply: Message | None = None  # the answer to the Hello
        self.stash: list[Message] = []  # received messages of other jobs, not yet asked for

    def send(self, message: Message | bytes | str) -> None:
        self.ws.send(message if isinstance(message, bytes | str) else encode(message))

    def recv(self) -> Message:
        return decode(self.ws.recv(timeout=WAIT))

    def run(self, request: InpaintRequest) -> tuple[list[Message], Result | Error]:
        """Send ``request``; return the messages about it up to its Result or Error."""
        self.send(request)
        return self.collect(request.job_id)

    def next_for(self, job_id: str) -> Message:
        """The next message about ``job_id``; messages about other jobs are kept for later."""
        for index, message in enumerate(self.stash):
            if message.job_id == job_id:
                return self.stash.pop(index)
        while True:
            message = self.recv()
            assert isinstance(message, Accepted | Progress | Variant | Result | Error), message
            assert message.job_id is not None, message
            if message.job_id == job_id:
                return message
            self.stash.append(message)

    def collect(self, job_id: str) -> tuple[list[Message], Result | Error]:
        """The messages about ``job_id`` up to and including its Result or Error (its Variants among the first)."""
        events: list[Message] = []
        while not isinstance(message := self.next_for(job_id), Result | Error):
            events.append(message)
        return events, message


def variants_of(events: list[Message], outcome: Result | Error) -> list[Variant]:
    """The variants a job's messages delivered: all of them, in index order, as its Result counts them."""
    variants = [event for event in events if isinstance(event, Variant)]
    assert isinstance(outcome, Result), outcome
    assert outcome.num_variants == len(variants) and [v.index for v in variants] == list(range(len(variants)))
    return variants


@contextmanager
def connected(url: str, token: str = TOKEN, version: int = PROTOCOL_VERSION, hello: bool = True) -> Iterator[Client]:
    """A connected client; unless ``hello`` is False it has sent its Hello and read the reply into ``reply``."""
    with connect(url, compression=None, max_size=None, proxy=None, open_timeout=WAIT) as ws:
        client = Client(ws)
        if hello:
            client.send(Hello(protocol_version=version, client="pytest", token=token))
            client.reply = client.recv()
        yield client


@pytest.fixture(scope="module")
def crop() -> tuple[np.ndarray, np.ndarray]:
    """A 96×128 RGBA crop of the astronaut photo (alpha ramp) and a mask with an ellipse over her face."""
    rgb = np.ascontiguousarray(data.astronaut()[40:136, 160:288])
    alpha = np.broadcast_to(np.linspace(64, 255, 128).astype(np.uint8), (96, 128))
    mask = np.zeros((96, 128), np.uint8)
    cv2.ellipse(mask, (64, 48), (22, 16), 0, 0, 360, 255, -1)
    return np.dstack([rgb, alpha]), mask


def make_request(crop: tuple[np.ndarray, np.ndarray], job_id: str = "job-1", engine: str = "opencv", x: int = 40,
                 y: int = 16, **values: object) -> InpaintRequest:
    """A request for ``crop`` at ``(x, y)``; ``values`` are :class:`protocol.FillOptions` fields (grow 3, feather 4,
    seed 7 unless given)."""
    image, mask = crop
    height, width = mask.shape
    options = FillOptions(**{"engine": engine, "prompt": "", "grow": 3, "feather": 4, "seed": 7,
                             **values})  # type: ignore[arg-type]
    return InpaintRequest(job_id=job_id, x=x, y=y, image=Plane(width, height, 4, image.tobytes()),
                          mask=Plane(width, height, 1, mask.tobytes()), options=options)


def assert_opencv_works(client: Client, crop: tuple[np.ndarray, np.ndarray], job_id: str = "after") -> None:
    events, outcome = client.run(make_request(crop, job_id))
    assert isinstance(events[0], Accepted) and isinstance(outcome, Result), outcome
    assert len(variants_of(events, outcome)) == 1


# -- handshake ---------------------------------------------------------------------------------------------------------

def test_handshake_lists_engines(tmp_path: Path) -> None:
    with daemon([StepEngine(), OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        welcome = client.reply
        assert isinstance(welcome, Welcome) and welcome.protocol_version == PROTOCOL_VERSION
        assert [engine.name for engine in welcome.engines] == ["steps", "opencv"]
        assert welcome.engines[1] == dataclasses.replace(OpenCVEngine().info(), state="built in")
        assert not welcome.engines[1].uses_prompt
        assert welcome.max_pixels == 512 * 512 and welcome.device == "cpu"


@pytest.mark.parametrize(("token", "version", "code"), [
    ("f" * 64, PROTOCOL_VERSION, ErrorCode.UNAUTHORIZED),
    ("", PROTOCOL_VERSION, ErrorCode.UNAUTHORIZED),
    ("é" * 10, PROTOCOL_VERSION, ErrorCode.UNAUTHORIZED),
    (TOKEN, PROTOCOL_VERSION + 1, ErrorCode.VERSION_MISMATCH),
])
def test_bad_hello_is_refused_and_closed(tmp_path: Path, token: str, version: int, code: ErrorCode) -> None:
    with daemon([OpenCVEngine()], tmp_path) as server:
        with connected(server.url, token=token, version=version) as client:
            assert isinstance(client.reply, Error) and client.reply.code is code and client.reply.job_id is None
            with pytest.raises(ConnectionClosed) as closed:
                client.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        with connected(server.url) as client:
            assert isinstance(client.reply, Welcome)  # the daemon still serves


def test_first_message_must_be_hello(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    with daemon([OpenCVEngine()], tmp_path) as server, connected(server.url, hello=False) as client:
        client.send(make_request(crop))
        reply = client.recv()
        assert isinstance(reply, Error) and reply.code is ErrorCode.UNAUTHORIZED
        with pytest.raises(ConnectionClosed):
            client.recv()


def _hello_frame(client: str) -> bytes:
    """A Hello with the right token and ``client`` as its name, packed directly (``Hello`` refuses long names)."""
    return msgpack.packb({"type": "hello", "protocol_version": PROTOCOL_VERSION, "client": client, "token": TOKEN})


@pytest.mark.parametrize(("client_name", "code", "close_code"), [
    ("x" * (HELLO_MAX_BYTES + 1), None, 1009),  # a first frame over 64 KiB: refused as it arrives, message too big
    ("x" * (MAX_CLIENT_NAME_CHARS + 1), ErrorCode.BAD_MESSAGE, 1008),  # small frame, but the name is too long
])
def test_oversized_hello_is_refused_and_closed(tmp_path: Path, client_name: str, code: ErrorCode | None,
                                               close_code: int) -> None:
    with daemon([OpenCVEngine()], tmp_path) as server:
        with connected(server.url, hello=False) as client:
            client.send(_hello_frame(client_name))
            with pytest.raises(ConnectionClosed) as closed:
                reply = client.recv()
                assert code is not None and isinstance(reply, Error) and reply.code is code, reply
                client.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == close_code
        with connected(server.url, hello=False) as client:
            client.send(_hello_frame("n" * MAX_CLIENT_NAME_CHARS))  # the longest allowed name is fine
            assert isinstance(client.recv(), Welcome)


class FlakyInfoEngine(StepEngine):
    """``info()`` raises the first time (a bug in an engine), then works."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self.calls = 0

    def info(self) -> EngineInfo:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("model_index.json")
        return super().info()


def test_a_bug_while_answering_the_hello_is_internal(tmp_path: Path) -> None:
    with daemon([FlakyInfoEngine(), OpenCVEngine()], tmp_path) as server:
        with connected(server.url) as client:
            reply = client.reply
            assert isinstance(reply, Error) and reply.code is ErrorCode.INTERNAL, reply
            assert "KeyError" in reply.message and str(tmp_path / "daemon.log") in reply.message
            with pytest.raises(ConnectionClosed) as closed:
                client.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        with connected(server.url) as client:  # the daemon still serves
            assert isinstance(client.reply, Welcome)
            assert [engine.name for engine in client.reply.engines] == ["flaky", "opencv"]


def test_browser_origin_is_rejected(tmp_path: Path) -> None:
    with daemon([OpenCVEngine()], tmp_path) as server:
        with pytest.raises(InvalidStatus) as refused, connect(server.url, origin="https://example.com", proxy=None,
                                                              open_timeout=WAIT):
            pass
        assert refused.value.response.status_code == 403
        with connected(server.url) as client:
            assert isinstance(client.reply, Welcome)


# -- malformed frames --------------------------------------------------------------------------------------------------

SMALL_LIMIT = 64 * 64
"""The pixel limit of the malformed-frame tests: their valid requests are 64×64, the oversized one is 96×128."""


def _small(crop: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    image, mask = crop
    return np.ascontiguousarray(image[16:80, 32:96]), np.ascontiguousarray(mask[16:80, 32:96])


def _patched(crop: tuple[np.ndarray, np.ndarray], options: dict[str, object] | None = None,
             **changes: object) -> bytes:
    """A valid 64×64 request's wire map with ``changes`` applied, and ``options`` to its options map (re-encoded
    with msgpack)."""
    wire = msgpack.unpackb(encode(make_request(_small(crop), "patched")))
    wire.update(changes)
    wire["options"].update(options or {})
    return msgpack.packb(wire)


def _short_plane(crop: tuple[np.ndarray, np.ndarray]) -> bytes:
    wire = msgpack.unpackb(encode(make_request(_small(crop), "short")))
    wire["image"]["data"] = wire["image"]["data"][:-4]  # w×h×c ≠ byte length
    return msgpack.packb(wire)


MALFORMED = {
    "garbage": (lambda crop: b"\xc1\xff not msgpack at all", ErrorCode.BAD_MESSAGE, None),
    "truncated": (lambda crop: encode(make_request(_small(crop)))[:-100], ErrorCode.BAD_MESSAGE, None),
    "unknown type": (lambda crop: msgpack.packb({"type": "teleport", "job_id": "1"}), ErrorCode.BAD_MESSAGE, None),
    "text frame": (lambda crop: "hello", ErrorCode.BAD_MESSAGE, None),
    "daemon-only type": (lambda crop: encode(Progress("1", 1, 2)), ErrorCode.BAD_MESSAGE, None),
    "wrong field type": (lambda crop: _patched(crop, x="two"), ErrorCode.BAD_MESSAGE, "patched"),
    "wrong option type": (lambda crop: _patched(crop, {"num_variants": "two"}), ErrorCode.BAD_MESSAGE, "patched"),
    "options not a map": (lambda crop: msgpack.packb({**msgpack.unpackb(_patched(crop)), "options": 3}),
                          ErrorCode.BAD_MESSAGE, "patched"),
    "plane length": (_short_plane, ErrorCode.INVALID_REQUEST, "short"),
    "bad strength": (lambda crop: _patched(crop, {"strength": 0.0}), ErrorCode.INVALID_REQUEST, "patched"),
    "unknown scheduler": (lambda crop: _patched(crop, {"scheduler": "warp"}), ErrorCode.INVALID_REQUEST, "patched"),
    "oversized plane": (lambda crop: encode(make_request(crop, "huge")), ErrorCode.TOO_LARGE, "huge"),
}
"""Case → (frame maker, error code, the job id the error carries: that of every request whose id can be read)."""


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_frame_is_answered_and_connection_survives(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray],
                                                             case: str) -> None:
    make_frame, code, job_id = MALFORMED[case]
    with daemon([OpenCVEngine()], tmp_path, max_pixels=SMALL_LIMIT) as server, \
            connected(server.url) as client:
        client.send(make_frame(crop))
        reply = client.recv()
        assert isinstance(reply, Error) and reply.code is code and reply.job_id == job_id, reply
        assert_opencv_works(client, _small(crop))


def test_request_errors_carry_the_job_id(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with daemon([engine, OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        _, unknown = client.run(make_request(crop, "u", engine="dall-e"))
        assert isinstance(unknown, Error) and unknown.code is ErrorCode.UNKNOWN_ENGINE and unknown.job_id == "u"
        assert "opencv" in unknown.message
        _, empty = client.run(make_request((crop[0], np.full_like(crop[1], 127)), "e"))
        assert isinstance(empty, Error) and empty.code is ErrorCode.INVALID_REQUEST and empty.job_id == "e"

        client.send(make_request(crop, "dup", engine="gate"))
        assert isinstance(client.recv(), Accepted) and engine.started.wait(WAIT)
        client.send(make_request(crop, "dup"))
        duplicate = client.next_for("dup")
        while isinstance(duplicate, Progress):  # of the running "dup"
            duplicate = client.next_for("dup")
        assert isinstance(duplicate, Error) and duplicate.code is ErrorCode.INVALID_REQUEST
        engine.release.set()
        _, outcome = client.collect("dup")
        assert isinstance(outcome, Result)
        assert_opencv_works(client, crop)


def test_request_over_the_pixel_limit_is_too_large_and_the_connection_survives(tmp_path: Path) -> None:
    """A request 7 % over the pixel limit is answered TOO_LARGE (not closed with 1009, message too big);
    one at the limit with the longest prompts (2-byte characters) is served."""
    coffee = data.coffee()  # 400 rows × 600 columns
    rgba = np.dstack([coffee, np.full(coffee.shape[:2], 255, np.uint8)])
    mask = np.zeros(coffee.shape[:2], np.uint8)
    mask[200:260, 150:250] = 255
    limit = 400 * 560
    assert 5 * (rgba.shape[0] * rgba.shape[1] - limit) > 64 * 1024  # the excess alone is more than any overhead
    with daemon([OpenCVEngine()], tmp_path, max_pixels=limit) as server, connected(server.url) as client:
        client.send(make_request((rgba, mask), "over"))
        reply = client.recv()
        assert isinstance(reply, Error) and reply.code is ErrorCode.TOO_LARGE and reply.job_id == "over", reply
        assert str(limit) in reply.message
        at_limit = (np.ascontiguousarray(rgba[:, :560]), np.ascontiguousarray(mask[:, :560]))
        request = make_request(at_limit, "at-limit", prompt="é" * MAX_PROMPT_CHARS,
                               negative_prompt="ü" * MAX_PROMPT_CHARS, color_match=False)  # Telea's own pixels
        events, outcome = client.run(request)
        assert events[0] == Accepted("at-limit", 0) and isinstance(outcome, Result), outcome
    (variant,) = variants_of(events, outcome)
    assert_box_loses_nothing(variant, request, opencv_fill(request))


def test_a_bug_while_handling_a_request_is_internal(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    original = server_module.check_request
    calls: list[str] = []

    def buggy_once(request: InpaintRequest) -> None:
        calls.append(request.job_id)
        if len(calls) == 1:
            raise AttributeError("'NoneType' object has no attribute 'max'")
        original(request)

    monkeypatch.setattr(server_module, "check_request", buggy_once)
    with daemon([OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        _, outcome = client.run(make_request(crop, "bug"))
        assert isinstance(outcome, Error) and outcome.code is ErrorCode.INTERNAL and outcome.job_id == "bug"
        assert "AttributeError" in outcome.message
        assert_opencv_works(client, crop)  # same connection
    assert calls == ["bug", "after"]


def test_a_bug_in_the_worker_is_internal_and_the_next_job_runs(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    original = worker_module.run_job
    calls: list[str] = []

    def buggy_once(request: InpaintRequest, *args: object) -> Result | Error:
        calls.append(request.job_id)
        if len(calls) == 1:
            raise TypeError("run_job() got an unexpected keyword argument")
        return original(request, *args)

    monkeypatch.setattr(worker_module, "run_job", buggy_once)
    with daemon([OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        events, outcome = client.run(make_request(crop, "bug"))
        assert events == [Accepted("bug", 0)]
        assert isinstance(outcome, Error) and outcome.code is ErrorCode.INTERNAL and outcome.job_id == "bug"
        assert_opencv_works(client, crop)  # the dispatcher survived
    assert calls == ["bug", "after"]


# -- jobs --------------------------------------------------------------------------------------------------------------

def opencv_fill(request: InpaintRequest) -> np.ndarray:
    """What the opencv engine generates for ``request``, as a whole crop (H×W×3): Telea (radius 3) over the repaint
    mask of the request's blend mask."""
    image, blend = crop_arrays(request)
    return cv2.inpaint(np.ascontiguousarray(image[..., :3]), repaint_mask(blend, image[..., 3]), 3, cv2.INPAINT_TELEA)


def test_progress_and_variants(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    """Each variant is sent as soon as it is done, between the progress of its steps and the next one's, cut to
    the blend mask's box; the Result ends the job with their count."""
    engine = StepEngine(steps=4)
    request = make_request(crop, "p", engine="steps", prompt="a cat", seed=41, num_variants=3, color_match=False)
    with daemon([engine], tmp_path) as server, connected(server.url) as client:
        events, result = client.run(request)
    assert events[0] == Accepted("p", 0) and result == Result("p", 3)
    # 4 steps × 3 variants, each step once, in order; variant k right after step 4(k + 1)
    order = [(event.step, event.total) if isinstance(event, Progress) else ("variant", event.index)
             for event in events[1:] if isinstance(event, Progress | Variant)]
    assert len(order) == len(events) - 1
    assert order == [*((step, 12) for step in range(5)), ("variant", 0), *((step, 12) for step in range(5, 9)),
                     ("variant", 1), *((step, 12) for step in range(9, 13)), ("variant", 2)]
    variants = variants_of(events, result)
    assert [v.seed for v in variants] == [41, 42, 43] and {v.job_id for v in variants} == {"p"}
    assert engine.seen == [("a cat", 41), ("a cat", 42), ("a cat", 43)]
    image, _ = crop_arrays(request)
    for variant in variants:
        assert variant.x > 40 and variant.y > 16  # the box's corner in the client's image, inside the crop
        assert set(variant.timings) == {"queue", "load", "prefill", "inference", "total"}
        assert all(value >= 0 for value in variant.timings.values())
        assert_box_loses_nothing(variant, request, 255 - np.ascontiguousarray(image[..., :3]))  # the engine's pixels


def test_random_seed_gives_consecutive_seeds(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    with daemon([StepEngine(steps=1)], tmp_path) as server, connected(server.url) as client:
        events, result = client.run(make_request(crop, engine="steps", seed=-1, num_variants=2))
    first, second = (variant.seed for variant in variants_of(events, result))
    assert 0 <= first <= SEED_MAX and second == (first + 1) % (SEED_MAX + 1)


def test_opencv_job_on_a_real_photo(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    image, mask = crop
    request = make_request(crop, grow=3, feather=4, color_match=False)  # Telea's own pixels, compared below
    with daemon([OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        events, result = client.run(request)
    assert [type(event) for event in events] == [Accepted, Progress, Progress, Variant]
    (variant,) = variants_of(events, result)
    box = variant_box(variant, request)
    out = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width, 4)
    blend = np.frombuffer(variant.mask.data, np.uint8).reshape(out.shape[:2])
    grown = grow_mask(mask, 3)
    assert np.array_equal(blend, blend_mask(grown, 4)[box])
    outside = np.ones(mask.shape, bool)
    outside[box] = False
    assert not blend_mask(grown, 4)[outside].any()  # nothing the blend touches lies outside the box
    keep = blend == 0
    assert np.array_equal(out[keep], image[box][keep])  # every unmasked pixel, alpha included, bit-exact
    telea = cv2.inpaint(np.ascontiguousarray(image[..., :3]), repaint_mask(blend_mask(grown, 4)), 3, cv2.INPAINT_TELEA)
    assert np.array_equal(out[~keep, :3], telea[box][~keep]) and np.all(out[~keep, 3] == 255)
    assert_box_loses_nothing(variant, request, telea)
    core = mask[box] == 255
    assert np.abs(out[core, :3].astype(int) - image[box][core, :3]).mean() > 10  # the face is really filled in


def test_cancel_running_job(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with daemon([engine, OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        client.send(make_request(crop, "long", engine="gate"))
        assert client.recv() == Accepted("long", 0)
        assert engine.started.wait(WAIT)
        client.send(Cancel("long"))
        events, outcome = client.collect("long")
        assert all(isinstance(event, Progress) for event in events)
        assert isinstance(outcome, Error) and outcome.code is ErrorCode.CANCELLED
        assert engine.saw_cancel.is_set()
        client.send(Cancel("long"))  # already over: ignored, no reply
        assert_opencv_works(client, crop)


def test_cancel_queued_job(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with daemon([engine], tmp_path) as server, connected(server.url) as client:
        client.send(make_request(crop, "first", engine="gate", prompt="first"))
        assert client.recv() == Accepted("first", 0)
        assert engine.started.wait(WAIT)
        client.send(make_request(crop, "second", engine="gate", prompt="second"))
        assert client.next_for("second") == Accepted("second", 1)
        client.send(Cancel("second"))
        cancelled = client.next_for("second")
        assert isinstance(cancelled, Error) and cancelled.code is ErrorCode.CANCELLED
        assert cancelled.job_id == "second"
        engine.release.set()
        _, outcome = client.collect("first")
        assert isinstance(outcome, Result)
    assert engine.seen == [("first", 7)]  # the cancelled job never reached the engine


def test_two_clients_run_in_arrival_order(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with daemon([engine], tmp_path) as server, connected(server.url) as alice, \
            connected(server.url) as bob:
        alice.send(make_request(crop, "job", engine="gate", prompt="alice"))
        assert alice.recv() == Accepted("job", 0) and engine.started.wait(WAIT)
        bob.send(make_request(crop, "job", engine="gate", prompt="bob", seed=99))  # same id, other client
        assert bob.recv() == Accepted("job", 1)
        engine.release.set()
        alice_events, alice_result = alice.collect("job")
        bob_events, bob_result = bob.collect("job")
    assert [v.seed for v in variants_of(alice_events, alice_result)] == [7]
    assert [v.seed for v in variants_of(bob_events, bob_result)] == [99]
    assert [prompt for prompt, _ in engine.seen] == ["alice", "bob"]


def test_disconnect_cancels_its_jobs(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with daemon([engine, OpenCVEngine()], tmp_path) as server:
        with connected(server.url) as leaving:
            leaving.send(make_request(crop, "a", engine="gate", prompt="running"))
            leaving.send(make_request(crop, "b", engine="gate", prompt="queued"))
            assert engine.started.wait(WAIT)
        assert engine.saw_cancel.wait(WAIT)
        with connected(server.url) as client:
            assert_opencv_works(client, crop)
    assert [prompt for prompt, _ in engine.seen] == ["running"]


def test_stop_cancels_the_running_job_and_closes_connections(tmp_path: Path,
                                                            crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with daemon([engine], tmp_path) as server, connected(server.url) as client:
        client.send(make_request(crop, "a", engine="gate"))
        assert engine.started.wait(WAIT)
        server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # going away
        assert engine.saw_cancel.wait(WAIT)


class SlowLoadEngine(StepEngine):
    """Its ``load()`` blocks until ``release`` is set, as a multi-GB model load does (it cannot be cancelled)."""

    def __init__(self) -> None:
        super().__init__("slow-load", steps=1)
        self.loading = threading.Event()
        self.release = threading.Event()

    def load(self, progress: LoadProgress | None = None) -> None:
        self.loading.set()
        if not self.release.wait(WAIT):
            raise TimeoutError("the test never released the load")


def test_stop_during_a_load_keeps_the_event_loop_running(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """While serve() waits for the worker to finish a load, other coroutines (and signal handlers) still run."""
    engine = SlowLoadEngine()
    shutting_down, ticked_while_shutting_down = threading.Event(), threading.Event()
    original_shutdown = worker_module.Worker.shutdown

    def shutdown(worker: worker_module.Worker) -> None:
        shutting_down.set()
        original_shutdown(worker)

    monkeypatch.setattr(worker_module.Worker, "shutdown", shutdown)
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0)
    server = DaemonServer(settings, [engine], TOKEN)
    listening = threading.Event()

    async def main() -> None:
        async def tick() -> None:
            while True:
                await asyncio.sleep(0.005)
                if shutting_down.is_set():
                    ticked_while_shutting_down.set()

        ticker = asyncio.create_task(tick())
        try:
            await server.serve(lambda url: listening.set())
        finally:
            ticker.cancel()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    try:
        assert listening.wait(WAIT)
        with connected(server.url) as client:
            client.send(make_request(crop, "loading", engine="slow-load"))
            assert client.recv() == Accepted("loading", 0)
            assert engine.loading.wait(WAIT)
            server.stop()
            assert shutting_down.wait(WAIT)
            assert ticked_while_shutting_down.wait(WAIT)  # the loop is not blocked by the worker's shutdown …
            assert thread.is_alive()  # … which is still waiting for the load
    finally:
        engine.release.set()
        thread.join(WAIT)
    assert not thread.is_alive()
    assert engine.seen == []  # the load ended, the cancelled job never reached inpaint()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("192.168.1.20", False), ("example.com", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("engine", "code", "words"), [
    (OomEngine("bad"), ErrorCode.OUT_OF_MEMORY, "out of memory"),
    (pytest.param("torch-oom", ErrorCode.OUT_OF_MEMORY, "fewer variants", id="torch.OutOfMemoryError")),
    (BrokenEngine("bad"), ErrorCode.JOB_FAILED, "broken on purpose"),
    (MissingEngine("bad"), ErrorCode.ENGINE_UNAVAILABLE, "pip install something"),
])
def test_engine_failures_become_errors_and_daemon_stays_up(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray],
                                                           engine: Engine | str, code: ErrorCode, words: str) -> None:
    if engine == "torch-oom":  # torch imported only for this case
        engine = OomEngine("bad", torch_oom())
    with daemon([engine, OpenCVEngine()], tmp_path) as server:
        with connected(server.url) as client:
            events, outcome = client.run(make_request(crop, "doomed", engine="bad"))
            assert events[0] == Accepted("doomed", 0)
            assert isinstance(outcome, Error) and outcome.code is code and outcome.job_id == "doomed"
            assert words in outcome.message
            assert_opencv_works(client, crop)
        with connected(server.url) as client:
            assert_opencv_works(client, crop)


# -- the command line --------------------------------------------------------------------------------------------------

def test_daemon_command_line(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    with daemon_process(config_dir) as (url, process):
        token_file = config_dir / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{64}", token)
        with connected(url, token=token) as client:
            assert isinstance(client.reply, Welcome) and client.reply.engines[-1].name == "opencv"
        process.terminate()
        assert process.wait(WAIT) == 0
    assert "stopped" in (config_dir / "daemon.log").read_text()


class _Unavailable(OpenCVEngine):
    """A prompt-less engine the handshake lists as unavailable (as migan without onnxruntime)."""

    def info(self) -> EngineInfo:
        return dataclasses.replace(super().info(), available=False)


class _Prompted(StepEngine):
    """Takes a prompt, as a diffusion engine; records the image and options of every job and inverts the image."""

    def __init__(self) -> None:
        super().__init__("prompted", steps=1)
        self.jobs: list[tuple[np.ndarray, FillOptions]] = []

    def info(self) -> EngineInfo:
        return dataclasses.replace(super().info(), uses_prompt=True)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.jobs.append((job.image.copy(), job.options))
        return self.paint(job, progress, cancelled)


def test_the_remover_is_the_first_available_engine_that_takes_no_prompt(tmp_path: Path) -> None:
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0)
    opencv = OpenCVEngine()
    assert DaemonServer(settings, [_Prompted(), _Unavailable("migan"), opencv], TOKEN).remover() is opencv
    assert DaemonServer(settings, [_Prompted()], TOKEN).remover() is None


def test_remove_through_the_daemon_prefills_the_hole_with_its_remover(tmp_path: Path,
                                                                       crop: tuple[np.ndarray, np.ndarray]) -> None:
    """A blank prompt on a prompt engine is the remove mode: the engine's input is the request's crop with the hole
    filled by the daemon's remover (here opencv: Telea), and the neutral prompt."""
    engine = _Prompted()
    request = make_request(crop, engine="prompted", color_match=False)
    with daemon([engine, OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        _, outcome = client.run(request)
    assert isinstance(outcome, Result), outcome
    image, mask = crop
    hole = repaint_mask(blend_mask(grow_mask(mask, 3), 4), image[..., 3])
    rgb = np.ascontiguousarray(image[..., :3])
    ((given, options),) = engine.jobs
    assert np.array_equal(given[hole > 0], cv2.inpaint(rgb, hole, 3, cv2.INPAINT_TELEA)[hole > 0])
    assert np.array_equal(given[hole == 0], rgb[hole == 0]) and options.prompt == "background scenery"


def test_the_handshake_says_where_each_engines_model_is(tmp_path: Path) -> None:
    """Each EngineInfo carries its engine's model_state (the dialog's engine list shows it), and the protocol's
    states are the daemon's."""
    from gimp_inpaint.daemon.engines.base import ModelState
    from gimp_inpaint.protocol.messages import MODEL_STATES

    assert set(MODEL_STATES) == {"", *(state.value for state in ModelState)}

    class OnDisk(_Prompted):
        def model_state(self) -> ModelState:
            return ModelState.ON_DISK

    with daemon([OnDisk(), OpenCVEngine()], tmp_path) as server, connected(server.url) as client:
        welcome = client.reply
    assert isinstance(welcome, Welcome)
    assert [(engine.name, engine.state) for engine in welcome.engines] == [("prompted", "on disk"),
                                                                           ("opencv", "built in")]


class _Fragments:
    """A stand-in for websockets' connection whose ``recv_streaming`` yields the given fragments."""

    def __init__(self, fragments: list[bytes] | list[str]) -> None:
        self.fragments = fragments

    async def recv_streaming(self) -> AsyncIterator[bytes | str]:
        for fragment in self.fragments:
            yield fragment


def test_a_message_of_fragments_is_read_into_one_buffer_as_they_arrive() -> None:
    request = encode(InpaintRequest("frag", 0, 0, Plane(64, 64, 4, bytes(range(256)) * 64),
                                    Plane(64, 64, 1, bytes(64 * 64)), FillOptions(engine="opencv")))
    pieces = [request[at:at + 1000] for at in range(0, len(request), 1000)]
    read = asyncio.run(server_module._read_message(_Fragments(pieces)))  # type: ignore[arg-type]
    assert isinstance(read, memoryview) and read.readonly and bytes(read) == request
    assert isinstance(read.obj, bytearray)  # one growing buffer, not the fragments joined
    assert decode(read, views=True) == decode(request)
    single = asyncio.run(server_module._read_message(_Fragments([request])))  # type: ignore[arg-type]
    assert single is request  # one fragment: the bytes as received, no copy
    assert asyncio.run(server_module._read_message(_Fragments(["a", "b"]))) == "ab"  # type: ignore[arg-type]
