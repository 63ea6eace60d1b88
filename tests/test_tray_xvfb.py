"""The tray's menu on a real desktop tray: the real daemon (``python -m gimp_inpaint.daemon``, tray on) on Xvfb with
``trayer`` as the system tray (the freedesktop XEmbed tray protocol), pystray's GTK backend, the menu opened and
driven with xdotool as a user would with the mouse and keyboard.

What it checks: the icon docks in the tray (its green dot is on screen); a right click opens the menu; Load on a
registry model (the tiny SD inpainting pipeline) loads it (the handshake says loaded) and Unload unloads it; Pause
makes the daemon refuse a fill with ``paused`` and Resume takes fills again; Quit ends the daemon with status 0 —
the icon's loop on the main thread, the daemon beside it, as on macOS.

Needs, on the host: Xvfb, xdotool, trayer, dbus-run-session (installed with apt-get when missing and root, as the
GUI tests of tests/gimp do) and PyGObject with GTK 3 for this Python's version (Debian: python3-gi,
gir1.2-gtk-3.0; the venv sees the system's ``gi`` through a folder on ``PYTHONPATH`` holding only that package).
Skips without them. ``GIMP_INPAINT_WRITE_DOCS=1`` also writes the open menu's screenshot to
``docs/images/tray-menu.png``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from gimp_inpaint.client.connection import DaemonError, InpaintClient
from gimp_inpaint.daemon.tray import STATE_COLOURS
from gimp_inpaint.protocol import ErrorCode
from PIL import Image, ImageGrab
from running_daemon import WAIT
from test_client import make_request

sys.path.insert(0, str(Path(__file__).parent / "gimp"))
from gimp_harness import GimpUnavailable, ensure_host_tools, read_line_within, xvfb

REPO = Path(__file__).resolve().parents[1]
SCREEN = (800, 480)
"""Xvfb's screen, pixels."""
TRAY_WIDTH, TRAY_HEIGHT = 120, 32
"""trayer's panel at the top right corner, pixels."""

pytestmark = pytest.mark.timeout(300)


