"""The daemon's log over a real daemon process (``python -m gimp_inpaint.daemon``, its own logging setup):
client text cannot forge lines, refused clients and huge bad frames add little, the file rotates and is private,
and the unauthorized message keeps the token's path to the log.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import stat
from pathlib import Path

import msgpack
import pytest
from gimp_inpaint.daemon.__main__ import LOG_BACKUPS, LOG_MAX_BYTES, log_file_handler
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Error,
    ErrorCode,
    FillOptions,
    InpaintRequest,
    Message,
    Plane,
    Welcome,
    decode,
    encode,
)
from running_daemon import WAIT, daemon_process
from websockets.sync.client import ClientConnection, connect

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _hello(token: str, **extra: object) -> bytes:
    return msgpack.packb({"type": "hello", "protocol_version": PROTOCOL_VERSION, "client": "pytest", "token": token,
                          **extra})


def _request_frame(job_id: str = "forge", options: dict[str, object] | None = None, **changes: object) -> bytes:
    """A valid 8×8 opencv request's wire map with ``changes`` applied, and ``options`` to its options map."""
    request = InpaintRequest(job_id=job_id, x=0, y=0, image=Plane(8, 8, 4, bytes(256)),
                             mask=Plane(8, 8, 1, bytes([255]) * 64), options=FillOptions(engine="opencv"))
    wire = msgpack.unpackb(encode(request))
    wire.update(changes)
    wire["options"].update(options or {})
    return msgpack.packb(wire, use_bin_type=True)


def _exchange(url: str, *frames: bytes) -> list[Message]:
    """Send ``frames`` on one connection, reading one reply after each; stops early when the daemon closes."""
    replies = []
    with connect(url, compression=None, max_size=None, proxy=None, open_timeout=WAIT) as ws:
        for frame in frames:
            ws.send(frame)
            try:
                replies.append(decode(_recv(ws)))
            except Exception:  # closed by the daemon
                break
    return replies


def _recv(ws: ClientConnection) -> bytes:
    frame = ws.recv(timeout=WAIT)
    assert isinstance(frame, bytes)
    return frame


def _settled_size(log: Path, url: str, token: str) -> int:
    """The log's size once the daemon has written everything before this call (a hello round trip later)."""
    assert isinstance(_exchange(url, _hello(token))[0], Welcome)
    return log.stat().st_size


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """One daemon process for the module: ``(url, token, daemon.log)``."""
    config_dir = tmp_path_factory.mktemp("daemon")
    with daemon_process(config_dir) as (url, _):
        yield url, (config_dir / "token").read_text().strip(), config_dir / "daemon.log"


def test_client_text_cannot_forge_log_lines(running: tuple[str, str, Path]) -> None:
    url, token, log = running
    forged = _request_frame(options={"loras": {"a\nFORGED line": "heavy"}})
    before_auth = _exchange(url, forged)  # a first frame is decoded before its type is checked
    after_auth = _exchange(url, _hello(token), forged)
    unknown_field = _exchange(url, _hello(token, **{"x\nFORGED line": 1}))
    bad_job = _exchange(url, _hello(token), _request_frame("j\nFORGED line", {"strength": 0.0}))
    good_job = _exchange(url, _hello(token), _request_frame("g\nFORGED line"))
    _settled_size(log, url, token)
    for reply in (before_auth[0], after_auth[1], unknown_field[0], bad_job[1]):
        assert isinstance(reply, Error) and "\n" not in reply.message, reply
    assert r"a\nFORGED line" in before_auth[0].message and r"a\nFORGED line" in after_auth[1].message
    assert r"x\nFORGED line" in unknown_field[0].message and bad_job[1].job_id == "j\nFORGED line"
    assert good_job[1] == Accepted("g\nFORGED line", 0)
    lines = log.read_text(encoding="utf-8").splitlines()
    assert not [line for line in lines if line.startswith("FORGED")]
    assert sum(r"\nFORGED line" in line for line in lines) >= 5


