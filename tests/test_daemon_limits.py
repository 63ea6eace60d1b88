"""The daemon's limits over a real loopback WebSocket: frame sizes before and after the Hello, bounded decoding,
connection caps, the per-connection job cap and turns between connections (``docs/limits.md``).

Memory is read as the process's peak RSS (``ru_maxrss``): the daemon runs in a thread of the test process, and the
test clients write their big frames straight to the socket from a small buffer, so what grows is the daemon.
Times are generous bounds on how long other clients wait, not speed tests. A big variant is packed on the worker
thread and sent without blocking the event loop, also to a client that does not read (:class:`RawClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gimp_inpaint.client.connection import DaemonError, InpaintClient
from gimp_inpaint.daemon import server as server_module
from gimp_inpaint.daemon.config import Settings
from gimp_inpaint.daemon.engines.base import Engine
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.server import DaemonServer
from gimp_inpaint.protocol import (
    DEFAULT_MAX_PIXELS,
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    Error,
    ErrorCode,
    Hello,
    InpaintRequest,
    Message,
    Progress,
    Result,
    Variant,
    Welcome,
    decode,
    encode,
)
from running_daemon import WAIT, StepEngine, assert_box_loses_nothing, crop_arrays, serving
from test_daemon_server import TOKEN, GateEngine, assert_opencv_works, connected, crop, make_request
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.sync.client import ClientConnection
from websockets.uri import parse_uri

__all__ = ["crop"]  # the fixture, shared with test_daemon_server

MB = 1 << 20


def limited_daemon(engines: list[Engine], tmp_path: Path, max_pixels: int = 512 * 512,
                   **caps: int) -> contextlib.AbstractContextManager[DaemonServer]:
    """Serve ``engines`` with the token ``TOKEN``, ``max_pixels`` and the given caps (``max_connections``,
    ``max_handshakes``, ``max_queued_jobs``) on a free port."""
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0, max_pixels=max_pixels)
    return serving(DaemonServer(settings, engines, TOKEN, **caps))


def peak_rss() -> int:
    """The process's peak resident memory so far (bytes; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def send_raw_frame(ws: ClientConnection, size: int, payload: bytes | None = None) -> None:
    """Write one binary frame of ``size`` bytes straight to ``ws``'s socket (masked with the zero key, so the bytes
    go as they are): ``payload``, or zeros from a 1 MB buffer when None. Stops quietly when the daemon closes."""
    header = b"\x82\xff" + size.to_bytes(8, "big") + b"\0\0\0\0"  # FIN, binary; masked, 64-bit length, key 0
    chunk = bytes(MB)
    with contextlib.suppress(OSError):  # the daemon refused the frame and closed the socket
        ws.socket.sendall(header)
        if payload is not None:
            ws.socket.sendall(payload)
            return
        for start in range(0, size, MB):
            ws.socket.sendall(chunk[:min(MB, size - start)])


def closed_with(client_ws: ClientConnection) -> int | None:
    """The close code the daemon sent once the connection ends (None: closed without a close frame)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            client_ws.recv(timeout=WAIT)
    return None if closed.value.rcvd is None else closed.value.rcvd.code


# -- item 1: the first frame -------------------------------------------------------------------------------------------

def test_a_huge_first_frame_is_refused_as_it_arrives(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    with limited_daemon([OpenCVEngine()], tmp_path, DEFAULT_MAX_PIXELS) as server:  # 2 × 84 MB after the Hello
        before = peak_rss()
        with connected(server.url, hello=False) as attacker:
            send_raw_frame(attacker.ws, 50 * MB)
            assert closed_with(attacker.ws) == 1009  # message too big
        grown = peak_rss() - before
        assert grown < 20 * MB, f"the daemon's peak RSS grew by {grown / MB:.1f} MB"
        with connected(server.url) as client:
            assert isinstance(client.reply, Welcome)
            assert_opencv_works(client, crop)  # after the Hello the frame limit is the pixel-derived one


def test_idle_unauthenticated_connections_are_capped(tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    with limited_daemon([OpenCVEngine()], tmp_path, max_handshakes=3) as server, contextlib.ExitStack() as idle:
        with connected(server.url) as client:  # authenticated before: not counted as a handshake
            hanging = [idle.enter_context(connected(server.url, hello=False)) for _ in range(3)]
            with connected(server.url) as refused:
                reply = refused.reply
                assert isinstance(reply, Error) and reply.code == ErrorCode.BUSY.value, reply
                assert "still starting" in reply.message
                assert closed_with(refused.ws) == 1013  # try again later
            assert_opencv_works(client, crop)
        hanging[0].ws.close()
        deadline = time.monotonic() + WAIT
        while True:  # the daemon counts the closed one out once its close handshake is over
            with connected(server.url) as again:
                if isinstance(again.reply, Welcome) or time.monotonic() > deadline:
                    break
        assert isinstance(again.reply, Welcome)


# -- item 2: bounded decoding ------------------------------------------------------------------------------------------

def _nested_empty_arrays_frame() -> bytes:
    """The issue's 11.5 MB frame: ``{"type": [[[[] × 1024] × 1024] × 11]}`` (every byte after the headers an array)."""
    inner = b"\xdc\x04\x00" + b"\x90" * 1024
    return b"\x81\xa4type\xdc\x00\x0b" + (b"\xdc\x04\x00" + inner * 1024) * 11


