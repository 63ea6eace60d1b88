"""The tray's control panel as plain code: what its menu shows and what its items do, tested without a display.

:mod:`daemon.tray` only turns these into pystray menu items. Which thread does what:

- Load and Unload run on the daemon's worker thread (:meth:`daemon.server.DaemonServer.call_on_worker`), after the
  running job and before the next one, so they never race a job; the menu returns at once.
- Pause / Resume and the status line go through the event loop's side of the server
  (:meth:`~daemon.server.DaemonServer.set_paused`, :attr:`~daemon.server.DaemonServer.activity`).
- Open Log and Open Config Folder hand the path to the desktop's file opener (:func:`open_path`).

A job that took at least :data:`NOTIFY_AFTER_SECONDS` gets a notice when it ends (:func:`job_end_notice`), which
the tray shows as a desktop notification where pystray can. The issue asked for one "while GIMP is not in front";
no portable way exists to know which window is in front (X11, Wayland, macOS and Windows each answer differently,
and Wayland not at all to a background program), so the notice depends on the job's length only: a fill that short
is one the user watched finish.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gimp_inpaint.protocol import ErrorCode, quote

from .engines.base import Engine, EngineLoadError, ModelState
from .server import Activity, DaemonServer, JobEnd, RunningJob

log = logging.getLogger(__name__)

NOTIFY_AFTER_SECONDS = 10.0
"""A job (or a tray Load) that took at least this long, from its acceptance to its end, is announced by a desktop
notification when it ends. This project's choice: a warm SD 1.5 or SDXL fill on a GPU takes a few seconds, which the
user sits through; a fill on the CPU, a first load or a download takes longer, long enough to turn to something else."""

SHORT_JOB_ID = 8
"""Characters of a job id shown in the menu (the plug-in's ids are 32 hex digits); a longer one is cut with "…"."""

Notify = Callable[[str, str], None]
"""Shows ``(title, message)`` to the user: a desktop notification where the tray has one."""


def short_id(job_id: str) -> str:
    """``job_id``'s first :data:`SHORT_JOB_ID` characters quoted (:func:`protocol.quote`: a client's text stays one
    line), then "…" when it is longer."""
    return quote(job_id[:SHORT_JOB_ID]) + ("…" if len(job_id) > SHORT_JOB_ID else "")


def describe_job(job: RunningJob) -> str:
    """``"ENGINE, job ID"`` with the id cut by :func:`short_id`."""
    return f"{job.engine}, job {short_id(job.job_id)}"


def status_text(activity: Activity, task: str = "") -> str:
    """The menu's first line: what the daemon does now.

    ``"Running ENGINE, job ID"`` (or ``"Idle"``), then ``"; N waiting"`` when jobs are queued, ``"; paused: new
    jobs are refused"`` while paused, and ``"; TASK"`` for a Load or Unload running on the worker (``task``, e.g.
    ``"loading sd15-inpaint: downloading, 40 %"``).
    """
    parts = [f"Running {describe_job(activity.running)}" if activity.running is not None else "Idle"]
    if activity.waiting:
        parts.append(f"{activity.waiting} waiting")
    if activity.paused:
        parts.append("paused: new jobs are refused")
    if task:
        parts.append(task)
    return "; ".join(parts)


def job_end_notice(ended: JobEnd, after: float = NOTIFY_AFTER_SECONDS) -> tuple[str, str] | None:
    """The ``(title, message)`` announcing a job that ended, or None for one shorter than ``after`` seconds or
    cancelled (the user who cancelled knows)."""
    if ended.seconds < after or (ended.error is not None and ended.error.code is ErrorCode.CANCELLED):
        return None
    took = f"{describe_job(ended.job)}, {ended.seconds:.0f} s"
    if ended.error is None:
        return "Generative fill done", f"{took}: the result is in GIMP"
    return "Generative fill failed", f"{took}: {ended.error.message}"


def opener_command(path: Path, platform: str = sys.platform) -> list[str] | None:
    """The command that opens ``path`` with the desktop's default application: ``open PATH`` on macOS, ``xdg-open
    PATH`` (freedesktop.org's xdg-utils) on Linux and the BSDs; None on Windows, where :func:`os.startfile` does
    it without a command."""
    if platform == "win32":
        return None
    return ["open" if platform == "darwin" else "xdg-open", str(path)]


def spawn(command: list[str]) -> None:
    """Start ``command`` detached (own session, no standard streams) and do not wait for it: a file manager or an
    editor outlives the call, and ``xdg-open`` may wait for the application it starts.

    Raises:
        OSError: the command cannot be started (e.g. no ``xdg-open``).
    """
    subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def open_path(path: Path, run: Callable[[list[str]], None] = spawn, platform: str = sys.platform) -> None:
    """Open ``path`` (a file or folder) as the desktop would on a double click: :func:`opener_command` given to
    ``run`` (default :func:`spawn`), or :func:`os.startfile` on Windows.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        OSError: the opener cannot be started.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    command = opener_command(path, platform)
    if command is None:
        os.startfile(path)  # type: ignore[attr-defined]  # Windows only
    else:
        run(command)


@dataclass(frozen=True)
class ModelEntry:
    """One engine as the menu lists it.

    Attributes:
        name: the engine's name.
        state: where its model is (:meth:`daemon.engines.base.Engine.model_state`).
        here: whether the jobs run with this process's model (:attr:`daemon.server.DaemonServer.models_here`); False
            for the Ray backend, whose replicas load their own.
    """

    name: str
    state: ModelState
    here: bool = True

    @property
    def label(self) -> str:
        """``"NAME — STATE"``, e.g. ``"sd15-inpaint — on disk"``; ``"NAME — loads on the Ray replicas"`` for a model
        not :attr:`here`."""
        if not self.here and self.state is not ModelState.BUILT_IN:
            return f"{self.name} — loads on the Ray replicas"
        return f"{self.name} — {self.state.value}"

    @property
    def can_load(self) -> bool:
        """Load makes sense: the model is :attr:`here`, its weights on disk or to be downloaded."""
        return self.here and self.state in (ModelState.ON_DISK, ModelState.NOT_DOWNLOADED)

    @property
    def can_unload(self) -> bool:
        """Unload makes sense: the model is :attr:`here` and loaded."""
        return self.here and self.state is ModelState.LOADED


class Controller:
    """The tray menu's actions and texts over one :class:`daemon.server.DaemonServer`.

    Callable from any thread (the tray's); every action returns at once.

    Args:
        server: the daemon; its engines, settings (log file, config folder) and thread-safe methods are used.
        opener: opens a file or folder (default :func:`open_path`).
        notify: shows a message to the user (:data:`Notify`; default: none); the log has every message too.
        on_change: called (from the worker thread) when :meth:`status` or :meth:`models` may read differently
            because a Load or Unload started, progressed or ended.
    """

    def __init__(self, server: DaemonServer, *, opener: Callable[[Path], None] = open_path,
                 notify: Notify = lambda title, message: None, on_change: Callable[[], None] = lambda: None) -> None:
        self.server = server
        self._opener = opener
        self._notify = notify
        self._on_change = on_change
        self.task = ""
        """The Load or Unload running on the worker now, as the status line shows it (``""``: none)."""

    # -- what the menu shows ---------------------------------------------------------------------------------------

    def status(self) -> str:
        """The status line (:func:`status_text` of the server's activity and :attr:`task`); the pause as set, before
        the event loop has published it."""
        return status_text(replace(self.server.activity, paused=self.server.paused), self.task)

    @property
    def paused(self) -> bool:
        """True while new jobs are refused."""
        return self.server.paused

    def models(self) -> list[ModelEntry]:
        """Every engine in handshake order (the registry's models, then ``migan`` and ``opencv``) with its state."""
        return [self.model(name) for name in self.server.engines]

    def model(self, name: str) -> ModelEntry:
        """The entry of engine ``name``.

        Raises:
            KeyError: no such engine.
        """
        return ModelEntry(name, self.server.engines[name].model_state(), self.server.models_here)

    # -- what its items do -----------------------------------------------------------------------------------------

    def load(self, name: str) -> concurrent.futures.Future[None]:
        """Load engine ``name``'s model on the worker thread (downloading it first if it is not on disk), reporting
        the download in :attr:`task`; a failure is logged and notified, and is the future's exception
        (:class:`daemon.engines.base.EngineLoadError`).

        Raises:
            KeyError: no such engine.
            RuntimeError: the daemon is not serving.
        """
        engine = self.server.engines[name]
        shown = -1

        def progress(stage: str, step: int, total: int) -> None:  # worker thread
            nonlocal shown
            percent = 100 * step // total if stage == "download" and total > 0 else -1
            if percent != shown:
                shown = percent
                self._set_task(f"loading {name}" + (f": downloading, {percent} %" if percent >= 0 else ""))

        return self._on_worker(engine, f"loading {name}", lambda: engine.load(progress), "loaded")

    def unload(self, name: str) -> concurrent.futures.Future[None]:
        """Unload engine ``name``'s model on the worker thread (:meth:`daemon.engines.base.Engine.unload`), freeing
        its memory; its next request loads it again.

        Raises:
            KeyError: no such engine.
            RuntimeError: the daemon is not serving.
        """
        engine = self.server.engines[name]
        return self._on_worker(engine, f"unloading {name}", engine.unload, "unloaded")

    def pause(self) -> None:
        """Refuse new jobs (``PAUSED``) until :meth:`resume`; the running and queued ones finish."""
        self.server.set_paused(True)

    def resume(self) -> None:
        """Take new jobs again."""
        self.server.set_paused(False)

    def toggle_pause(self) -> None:
        """:meth:`resume` when paused, else :meth:`pause` (the menu's one Pause / Resume item)."""
        self.server.set_paused(not self.server.paused)

    def open_log(self) -> None:
        """Open the daemon's log file (``settings.log_file``) with the desktop's opener; a failure is notified."""
        self._open(self.server.settings.log_file, "the log")

    def open_config_folder(self) -> None:
        """Open the configuration folder (``settings.config_dir``: ``daemon.toml``, the token) with the desktop's
        file manager; a failure is notified."""
        self._open(self.server.settings.config_dir, "the config folder")

    def quit(self) -> None:
        """Stop the daemon (:meth:`daemon.server.DaemonServer.stop`: the running job is cancelled)."""
        log.info("Quit chosen in the tray menu")
        self.server.stop()

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _set_task(self, task: str) -> None:
        self.task = task
        self._on_change()

    def _on_worker(self, engine: Engine, task: str, function: Callable[[], None],
                   done: str) -> concurrent.futures.Future[None]:
        """Run ``function`` on the worker as ``task``; log (and, when it took :data:`NOTIFY_AFTER_SECONDS` or
        failed, notify) how it ended."""

        def run() -> None:  # worker thread
            self._set_task(task)
            started = time.perf_counter()
            try:
                function()
            except Exception as exc:
                reason = str(exc) if isinstance(exc, EngineLoadError) else f"{type(exc).__name__}: {exc}"
                log.error("tray: %s failed: %s", task, reason)
                self._notify(f"{engine.name}: {task} failed", reason)
                raise
            finally:
                self._set_task("")
            seconds = time.perf_counter() - started
            log.info("tray: %s %s in %.2f s", engine.name, done, seconds)
            if seconds >= NOTIFY_AFTER_SECONDS:
                self._notify(f"{engine.name} {done}", f"in {seconds:.0f} s")

        log.info("tray: %s (after the running job, if any)", task)
        return self.server.call_on_worker(run)

    def _open(self, path: Path, what: str) -> None:
        try:
            self._opener(path)
        except OSError as exc:
            log.error("tray: cannot open %s: %s", what, exc)
            self._notify(f"Cannot open {what}", str(exc))

