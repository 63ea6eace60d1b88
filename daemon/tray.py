"""The daemon's system-tray icon (pystray): a coloured dot for idle / busy / error, a status tooltip, Quit.

Busy covers a job and the warm-up of ``daemon.toml``'s ``preload`` (tooltip ``busy — warming up: loading NAME``).

Optional by nature: without a display (SSH, CI, a headless server) importing or starting pystray
fails, on X11 with ``Xlib.error.DisplayNameError`` rather than ImportError, so :meth:`Tray.start`
catches every exception, logs a warning and the daemon keeps serving without an icon.

On macOS there is no icon: pystray's ``Icon.run`` must be called from the main thread there (its
documentation, "Creating a system tray icon": the OSX implementation needs the main thread's
application run loop), and that thread runs the daemon's asyncio loop. Giving it to the icon would
mean restructuring the daemon around pystray, so :meth:`Tray.start` logs why and the daemon serves
without one; quit it with Ctrl+C or ``kill``.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

ICON_SIZE = 64
"""Side of the drawn icon in pixels (the desktop scales it)."""

STATE_COLOURS: dict[str, tuple[int, int, int]] = {
    "idle": (46, 160, 67),    # green: ready
    "busy": (230, 160, 0),    # amber: a job is running
    "error": (200, 40, 40),   # red: the last job failed
}
"""RGB fill of the icon's dot per daemon state."""

TITLE_LIMIT = 120
"""Longest tooltip in characters (Windows truncates at 128)."""


def draw_icon(state: str) -> Image.Image:
    """The tray image for ``state`` (a key of :data:`STATE_COLOURS`).

    Returns:
        An :data:`ICON_SIZE`² RGBA Pillow image: a filled dot in the state's colour with a white
        ring, on a transparent background.

    Raises:
        KeyError: unknown state.
    """
    image = Image.new("RGBA", (ICON_SIZE, ICON_SIZE), (0, 0, 0, 0))
    margin = ICON_SIZE // 16
    ImageDraw.Draw(image).ellipse((margin, margin, ICON_SIZE - 1 - margin, ICON_SIZE - 1 - margin),
                                  fill=(*STATE_COLOURS[state], 255), outline=(255, 255, 255, 255),
                                  width=max(1, ICON_SIZE // 16))
    return image


def status_title(state: str, text: str, url: str) -> str:
    """The tooltip: ``"gimp-inpaint: <state> — <text> (<url>)"``, cut to :data:`TITLE_LIMIT` characters."""
    title = f"gimp-inpaint: {state}" + (f" — {text}" if text else "") + f" ({url})"
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


class Tray:
    """The tray icon, run by ``pystray.Icon.run`` in a daemon thread (Linux, Windows; never on macOS).

    Args:
        on_quit: called (from pystray's thread) when the user picks Quit; it must be thread-safe,
            e.g. :meth:`daemon.server.DaemonServer.stop`.
    """

    def __init__(self, on_quit: Callable[[], None]) -> None:
        self.url = ""
        self.state, self.text = "idle", ""
        """The last status (:meth:`set_status`), shown by an icon started later too."""
        self._on_quit = on_quit
        self._icon: Any = None

    def start(self, url: str) -> bool:
        """Show the icon for the daemon at ``url`` (shown in the tooltip), in the last status set.

        Returns:
            True when the icon runs; False (after logging why) on macOS, or when no tray is possible here.
        """
        self.url = url
        if sys.platform == "darwin":
            log.info("no tray icon on macOS: pystray must run on the main thread there, which serves clients; "
                     "stop the daemon with Ctrl+C or kill")
            return False
        try:
            import pystray

            self._icon = pystray.Icon("gimp-inpaint", icon=draw_icon(self.state),
                                      title=status_title(self.state, self.text, self.url),
                                      menu=pystray.Menu(pystray.MenuItem("Quit", self._quit)))
            threading.Thread(target=self._icon.run, name="gimp-inpaint-tray", daemon=True).start()
        except Exception as exc:  # no display: Xlib.error.DisplayNameError, missing backends, D-Bus errors …
            log.warning("no tray icon (%s: %s); the daemon keeps serving", type(exc).__name__, exc)
            self._icon = None
            return False
        return True

    def set_status(self, state: str, text: str) -> None:
        """Show ``state`` (``idle``/``busy``/``error``) and ``text`` (a :data:`daemon.server.StatusListener`); before
        :meth:`start`, they are kept for it."""
        self.state, self.text = state, text
        if self._icon is not None:
            self._icon.icon = draw_icon(state)
            self._icon.title = status_title(state, text, self.url)

    def stop(self) -> None:
        """Remove the icon (no-op if it was never shown)."""
        if self._icon is not None:
            try:
                self._icon.stop()
            except Exception as exc:
                log.warning("could not remove the tray icon: %s", exc)
            self._icon = None

    def _quit(self) -> None:
        log.info("Quit chosen in the tray menu")
        self._on_quit()
