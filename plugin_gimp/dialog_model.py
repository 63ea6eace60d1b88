"""The run-time dialog's pure half: which rows it shows for an engine, their values, the engine list (asked of the
daemon when the dialog opens, cached for when it is not running), the status line, and the progress window's time
left.

:mod:`plugin_gimp.dialog` builds the GTK widgets from what this module decides, so everything here is tested without
GIMP (``tests/test_dialog_model.py``). The rows are the procedure's arguments (:mod:`plugin_gimp.arguments`: the
options tables' rows), never a list of fields of its own; an engine's :attr:`protocol.EngineInfo.options` says which
of :data:`protocol.FILL_OPTIONS` it takes and :attr:`protocol.EngineInfo.defaults` its family's steps and guidance.
Values are held as GIMP holds them (a choice as its nick, the LoRAs as text; :func:`plugin_gimp.arguments.gimp_value`),
keyed by argument name (``"num-inference-steps"``).

Vendored into the plug-in: standard library, :mod:`protocol`, :mod:`client.connection` and
:mod:`plugin_gimp.arguments` only.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import msgpack
from gimp_inpaint.client.connection import (
    ClientError,
    DaemonNotRunning,
    InpaintClient,
    is_loopback_url,
    read_connection_config,
)
from gimp_inpaint.protocol import (
    EDITOR_OPTIONS,
    FILL_OPTIONS,
    EngineInfo,
    OptionSpec,
    ProtocolError,
    Welcome,
    decode,
    encode,
)

from .arguments import SERVER_URL, gimp_default

PROMPT_ROWS = ("prompt", "negative_prompt")
"""The rows that come first. An engine that takes no prompt shows them greyed out rather than hidden, so the dialog
keeps its shape and the text typed there stays."""

VISIBLE_ROWS = (*PROMPT_ROWS, "engine", "num_variants", "seed")
"""The fill's rows always outside the *Advanced* expander, in this order (after the prompts come the procedure's
own rows, Generative Expand's: what grows); every other row is under *Advanced*, in the tables' order."""

RANDOM_SEED = -1
"""The seed value that asks the daemon for a new seed each run (:attr:`protocol.FillOptions.seed`), what the
dialog's *Random* toggle means."""

FIRST_AVAILABLE = ""
"""The engine value that leaves the choice to the daemon: its first available engine."""

class Visibility(Enum):
    """How a row shows for the chosen engine (:func:`visibility`)."""

    SHOWN = "shown"
    INSENSITIVE = "insensitive"
    HIDDEN = "hidden"


def sections(arguments: Sequence[OptionSpec]) -> tuple[list[OptionSpec], list[OptionSpec]]:
    """The procedure's ``arguments`` split into the rows always visible and those under *Advanced*.

    Visible: the prompts, then the procedure's own rows (those of no fill or editor table: Generative Expand's), then
    the engine, the variants and the seed; *Advanced*: every other row in ``arguments``' order (the fill's options,
    the editor's, the server URL). Rows named in :data:`VISIBLE_ROWS` but absent from ``arguments`` are left out.
    """
    by_name = {spec.name: spec for spec in arguments}
    own = [spec for spec in arguments
           if spec.name not in FILL_OPTIONS and spec.name not in EDITOR_OPTIONS and spec.name != SERVER_URL.name]
    visible = [by_name[name] for name in PROMPT_ROWS if name in by_name] + own + \
        [by_name[name] for name in VISIBLE_ROWS[len(PROMPT_ROWS):] if name in by_name]
    chosen = {spec.name for spec in visible}
    return visible, [spec for spec in arguments if spec.name not in chosen]


def visibility(spec: OptionSpec, engine: EngineInfo | None) -> Visibility:
    """How ``spec``'s row shows while ``engine`` is chosen (None: not known, every row shows).

    A row of :data:`protocol.FILL_OPTIONS` shows when the engine takes it (:attr:`protocol.EngineInfo.options`), but
    the LoRAs only when the daemon has LoRAs for it; the prompts of an engine that takes none are greyed out; every
    other row (the engine itself, the editor's, the procedure's own, the server URL) always shows.
    """
    if engine is None or spec.name not in FILL_OPTIONS or spec.name == "engine":
        return Visibility.SHOWN
    if spec.name in engine.options and (spec.name != "loras" or engine.loras):
        return Visibility.SHOWN
    return Visibility.INSENSITIVE if spec.name in PROMPT_ROWS else Visibility.HIDDEN


