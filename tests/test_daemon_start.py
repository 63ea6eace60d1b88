"""client.connection.connect_or_start: the plug-in starts the real daemon when none answers on this machine, in a
session of its own that outlives the starter's process group (GIMP SIGKILLs it on Cancel), and explains a daemon
that does not come up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gimp_inpaint.client import connection
from gimp_inpaint.client.connection import (
    ConnectionConfig,
    DaemonNotRunning,
    DaemonUnavailable,
    InpaintClient,
    connect_or_start,
    is_loopback_url,
    read_connection_config,
    write_connection_config,
)
from gimp_inpaint.daemon.config import ensure_token
from gimp_inpaint.protocol import FillOptions, InpaintRequest, Plane
from running_daemon import WAIT, free_port

pytestmark = pytest.mark.timeout(120)

STARTER = textwrap.dedent("""
    import subprocess, sys, time
    from pathlib import Path
    from gimp_inpaint.client.connection import connect_or_start, read_connection_config

    started = []
    popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    subprocess.Popen = recording_popen
    statuses = []
    with connect_or_start(read_connection_config(Path(sys.argv[1])), "starter", Path(sys.argv[2]),
                          on_status=statuses.append) as client:
        assert client.welcome is not None
    print(started[0].pid, statuses[0], sep="|", flush=True)
    time.sleep(600)  # until the test kills this process group, as GIMP does on Cancel
""")
"""The plug-in's side, as a process of its own: connect (starting the daemon), print the started daemon's process
id and the first status line, then wait to be killed."""


def _fill_with_opencv(client: InpaintClient) -> None:
    """One small opencv job (a 16×16 crop at (3, 4), its lower half masked, no growth or feather); asserts the
    variant is that half (the blend mask's box: the upper half's blend is 0, so nothing else is sent), filled."""
    image = Plane(16, 16, 4, bytes(range(256)) * 4)
    mask = Plane(16, 16, 1, bytes([0] * 128 + [255] * 128))
    (variant,) = client.inpaint(InpaintRequest("j1", 3, 4, image, mask, FillOptions(engine="opencv", feather=0,
                                                                                     grow=0)))
    assert (variant.index, variant.x, variant.y, variant.image.width, variant.image.height) == (0, 3, 12, 16, 8)
    assert variant.mask.data == bytes([255]) * 128 and variant.image.data[3::4] == bytes([255]) * 128


def _gone(pid: int) -> bool:
    """True when process ``pid`` no longer exists or is a zombie (exited, not yet reaped by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def started_pids() -> Iterator[list[int]]:
    """Process ids of daemons a test started; each is sent SIGTERM at the end and must be gone within WAIT s."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + WAIT
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), f"the daemon {pid} did not stop on SIGTERM"


@pytest.mark.skipif(sys.platform != "linux", reason="process sessions and groups, read through /proc")
def test_started_daemon_has_its_own_session_and_survives_the_kill_of_the_starters_group(tmp_path, started_pids):
    config_dir = tmp_path / "config"
    token = ensure_token(config_dir)
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    connection_file, log_file = tmp_path / "connection.json", tmp_path / "cache" / "daemon-start.log"
    write_connection_config(connection_file, url, token, daemon_command=[
        sys.executable, "-m", "gimp_inpaint.daemon", "--no-tray", "--port", str(port), "--config-dir",
        str(config_dir)])
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(connection_file), str(log_file)],
                               stdout=subprocess.PIPE, text=True, process_group=0)
    try:
        pid_text, status = starter.stdout.readline().strip().split("|")
    finally:
        os.killpg(starter.pid, signal.SIGKILL)  # GIMP's Cancel
        starter.wait(WAIT)
        starter.stdout.close()
    pid = int(pid_text)
    started_pids.append(pid)
    assert starter.returncode == -signal.SIGKILL
    assert status.startswith("Starting the gimp-inpaint daemon…")
    assert os.getsid(pid) == pid != os.getsid(0)  # the leader of a session of its own
    assert os.getpgid(pid) != starter.pid
    assert not _gone(pid)
    with connect_or_start(read_connection_config(connection_file), "test", log_file,
                          on_status=pytest.fail) as client:  # it answers: nothing is started again
        _fill_with_opencv(client)
    assert "listening on " + url in log_file.read_text()


def test_a_command_that_exits_is_reported_with_its_exit_code_and_output(tmp_path):
    command = (sys.executable, "-c", "import sys; print('port taken, giving up'); sys.exit(3)")
    log_file = tmp_path / "daemon-start.log"
    log_file.write_text("an earlier start's output\n")
    statuses: list[str] = []
    config = ConnectionConfig(f"ws://localhost:{free_port()}", "t", command)
    with pytest.raises(DaemonUnavailable) as caught:
        connect_or_start(config, "test", log_file, on_status=statuses.append)
    assert "exited with code 3" in caught.value.message
    assert caught.value.message.endswith("port taken, giving up")  # only this start's output
    assert statuses and all(status.startswith("Starting the gimp-inpaint daemon…") for status in statuses)


def test_a_daemon_that_does_not_answer_in_time_is_reported_and_left_running(tmp_path, monkeypatch, started_pids):
    start = connection.start_daemon

    def recording_start(*args: object) -> subprocess.Popen[bytes]:
        process = start(*args)
        started_pids.append(process.pid)
        return process

    monkeypatch.setattr(connection, "start_daemon", recording_start)
    config = ConnectionConfig(f"ws://127.0.0.1:{free_port()}", "t", (sys.executable, "-c", "import time; "
                                                                                          "time.sleep(60)"))
    with pytest.raises(DaemonUnavailable) as caught:
        connect_or_start(config, "test", tmp_path / "daemon-start.log", start_timeout=1)
    assert f"(process {started_pids[0]}) did not answer" in caught.value.message
    assert "within 1 s" in caught.value.message


def test_without_a_command_the_error_says_how_to_start_the_daemon(tmp_path):
    with pytest.raises(DaemonUnavailable) as caught:
        connect_or_start(ConnectionConfig(f"ws://127.0.0.1:{free_port()}", "t"), "test", tmp_path / "log")
    assert "`gimp-inpaint-daemon`" in caught.value.message
    assert "re-run `gimp-inpaint-install`" in caught.value.message
    assert not (tmp_path / "log").exists()


@pytest.mark.parametrize("url", ["ws://192.0.2.7:7869", "ws://gimp-box.example:7869", "ws://[2001:db8::1]:7869"])
def test_a_remote_url_never_starts_a_daemon(tmp_path, monkeypatch, url):
    refused = DaemonNotRunning(f"nothing at {url}")

    def refuse(*args: object) -> InpaintClient:
        raise refused

    monkeypatch.setattr(InpaintClient, "connect", refuse)
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("a process was started"))
    with pytest.raises(DaemonNotRunning) as caught:
        connect_or_start(ConnectionConfig(url, "t", ("gimp-inpaint-daemon",)), "test", tmp_path / "log")
    assert caught.value is refused


@pytest.mark.parametrize(("url", "loopback"), [
    ("ws://127.0.0.1:7869", True), ("ws://127.8.0.1:7869", True), ("ws://localhost:7869", True),
    ("ws://[::1]:7869", True), ("wss://LOCALHOST:7869", True), ("ws://192.168.1.5:7869", False),
    ("ws://[2001:db8::1]:7869", False), ("ws://localhost.example.com:7869", False), ("ws://:7869", False),
    ("not a url", False), ("ws://[::1:7869", False),
])
def test_is_loopback_url(url, loopback):
    assert is_loopback_url(url) is loopback
