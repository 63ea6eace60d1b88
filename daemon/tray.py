"""The daemon's system-tray icon and control panel (pystray): a coloured dot for idle / busy / error, a status
tooltip, and a menu made from :class:`daemon.control.Controller`::

    Running sd15-inpaint, job '1a2b3c4d'…; 2 waiting      (the status line, greyed)
    ─────────
    Models                                                 (a heading, greyed)
    sd15-inpaint — loaded             ▸ Load / Unload
    migan — on disk                   ▸ Load / Unload
    opencv — built in                                      (greyed: nothing to load)
    ─────────
    Pause                                                  (Resume while paused)
    Open Log
    Open Config Folder
    ─────────
    Quit

Busy covers a job and the warm-up of ``daemon.toml``'s ``preload`` (tooltip ``busy — warming up: loading NAME``).
A job of :data:`daemon.control.NOTIFY_AFTER_SECONDS` or more ends with a desktop notification where the backend
has them (``Icon.HAS_NOTIFICATION``: the GTK and AppIndicator backends through the freedesktop notification service,
macOS, Windows; not pystray's bare X11 backend).

Threads: the icon owns the main thread on every platform and the daemon's event loop runs in a thread beside it
(:meth:`Tray.run`). pystray needs the main thread on macOS (``Icon.run``: "It *must* be called from the main
thread"; AppKit's run loop is the main thread's); doing the same everywhere means the structure macOS runs is the
one every Linux run and test exercises. Without an icon (``--no-tray``, no display) the event loop keeps the main
thread, as before. SIGTERM and SIGINT reach the daemon through :func:`stop_on_signals` whatever loop holds the main
thread.

Optional by nature: without a display (SSH, CI, a headless server) importing or starting pystray fails, on X11
with ``Xlib.error.DisplayNameError`` rather than ImportError, so :meth:`Tray.create` catches every exception, logs a
warning and the daemon serves without an icon. On Linux the menu needs PyGObject (pystray's AppIndicator or GTK
backend) in the daemon's Python; with only python-xlib pystray falls back to its X11 backend, which shows the icon
and tooltip but no menu (``Icon.HAS_MENU`` False), and the log says so.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from PIL import Image, ImageDraw

from .control import Controller, job_end_notice
from .engines.base import ModelState
from .server import Activity

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

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals that stop the daemon (:func:`stop_on_signals`)."""


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
    """The tooltip: ``"gimp-inpaint: <state> — <text> (<url>)"`` (no ``(<url>)`` before the daemon listens), cut to
    :data:`TITLE_LIMIT` characters."""
    title = f"gimp-inpaint: {state}" + (f" — {text}" if text else "") + (f" ({url})" if url else "")
    return title if len(title) <= TITLE_LIMIT else title[: TITLE_LIMIT - 1] + "…"


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """While the block runs, SIGINT (Ctrl+C) and SIGTERM call ``stop()`` (thread-safe, e.g.
    :meth:`daemon.server.DaemonServer.stop`) from a thread of their own, whichever loop holds the main thread. Enter
    it on the main thread.

    A Python signal handler runs only when the main thread next runs Python code, which GTK's and AppKit's loops do
    not do for a signal, and a ``pthread_sigmask`` would not cover the threads NumPy's and OpenCV's libraries started
    at import. So the handlers here only make the signals caught (any thread may take one; CPython's C-level handler
    then writes its number to the wakeup file, ``signal.set_wakeup_fd``), and a thread reading the other end of that
    socket pair calls ``stop()``. Leaving the block restores the handlers and the wakeup file and ends the thread.

    A backend that takes SIGINT back keeps it: pystray's GTK backend restores its default action when its loop
    starts (Ctrl+C then ends the process at once, as pystray means it to), its macOS one terminates the application;
    SIGTERM, what a service manager sends, always stops the daemon cleanly.
    """
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, lambda number, frame: stop()) for signum in SIGNALS}

    def wait() -> None:
        while numbers := reader.recv(64):  # b"" once the writer is closed
            for number in numbers:
                if number in SIGNALS:
                    log.info("%s received: stopping", signal.Signals(number).name)
                    stop()

    waiter = threading.Thread(target=wait, name="gimp-inpaint-signals", daemon=True)
    waiter.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        writer.close()
        waiter.join()
        reader.close()