def default_value(spec: OptionSpec, engine: EngineInfo | None) -> Any:
    """``spec``'s default as GIMP holds it, for ``engine``: its family's (:attr:`protocol.EngineInfo.defaults`, an
    int row's as an int) where the daemon reports one, else the table's."""
    reported = engine.defaults.get(spec.name) if engine is not None else None
    if reported is None:
        return gimp_default(spec)
    return int(reported) if spec.type is int else float(reported)


def switch_engine(arguments: Sequence[OptionSpec], values: Mapping[str, Any], old: EngineInfo | None,
                  new: EngineInfo | None) -> dict[str, Any]:
    """The values to change when the chosen engine goes from ``old`` to ``new`` (None: unknown, or the dialog just
    opened): each row whose value is still ``old``'s default (:func:`default_value`) takes ``new``'s, so a family's
    steps and guidance follow the engine until the user sets them. ``values`` is keyed by argument name; so is the
    result, which holds only the rows that change."""
    changes = {}
    for spec in arguments:
        current = values.get(spec.argument)
        before, after = default_value(spec, old), default_value(spec, new)
        if current == before and after != before:
            changes[spec.argument] = after
    return changes


def values_to_send(arguments: Sequence[OptionSpec], values: Mapping[str, Any], engine: EngineInfo | None,
                   ) -> dict[str, Any]:
    """``values`` (by argument name) as the run sends them with ``engine`` chosen: a row the engine does not take
    (:attr:`Visibility.HIDDEN`) at its table default, since a family refuses a value other than the default of an
    option it does not use (code ``incompatible``); every other row as it is. These are also the values kept for
    *Repeat*."""
    return {spec.argument: gimp_default(spec) if visibility(spec, engine) is Visibility.HIDDEN
            else values[spec.argument] for spec in arguments if spec.argument in values}


@dataclass(frozen=True)
class EngineEntry:
    """One item of the dialog's engine list.

    Attributes:
        name: the engine argument's value (:data:`FIRST_AVAILABLE` for the daemon's choice).
        label: what the list shows.
        info: the engine whose rows, defaults and note the dialog shows for this item; None when the daemon's list
            does not have it.
    """

    name: str
    label: str
    info: EngineInfo | None


def first_available(engines: Sequence[EngineInfo]) -> EngineInfo | None:
    """The engine the daemon runs for an empty engine argument, its first available one (as
    :func:`client.connection.pick_engine` picks it), or None when none is available."""
    return next((engine for engine in engines if engine.available), None)


def engine_label(engine: EngineInfo) -> str:
    """``"sd15-inpaint — sd-inpaint"``: the name and the family (else the kind), ``", unavailable"`` when the daemon
    cannot run it now, ``", loading"`` while it warms up."""
    state = ", loading" if engine.warming_up else "" if engine.available else ", unavailable"
    return f"{engine.name} — {engine.family or engine.kind}{state}"


def engine_entries(engines: Sequence[EngineInfo], current: str) -> list[EngineEntry]:
    """The engine list: "First available" (naming the daemon's pick), each of ``engines`` in the daemon's order, and
    ``current`` (the argument's value) at the end when the list lacks it, so that opening and accepting the dialog
    never changes the engine by itself."""
    first = first_available(engines)
    entries = [EngineEntry(FIRST_AVAILABLE, f"First available ({first.name})" if first else "First available", first)]
    entries += [EngineEntry(engine.name, engine_label(engine), engine) for engine in engines]
    if current != FIRST_AVAILABLE and all(engine.name != current for engine in engines):
        entries.append(EngineEntry(current, f"{current} (not in the daemon's list)", None))
    return entries