def test_refused_clients_add_a_bounded_amount_to_the_log(running: tuple[str, str, Path]) -> None:
    """200 refused unauthenticated connections (the worst hellos: 60 KB of unknown field or type, a wrong
    token) add under 400 bytes each; before, a 64 KB field name made a 64 KB line per connection."""
    url, token, log = running
    start = _settled_size(log, url, token)
    hellos = [_hello(token, **{"k" * 60_000: 1}), _hello("f" * 64), msgpack.packb({"type": "t" * 60_000}),
              _request_frame(**{"k" * 60_000: 1})]
    for number in range(200):
        (reply,) = _exchange(url, hellos[number % len(hellos)])
        assert isinstance(reply, Error) and reply.code in {ErrorCode.UNAUTHORIZED, ErrorCode.BAD_MESSAGE}
    growth = _settled_size(log, url, token) - start
    assert growth < 200 * 400, growth


@pytest.mark.parametrize("frame", [
    msgpack.packb({"type": b"\n" * 20_000_000}, use_bin_type=True),
    _request_frame(**{"k" * 1_000_000: 1, "l" * 1_000_000: 2}),
    msgpack.packb({"type": "inpaint", b"k" * 20_000_000: 1}, use_bin_type=True),
])
def test_a_huge_bad_frame_adds_a_bounded_amount_to_the_log(running: tuple[str, str, Path], frame: bytes) -> None:
    url, token, log = running
    start = _settled_size(log, url, token)
    replies = _exchange(url, _hello(token), frame)
    assert isinstance(replies[1], Error) and len(replies[1].message) < 1024, replies
    growth = _settled_size(log, url, token) - start
    assert growth < 4096, growth


def test_the_unauthorized_message_keeps_the_token_path_to_the_log(running: tuple[str, str, Path]) -> None:
    url, token, log = running
    (reply,) = _exchange(url, _hello("f" * 64))
    assert isinstance(reply, Error) and reply.code is ErrorCode.UNAUTHORIZED
    token_file = log.parent / "token"
    assert str(log.parent) not in reply.message and "gimp-inpaint doctor" in reply.message
    assert "configuration folder" in reply.message
    _settled_size(log, url, token)
    assert re.search(rf"refused .*wrong token.*{re.escape(str(token_file))}", log.read_text(encoding="utf-8"))


@posix_only
def test_the_log_is_private_also_when_it_existed(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    with daemon_process(fresh):
        pass
    assert stat.S_IMODE((fresh / "daemon.log").stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    (old / "daemon.log").write_text("an older daemon's line\n")
    (old / "daemon.log").chmod(0o644)
    old.chmod(0o755)
    with daemon_process(old):
        pass
    assert stat.S_IMODE((old / "daemon.log").stat().st_mode) == 0o600
    assert stat.S_IMODE(old.stat().st_mode) == 0o700
    assert (old / "daemon.log").read_text().startswith("an older daemon's line\n")  # appended to, not replaced


def test_the_log_rotates_and_every_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "daemon.log"
    handler = log_file_handler(path)
    try:
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        assert (handler.maxBytes, handler.backupCount) == (LOG_MAX_BYTES, LOG_BACKUPS) == (5_000_000, 3)
        handler.maxBytes = 1000  # rotate after about 10 records
        record = logging.LogRecord("test", logging.INFO, __file__, 1, "x" * 100, None, None)
        for _ in range(100):
            handler.emit(record)
    finally:
        handler.close()
    files = sorted(path.parent.iterdir())
    assert [file.name for file in files] == ["daemon.log", "daemon.log.1", "daemon.log.2", "daemon.log.3"]
    assert all(file.stat().st_size <= 1000 for file in files)
    if os.name == "posix":
        assert {stat.S_IMODE(file.stat().st_mode) for file in files} == {0o600}
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