def test_an_amplifying_frame_is_refused_without_memory_or_stalling_others(tmp_path: Path) -> None:
    frame = _nested_empty_arrays_frame()
    assert len(frame) > 11 * 10**6
    with limited_daemon([OpenCVEngine()], tmp_path, DEFAULT_MAX_PIXELS) as server, \
            connected(server.url) as attacker:  # frames up to 2 × 84 MB after the Hello
        stop, handshakes = threading.Event(), []

        def canary() -> None:  # handshakes while the frame is decoded
            while not stop.is_set():
                started = time.perf_counter()
                with connected(server.url) as other:
                    assert isinstance(other.reply, Welcome)
                handshakes.append(time.perf_counter() - started)

        thread = threading.Thread(target=canary, daemon=True)
        before = peak_rss()
        thread.start()
        send_raw_frame(attacker.ws, len(frame), frame)
        reply = attacker.recv()
        stop.set()
        thread.join(WAIT)
        grown = peak_rss() - before
    assert isinstance(reply, Error) and reply.code == ErrorCode.BAD_MESSAGE.value and "objects" in reply.message
    assert grown < 60 * MB, f"the daemon's peak RSS grew by {grown / MB:.1f} MB for an 11.5 MB frame"
    assert handshakes and max(handshakes) < 0.5, handshakes


# -- item 4: queued jobs per connection, turns between connections -----------------------------------------------------

def test_a_connections_queue_is_capped_and_connections_of_one_token_share_its_turn(
        tmp_path: Path, crop: tuple[np.ndarray, np.ndarray]) -> None:
    engine = GateEngine()
    with limited_daemon([engine], tmp_path, max_queued_jobs=3) as server, connected(server.url) as alice, \
            connected(server.url) as bob:
        alice.send(make_request(crop, "a0", engine="gate", prompt="a0"))
        assert alice.recv() == Accepted("a0", 0) and engine.started.wait(WAIT)
        for n in (1, 2, 3):
            alice.send(make_request(crop, f"a{n}", engine="gate", prompt=f"a{n}"))
            assert alice.next_for(f"a{n}") == Accepted(f"a{n}", n)
        alice.send(make_request(crop, "a4", engine="gate", prompt="a4"))
        refused = alice.next_for("a4")
        assert isinstance(refused, Error) and refused.code == ErrorCode.BUSY.value and refused.job_id == "a4"
        assert "3 jobs waiting" in refused.message
        bob.send(make_request(crop, "b", engine="gate", prompt="b"))
        assert bob.next_for("b") == Accepted("b", 4)  # the same token: one turn, in order (tests/test_remote.py
        # has two tokens taking turns)
        engine.release.set()
        outcomes = [alice.collect(f"a{n}")[1] for n in range(4)] + [bob.collect("b")[1]]
    assert all(isinstance(outcome, Result) for outcome in outcomes), outcomes
    assert [prompt for prompt, _ in engine.seen] == ["a0", "a1", "a2", "a3", "b"]


# -- item 5: open connections, logging, metadata -----------------------------------------------------------------------

