"""The GUI test's driver of the plug-in's own windows, loaded inside the plug-in's process through
``plugin_gimp.dialog.UI_TEST_HOOK`` (``GIMP_INPAINT_UI_TEST=/mnt/batch/ui_driver.py``).

GIMP starts the plug-in anew for each call, so each call loads this file once: :func:`dialog_opened` gets the live
``FillDialog`` and :func:`progress_opened` the ``ProgressWindow``. Each call's script is the next entry of
``ui-job.json``'s ``"calls"`` in the I/O folder (a file ``ui-calls`` counts the calls made): ``{"dialog": [actions],
"progress": [actions]}``, each action a list, run in order from a GLib timeout every 0.1 s:

- ``["wait_answered"]``: until the daemon answered the dialog (or failed to);
- ``["wait_fraction", f]``: until the progress bar is past ``f``; ``["wait_preview"]``: until a preview shows;
- ``["engine", name]``, ``["set", argument, value]``, ``["expand"]``: as the user would;
- ``["record", name]``: write the window's ``state()`` to ``<name>.json``; ``["screenshot", name]``: ``<name>.png``
  (both in the I/O folder, after the window had 0.5 s to draw);
- ``["ok"]``, ``["cancel"]``: press the dialog's button, or the progress window's Cancel.

A failing action writes ``ui-error.txt`` and presses Cancel, so that GIMP never waits on a dialog nobody closes.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gi.repository import GLib

IO = Path("/mnt/io")
"""The test's I/O folder inside the chroot (``gimp_harness.IO_MOUNT``; this file runs in the plug-in, which has no
``tests`` folder on its path)."""

SETTLE = 0.5
"""Seconds a window gets to draw after a change, before a screenshot or a record."""

TIMEOUT = 120.0
"""Seconds an action may wait before the script gives up."""


def _call_script() -> dict:
    """This call's entry of ``ui-job.json`` (the count in ``ui-calls`` goes up by one per plug-in process)."""
    counter = IO / "ui-calls"
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    return json.loads((IO / "ui-job.json").read_text())["calls"][count]


_SCRIPT: dict | None = None


def _script() -> dict:
    global _SCRIPT
    if _SCRIPT is None:
        _SCRIPT = _call_script()
    return _SCRIPT


class _Runner:
    """Runs one window's actions from a GLib timeout."""

    def __init__(self, window: Any, actions: list[list[Any]], abort: Callable[[], None]) -> None:
        self.window = window
        self.actions = list(actions)
        self.abort = abort
        self.started = time.monotonic()
        self.ready_at = time.monotonic() + SETTLE
        GLib.timeout_add(100, self.tick)

    def tick(self) -> bool:
        try:
            while self.actions:
                if time.monotonic() < self.ready_at:
                    return True
                if not self.step(self.actions[0]):
                    if time.monotonic() - self.started > TIMEOUT:
                        raise TimeoutError(f"waited {TIMEOUT:.0f} s for {self.actions[0]}")
                    return True
                self.actions.pop(0)
                self.started = time.monotonic()
        except Exception:
            (IO / "ui-error.txt").write_text(traceback.format_exc())
            self.abort()
        return False

    def step(self, action: list[Any]) -> bool:
        """Do ``action``; False while it waits."""
        kind, *args = action
        window = self.window
        if kind == "wait_answered":
            return window.state()["answered"]
        if kind == "wait_fraction":
            return window.state()["fraction"] > args[0]
        if kind == "wait_preview":
            return window.state()["preview_step"] is not None
        if kind == "record":
            (IO / f"{args[0]}.json").write_text(json.dumps({**window.state(), "time": time.time()}))
        elif kind == "screenshot":
            window.screenshot(str(IO / f"{args[0]}.png"))
        elif kind == "engine":
            window.select_engine(args[0])
        elif kind == "set":
            window.set_value(args[0], args[1])
        elif kind == "expand":
            window.expand_advanced(True)
        elif kind == "ok":
            window.respond(True)
        elif kind == "cancel" and hasattr(window, "cancel"):  # the progress window's button
            window.cancel()
        elif kind == "cancel":  # the dialog's
            window.respond(False)
        else:
            raise ValueError(f"unknown action {action}")
        self.ready_at = time.monotonic() + SETTLE
        return True


def dialog_opened(dialog: Any) -> None:
    """The hook ``plugin_gimp.dialog.FillDialog.run`` calls once the dialog shows."""
    _Runner(dialog, _script().get("dialog", []), lambda: dialog.respond(False))


def progress_opened(window: Any) -> None:
    """The hook ``plugin_gimp.dialog.ProgressWindow`` calls once it shows."""
    _Runner(window, _script().get("progress", []), window.cancel)