def engine_note(entry: EngineEntry) -> str:
    """The line under the engine list: where its model is (:attr:`protocol.EngineInfo.state`: loaded, on disk, not
    downloaded, …), the daemon's detail (what loading it involves, or why it is unavailable), whether it ignores the
    prompt, its licence where the daemon knows it (:attr:`protocol.EngineInfo.licence_note`)."""
    engine = entry.info
    if engine is None:
        return (f"The daemon did not list “{entry.name}”: it answers unknown_engine unless its configuration has it "
                f"by now." if entry.name else "The daemon's first available engine.")
    parts = [f"model {engine.state}"] if engine.state else []
    parts += [engine.detail.rstrip(".")] if engine.detail else []
    if not engine.uses_prompt:
        parts.append("no prompt: it fills from the surroundings")
    if engine.licence_note:
        parts.append(f"licence {engine.licence_note}")
    return "; ".join(parts) + "." if parts else ""


@dataclass(frozen=True)
class EngineListing:
    """What the dialog knows of the daemon's engines when it opens (:func:`list_engines`).

    Attributes:
        url: the daemon's URL it asked.
        welcome: the daemon's handshake, live or as cached; None when neither is there.
        live: True when ``welcome`` came from the daemon just now.
        saved_at: when a cached ``welcome`` was saved (seconds since the epoch); None when live or none.
        problem: why the daemon could not be asked (a message for the user); None when live.
        starts_on_ok: nothing answers at ``url``, which is on this machine, and ``connection.json`` names the
            daemon's command, so the fill starts it (:func:`client.connection.connect_or_start`).
    """

    url: str
    welcome: Welcome | None
    live: bool
    saved_at: float | None = None
    problem: str | None = None
    starts_on_ok: bool = False

    @property
    def engines(self) -> list[EngineInfo]:
        """The engines in the daemon's order (empty without a welcome)."""
        return list(self.welcome.engines) if self.welcome is not None else []