def test_open_connections_are_capped_with_busy_and_the_log_stays_small(
        tmp_path: Path, crop: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gimp_inpaint.daemon.server"), \
            limited_daemon([OpenCVEngine()], tmp_path, max_connections=5) as server, \
            contextlib.ExitStack() as clients:
        held = [clients.enter_context(connected(server.url)) for _ in range(5)]
        assert all(isinstance(client.reply, Welcome) for client in held)
        for _ in range(20):
            with connected(server.url) as refused:
                assert isinstance(refused.reply, Error) and refused.reply.code == ErrorCode.BUSY.value
                assert "5 connections open" in refused.reply.message
                assert closed_with(refused.ws) == 1013
        held[0].ws.close()
        deadline = time.monotonic() + WAIT
        while True:
            with connected(server.url) as again:
                if isinstance(again.reply, Welcome) or time.monotonic() > deadline:
                    break
        assert isinstance(again.reply, Welcome)
        assert_opencv_works(held[1], crop)
    refusals = [record for record in caplog.records if "refused a connection" in record.getMessage()]
    assert 1 <= len(refusals) <= 5, [record.getMessage() for record in refusals]  # 20+ refused, a few logged
    assert not any(record.exc_info for record in caplog.records)


def test_package_metadata_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    monkeypatch.setattr(server_module.metadata, "version", lambda name: reads.append(name) or "9.9")
    server_module.daemon_version.cache_clear()
    try:
        with limited_daemon([OpenCVEngine()], tmp_path) as server:
            for _ in range(3):
                with connected(server.url) as client:
                    assert isinstance(client.reply, Welcome) and client.reply.daemon_version == "9.9"
    finally:
        server_module.daemon_version.cache_clear()
    assert reads == ["gimp-inpaint"]


@contextlib.contextmanager
def _nofile_limit(soft: int) -> Iterator[None]:
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_the_default_connection_cap_leaves_half_the_file_descriptors() -> None:
    with _nofile_limit(1024):
        assert server_module.default_max_connections() == 256
    with _nofile_limit(200):
        assert server_module.default_max_connections() == 100 - server_module.MAX_HANDSHAKES


def test_the_client_reports_busy_with_the_daemons_message(tmp_path: Path) -> None:
    with limited_daemon([OpenCVEngine()], tmp_path, max_connections=1) as server, connected(server.url), \
            pytest.raises(DaemonError) as busy:
        InpaintClient.connect(server.url, TOKEN, "pytest", timeout=WAIT)
    assert busy.value.code is ErrorCode.BUSY and "close a client you no longer use" in str(busy.value)


# -- issue 8, item 3: a big variant neither stalls the event loop nor, unread, the daemon -----------------------------

HANDSHAKE_BOUND = 0.5
"""Seconds another client's handshake may take while a big variant is packed or sent (it takes milliseconds when
the event loop is free; a loop blocked by packing or by a full socket would hold it until the test gives up)."""


class RawClient:
    """A WebSocket client over a plain socket (websockets' sans-I/O :class:`ClientProtocol`) that reads only when
    asked: unlike websockets' own clients, which read in a background thread, it leaves the daemon's frames in the
    socket, so a big one fills the socket's buffers and stays in the daemon's writer."""

    def __init__(self, url: str) -> None:
        uri = parse_uri(url)
        self.socket = socket.create_connection((uri.host, uri.port), timeout=WAIT)
        self.protocol = ClientProtocol(uri, max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.frames: list[Frame] = []
        while self.protocol.handshake_exc is None and self.protocol.state.name == "CONNECTING":
            self._read()
        assert self.protocol.handshake_exc is None, self.protocol.handshake_exc
        self.send(Hello(protocol_version=PROTOCOL_VERSION, client="raw", token=TOKEN))
        assert isinstance(self.recv(), Welcome)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.socket.sendall(data)

    def _read(self) -> None:
        data = self.socket.recv(1 << 20)
        assert data, "the daemon closed the connection"
        self.protocol.receive_data(data)
        self.frames += [event for event in self.protocol.events_received() if isinstance(event, Frame)]
        self._flush()  # pongs

    def send(self, message: Message) -> None:
        self.protocol.send_binary(encode(message))
        self._flush()

    def recv(self) -> Message:
        """The next message, from its frame or its fragments (a binary frame, then continuation frames until one
        has ``fin``)."""
        while not any(frame.opcode is Opcode.BINARY for frame in self.frames):
            self._read()
        while (frame := self.frames.pop(0)).opcode is not Opcode.BINARY:
            pass
        data = [frame.data]
        while not frame.fin:
            while not self.frames:
                self._read()
            frame = self.frames.pop(0)
            if frame.opcode in (Opcode.PING, Opcode.PONG):  # control frames may come between fragments
                continue
            assert frame.opcode is Opcode.CONT, frame
            data.append(frame.data)
        return decode(b"".join(data))

    def close(self) -> None:
        self.socket.close()


@contextlib.contextmanager
def raw_client(url: str) -> Iterator[RawClient]:
    client = RawClient(url)
    try:
        yield client
    finally:
        client.close()


def timed_handshake(url: str) -> float:
    """Seconds a new client takes from connecting to the daemon's Welcome."""
    started = time.perf_counter()
    with connected(url) as other:
        assert isinstance(other.reply, Welcome), other.reply
    return time.perf_counter() - started


def big_request(side: int, job_id: str = "big", **options: object) -> InpaintRequest:
    """A ``side``² RGBA crop masked all but a 16-pixel border, so its variant is nearly the whole crop (a frame of
    about 5 × side² bytes)."""
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    rgba = np.empty((side, side, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = ramp[None, :], ramp[:, None], 77, 255
    mask = np.zeros((side, side), np.uint8)
    mask[16:-16, 16:-16] = 255
    return make_request((rgba, mask), job_id, engine="steps", grow=0, feather=2, **options)


def test_a_big_variant_is_packed_and_sent_without_stalling_the_event_loop(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """While a 4096² job's variant (an 80 MB frame) is packed, and then while it is sent to a client that does
    not read (so it fills the socket and stays in the daemon's writer), another client's handshake completes within
    :data:`HANDSHAKE_BOUND` (0.5 s).

    Packing is held open on the worker thread until that handshake is done (had it run on the event loop, the
    handshake could not complete and the bound would fail); the variant then arrives whole, the box of the crop's
    result, unmasked pixels exact."""
    side = 4096
    packed, may_return, where = threading.Event(), threading.Event(), []
    real_encode = server_module.encode_fragments

    def slow_encode(message: Message) -> list[bytes | memoryview]:
        fragments = real_encode(message)
        if isinstance(message, Variant):
            where.append(threading.current_thread().name)
            packed.set()
            assert may_return.wait(WAIT), "the test never let packing finish"
        return fragments

    monkeypatch.setattr(server_module, "encode_fragments", slow_encode)
    request = big_request(side, color_match=False)  # the engine's inverted pixels, compared below
    with limited_daemon([StepEngine(steps=1)], tmp_path, DEFAULT_MAX_PIXELS) as server, \
            raw_client(server.url) as reader:
        reader.send(request)
        assert packed.wait(WAIT), "the variant was never packed"
        while_packing = timed_handshake(server.url)
        may_return.set()
        time.sleep(0.3)  # the writer is now sending 80 MB to a socket nobody reads …
        while_sending = timed_handshake(server.url)
        assert server._queue.running is not None  # … and the worker still waits for it to be sent
        messages = [reader.recv()]
        while not isinstance(messages[-1], Result | Error):
            messages.append(reader.recv())
    assert where and all(name.startswith("gimp-inpaint-worker") for name in where), where
    assert while_packing < HANDSHAKE_BOUND and while_sending < HANDSHAKE_BOUND, (while_packing, while_sending)
    assert messages[0] == Accepted("big", 0) and messages[-1] == Result("big", 1), messages[-1]
    (variant,) = [message for message in messages if isinstance(message, Variant)]
    assert variant.image.width * variant.image.height > 0.95 * side * side  # the big frame really went
    image, _ = crop_arrays(request)
    assert_box_loses_nothing(variant, request, 255 - np.ascontiguousarray(image[..., :3]))


@pytest.mark.parametrize("how", ["cancel", "disconnect"])
def test_a_client_that_stops_reading_then_cancels_or_goes_does_not_hold_the_daemon(
        tmp_path: Path, crop: tuple[np.ndarray, np.ndarray], how: str) -> None:
    """The worker waits for each variant to be sent, so a client that does not read holds its own job; when it
    cancels (or goes), the job ends CANCELLED at the worker's next poll and the next client's job runs, before the
    first client has read anything."""
    with limited_daemon([StepEngine(steps=1), OpenCVEngine()], tmp_path, DEFAULT_MAX_PIXELS) as server, \
            raw_client(server.url) as reader, connected(server.url) as other:
        reader.send(big_request(2048, num_variants=3))
        deadline = time.monotonic() + WAIT
        while server._queue.running is None and time.monotonic() < deadline:  # the request is read and started
            time.sleep(0.01)
        assert server._queue.running is not None
        time.sleep(0.5)  # the first variant (20 MB) fills the socket: the worker waits in its delivery
        other.send(make_request(crop, "next"))
        assert other.next_for("next") == Accepted("next", 1)  # queued behind the held job
        if how == "cancel":
            reader.send(Cancel("big"))
        else:
            reader.close()
        _, outcome = other.collect("next")
        assert isinstance(outcome, Result), outcome
        if how == "disconnect":
            return
        messages = [reader.recv()]
        while not isinstance(messages[-1], Result | Error):
            messages.append(reader.recv())
    assert isinstance(messages[-1], Error) and messages[-1].code is ErrorCode.CANCELLED
    assert sum(isinstance(message, Variant) for message in messages) <= 1  # what was in the writer, void
    assert all(isinstance(message, Accepted | Progress | Variant) for message in messages[:-1])


# -- issue 10: a big request is decoded off the event loop -------------------------------------------------------------

def _on_event_loop() -> bool:
    """True in a thread that runs an asyncio event loop (the daemon's), False in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_big_request_is_decoded_without_stalling_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  crop: tuple[np.ndarray, np.ndarray]) -> None:
    """While a 4096² request (an 84 MB frame) is decoded, another client's handshake completes within
    :data:`HANDSHAKE_BOUND` (0.5 s), and the connection's next request is answered after it, in order.

    Decoding is held open off the event loop until that handshake is done (had it run on the event loop, the
    handshake could not complete and the bound would fail); the request is then decoded into views of its frame and
    runs. Its mask is a small square, so its variant is small."""
    side = 4096
    decoding, may_return, on_loop, planes = threading.Event(), threading.Event(), [], []
    real_decode = server_module.decode

    def slow_decode(frame: bytes | str, max_pixels: int = DEFAULT_MAX_PIXELS, **kwargs: bool) -> Message:
        if len(frame) < MB:  # the Hellos and the small request
            return real_decode(frame, max_pixels, **kwargs)
        on_loop.append(_on_event_loop())
        decoding.set()
        assert may_return.wait(WAIT), "the test never let decoding finish"
        message = real_decode(frame, max_pixels, **kwargs)
        assert isinstance(message, InpaintRequest)
        planes.extend(type(plane.data) for plane in (message.image, message.mask))
        return message

    monkeypatch.setattr(server_module, "decode", slow_decode)
    image = np.zeros((side, side, 4), np.uint8)
    image[..., 0], image[..., 3] = np.linspace(0, 255, side).astype(np.uint8)[None, :], 255
    mask = np.zeros((side, side), np.uint8)
    mask[2000:2040, 3000:3040] = 255
    big = make_request((image, mask), "big", engine="steps", x=0, y=0, grow=0, feather=2)
    with limited_daemon([StepEngine(steps=1)], tmp_path, DEFAULT_MAX_PIXELS) as server, \
            connected(server.url) as client:
        client.send(big)
        client.send(make_request(crop, "small", engine="steps"))
        assert decoding.wait(WAIT), "the big request was never decoded"
        while_decoding = timed_handshake(server.url)
        may_return.set()
        messages = [client.recv()]
        while sum(isinstance(message, Result | Error) for message in messages) < 2:
            messages.append(client.recv())
    assert on_loop == [False] and planes == [memoryview, memoryview], (on_loop, planes)
    assert while_decoding < HANDSHAKE_BOUND, while_decoding
    assert messages[0] == Accepted("big", 0), messages[0]  # the small request waited behind the big one's decoding
    assert [message for message in messages if isinstance(message, Result | Error)] == [Result("big", 1),
                                                                                         Result("small", 1)]
    (variant,) = [message for message in messages if isinstance(message, Variant) and message.job_id == "big"]
    assert 40 * 40 <= variant.image.width * variant.image.height < 64 * 64  # the square and its feather