class Tray:
    """The tray icon over ``control``: :meth:`create` it, then :meth:`run` it on the main thread with the daemon
    beside it.

    The status (:meth:`set_status`), the activity (:meth:`set_activity`), :meth:`refresh` and :meth:`notify` may be
    called from any thread, before the icon exists too (what they set is shown when it does).
    """

    def __init__(self, control: Controller) -> None:
        self.control = control
        self.url = ""
        self.state, self.text = "idle", "starting"
        """The last status (:meth:`set_status`), shown by an icon made later too."""
        self._icon: Any = None

    def create(self) -> bool:
        """Make the pystray icon and its menu (call on the main thread; :meth:`run` shows it).

        Returns:
            True when there is an icon; False, after logging why, when no tray is possible here.
        """
        try:
            import pystray

            self._icon = pystray.Icon("gimp-inpaint", icon=draw_icon(self.state),
                                      title=status_title(self.state, self.text, self.url),
                                      menu=pystray.Menu(*self._menu(pystray)))
        except Exception as exc:  # no display: Xlib.error.DisplayNameError, missing backends, D-Bus errors …
            log.warning("no tray icon (%s: %s); the daemon keeps serving", type(exc).__name__, exc)
            self._icon = None
            return False
        if not self._icon.HAS_MENU:
            log.warning("the tray icon has no menu: pystray's %s backend has none; install PyGObject (Debian and "
                        "Ubuntu: python3-gi with gir1.2-gtk-3.0) for the daemon's Python to get one",
                        type(self._icon).__module__.rsplit("_", 1)[-1])
        return True

    def run(self, serve: Callable[[], None]) -> None:
        """Run the icon's loop on this thread (the main one) and ``serve()`` (the daemon's event loop, until it
        stops) on a thread beside it, started once the icon's loop runs; return when ``serve`` has returned and the
        icon is gone. An icon loop that fails is logged and ``serve`` runs on without it.

        Raises:
            RuntimeError: :meth:`create` made no icon.
            BaseException: whatever ``serve`` raised (an ``OSError`` when the daemon cannot listen).
        """
        icon = self._icon
        if icon is None:
            raise RuntimeError("Tray.run needs the icon of a successful Tray.create")
        failures: list[BaseException] = []
        started = threading.Lock()

        def serving() -> None:
            try:
                serve()
            except BaseException as exc:  # handed to the main thread, raised there
                failures.append(exc)
            finally:
                self.stop()  # ends the icon's loop

        server = threading.Thread(target=serving, name="gimp-inpaint-server")

        def start_serving() -> None:  # once, from pystray's setup thread or from here
            if started.acquire(blocking=False):
                server.start()

        def setup(icon: Any) -> None:  # pystray's setup thread, once the icon's loop runs
            try:
                icon.visible = True
            except Exception as exc:
                log.warning("the tray icon cannot be shown (%s: %s); the daemon keeps serving", type(exc).__name__,
                            exc)
            finally:
                start_serving()

        try:
            icon.run(setup)
        except Exception as exc:  # e.g. the GTK backend without a D-Bus session bus, or its clean-up failing
            log.warning("the tray icon's loop failed (%s: %s); the daemon keeps serving", type(exc).__name__, exc)
            if not started.locked():
                # pystray's run starts its setup thread (not a daemon thread) waiting for the backend's
                # _mark_ready, which a loop that failed first never called: the process could never exit.
                # _mark_ready lets that thread run setup, which starts the server.
                with contextlib.suppress(Exception):
                    icon._mark_ready()
        start_serving()  # in case setup did not run at all
        while server.is_alive():
            server.join(0.5)  # not one long join: a Windows signal handler runs between two
        if failures:
            raise failures[0]

    def show_url(self, url: str) -> None:
        """The daemon listens at ``url``: the tooltip says so."""
        self.url = url
        self.refresh()

    def set_status(self, state: str, text: str) -> None:
        """Show ``state`` (``idle``/``busy``/``error``) and ``text`` (a :data:`daemon.server.StatusListener`)."""
        self.state, self.text = state, text
        icon = self._icon
        if icon is not None:
            icon.icon = draw_icon(state)
        self.refresh()

    def set_activity(self, activity: Activity) -> None:
        """The daemon's :class:`daemon.server.Activity` changed (an :data:`daemon.server.ActivityListener`): update
        the menu, and announce a job that ended after :data:`daemon.control.NOTIFY_AFTER_SECONDS`."""
        self.refresh()
        notice = job_end_notice(activity.ended) if activity.ended is not None else None
        if notice is not None:
            self.notify(*notice)

    def refresh(self) -> None:
        """Redraw the tooltip and the menu's texts from the last status and :attr:`control`."""
        icon = self._icon
        if icon is not None:
            icon.title = status_title(self.state, self.text, self.url)
            icon.update_menu()

    def notify(self, title: str, message: str) -> None:
        """Show a desktop notification where the backend has them (``Icon.HAS_NOTIFICATION``), else nothing; on a
        thread of its own (macOS's runs ``osascript`` and waits for it)."""
        icon = self._icon
        if icon is None or not icon.HAS_NOTIFICATION:
            return

        def show() -> None:
            try:
                icon.notify(message, title)
            except Exception as exc:
                log.info("no desktop notification (%s: %s)", type(exc).__name__, exc)

        threading.Thread(target=show, name="gimp-inpaint-notify", daemon=True).start()

    def stop(self) -> None:
        """Remove the icon and end its loop (no-op if there is none); thread-safe."""
        icon, self._icon = self._icon, None
        if icon is not None:
            try:
                icon.stop()
            except Exception as exc:
                log.warning("could not remove the tray icon: %s", exc)

    def _menu(self, pystray: Any) -> list[Any]:
        """The menu's items (:mod:`pystray` passed in: it is imported only by :meth:`create`). Texts and enabled
        states are functions of :attr:`control`, read again on every ``update_menu``."""
        item, separator, control = pystray.MenuItem, pystray.Menu.SEPARATOR, self.control

        def act(function: Callable[[], object]) -> Callable[[], None]:  # pystray calls an action by its arity
            def action() -> None:
                try:
                    function()
                except Exception:  # the daemon not serving yet or any more: nothing for the menu to do
                    log.exception("the tray menu's action failed")
            return action

        def model_item(name: str) -> Any:
            label = lambda _: control.model(name).label  # noqa: E731 - pystray's text callables take the item
            if not (entry := control.model(name)).here or entry.state is ModelState.BUILT_IN:
                return item(label, None, enabled=False)
            return item(label, pystray.Menu(
                item("Load", act(functools.partial(control.load, name)),
                     enabled=lambda _: control.model(name).can_load),
                item("Unload", act(functools.partial(control.unload, name)),
                     enabled=lambda _: control.model(name).can_unload)))

        return [item(lambda _: control.status(), None, enabled=False),
                separator,
                item("Models", None, enabled=False),
                *(model_item(entry.name) for entry in control.models()),
                separator,
                item(lambda _: "Resume" if control.paused else "Pause", act(control.toggle_pause)),
                item("Open Log", act(control.open_log)),
                item("Open Config Folder", act(control.open_config_folder)),
                separator,
                item("Quit", act(control.quit))]
