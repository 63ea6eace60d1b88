"""daemon.tray: icon drawing, tooltip, and the Tray's use of pystray (a recording stand-in; no desktop here)."""

from __future__ import annotations

import logging
import sys
import threading
import types
from typing import Any

import pytest
from gimp_inpaint.daemon.tray import ICON_SIZE, STATE_COLOURS, TITLE_LIMIT, Tray, draw_icon, status_title


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
    long = status_title("error", "x" * 500, "ws://127.0.0.1:7869")
    assert len(long) == TITLE_LIMIT and long.endswith("…") and long.startswith("gimp-inpaint: error — xxx")


class FakeIcon:
    """Records what Tray does with a pystray.Icon; run() blocks until stop() like the real one."""

    def __init__(self, name: str, icon: Any, title: str, menu: Any) -> None:
        self.name, self.icon, self.title, self.menu = name, icon, title, menu
        self.stopped = threading.Event()
        self.running = threading.Event()

    def run(self) -> None:
        self.running.set()
        self.stopped.wait(10)

    def stop(self) -> None:
        self.stopped.set()


def test_tray_drives_pystray(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(Icon=FakeIcon, Menu=lambda *items: list(items),
                                 MenuItem=lambda text, action: (text, action))
    monkeypatch.setitem(sys.modules, "pystray", fake)
    quits: list[bool] = []
    tray = Tray(on_quit=lambda: quits.append(True))
    assert tray.start("ws://127.0.0.1:1234")
    icon: FakeIcon = tray._icon
    assert icon.running.wait(10)  # Icon.run runs in its own thread
    assert icon.title == "gimp-inpaint: idle (ws://127.0.0.1:1234)"
    tray.set_status("busy", "opencv: job 1")
    assert icon.title == "gimp-inpaint: busy — opencv: job 1 (ws://127.0.0.1:1234)"
    assert icon.icon.getpixel((ICON_SIZE // 2, ICON_SIZE // 2))[:3] == STATE_COLOURS["busy"]
    ((text, action),) = icon.menu
    assert text == "Quit"
    action()
    assert quits == [True]
    tray.stop()
    assert icon.stopped.is_set()
    tray.set_status("idle", "")  # harmless once stopped


def test_a_status_set_before_the_icon_starts_is_shown_when_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon sets its first status (warming up, with a preload) as it listens, before the tray starts."""
    fake = types.SimpleNamespace(Icon=FakeIcon, Menu=lambda *items: list(items),
                                 MenuItem=lambda text, action: (text, action))
    monkeypatch.setitem(sys.modules, "pystray", fake)
    tray = Tray(on_quit=lambda: None)
    tray.set_status("busy", "warming up: loading sd15-inpaint")
    assert tray.start("ws://127.0.0.1:1234")
    icon: FakeIcon = tray._icon
    assert icon.title == "gimp-inpaint: busy — warming up: loading sd15-inpaint (ws://127.0.0.1:1234)"
    assert icon.icon.getpixel((ICON_SIZE // 2, ICON_SIZE // 2))[:3] == STATE_COLOURS["busy"]
    tray.set_status("error", "warming up sd15-inpaint failed: no such folder")
    assert icon.title.startswith("gimp-inpaint: error — warming up sd15-inpaint failed")
    tray.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland display variables are Linux's")
def test_no_display_means_no_tray_and_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND"):
        monkeypatch.delenv(variable, raising=False)
    for module in [name for name in sys.modules if name == "pystray" or name.startswith("pystray.")]:
        monkeypatch.delitem(sys.modules, module)
    tray = Tray(on_quit=lambda: None)
    with caplog.at_level(logging.WARNING, logger="gimp_inpaint.daemon.tray"):
        assert not tray.start("ws://127.0.0.1:7869")
    assert "no tray icon" in caplog.text
    tray.set_status("busy", "still fine")
    tray.stop()


def test_no_tray_on_macos(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """pystray must run on the main thread on macOS, which the daemon's event loop uses: no icon there, and why."""
    icons: list[FakeIcon] = []

    def record(*args: Any, **kwargs: Any) -> FakeIcon:
        icons.append(FakeIcon(*args, **kwargs))
        return icons[-1]

    fake = types.SimpleNamespace(Icon=record, Menu=lambda *items: list(items),
                                 MenuItem=lambda text, action: (text, action))
    monkeypatch.setitem(sys.modules, "pystray", fake)
    monkeypatch.setattr("gimp_inpaint.daemon.tray.sys.platform", "darwin")
    tray = Tray(on_quit=lambda: None)
    with caplog.at_level(logging.INFO, logger="gimp_inpaint.daemon.tray"):
        assert not tray.start("ws://127.0.0.1:7869")
    assert icons == []  # pystray was never asked for an icon
    assert "no tray icon on macOS" in caplog.text and "main thread" in caplog.text
    tray.set_status("busy", "still fine")
    tray.stop()
