"""A pystray backend for tests without a display: pystray's own ``Icon`` base class (its ``run(setup)`` with the
setup thread, its menus, ``update_menu``) over a loop that only waits, recording what the daemon asks of it.

In the test process, :func:`install` (pystray's ``dummy`` backend, then :class:`FakeIcon` as ``pystray.Icon``).
In a daemon started as ``python tests/fake_tray.py DAEMON-ARGS…``, the icon also reads commands from stdin once its
loop runs: ``menu`` prints the menu's texts as one JSON line (``[text, enabled, [submenu…]]`` per item),
``activate TEXT`` runs the item of that text (as a click does) and prints ``activated TEXT``; it prints ``icon loop
on THREAD`` when its loop starts and ``serving on THREAD`` from the daemon's listening callback.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, ClassVar


def install() -> type:
    """Import pystray with its ``dummy`` backend (no display needed) and make :class:`FakeIcon` its ``Icon``;
    returns that class. Forgets any pystray imported before, so call it before the code under test imports it."""
    os.environ["PYSTRAY_BACKEND"] = "dummy"
    for name in [name for name in sys.modules if name == "pystray" or name.startswith("pystray.")]:
        del sys.modules[name]
    import pystray
    from pystray import _base

    class FakeIcon(_base.Icon):  # type: ignore[misc]
        """Records the thread its loop runs on, visibility, titles, menu updates and notifications."""

        HAS_MENU = True
        HAS_NOTIFICATION = True
        made: ClassVar[list[FakeIcon]] = []
        fail_before_ready = False
        """Class switch: the loop raises before it is ready (as GTK's does without a D-Bus session bus)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.run_thread = ""
            self.shown = False
            self.titles: list[str] = []
            self.menu_updates = 0
            self.notices: list[tuple[str, str]] = []
            self.notified = threading.Event()
            self.stopped = threading.Event()
            FakeIcon.made.append(self)

        def _run(self) -> None:
            self.run_thread = threading.current_thread().name
            if self.fail_before_ready:
                raise RuntimeError("no session bus")
            self._mark_ready()
            if os.environ.get("FAKE_TRAY_COMMANDS"):
                print(f"icon loop on {self.run_thread}", flush=True)
                threading.Thread(target=self._commands, daemon=True).start()
            self.stopped.wait()

        def _stop(self) -> None:
            self.stopped.set()

        def _show(self) -> None:
            self.shown = True

        def _hide(self) -> None:
            self.shown = False

        def _update_icon(self) -> None:
            self._icon_valid = True

        def _update_title(self) -> None:
            self.titles.append(self.title)

        def _update_menu(self) -> None:
            self.menu_updates += 1

        def _notify(self, message: str, title: str | None = None) -> None:
            self.notices.append((title or self.title, message))
            self.notified.set()

        def items(self, menu: Any = None) -> list[Any]:
            """The menu's items as ``[text, enabled, submenu items]`` (texts read now, as a backend does)."""
            return [[item.text, item.enabled, self.items(item.submenu) if item.submenu else []]
                    for item in (menu if menu is not None else self.menu).items if item is not pystray.Menu.SEPARATOR]

        def activate(self, text: str, menu: Any = None) -> bool:
            """Run the first enabled item called ``text`` (submenus searched too), as a click does."""
            for item in (menu if menu is not None else self.menu).items:
                if item is pystray.Menu.SEPARATOR:
                    continue
                if item.submenu and self.activate(text, item.submenu):
                    return True
                if not item.submenu and item.text == text and item.enabled:
                    item(self)
                    self.update_menu()
                    return True
            return False

        def _commands(self) -> None:
            for line in sys.stdin:
                command, _, argument = line.strip().partition(" ")
                if command == "menu":
                    print(json.dumps(self.items()), flush=True)
                elif command == "activate":
                    print(("activated " if self.activate(argument) else "no item ") + argument, flush=True)

    pystray.Icon = FakeIcon
    return FakeIcon


if __name__ == "__main__":  # the daemon with this backend: python tests/fake_tray.py DAEMON-ARGS…
    os.environ["FAKE_TRAY_COMMANDS"] = "1"
    install()
    from gimp_inpaint.daemon import __main__ as daemon_main

    listening = daemon_main.DaemonServer.serve

    async def serve(self: Any, on_listening: Any = None) -> None:
        def told(url: str) -> None:
            on_listening(url)
            print(f"serving on {threading.current_thread().name}", flush=True)
        await listening(self, told)

    daemon_main.DaemonServer.serve = serve  # type: ignore[method-assign]
    sys.exit(daemon_main.main(sys.argv[1:]))