def system_gi(tmp_path: Path) -> Path:
    """A folder holding only a link to the system's ``gi`` package, for ``PYTHONPATH``, when that package is for this
    Python's version and has GTK 3; skips otherwise."""
    found = subprocess.run(["/usr/bin/python3", "-c", "import sys, gi; print(gi.__path__[0]); "
                            "print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip("no PyGObject for the system Python (apt-get install python3-gi gir1.2-gtk-3.0)")
    package, version = found.stdout.split()
    if version != "{}.{}".format(*sys.version_info[:2]):
        pytest.skip(f"the system's PyGObject is for Python {version}, this is {sys.version_info[:2]}")
    folder = tmp_path / "gi-path"
    folder.mkdir()
    (folder / "gi").symlink_to(package)
    check = subprocess.run([sys.executable, "-c", "import gi; gi.require_version('Gtk', '3.0')"],
                           env={**os.environ, "PYTHONPATH": str(folder)}, capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no GTK 3 for PyGObject (apt-get install gir1.2-gtk-3.0): {check.stderr.strip()[-200:]}")
    return folder


def screenshot(display: str) -> np.ndarray:
    """The whole screen as H×W×3 uint8 RGB (Pillow's XCB grab)."""
    return np.asarray(ImageGrab.grab(xdisplay=display).convert("RGB"))


def find_icon(display: str) -> tuple[int, int]:
    """The screen position of the idle icon's green dot in the tray, waited for up to :data:`WAIT` seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        tray = screenshot(display)[:TRAY_HEIGHT, SCREEN[0] - TRAY_WIDTH:]
        ys, xs = np.nonzero(np.all(tray == STATE_COLOURS["idle"], axis=-1))
        if len(xs) > 20:
            return SCREEN[0] - TRAY_WIDTH + int(xs.mean()), int(ys.mean())
        time.sleep(0.2)
    raise AssertionError("the tray icon never appeared in trayer")


def xdotool(display: str, *arguments: str) -> None:
    subprocess.run(["xdotool", *arguments], env={**os.environ, "DISPLAY": display}, check=True, timeout=WAIT)


def open_menu(display: str, icon: tuple[int, int]) -> np.ndarray:
    """Right-click the icon and wait until the menu shows; returns the screen with the menu open."""
    before = screenshot(display)
    xdotool(display, "mousemove", str(icon[0]), str(icon[1]), "click", "3")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        time.sleep(0.3)
        shown = screenshot(display)
        if np.any(shown[TRAY_HEIGHT:] != before[TRAY_HEIGHT:]):  # something below the tray: the menu
            time.sleep(0.3)  # drawn in full
            return screenshot(display)
    raise AssertionError("no menu opened on a right click")


def choose(display: str, icon: tuple[int, int], *keys: str) -> None:
    """Open the menu and pick an item with the keyboard (``Down`` skips the greyed lines, ``Right`` opens a
    submenu, ``Return`` activates)."""
    open_menu(display, icon)
    for key in (*keys, "Return"):
        xdotool(display, "key", key)
        time.sleep(0.15)


def listening_url(stdout: IO[str], stderr: Path) -> str:
    """The URL of the daemon's ``listening on`` line. The D-Bus session's services write to the same pipe
    (at-spi2-registryd prints "SpiRegistry daemon is running with well-known name - org.a11y.atspi.Registry"), so
    the other lines are skipped.

    Raises:
        AssertionError: no such line within 4 × WAIT seconds (with the other lines and the daemon's stderr).
    """
    deadline = time.monotonic() + 4 * WAIT
    others = []
    while line := read_line_within(stdout, max(0.0, deadline - time.monotonic())):
        if match := re.fullmatch(r"gimp-inpaint daemon listening on (ws://127\.0\.0\.1:\d+)\n", line):
            return match[1]
        others.append(line)
    raise AssertionError(("no listening line", others, stderr.read_text()[-2000:]))


def engine_detail(url: str, token: str, name: str) -> str:
    with InpaintClient.connect(url, token, "pytest") as client:
        return next(engine.detail for engine in client.welcome.engines if engine.name == name)


def wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + 4 * WAIT
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[str]:
    """Xvfb with trayer docked at the top right; yields the display."""
    try:
        ensure_host_tools({"Xvfb": "xvfb", "xdotool": "xdotool", "trayer": "trayer", "dbus-run-session": "dbus-daemon"})
        with xvfb(*SCREEN) as display:
            tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width",
                                     str(TRAY_WIDTH), "--heighttype", "pixel", "--height", str(TRAY_HEIGHT),
                                     "--transparent", "false", "--SetDockType", "true"],
                                    env={**os.environ, "DISPLAY": display}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                yield display
            finally:
                tray.terminate()
                tray.wait(WAIT)
    except GimpUnavailable as exc:
        pytest.skip(str(exc))


def test_the_menu_on_a_real_tray(tmp_path: Path, desktop: str, tiny_inpaint_model: Path) -> None:
    gi_path = system_gi(tmp_path)
    config = tmp_path / "config"
    config.mkdir()
    (config / "daemon.toml").write_text(f'[models.tiny-sd]\nmodel = "{tiny_inpaint_model}"\n')
    stderr = tmp_path / "daemon.stderr"
    with stderr.open("w") as errors:  # the daemon's log and GTK's warnings: a pipe nobody reads would fill up
        daemon = subprocess.Popen(
            ["dbus-run-session", "--", sys.executable, "-m", "gimp_inpaint.daemon", "--port", "0", "--config-dir",
             str(config), "--device", "cpu"], stdout=subprocess.PIPE, stderr=errors, text=True, process_group=0,
            env={**os.environ, "DISPLAY": desktop, "PYTHONPATH": str(gi_path), "PYSTRAY_BACKEND": "gtk",
                 "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    try:
        assert daemon.stdout is not None
        url, token = listening_url(daemon.stdout, stderr), (config / "token").read_text().strip()
        icon = find_icon(desktop)

        # Load: the first item that takes a click is the model's, its submenu's first item Load
        choose(desktop, icon, "Down", "Right")
        wait_for(lambda: engine_detail(url, token, "tiny-sd").startswith("loaded"), "the tray's Load")
        menu = open_menu(desktop, icon)  # tiny-sd — loaded, the picture for the README
        xdotool(desktop, "key", "Escape")
        rows, columns = np.nonzero(np.any(menu[TRAY_HEIGHT:] != 0, axis=-1))  # the menu on Xvfb's black
        assert columns.max() - columns.min() > 100 and rows.max() > 150, "the menu is smaller than its items"
        picture = menu[:TRAY_HEIGHT + int(rows.max()) + 8, max(0, int(columns.min()) - 8):]
        Image.fromarray(picture).save(tmp_path / "tray-menu.png")
        if os.environ.get("GIMP_INPAINT_WRITE_DOCS") == "1":
            Image.fromarray(picture).save(REPO / "docs" / "images" / "tray-menu.png", optimize=True)

        choose(desktop, icon, "Down", "Right", "Down")  # Unload
        wait_for(lambda: engine_detail(url, token, "tiny-sd") == "loads on first use", "the tray's Unload")

        choose(desktop, icon, "Down", "Down", "Down")  # Pause: after the two models' entries
        with InpaintClient.connect(url, token, "pytest") as client:
            deadline = time.monotonic() + WAIT
            while True:  # the click is on its way: until it refuses
                try:
                    client.inpaint(make_request("opencv"), lambda step, total, stage: None)
                except DaemonError as exc:
                    assert exc.code is ErrorCode.PAUSED, exc
                    break
                assert time.monotonic() < deadline, "Pause in the tray menu did not pause the daemon"
                time.sleep(0.3)
        choose(desktop, icon, "Down", "Down", "Down")  # the same item, now Resume
        wait_for(lambda: fills(url, token), "a fill after Resume")

        choose(desktop, icon, "Up")  # the last item: Quit
        assert daemon.wait(WAIT) == 0
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, 9)
            daemon.wait()
        daemon.stdout.close()
    log = (config / "daemon.log").read_text()
    for line in ("tray: loading tiny-sd", "tiny-sd loaded", "tiny-sd unloaded", "paused: new jobs are refused",
                 "resumed: new jobs are taken again", "Quit chosen in the tray menu"):
        assert line in log, line


def fills(url: str, token: str) -> bool:
    """Whether an opencv fill goes through (False while the daemon refuses it as paused)."""
    with InpaintClient.connect(url, token, "pytest") as client:
        try:
            return len(client.inpaint(make_request("opencv"), lambda step, total, stage: None)) == 1
        except DaemonError as exc:
            if exc.code is ErrorCode.PAUSED:
                return False
            raise

