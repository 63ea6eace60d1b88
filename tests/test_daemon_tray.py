"""daemon.tray without a display: icon drawing, tooltip, the menu over the real server, the threads (the icon's loop
on the main thread, the daemon beside it), notifications and signals, with pystray's own Icon base class over a
recording backend (tests/fake_tray.py). The menu on a real tray manager under Xvfb: tests/test_tray_xvfb.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_tray import install
from gimp_inpaint.daemon.config import Settings
from gimp_inpaint.daemon.control import NOTIFY_AFTER_SECONDS, Controller
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.server import Activity, DaemonServer, JobEnd, RunningJob
from gimp_inpaint.daemon.tray import ICON_SIZE, STATE_COLOURS, TITLE_LIMIT, Tray, draw_icon, status_title
from gimp_inpaint.protocol import Error, ErrorCode, Result
from running_daemon import WAIT, serving
from test_daemon_control import WarmableEngine
from test_daemon_server import TOKEN, connected, crop, make_request  # noqa: F401 - crop is a fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("state", STATE_COLOURS)
def test_icon_colour_per_state(state: str) -> None:
    image = draw_icon(state)
    assert image.size == (ICON_SIZE, ICON_SIZE) and image.mode == "RGBA"
    assert image.getpixel((ICON_SIZE // 2, ICON_SIZE // 2)) == (*STATE_COLOURS[state], 255)
    assert image.getpixel((0, 0))[3] == 0  # transparent corner
    with pytest.raises(KeyError):
        draw_icon("sleepy")


def test_status_title() -> None:
    assert status_title("idle", "", "ws://127.0.0.1:7869") == "gimp-inpaint: idle (ws://127.0.0.1:7869)"
    assert status_title("idle", "starting", "") == "gimp-inpaint: idle — starting"
    long = status_title("error", "x" * 500, "ws://127.0.0.1:7869")
    assert len(long) == TITLE_LIMIT and long.endswith("…") and long.startswith("gimp-inpaint: error — xxx")


@pytest.fixture
def fake_icon(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """pystray with the recording backend (:func:`fake_tray.install`); the pystray modules and environment of
    before come back afterwards."""
    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    saved = {name: module for name, module in sys.modules.items() if name == "pystray" or name.startswith("pystray.")}
    icon_class = install()
    icon_class.made.clear()
    yield icon_class
    icon_class.fail_before_ready = False
    for name in [name for name in sys.modules if name == "pystray" or name.startswith("pystray.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def make_server(tmp_path: Path, opened: list[Path] | None = None) -> tuple[DaemonServer, Tray, WarmableEngine]:
    """A daemon (not yet serving) with a loadable model and opencv, its controller and tray wired as ``main`` wires
    them; Open Log / Open Config Folder record into ``opened``."""
    model = WarmableEngine("sd15-inpaint")
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0)
    server = DaemonServer(settings, [model, OpenCVEngine()], TOKEN,
                          on_status=lambda state, text: tray.set_status(state, text),
                          on_activity=lambda activity: tray.set_activity(activity))
    tray = Tray(Controller(server, opener=(opened if opened is not None else []).append,
                           notify=lambda title, message: tray.notify(title, message), on_change=lambda: tray.refresh()))
    return server, tray, model


def test_the_menu_over_the_real_server(tmp_path: Path, fake_icon: Any, crop: Any) -> None:  # noqa: F811
    opened: list[Path] = []
    server, tray, model = make_server(tmp_path, opened)
    assert tray.create()
    icon = fake_icon.made[-1]
    (tmp_path / "daemon.log").touch()
    with serving(server):
        assert icon.items() == [
            ["Idle", False, []],
            ["Models", False, []],
            ["sd15-inpaint — on disk", True, [["Load", True, []], ["Unload", False, []]]],
            ["opencv — built in", False, []],
            ["Pause", True, []], ["Open Log", True, []], ["Open Config Folder", True, []], ["Quit", True, []]]
        assert icon.activate("Load")
        for _ in range(int(WAIT * 10)):  # the load runs on the worker; the menu reads the state again
            if model.loaded:
                break
            threading.Event().wait(0.1)
        assert icon.items()[2] == ["sd15-inpaint — loaded", True, [["Load", False, []], ["Unload", True, []]]]
        assert icon.activate("Unload")
        server.call_on_worker(lambda: None).result(WAIT)  # after the unload
        assert icon.items()[2][0] == "sd15-inpaint — on disk"

        assert icon.activate("Pause")
        assert server.paused and icon.items()[0] == ["Idle; paused: new jobs are refused", False, []]
        assert icon.items()[4] == ["Resume", True, []]
        with connected(server.url) as client:
            refused = client.run(make_request(crop, "j1"))[1]
            assert isinstance(refused, Error) and refused.code is ErrorCode.PAUSED
            assert icon.activate("Resume")
            assert isinstance(client.run(make_request(crop, "j2"))[1], Result)

        assert icon.activate("Open Log") and icon.activate("Open Config Folder")
        assert opened == [tmp_path / "daemon.log", tmp_path]
        assert icon.menu_updates > 0
        assert icon.activate("Quit")
        assert server._stop_requested  # serving() then finds it stopped


def test_the_icon_owns_the_main_thread_and_the_daemon_runs_beside_it(tmp_path: Path, fake_icon: Any) -> None:
    server, tray, _ = make_server(tmp_path)
    threads: dict[str, str] = {}

    def listening(url: str) -> None:
        threads["serve"] = threading.current_thread().name
        tray.show_url(url)
        threads["icon visible"] = str(icon.shown)
        icon.activate("Quit")  # as the user would, from the icon's thread; here from the daemon's

    assert tray.create()
    icon = fake_icon.made[-1]
    tray.run(lambda: asyncio.run(server.serve(listening)))  # returns once the daemon has stopped
    assert threading.current_thread() is threading.main_thread()
    assert icon.run_thread == threading.main_thread().name
    assert threads == {"serve": "gimp-inpaint-server", "icon visible": "True"}
    assert icon.stopped.is_set() and server.url is not None and icon.titles[-1].endswith(f"({server.url})")
    assert not [thread.name for thread in threading.enumerate() if thread.name == "gimp-inpaint-server"]


def test_a_daemon_that_cannot_listen_raises_on_the_main_thread_and_removes_the_icon(tmp_path: Path,
                                                                                       fake_icon: Any) -> None:
    _, tray, _ = make_server(tmp_path)
    assert tray.create()

    def serve() -> None:
        raise OSError(98, "Address already in use")

    with pytest.raises(OSError, match="Address already in use"):
        tray.run(serve)
    assert fake_icon.made[-1].stopped.is_set()


def test_an_icon_loop_that_fails_leaves_the_daemon_serving_and_no_thread_behind(
        tmp_path: Path, fake_icon: Any, caplog: pytest.LogCaptureFixture) -> None:
    server, tray, _ = make_server(tmp_path)
    fake_icon.fail_before_ready = True
    assert tray.create()
    before = set(threading.enumerate())
    served = threading.Event()

    def listening(url: str) -> None:
        served.set()
        server.stop()

    with caplog.at_level(logging.WARNING, logger="gimp_inpaint.daemon.tray"):
        tray.run(lambda: asyncio.run(server.serve(listening)))
    assert served.is_set() and "the tray icon's loop failed (RuntimeError: no session bus)" in caplog.text
    for thread in set(threading.enumerate()) - before:  # pystray's setup thread was let go
        thread.join(WAIT)
        assert not thread.is_alive() or thread.daemon, thread


def test_long_jobs_are_notified_short_and_cancelled_ones_not(tmp_path: Path, fake_icon: Any) -> None:
    _, tray, _ = make_server(tmp_path)
    assert tray.create()
    icon = fake_icon.made[-1]
    job = RunningJob("sd15-inpaint", "j1")
    tray.set_activity(Activity(ended=JobEnd(job, NOTIFY_AFTER_SECONDS / 2)))
    tray.set_activity(Activity(ended=JobEnd(job, 60, Error(ErrorCode.CANCELLED, "cancelled", "j1"))))
    tray.set_activity(Activity(ended=JobEnd(job, 42)))
    assert icon.notified.wait(WAIT)
    assert icon.notices == [("Generative fill done", "sd15-inpaint, job 'j1', 42 s: the result is in GIMP")]
    icon.HAS_NOTIFICATION = False  # pystray's X11 backend
    icon.notified.clear()
    tray.set_activity(Activity(ended=JobEnd(job, 42)))
    assert not icon.notified.wait(0.2) and len(icon.notices) == 1


def test_a_backend_without_menu_is_said_in_the_log(tmp_path: Path, fake_icon: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    fake_icon.HAS_MENU = False
    try:
        _, tray, _ = make_server(tmp_path)
        with caplog.at_level(logging.WARNING, logger="gimp_inpaint.daemon.tray"):
            assert tray.create()
    finally:
        fake_icon.HAS_MENU = True
    assert "the tray icon has no menu" in caplog.text and "PyGObject" in caplog.text


def test_status_set_before_the_icon_exists_is_shown_when_it_does(tmp_path: Path, fake_icon: Any) -> None:
    """The daemon sets its first status (warming up, with a preload) as it listens, maybe before the icon shows."""
    _, tray, _ = make_server(tmp_path)
    tray.set_status("busy", "warming up: loading sd15-inpaint")
    assert tray.create()
    icon = fake_icon.made[-1]
    assert icon.title == "gimp-inpaint: busy — warming up: loading sd15-inpaint"
    assert icon.icon.getpixel((ICON_SIZE // 2, ICON_SIZE // 2))[:3] == STATE_COLOURS["busy"]
    tray.stop()
    tray.set_status("idle", "")  # harmless once stopped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland display variables are Linux's")
def test_no_display_means_no_tray_and_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    for module in [name for name in sys.modules if name == "pystray" or name.startswith("pystray.")]:
        monkeypatch.delitem(sys.modules, module)
    _, tray, _ = make_server(tmp_path)
    with caplog.at_level(logging.WARNING, logger="gimp_inpaint.daemon.tray"):
        assert not tray.create()
    assert "no tray icon" in caplog.text
    tray.set_status("busy", "still fine")
    tray.stop()


# -- the daemon's main() with the recording backend, in a process of its own ------------------------------------------

class DaemonWithFakeTray:
    """``python tests/fake_tray.py --port 0 --config-dir DIR``: the real ``main`` with the recording backend;
    :meth:`line` reads its stdout, :meth:`command` writes to the fake icon's stdin."""

    def __init__(self, config_dir: Path) -> None:
        (config_dir / "token").parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "fake_tray.py"), "--port", "0", "--config-dir", str(config_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def command(self, text: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        return self.line()

    def until(self, prefix: str) -> str:
        """The next line that starts with ``prefix`` (others are skipped)."""
        while not (line := self.line()).startswith(prefix):
            assert line or self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
        return line

    def exit_status(self) -> int:
        try:
            return self.process.wait(WAIT)
        finally:
            if self.process.poll() is None:
                self.process.kill()


def test_main_runs_the_icon_on_the_main_thread_and_quits_from_its_menu(tmp_path: Path) -> None:
    daemon = DaemonWithFakeTray(tmp_path / "config")
    assert daemon.until("icon loop on") == "icon loop on MainThread"
    listening = daemon.until("gimp-inpaint daemon listening on ")
    assert daemon.until("serving on") == "serving on gimp-inpaint-server"
    url = listening.rsplit(" ", 1)[-1]
    menu = json.loads(daemon.command("menu"))
    assert [item[0] for item in menu][-4:] == ["Pause", "Open Log", "Open Config Folder", "Quit"]
    assert ["opencv — built in", False, []] in menu and any(item[0].startswith("migan — ") for item in menu)
    assert daemon.command("activate Pause") == "activated Pause"
    token = (tmp_path / "config" / "token").read_text().strip()
    from gimp_inpaint.client.connection import DaemonError, InpaintClient
    from test_client import make_request as client_request

    with InpaintClient.connect(url, token, "pytest") as client, pytest.raises(DaemonError) as caught:
        client.inpaint(client_request("opencv"), lambda step, total, stage: None)
    assert caught.value.code is ErrorCode.PAUSED
    assert daemon.command("activate Quit") == "activated Quit"
    assert daemon.exit_status() == 0
    log = (tmp_path / "config" / "daemon.log").read_text()
    assert "Quit chosen in the tray menu" in log and "paused: new jobs are refused" in log and "stopped" in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_signals_stop_the_daemon_while_the_icon_holds_the_main_thread(tmp_path: Path, signum: int) -> None:
    daemon = DaemonWithFakeTray(tmp_path / "config")
    daemon.until("serving on")
    daemon.process.send_signal(signum)
    assert daemon.exit_status() == 0
    log = (tmp_path / "config" / "daemon.log").read_text()
    assert f"{signal.Signals(signum).name} received: stopping" in log and log.rstrip().endswith("stopped")
