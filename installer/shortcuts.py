"""Edit GIMP 3's ``shortcutsrc`` text: add or remove one action's keyboard shortcut (pure functions).

Format (GIMP 3.0's writer and parser, ``app/menus/shortcuts-rc.c``; verified with GIMP 3.0.4)::

    (file-version 1)
    (action "python-fu-gimp-inpaint" "<Primary><Alt>i")
    # (action "edit-undo" "<Primary>z")      ← GIMP writes the defaults commented out

The action of a plug-in procedure is the procedure's name. Accelerators use GTK syntax: modifiers
``<Primary>`` (Ctrl; ``<Control>``/``<Ctrl>`` are the same), ``<Shift>``, ``<Alt>``, then a key name.
A user's own lines always win: an existing line for the action, or another action on the same
accelerator, makes :func:`add_shortcut` leave the file alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADER = "(file-version 1)"
"""First line of GIMP 3's ``shortcutsrc``; written when the installer creates the file."""

_ACTION = re.compile(r'^\s*\(action\s+"(?P<name>[^"]*)"(?P<accels>(?:\s+"[^"]*")*)\s*\)\s*$')
"""One ``(action "NAME" "ACCEL"…)`` line of ``shortcutsrc``."""
_ACCELERATOR = re.compile(r"^(?P<modifiers>(?:<[A-Za-z0-9]+>)*)(?P<key>[A-Za-z0-9_]+)$")
"""A GTK accelerator string: ``<Modifier>``s then one key name, e.g. ``<Primary><Alt>i``."""
_MODIFIERS = {"primary", "control", "ctrl", "shift", "alt", "mod1", "super", "meta", "hyper"}
"""Modifier names GTK's ``gtk_accelerator_parse`` accepts (case-insensitive)."""
_MODIFIER_ALIASES = {"control": "primary", "ctrl": "primary", "mod1": "alt"}
"""Modifier names GTK treats as the same modifier, mapped to one spelling for comparing accelerators."""


@dataclass(frozen=True)
class ShortcutChange:
    """Outcome of :func:`add_shortcut` / :func:`remove_shortcut`.

    Attributes:
        text: the new file contents (the old ones when nothing changed).
        changed: whether ``text`` differs, i.e. the line was added or removed.
        detail: for the user: what was done, or why nothing was.
    """

    text: str
    changed: bool
    detail: str


def _key(accelerator: str) -> tuple[frozenset[str], str]:
    """Canonical form of a GTK accelerator: (modifiers, lower-case key); ``<Control>i`` == ``<Primary>I``."""
    modifiers = re.findall(r"<([^>]+)>", accelerator)
    key = re.sub(r"<[^>]+>", "", accelerator)
    return frozenset(_MODIFIER_ALIASES.get(m.lower(), m.lower()) for m in modifiers), key.lower()


def check_accelerator(accelerator: str) -> str:
    """Return ``accelerator`` if it looks like a GTK accelerator: known modifiers, then a key name
    (``<Primary><Alt>i``, ``<Shift>F9``, ``<Primary>slash``).

    Raises:
        ValueError: it does not.
    """
    match = _ACCELERATOR.match(accelerator)
    if not match or not set(re.findall(r"<([^>]+)>", match["modifiers"].lower())) <= _MODIFIERS:
        raise ValueError(f"“{accelerator}” is not a GTK accelerator such as <Primary><Alt>i or <Shift>F9")
    return accelerator


def _actions(text: str) -> list[tuple[int, str, list[str]]]:
    """``(line index, action, accelerators)`` of every uncommented action line."""
    found = []
    for index, line in enumerate(text.splitlines()):
        match = _ACTION.match(line)
        if match:
            found.append((index, match["name"], re.findall(r'"([^"]*)"', match["accels"])))
    return found


def action_line(action: str, accelerator: str) -> str:
    """The ``shortcutsrc`` line binding ``accelerator`` to ``action``."""
    return f'(action "{action}" "{accelerator}")'


def add_shortcut(text: str, action: str, accelerator: str) -> ShortcutChange:
    """Bind ``accelerator`` to ``action`` in the ``shortcutsrc`` contents ``text`` (``""`` for a new file).

    Nothing changes when an uncommented line already sets ``action``'s shortcuts (the user's choice,
    or an earlier install), or when another action already uses ``accelerator``. Otherwise the line is
    appended (after a ``(file-version 1)`` header when ``text`` is empty).

    Raises:
        ValueError: ``accelerator`` is malformed (:func:`check_accelerator`).
    """
    check_accelerator(accelerator)
    wanted = _key(accelerator)
    for _, name, accelerators in _actions(text):
        if name == action:
            current = ", ".join(accelerators) or "no shortcut"
            return ShortcutChange(text, False, f"kept the existing shortcut of {action} ({current})")
        if any(_key(a) == wanted for a in accelerators):
            return ShortcutChange(text, False, f"skipped: {accelerator} is already used by {name}")
    if not text.strip():
        text = HEADER + "\n"
    elif not text.endswith("\n"):
        text += "\n"
    return ShortcutChange(text + action_line(action, accelerator) + "\n", True,
                          f"added {accelerator} for {action}")


def remove_shortcut(text: str, action: str, accelerator: str) -> ShortcutChange:
    """Remove the uncommented lines binding exactly ``accelerator`` (alone) to ``action`` from ``text``.

    Lines the user changed (another accelerator, several) are left alone.
    """
    wanted = _key(accelerator)
    drop = {index for index, name, accelerators in _actions(text)
            if name == action and [_key(a) for a in accelerators] == [wanted]}
    if not drop:
        return ShortcutChange(text, False, f"no {accelerator} line for {action} to remove")
    kept = [line for index, line in enumerate(text.splitlines(keepends=True)) if index not in drop]
    return ShortcutChange("".join(kept), True, f"removed {accelerator} for {action}")