def save_engines(path: Path, url: str, welcome: Welcome, now: float | None = None) -> None:
    """Keep ``welcome`` (from the daemon at ``url``) in ``path`` for a later dialog: a msgpack map of the URL, the
    time (``now`` or the clock's) and the welcome's frame (:func:`protocol.encode`), written to a temporary file and
    renamed over ``path``, so a reader never sees half a file.

    Raises:
        OSError: the folder cannot be made or the file written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(msgpack.packb({"url": url, "saved_at": time.time() if now is None else now,
                                         "welcome": encode(welcome)}))
    os.replace(temporary, path)


def load_engines(path: Path) -> tuple[str, float, Welcome] | None:
    """``(url, saved_at, welcome)`` that :func:`save_engines` kept in ``path``, or None when there is none or it
    cannot be read (missing, damaged, or a welcome this protocol version does not decode, from an older plug-in)."""
    try:
        kept = msgpack.unpackb(path.read_bytes())
        url, saved_at, frame = kept["url"], kept["saved_at"], kept["welcome"]
        welcome = decode(frame)
    except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException, ProtocolError):
        return None
    if not isinstance(url, str) or not isinstance(saved_at, int | float) or not isinstance(welcome, Welcome):
        return None
    return url, float(saved_at), welcome


def list_engines(connection_file: Path, url: str, client_name: str, cache: Path, timeout: float = 3.0,
                 ) -> EngineListing:
    """Ask the daemon for its engines (a handshake, then the connection closes) and keep the answer in ``cache``;
    when it cannot be asked, the cached list with the reason.

    Args:
        connection_file: ``connection.json`` (:func:`client.connection.read_connection_config`): URL, token,
            command.
        url: the daemon's URL when not the file's (the *Server URL* argument; empty: the file's).
        client_name: sent in the Hello.
        cache: the file :func:`save_engines` writes (the plug-in's folder in GIMP's configuration).
        timeout: seconds for the connection attempt.

    Never raises: every failure (no ``connection.json``, nothing listening, a wrong token, another protocol version,
    a cache that cannot be written) ends up in the listing's :attr:`EngineListing.problem` or is ignored (the cache).
    """
    try:
        config = read_connection_config(connection_file)
    except ClientError as exc:
        return _cached(cache, url, exc.message, starts_on_ok=False)
    url = url or config.url
    try:
        with InpaintClient.connect(url, config.token, client_name, timeout, config.fingerprint_for(url)) as client:
            welcome = client.welcome
    except DaemonNotRunning as exc:
        return _cached(cache, url, exc.message,
                       starts_on_ok=is_loopback_url(url) and config.daemon_command is not None)
    except ClientError as exc:
        return _cached(cache, url, exc.message, starts_on_ok=False)
    with contextlib.suppress(OSError):  # the list still shows; only the next dialog without a daemon misses it
        save_engines(cache, url, welcome)
    return EngineListing(url, welcome, live=True)


def _cached(cache: Path, url: str, problem: str, starts_on_ok: bool) -> EngineListing:
    kept = load_engines(cache)
    if kept is None:
        return EngineListing(url, None, live=False, problem=problem, starts_on_ok=starts_on_ok)
    _, saved_at, welcome = kept
    return EngineListing(url, welcome, live=False, saved_at=saved_at, problem=problem, starts_on_ok=starts_on_ok)


def status_line(listing: EngineListing) -> str:
    """The dialog's status line for ``listing``, e.g. ``"gimp-inpaint 0.1.0 at ws://127.0.0.1:7869 on cpu: 3
    engines, 3 available."``, or, with no daemon running, ``"No daemon answers at ws://127.0.0.1:7869: it starts
    when you press OK. The engines are those it listed on 2026-12-03 at 14:05."``"""
    if listing.live and listing.welcome is not None:
        welcome = listing.welcome
        available = sum(engine.available for engine in welcome.engines)
        count = len(welcome.engines)
        return (f"gimp-inpaint {welcome.daemon_version} at {listing.url} on {welcome.device}: "
                f"{count} engine{'' if count == 1 else 's'}, {available} available.")
    if listing.starts_on_ok:
        head = f"No daemon answers at {listing.url}: it starts when you press OK."
    else:  # the client's message names the URL and what to do
        head = listing.problem or f"No answer from {listing.url}."
    if listing.saved_at is None:
        return f"{head} Its engines are not known yet: “First available” runs the daemon's first."
    saved = time.strftime("%Y-%m-%d at %H:%M", time.localtime(listing.saved_at))
    return f"{head} The engines are those it listed on {saved}."


class TimeLeft:
    """The time left of a job from its progress fractions (:meth:`update`): the rate since the first fraction above
    0, extrapolated to 1. A fraction below the last one (the next stage: the download's 100 % is followed by the
    load's 0 and the steps) starts over."""

    def __init__(self) -> None:
        self._start: tuple[float, float] | None = None  # (time, fraction) of the first fraction above 0
        self._last = 0.0

    def update(self, fraction: float, now: float) -> float | None:
        """Seconds left at ``now`` (the clock's seconds, e.g. ``time.monotonic()``) with ``fraction`` (0…1) done, or
        None until two fractions above 0 have come."""
        if fraction < self._last:
            self._start = None
        self._last = fraction
        if fraction <= 0:
            return None
        if self._start is None:
            self._start = (now, fraction)
            return None
        started, first = self._start
        if fraction <= first:
            return None
        return (now - started) * (1 - fraction) / (fraction - first)


def time_left_text(seconds: float | None) -> str:
    """``"About 12 s left"``, ``"About 3 min left"`` (above 90 s, rounded up), ``"Almost done"`` under a second; empty
    for None (not known yet)."""
    if seconds is None:
        return ""
    if seconds < 1:
        return "Almost done"
    if seconds <= 90:
        return f"About {math.ceil(seconds)} s left"
    return f"About {math.ceil(seconds / 60)} min left"


def preview_size(width: int, height: int, box: int) -> tuple[int, int]:
    """The size (pixels) a ``width × height`` preview is shown at: scaled to fit a ``box × box`` square, its aspect
    kept, each side at least 1 (a small preview is enlarged, a large one shrunk)."""
    scale = box / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
