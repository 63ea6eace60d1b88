"""Test support: the real :class:`daemon.server.DaemonServer` on a free port in a background thread,
plus small scripted engines for progress, cancel and failure cases.

Used by the daemon's, the client's, the CLI's and the installer's tests (and ``bench/``): one copy. Also what a
variant must be: the box of the whole-crop result that loses nothing (:func:`assert_box_loses_nothing`).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from gimp_inpaint.daemon.compositing import blend_mask, grow_mask, overlay
from gimp_inpaint.daemon.config import Settings, ensure_token
from gimp_inpaint.daemon.engines.base import (
    CancelCheck,
    Engine,
    EngineJob,
    EngineLoadError,
    JobCancelled,
    LoadProgress,
    ProgressCallback,
)
from gimp_inpaint.daemon.server import DaemonServer
from gimp_inpaint.protocol import DEFAULT_MAX_PIXELS, EngineInfo, InpaintRequest, Variant

WAIT = 20.0
"""Seconds a test waits for the daemon to start, stop or answer (only reached when something is broken)."""


class StepEngine(Engine):
    """Reports ``steps`` progress units, ``delay`` seconds apart, polling ``cancelled`` before each;
    returns the inverted picture (255 − RGB), so filled pixels are predictable. It declares no prompt
    (``uses_prompt`` False), so the worker gives its input no pre-fill (:mod:`daemon.prefill`): the hole it inverts
    is the request's own (a request with ``color_match=False`` gets those inverted pixels exactly).

    Attributes:
        seen: ``(prompt, seed)`` of every job it ran, in order.
    """

    def __init__(self, name: str = "steps", steps: int = 5, delay: float = 0.0) -> None:
        self.name = name
        self.steps = steps
        self.delay = delay
        self.seen: list[tuple[str, int]] = []

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, kind="test", model="invert", available=True, uses_prompt=False)

    def prepare(self, job: EngineJob) -> int:
        return self.steps

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.seen.append((job.options.prompt, job.seed))
        return self.paint(job, progress, cancelled)

    def paint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """The steps and the inverted picture, without recording the job (for subclasses that record it)."""
        for step in range(1, self.steps + 1):
            if cancelled():
                raise JobCancelled("cancelled")
            time.sleep(self.delay)
            progress(step, self.steps)
        return 255 - job.image


class LoadingEngine(StepEngine):
    """Reports a 3 MB download and the load through :meth:`load`'s progress (every job, as if never warm), then
    3 steps; records every :class:`EngineJob` it runs in :attr:`jobs`."""

    def __init__(self) -> None:
        super().__init__("loading", steps=3)
        self.jobs: list[EngineJob] = []

    def load(self, progress: LoadProgress | None = None) -> None:
        assert progress is not None
        for done in (0, 1_500_000, 3_000_000):
            progress("download", done, 3_000_000)
        progress("load", 0, 0)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.jobs.append(job)
        return self.paint(job, progress, cancelled)


class BrokenEngine(Engine):
    """Always raises, so the daemon answers JOB_FAILED."""

    def __init__(self, name: str = "broken") -> None:
        self.name = name

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, kind="test", model="none", available=True, uses_prompt=False)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        raise RuntimeError("the test engine is broken on purpose")


class MissingEngine(BrokenEngine):
    """Listed as unavailable and failing to load (like a diffusers engine without torch)."""

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, kind="test", model="none", available=False, uses_prompt=True,
                          detail="pip install something")

    def load(self, progress: LoadProgress | None = None) -> None:
        raise EngineLoadError("pip install something")


def crop_arrays(request: InpaintRequest) -> tuple[np.ndarray, np.ndarray]:
    """The request's RGBA crop (H×W×4) and the blend mask the daemon makes of its mask (H×W), as whole crops."""
    height, width = request.image.height, request.image.width
    image = np.frombuffer(request.image.data, np.uint8).reshape(height, width, 4)
    mask = np.frombuffer(request.mask.data, np.uint8).reshape(height, width)
    return image, blend_mask(grow_mask(mask, request.options.grow), request.options.feather)


def variant_box(variant: Variant, request: InpaintRequest) -> tuple[slice, slice]:
    """The (rows, columns) of the request's crop that ``variant`` covers."""
    top, left = variant.y - request.y, variant.x - request.x
    assert top >= 0 and left >= 0, (variant.x, variant.y)
    return slice(top, top + variant.image.height), slice(left, left + variant.image.width)


def assert_box_loses_nothing(variant: Variant, request: InpaintRequest, generated: np.ndarray) -> None:
    """``variant`` is the box of the whole-crop result ``overlay(crop, generated, blend)``, and outside that box the
    blend mask is 0 (the client keeps its own pixels there, so cutting loses nothing); unmasked pixels exact."""
    image, blend = crop_arrays(request)
    box = variant_box(variant, request)
    assert box[0].stop <= image.shape[0] and box[1].stop <= image.shape[1]
    outside = np.ones(blend.shape, bool)
    outside[box] = False
    assert not blend[outside].any()  # nothing the blend mask touches was cut off …
    assert blend[box][0].any() and blend[box][-1].any() and blend[box][:, 0].any() and blend[box][:, -1].any()
    out = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width, 4)
    sent_blend = np.frombuffer(variant.mask.data, np.uint8).reshape(out.shape[:2])
    assert np.array_equal(sent_blend, blend[box])  # … the box is the tightest one, and its blend mask is the crop's
    assert np.array_equal(out, overlay(image, generated, blend)[box])
    keep = blend[box] == 0
    assert np.array_equal(out[keep], image[box][keep])  # every unmasked pixel, alpha included, bit-exact


@contextmanager
def serving(server: DaemonServer) -> Iterator[DaemonServer]:
    """Run ``server`` in a background thread until the block ends, then stop it.

    Raises:
        AssertionError: it did not start or stop within :data:`WAIT` seconds, or ``serve`` raised
            (the exception is reported, not lost in the thread).
    """
    listening = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(lambda url: listening.set()))
        except BaseException as exc:
            failures.append(exc)
            listening.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert listening.wait(WAIT) and not failures, failures
    try:
        yield server
    finally:
        server.stop()
        thread.join(WAIT)
        assert not thread.is_alive() and not failures, failures


@contextmanager
def running_daemon(config_dir: Path, engines: Sequence[Engine],
                   max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[str, str]]:
    """Serve ``engines`` on 127.0.0.1 (free port) until the block ends; yields ``(url, token)``.

    The token is ``config_dir``'s (created if missing, :func:`daemon.config.ensure_token`).
    """
    token = ensure_token(config_dir)
    settings = Settings(config_dir=config_dir, log_file=config_dir / "daemon.log", port=0, max_pixels=max_pixels,
                        tray=False)
    with serving(DaemonServer(settings, engines, token)) as server:
        assert server.url is not None
        yield server.url, token


@contextmanager
def daemon_process(config_dir: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run ``python -m gimp_inpaint.daemon --no-tray --port 0 --config-dir CONFIG_DIR OPTIONS…`` (offline, its
    real logging to ``CONFIG_DIR/daemon.log``) until the block ends; yields ``(url, process)``.

    The process is terminated at the end of the block unless it has already exited.

    Raises:
        AssertionError: it did not print its ``listening on`` line (its stderr is in the message).
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "gimp_inpaint.daemon", "--no-tray", "--port", "0", "--config-dir", str(config_dir),
         *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"gimp-inpaint daemon listening on (ws://127\.0\.0\.1:(\d+))\n", line)
        assert match and int(match[2]) > 0, (line, process.stderr.read() if process.poll() is not None else "")
        yield match[1], process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound once, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
