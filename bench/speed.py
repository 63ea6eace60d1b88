"""Speed benchmark (issue 10): each measured pair of the issue's table side by side in one run, its ratio against
the goal, and a results file.

    .venv/bin/python bench/speed.py [--quick] [--repeat N] [--only NAME ...]

Every pair runs interleaved (A, B, then B, A, …) after one warm-up of each side, median of ``--repeat`` (default 5)
samples each; the noise meter is the load average (``/proc/loadavg``) before and after each pair and the whole run,
and the spread of every sample set ((max − min) ÷ median). The daemon is the real one, ``python -m
gimp_inpaint.daemon --no-tray --port 0`` in a subprocess with its own temporary configuration folder (``device =
"cpu"``), driven by :class:`gimp_inpaint.client.connection.InpaintClient` from this process. The pictures are
scikit-image's astronaut scaled with Pillow (Lanczos) to the size, with a centred disc masked (radius side / 3.5, a
quarter of the area); requests are sent with ``grow = 0``, the default feather and seed 1, and the bare
``cv2.inpaint`` gets the mask the daemon's engine fills (:func:`engine_mask`: the disc where its feathered fade
reaches 16 %, a ring wider than the disc), so that both fill the same hole.

The pairs (``--only`` takes these names, or their numbers):

1. ``opencv-512``: a 512² crop, client end-to-end (building the request, ``InpaintClient.inpaint`` until it has
   the variants) ÷ bare ``cv2.inpaint(rgb, mask, 3, cv2.INPAINT_TELEA)`` on the same arrays; goal ≤ 1.10.
2. ``opencv-2048``: the same at 2048²; goal ≤ 1.10.
3. ``sd-512``: the tiny random-weight SD inpainting pipeline (``tests/tiny_pipelines.py``, native 128 px), a 512²
   crop, 20 steps, end-to-end ÷ the same pipeline called directly (``StableDiffusionInpaintPipeline`` on the
   128² image, same steps, guidance, strength and seed); goal ≤ 1.05.
4. ``opencv-linear``: end-to-end time per megapixel at 4096² ÷ at 2048²; goal ≤ 1.05.
5. ``memory``: a fresh daemon's peak RSS during a 4096² opencv job minus its RSS just before, ÷ the crop's pixels
   (psutil, every 5 ms); goal ≤ 12 bytes/px.
6. ``cli-fill``: ``gimp-inpaint fill`` as a whole process on a 2048² PNG and mask, writing a PNG, against the
   running daemon (opencv engine) ÷ IOPaint's one-shot HTTP client (``bench/iopaint_client.py``, a fresh process of
   IOPaint's Python posting the same files to ``iopaint start --model cv2``, started once, Telea radius 3, and
   writing the PNG it gets back); goal ≤ 0.40, with the mean absolute difference of the two outputs inside the
   hole. IOPaint is looked for in ``--iopaint-venv`` (default ``/var/tmp/iopaint-venv``); without it that
   comparison is not run. Beside it, bare ``cv2.inpaint`` on the arrays of the same files and a bare one-shot
   Python process (``cv2.imread`` ×2, ``cv2.inpaint``, ``cv2.imwrite`` at PNG level 1).
7. ``cli-start``: ``gimp-inpaint --help`` and ``gimp-inpaint status`` wall time ÷ ``python -c pass``; goal ≤ 3×.
8. ``preload``: the first tiny-SD request after daemon start, ``preload`` off (the request sent as the daemon says
   it listens) and on (``preload = "tiny"``; the request sent once the handshake no longer lists the engine
   ``warming_up``, and once more at listening, queued behind the load): process start → first result, and the first
   request's own time (connect to variants) ÷ a warm request's (a new connection, after it); goal: hidden behind
   start-up, read here as the preloaded first request ≤ 1.10 × a warm one (the issue gives no number).
9. ``stall``: a canary process doing handshakes (connect + Hello + Welcome) in a loop while another client's 4096²
   opencv job runs (the request sent and decoded, the inpainting, the result encoded and sent); the longest
   handshake overlapping the job beyond the canary's idle median (1 s idle before each job); goal ≤ 10 ms. Printed
   beside it: the same over the result's phase alone (from the variant's last progress message to the client having
   it), the idle noise floor, and when in each job its longest handshake began.

``--quick`` uses small sizes (256² … 1024², 4 diffusion steps) and 2 repeats, to check that everything runs; its
results file is named ``speed-<date>-quick.md``. Without torch and diffusers, pairs 3 and 8 are reported as not
run. Results: ``bench/results/speed-<UTC date-time>.md`` (date, versions, git commit, load, every sample).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
from gimp_inpaint.client.connection import InpaintClient, ProgressCallback
from gimp_inpaint.daemon.config import ensure_token
from gimp_inpaint.protocol import FillMode, FillOptions, InpaintRequest, Plane, Variant
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WAIT = 120.0
"""Seconds to wait for a daemon to listen, stop, or answer a handshake (reached only when something is broken)."""
SAMPLE_EVERY = 0.005
"""Seconds between RSS samples of the memory pair."""
CANARY_PAUSE = 0.002
"""Seconds the canary sleeps between handshakes."""
IDLE_BEFORE_JOB = 1.0
"""Seconds the canary runs alone before each job of the stall pair (its idle samples)."""
RADIUS = 3
"""``inpaintRadius`` of the bare ``cv2.inpaint``: the daemon's OpenCV engine's default."""
IOPAINT_VENV = Path("/var/tmp/iopaint-venv")
"""Pair 6's default IOPaint virtual environment (``python3 -m venv`` there, then ``pip install iopaint``)."""
LISTENING = re.compile(r"gimp-inpaint daemon listening on (ws://127\.0\.0\.1:\d+)\n")


# --------------------------------------------------------------------------------------------- samples and rows


def read_loadavg() -> str:
    """``/proc/loadavg``'s 1-, 5- and 15-minute averages and running/total tasks (``os.getloadavg`` elsewhere)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:4])
    except OSError:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())


def seconds_text(value: float) -> str:
    if abs(value) >= 10:
        return f"{value:.1f} s"
    if abs(value) >= 1:
        return f"{value:.2f} s"
    return f"{value * 1e3:.1f} ms"


@dataclass
class Samples:
    """One sample set: its label, values (seconds unless ``unit`` says otherwise) and how they print."""

    label: str
    values: list[float]
    unit: str = "s"
    meter: bool = True
    """Whether its spread is noise (repeats of one measurement), counted in :meth:`PairResult.noise`; False for a
    distribution such as the canary's handshakes, whose spread is what is measured."""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max − min) ÷ median: the noise meter of one sample set."""
        return (max(self.values) - min(self.values)) / self.median if self.median else 0.0

    def fmt(self, value: float) -> str:
        return seconds_text(value) if self.unit == "s" else f"{value:.1f} {self.unit}"

    def text(self) -> str:
        return (f"{self.fmt(self.median)} (min {self.fmt(min(self.values))}, max {self.fmt(max(self.values))}, "
                f"spread {self.spread:.0%}, n = {len(self.values)})")

    def raw(self) -> str:
        scale, unit = (1e3, "ms") if self.unit == "s" else (1.0, self.unit)
        return ", ".join(f"{value * scale:.1f}" for value in self.values) + f" {unit}"


@dataclass
class Row:
    """One line of the summary: what was measured, its value, and the goal (None: no goal checked here)."""

    label: str
    value: float | None
    shown: str
    goal: float | None = None
    goal_text: str = "—"

    @property
    def met(self) -> str:
        if self.goal is None or self.value is None:
            return "—"
        return "yes" if self.value <= self.goal else "NO"


@dataclass
class PairResult:
    number: int
    name: str
    rows: list[Row] = field(default_factory=list)
    samples: list[Samples] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    seconds: float = 0.0

    def noise(self) -> str:
        """The 1-minute load average before and after the pair, and the widest spread of its repeated sample sets."""
        widest = max((samples.spread for samples in self.samples if samples.meter), default=0.0)
        return f"{self.load_before.split()[0]} → {self.load_after.split()[0]}, {widest:.0%}"


def interleaved(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """One warm-up call of each run, then ``repeat`` rounds, the order reversed every other round; each run returns
    its own seconds (or another measure)."""
    names = list(runs)
    for name in names:
        runs[name]()
    values: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeat):
        for name in names if round_ % 2 == 0 else names[::-1]:
            values[name].append(runs[name]())
    return values


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------- pictures and requests


_photos: dict[int, np.ndarray] = {}


def photo(side: int) -> np.ndarray:
    """scikit-image's astronaut, ``side × side × 3`` RGB (Pillow, Lanczos)."""
    if side not in _photos:
        from skimage import data

        _photos[side] = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS))
    return _photos[side]


def rgba(side: int) -> np.ndarray:
    return np.dstack([photo(side), np.full((side, side), 255, np.uint8)])


def disc(side: int) -> np.ndarray:
    """A centred disc of radius ``side / 3.5`` (about a quarter of the area), 255 inside, 0 outside."""
    yy, xx = np.mgrid[:side, :side]
    return (((xx - side / 2) ** 2 + (yy - side / 2) ** 2) <= (side / 3.5) ** 2).astype(np.uint8) * 255


def fill(client: InpaintClient, image: np.ndarray, mask: np.ndarray, options: FillOptions,
         on_progress: ProgressCallback | None = None) -> tuple[float, list[Variant]]:
    """Client end-to-end: build the request from the arrays, send it, wait for its variants; (seconds, variants)."""
    start = time.perf_counter()
    height, width = mask.shape
    request = InpaintRequest(job_id=uuid.uuid4().hex, x=0, y=0, image=Plane(width, height, 4, image.tobytes()),
                             mask=Plane(width, height, 1, mask.tobytes()), options=options)
    variants = client.inpaint(request, on_progress=on_progress)
    return time.perf_counter() - start, variants


# --------------------------------------------------------------------------------------------- the daemon


class Daemon:
    """``python -m gimp_inpaint.daemon --no-tray --port 0 --config-dir FOLDER`` with ``toml`` as its daemon.toml
    (after ``device = "cpu"``); started on construction, :attr:`started` and :attr:`listening`
    are ``time.monotonic()`` just before the process was created and when it printed its listening line."""

    def __init__(self, folder: Path, toml: str = "") -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        (folder / "daemon.toml").write_text('device = "cpu"\n' + toml, encoding="utf-8")
        self.token = ensure_token(folder)
        self._stderr = (folder / "stderr.txt").open("w", encoding="utf-8")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gimp_inpaint.daemon", "--no-tray", "--port", "0", "--config-dir", str(folder)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert self.process.stdout is not None
        try:
            line = self.process.stdout.readline()
        except BaseException:  # interrupted before the caller could register the stop
            self.stop()
            raise
        self.listening = time.monotonic()
        match = LISTENING.fullmatch(line)
        if not match:
            self.stop()
            raise RuntimeError(f"the daemon did not start ({line!r}): {(folder / 'stderr.txt').read_text()[-2000:]}")
        self.url = match[1]
        self.pid = self.process.pid
        threading.Thread(target=self.process.stdout.read, daemon=True).start()  # drain: never block its prints

    def client(self, name: str = "bench", timeout: float = WAIT) -> InpaintClient:
        return InpaintClient.connect(self.url, self.token, name, timeout=timeout)

    def stop(self) -> None:
        stop_process(self.process)
        self._stderr.close()


class Bench:
    """What the pairs share: the sizes, the repeat count, a temporary folder, the opencv daemon, the tiny model,
    IOPaint's virtual environment (pair 6)."""

    def __init__(self, stack: contextlib.ExitStack, quick: bool, repeat: int, iopaint_venv: Path) -> None:
        self.stack = stack
        self.quick = quick
        self.repeat = repeat
        self.iopaint_venv = iopaint_venv
        self.temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gimp-inpaint-speed-")))
        self._daemons = 0
        self._opencv: Daemon | None = None
        self._tiny_model: Path | None = None
        self.sizes = {"small": 256 if quick else 512, "medium": 512 if quick else 2048,
                      "large": 1024 if quick else 4096}
        self.sd_crop = 256 if quick else 512
        self.sd_steps = 4 if quick else 20

    def daemon(self, toml: str = "") -> Daemon:
        """A new daemon, stopped when the run ends (or earlier by :meth:`Daemon.stop`)."""
        self._daemons += 1
        daemon = Daemon(self.temp / f"daemon-{self._daemons}", toml)
        self.stack.callback(daemon.stop)
        return daemon

    def opencv_daemon(self) -> Daemon:
        """The daemon of the opencv pairs, started on first use (no model configured: with diffusers installed it
        also offers the default model, unloaded, as a user's daemon does)."""
        if self._opencv is None:
            self._opencv = self.daemon()
        return self._opencv

    def tiny_model(self) -> Path | None:
        """The tiny SD inpainting pipeline's folder (built once), or None without torch/diffusers."""
        if self._tiny_model is None:
            try:
                import diffusers  # noqa: F401
                import torch  # noqa: F401
            except ImportError:
                return None
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny_pipelines import build_tiny_inpaint_pipeline

            quiet_hugging_face()
            self._tiny_model = build_tiny_inpaint_pipeline(self.temp / "tiny-inpaint")
        return self._tiny_model

    def tiny_toml(self, model: Path, preload: bool = False) -> str:
        """daemon.toml's lines for the tiny model as engine ``tiny`` (and ``preload = "tiny"``), on
        :data:`TORCH_THREADS` torch threads."""
        first = 'preload = "tiny"\n' if preload else ""
        return f"{first}threads = {TORCH_THREADS}\n[models.tiny]\nmodel = {json.dumps(str(model))}\n"


TORCH_THREADS = 1
"""torch CPU threads of both sides of the tiny-SD pairs (the daemon's ``threads``, ``torch.set_num_threads`` here).
With torch's default (one per core) each process's OpenMP threads spin-wait after their work while the other side
runs, on the same 2 cores: at 04:16 UTC on 2026-12-02 (load 0.7 → 2.8) the pair gave 4.14 (1.67 s ÷ 402 ms) that
way. One thread each measures the daemon's overhead, not the two processes' contention."""


def stop_process(process: subprocess.Popen[Any]) -> None:
    """End a benchmark's server process: SIGTERM, then SIGKILL after :data:`WAIT` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def quiet_hugging_face() -> None:
    """No progress bars or warnings from diffusers, transformers and huggingface_hub in this process (the daemon's
    own output goes to its folder)."""
    import diffusers
    import huggingface_hub
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()


def tiny_sd_options(steps: int) -> FillOptions:
    """The tiny-SD pairs' options: ``steps`` steps, seed 1, no growth, the ``fill`` mode (a blank prompt would be
    ``remove``, whose capped strength runs fewer steps than the direct call) and no colour match (the direct call does
    neither; issue 11)."""
    return FillOptions(engine="tiny", seed=1, grow=0, num_inference_steps=steps, fill_mode=FillMode.FILL,
                       color_match=False)


def opencv_options() -> FillOptions:
    """The opencv pairs' options: no growth (the bare call fills the same disc) and no colour match (issue 11's
    step, which the bare call does not do; its own cost is measured apart, bench/README.md)."""
    return FillOptions(engine="opencv", seed=1, grow=0, color_match=False)


def engine_mask(mask: np.ndarray, options: FillOptions) -> np.ndarray:
    """The H×W uint8 mask the daemon's engine fills for the request mask ``mask``: grown by ``options.grow``,
    repainted wherever the blend mask's fade of ``options.feather`` reaches 16 % (:mod:`daemon.compositing`, as
    :func:`daemon.worker.run_job` computes it), so a bare call on it fills the same hole as the engine."""
    from gimp_inpaint.daemon.compositing import blend_mask, grow_mask, repaint_mask

    return repaint_mask(blend_mask(grow_mask(mask, options.grow), options.feather))


# --------------------------------------------------------------------------------------------- the pairs


def pair_opencv(bench: Bench, result: PairResult, size: str) -> None:
    """Pairs 1 and 2: end-to-end through the daemon ÷ bare cv2.inpaint on the same arrays."""
    side = bench.sizes[size]
    image, rgb, mask = rgba(side), photo(side), disc(side)
    hole = engine_mask(mask, opencv_options())
    inference: list[float] = []
    with bench.opencv_daemon().client() as client:
        def end_to_end() -> float:
            seconds, variants = fill(client, image, mask, opencv_options())
            inference.append(variants[0].timings["inference"])
            return seconds

        values = interleaved(bench.repeat, {
            "end-to-end": end_to_end,
            "bare": lambda: timed(lambda: cv2.inpaint(rgb, hole, RADIUS, cv2.INPAINT_TELEA)),
        })
    a = Samples(f"{side}² end-to-end", values["end-to-end"])
    b = Samples(f"{side}² bare cv2.inpaint", values["bare"])
    engine = Samples(f"{side}² daemon's engine inference (its timings)", inference[1:])
    result.samples += [a, b, engine]
    ratio = a.median / b.median
    result.rows.append(Row(f"opencv {side}²: end-to-end ÷ bare cv2.inpaint", ratio,
                           f"{ratio:.2f} ({seconds_text(a.median)} ÷ {seconds_text(b.median)})", 1.10, "≤ 1.10"))
    result.notes.append(f"the daemon's own overhead beyond its engine call: "
                        f"{seconds_text(a.median - engine.median)} per fill; the engine call in the daemon takes "
                        f"{engine.median / b.median:.2f} × the bare call here")


def pair_sd(bench: Bench, result: PairResult) -> None:
    """Pair 3: the tiny SD pipeline end-to-end through the daemon ÷ called directly."""
    model = bench.tiny_model()
    if model is None:
        result.rows.append(Row("tiny SD: end-to-end ÷ direct pipeline", None, "not run: torch/diffusers missing",
                               1.05, "≤ 1.05"))
        return
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    torch.set_num_threads(TORCH_THREADS)
    side, steps = bench.sd_crop, bench.sd_steps
    options = tiny_sd_options(steps)
    daemon = bench.daemon(bench.tiny_toml(model))
    pipe = StableDiffusionInpaintPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    small_image = Image.fromarray(photo(side)).resize((native, native), Image.Resampling.LANCZOS)
    small_mask = Image.fromarray(disc(side)).resize((native, native), Image.Resampling.LANCZOS)

    def direct() -> float:
        start = time.perf_counter()
        output = pipe(prompt=options.prompt, negative_prompt=options.negative_prompt, image=small_image,
                      mask_image=small_mask, height=native, width=native, guidance_scale=options.guidance_scale,
                      num_inference_steps=steps, strength=options.strength, eta=options.eta,
                      generator=torch.Generator("cpu").manual_seed(options.seed))
        output.images[0].convert("RGB")
        return time.perf_counter() - start

    image, mask = rgba(side), disc(side)
    inference: list[float] = []
    with daemon.client() as client:
        def end_to_end() -> float:
            seconds, variants = fill(client, image, mask, options)
            inference.append(variants[0].timings["inference"])
            return seconds

        values = interleaved(bench.repeat, {"end-to-end": end_to_end, "direct": direct})
    daemon.stop()
    a = Samples(f"tiny SD {side}² crop, {steps} steps, end-to-end", values["end-to-end"])
    b = Samples(f"tiny SD {native}², {steps} steps, pipeline called directly", values["direct"])
    engine = Samples("daemon's engine inference (its timings)", inference[1:])
    result.samples += [a, b, engine]
    ratio = a.median / b.median
    result.rows.append(Row(f"tiny SD (native {native} px), {side}² crop, {steps} steps: end-to-end ÷ direct pipeline",
                           ratio, f"{ratio:.2f} ({seconds_text(a.median)} ÷ {seconds_text(b.median)})", 1.05,
                           "≤ 1.05"))
    result.notes.append(f"engine call {seconds_text(engine.median)} of it (resizes, scheduler and step preparation, "
                        "the pipeline); the rest is compositing, codec and transfer")


def pair_linear(bench: Bench, result: PairResult) -> None:
    """Pair 4: end-to-end time per megapixel at the large size ÷ at the medium one."""
    medium, large = bench.sizes["medium"], bench.sizes["large"]
    inputs = {side: (rgba(side), disc(side)) for side in (medium, large)}
    inference: dict[int, list[float]] = {medium: [], large: []}
    with bench.opencv_daemon().client() as client:
        def run(side: int) -> float:
            seconds, variants = fill(client, *inputs[side], opencv_options())
            inference[side].append(variants[0].timings["inference"])
            return seconds * 1e3 / (side * side / 1e6)

        values = interleaved(bench.repeat, {"medium": lambda: run(medium), "large": lambda: run(large)})
    a = Samples(f"{large}² end-to-end per megapixel", values["large"], "ms/MP")
    b = Samples(f"{medium}² end-to-end per megapixel", values["medium"], "ms/MP")
    result.samples += [a, b]
    ratio = a.median / b.median
    result.rows.append(Row(f"opencv end-to-end time per MP, {large}² ÷ {medium}²", ratio,
                           f"{ratio:.2f} ({a.median:.0f} vs {b.median:.0f} ms/MP)", 1.05, "≤ 1.05"))
    engine = {side: statistics.median(inference[side][1:]) / (side * side / 1e6) for side in (medium, large)}
    result.notes.append(f"the engine's own inference alone: {engine[large] * 1e3:.0f} vs {engine[medium] * 1e3:.0f} "
                        f"ms/MP, ratio {engine[large] / engine[medium]:.2f}")


def pair_memory(bench: Bench, result: PairResult) -> None:
    """Pair 5: a fresh daemon's peak RSS during a large opencv job minus its RSS before, per crop pixel."""
    side = bench.sizes["large"]
    image, mask = rgba(side), disc(side)
    daemon = bench.daemon()
    process = psutil.Process(daemon.pid)
    per_pixel, peaks, befores = [], [], []
    with daemon.client() as client:
        fill(client, rgba(64), disc(64), opencv_options())  # warm-up: the engine, the codec, the first buffers
        for round_ in range(bench.repeat + 1):  # the first large job is the warm-up, not counted
            time.sleep(0.5)
            before = process.memory_info().rss
            peak, stop = [before], threading.Event()

            def sample(peak: list[int] = peak, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(SAMPLE_EVERY)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                fill(client, image, mask, opencv_options())
            finally:
                stop.set()
                sampler.join()
            if round_:
                per_pixel.append((peak[0] - before) / (side * side))
                peaks.append(peak[0] / 2**20)
                befores.append(before / 2**20)
    daemon.stop()
    a = Samples(f"{side}² job: (peak − before) RSS per crop pixel", per_pixel, "bytes/px")
    result.samples += [a, Samples("RSS before the job", befores, "MiB"), Samples("peak RSS", peaks, "MiB")]
    result.rows.append(Row(f"daemon peak memory per pixel of a {side}² opencv job", a.median,
                           f"{a.median:.1f} bytes/px (max {max(per_pixel):.1f})", 12.0, "≤ 12 bytes/px"))


class IOPaintServer:
    """``iopaint start --model cv2 --device cpu --port PORT`` from IOPaint's virtual environment ``venv`` (pair 6),
    offline (``--local-files-only``: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE``; the ``cv2`` model has nothing
    to download), its model folder and log under ``folder``; started on construction, ready once
    ``GET /api/v1/model`` answers. Raises RuntimeError when it exits or does not answer within :data:`WAIT`."""

    def __init__(self, venv: Path, folder: Path) -> None:
        with socket.socket() as probe:  # a free port: IOPaint takes no port 0
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = folder / "iopaint.log"
        self._log = self.log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            [str(venv / "bin" / "iopaint"), "start", "--model", "cv2", "--device", "cpu", "--host", "127.0.0.1",
             "--port", str(port), "--model-dir", str(folder / "models"), "--local-files-only"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, cwd=folder,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        deadline = time.monotonic() + WAIT
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/api/v1/model", timeout=5) as answer:
                if json.load(answer).get("name") == "cv2":
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"IOPaint did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        stop_process(self.process)
        self._log.close()


def iopaint_version(venv: Path) -> str | None:
    """The version of IOPaint installed in the virtual environment ``venv``, or None when it has none."""
    python = venv / "bin" / "python"
    if not (venv / "bin" / "iopaint").exists() or not python.exists():
        return None
    found = subprocess.run([str(python), "-c", "from importlib import metadata; print(metadata.version('iopaint'))"],
                           capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def pair_cli_fill(bench: Bench, result: PairResult) -> None:
    """Pair 6: ``gimp-inpaint fill`` as a whole process on PNG files ÷ IOPaint's one-shot HTTP client
    (``bench/iopaint_client.py`` in a fresh process of IOPaint's Python, against a running ``iopaint start --model
    cv2``) on the same files, beside bare cv2 on them; without IOPaint in ``bench.iopaint_venv``, not compared."""
    side = bench.sizes["medium"]
    daemon = bench.opencv_daemon()
    folder = bench.temp / "cli-fill"
    folder.mkdir()
    image_file, mask_file, out_file = folder / "photo.png", folder / "mask.png", folder / "filled.png"
    iopaint_file = folder / "iopaint.png"
    Image.fromarray(photo(side)).save(image_file)
    Image.fromarray(disc(side)).save(mask_file)
    rgb = np.asarray(Image.open(image_file).convert("RGB"))
    mask = np.asarray(Image.open(mask_file).convert("L"))
    command = [str(console_script()), "fill", str(image_file), str(mask_file), "-o", str(out_file), "--engine",
               "opencv", "--grow", "0", "--seed", "1", "--url", daemon.url, "--config-dir", str(daemon.folder)]
    one_shot = [sys.executable, "-c",
                "import sys, cv2; image = cv2.imread(sys.argv[1]); mask = cv2.imread(sys.argv[2], 0); "
                "cv2.imwrite(sys.argv[3], cv2.inpaint(image, mask, 3, cv2.INPAINT_TELEA), "
                "[cv2.IMWRITE_PNG_COMPRESSION, 1])",
                str(image_file), str(mask_file), str(folder / "bare.png")]
    runs: dict[str, Callable[[], float]] = {
        "fill": lambda: run_process(command),
        "one-shot": lambda: run_process(one_shot),
        "bare": lambda: timed(lambda: cv2.inpaint(rgb, engine_mask(mask, opencv_options()), RADIUS,
                                                  cv2.INPAINT_TELEA)),
    }
    version = iopaint_version(bench.iopaint_venv)
    server = None
    if version is not None:
        server = IOPaintServer(bench.iopaint_venv, folder)
        bench.stack.callback(server.stop)
        client = [str(bench.iopaint_venv / "bin" / "python"), str(ROOT / "bench" / "iopaint_client.py"), server.url,
                  str(image_file), str(mask_file), str(iopaint_file), "--flag", "INPAINT_TELEA", "--radius",
                  str(RADIUS)]
        runs["iopaint"] = lambda: run_process(client)
    values = interleaved(bench.repeat, runs)
    if server is not None:
        server.stop()  # idle from here, but not left running beside the later pairs
    a = Samples(f"gimp-inpaint fill, {side}² PNG in and out, whole process", values["fill"])
    b = Samples(f"bare cv2.inpaint on the {side}² arrays of the same files", values["bare"])
    c = Samples("bare one-shot process: python -c, cv2.imread ×2, cv2.inpaint, cv2.imwrite (PNG level 1)",
                values["one-shot"])
    result.samples += [a, b, c]
    side_line = (f"{seconds_text(a.median)} = {a.median / b.median:.2f} × bare cv2.inpaint "
                 f"({seconds_text(b.median)}), {a.median / c.median:.2f} × a bare one-shot process "
                 f"({seconds_text(c.median)})")
    if version is None:
        result.rows.append(Row(f"gimp-inpaint fill whole process, {side}² PNG in and out", a.median, side_line, None,
                               "≤ 0.40 × IOPaint's one-shot client: not run"))
        result.notes.append(f"the IOPaint comparison was not run: IOPaint is not installed in {bench.iopaint_venv} "
                            "(--iopaint-venv; its goal is ≤ 0.40 × IOPaint's own one-shot HTTP client on the same "
                            "files)")
        return
    d = Samples(f"IOPaint {version} one-shot client: bench/iopaint_client.py (IOPaint's Python), {side}² PNG in "
                "and out, whole process", values["iopaint"])
    result.samples.append(d)
    ratio = a.median / d.median
    result.rows.append(Row(f"gimp-inpaint fill ÷ IOPaint {version}'s one-shot HTTP client, whole processes, {side}² "
                           "PNG in and out", ratio, f"{ratio:.2f} ({seconds_text(a.median)} vs "
                           f"{seconds_text(d.median)})", 0.40, "≤ 0.40"))
    result.rows.append(Row(f"gimp-inpaint fill whole process, {side}² PNG in and out", a.median, side_line))
    ours, theirs = (np.asarray(Image.open(path).convert("RGB")) for path in (out_file, iopaint_file))
    hole = mask > 127  # IOPaint's threshold (iopaint/api.py)
    filled = engine_mask(mask, opencv_options()) > 0
    if ours.shape != theirs.shape:
        result.notes.append(f"the outputs differ in size: gimp-inpaint {ours.shape}, IOPaint {theirs.shape}")
    else:
        difference = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        result.notes.append(f"outputs: both {ours.shape[1]}×{ours.shape[0]} RGB; mean absolute difference "
                            f"{difference[hole].mean():.2f} levels (of 255, over the channels) inside the mask "
                            f"file's hole ({int(hole.sum())} pixels), {difference[~hole].mean():.2f} outside it")
    result.notes.append(f"IOPaint {version} from {bench.iopaint_venv}: `iopaint start --model cv2 --device cpu "
                        "--local-files-only`, started once and warmed up by the first client; the client sends "
                        f"cv2_flag INPAINT_TELEA and cv2_radius {RADIUS} (gimp-inpaint's OpenCV engine's; IOPaint's "
                        "defaults are INPAINT_NS with radius 4, 5 in its web client) and hd_strategy Crop (its web "
                        "client's: Telea on the mask's box plus a 128-pixel margin). IOPaint fills the mask file's "
                        f"hole ({int(hole.sum())} pixels), gimp-inpaint the wider region its feather repaints "
                        f"({int(filled.sum())} pixels, the bare cv2.inpaint's mask); IOPaint writes its PNG at "
                        "Pillow's default level 6, gimp-inpaint at level 1")


def pair_cli_start(bench: Bench, result: PairResult) -> None:
    """Pair 7: ``gimp-inpaint --help`` and ``status`` wall time ÷ ``python -c pass``."""
    daemon = bench.opencv_daemon()
    script = str(console_script())
    values = interleaved(bench.repeat, {
        "pass": lambda: run_process([sys.executable, "-c", "pass"]),
        "help": lambda: run_process([script, "--help"]),
        "status": lambda: run_process([script, "status", "--url", daemon.url, "--config-dir", str(daemon.folder)]),
    })
    base = Samples("python -c pass", values["pass"])
    result.samples.append(base)
    for name in ("help", "status"):
        samples = Samples(f"gimp-inpaint {'--help' if name == 'help' else 'status'}", values[name])
        result.samples.append(samples)
        ratio = samples.median / base.median
        result.rows.append(Row(f"{samples.label} ÷ python -c pass", ratio,
                               f"{ratio:.1f}× ({seconds_text(samples.median)} vs {seconds_text(base.median)})", 3.0,
                               "≤ 3×"))


def pair_preload(bench: Bench, result: PairResult) -> None:
    """Pair 8: the first diffusers request after daemon start, preload off and on."""
    model = bench.tiny_model()
    if model is None:
        result.rows.append(Row("first tiny-SD request after start, preload on ÷ warm request", None,
                               "not run: torch/diffusers missing", 1.10, "≤ 1.10"))
        return
    side, steps = bench.sd_crop, bench.sd_steps
    options = tiny_sd_options(steps)
    image, mask = rgba(side), disc(side)
    measures: dict[str, dict[str, list[float]]] = {}

    def request(daemon: Daemon) -> tuple[float, float]:
        """(the request's own seconds, connect to variants; process start → its result, seconds)."""
        start = time.perf_counter()
        with daemon.client() as client:
            fill(client, image, mask, options)
        return time.perf_counter() - start, time.monotonic() - daemon.started

    def run(mode: str) -> float:
        daemon = bench.daemon(bench.tiny_toml(model, preload=mode != "off"))
        record = measures.setdefault(mode, {})
        record.setdefault("start → listening", []).append(daemon.listening - daemon.started)
        if mode == "on":
            while True:
                with daemon.client() as client:
                    tiny = next(engine for engine in client.welcome.engines if engine.name == "tiny")
                if not tiny.warming_up:
                    break
                time.sleep(0.05)
            record.setdefault("start → warmed up", []).append(time.monotonic() - daemon.started)
        own, total = request(daemon)
        warm, _ = request(daemon)
        daemon.stop()
        record.setdefault("first request", []).append(own)
        record.setdefault("start → first result", []).append(total)
        record.setdefault("warm request", []).append(warm)
        return own

    modes = {"off": lambda: run("off"), "on": lambda: run("on"), "on, at once": lambda: run("on, at once")}
    names = list(modes)
    for round_ in range(bench.repeat):  # no warm-up round: every run is a fresh daemon, which is what is measured
        for name in names if round_ % 2 == 0 else names[::-1]:
            modes[name]()
    titles = {"off": "preload off, request at listening", "on": "preload on, request once warmed up",
              "on, at once": "preload on, request at listening (queued behind the load)"}
    for mode, record in measures.items():
        for key, values in record.items():
            result.samples.append(Samples(f"{titles[mode]}: {key}", values))
    warm = Samples("warm request", measures["on"]["warm request"])
    first = {mode: statistics.median(measures[mode]["first request"]) for mode in measures}
    to_result = {mode: statistics.median(measures[mode]["start → first result"]) for mode in measures}
    result.rows.append(Row(f"first tiny-SD request ({side}², {steps} steps) with preload, after warm-up ÷ a warm "
                           "request", first["on"] / warm.median,
                           f"{first['on'] / warm.median:.2f} ({seconds_text(first['on'])} vs "
                           f"{seconds_text(warm.median)}); start → result {seconds_text(to_result['on'])}, warmed up "
                           f"at {seconds_text(statistics.median(measures['on']['start → warmed up']))}", 1.10,
                           "hidden behind start-up (read as ≤ 1.10)"))
    warm_off = statistics.median(measures["off"]["warm request"])
    result.rows.append(Row("first tiny-SD request without preload ÷ a warm request", first["off"] / warm_off,
                           f"{first['off'] / warm_off:.2f} ({seconds_text(first['off'])} vs "
                           f"{seconds_text(warm_off)}); start → result {seconds_text(to_result['off'])}"))
    result.rows.append(Row("preload on, request sent at listening: start → result", to_result["on, at once"],
                           f"{seconds_text(to_result['on, at once'])} (without preload "
                           f"{seconds_text(to_result['off'])})"))


def pair_stall(bench: Bench, result: PairResult) -> None:
    """Pair 9: the longest canary handshake during another client's large job, beyond the canary's idle median."""
    side = bench.sizes["large"]
    daemon = bench.opencv_daemon()
    image, mask = rgba(side), disc(side)
    canary = subprocess.Popen([sys.executable, __file__, "--canary", daemon.url, str(daemon.folder)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    jobs: list[tuple[float, float, float]] = []  # (start, the last progress message: the variant made, end)
    try:
        assert canary.stdout is not None and canary.stdin is not None
        if canary.stdout.readline() != "ready\n":
            raise RuntimeError("the canary did not start")
        with daemon.client() as client:
            fill(client, image, mask, opencv_options())  # warm-up, not counted
            for _ in range(bench.repeat):
                time.sleep(IDLE_BEFORE_JOB)
                made = [0.0]
                start = time.monotonic()
                fill(client, image, mask, opencv_options(),
                     on_progress=lambda step, total, stage, made=made: made.__setitem__(0, time.monotonic()))
                jobs.append((start, made[0], time.monotonic()))
            time.sleep(IDLE_BEFORE_JOB)
        output, _ = canary.communicate("stop\n", timeout=WAIT)
    finally:
        if canary.poll() is None:
            canary.kill()
            canary.wait()
    handshakes: list[tuple[float, float]] = json.loads(output)
    first_job = jobs[0][0] - IDLE_BEFORE_JOB + 0.2  # the warm-up job ended before this

    def overlapping(begin: float, end: float) -> list[tuple[float, float]]:
        """(seconds, start) of the handshakes that overlap ``begin … end``."""
        return [(seconds, start) for start, seconds in handshakes if start < end and start + seconds > begin]

    busy = {(seconds, start) for job in jobs for seconds, start in overlapping(job[0], job[2])}
    idle = [seconds for start, seconds in handshakes if start > first_job and (seconds, start) not in busy]
    idle_median = statistics.median(idle)
    idle_floor = max(idle) - idle_median  # the noise floor: the longest idle handshake beyond the idle median
    longest = [max(overlapping(job[0], job[2])) for job in jobs]
    worst = [seconds - idle_median for seconds, _ in longest]
    # the result's phase: from the variant's last progress message (overlay done, then it is encoded and sent) on
    worst_result = [max(overlapping(job[1], job[2]), default=(idle_median, 0.0))[0] - idle_median for job in jobs]
    a = Samples(f"longest handshake during a {side}² job beyond the idle median", worst)
    b = Samples("the same, from the variant's last progress message to the client having it (the result encoded "
                "and sent)", worst_result)
    result.samples += [a, b, Samples("canary handshakes while idle", idle, meter=False),
                       Samples("canary handshakes during the jobs", [seconds for seconds, _ in busy], meter=False),
                       Samples(f"{side}² job (end-to-end)", [end - start for start, _, end in jobs]),
                       Samples("of which the result's phase", [end - made for _, made, end in jobs])]
    result.rows.append(Row(f"longest event-loop stall during a {side}² job (handshake canary)", a.median,
                           f"{seconds_text(a.median)} (max {seconds_text(max(worst))}; while the result is encoded "
                           f"and sent {seconds_text(b.median)}; idle handshake {seconds_text(idle_median)}, idle "
                           f"noise floor {seconds_text(idle_floor)})", 0.010, "≤ 10 ms"))
    result.notes.append("the noise floor is the longest idle handshake beyond the idle median: a stall below it "
                        "cannot be told from noise")
    result.notes.append("each job's longest handshake (ms) and when it began, in seconds from the job's start (the "
                        "request is built and sent first), and the job's result phase: " + "; ".join(
                            f"{seconds * 1e3:.0f} at {start - job[0]:.2f} s (result phase {job[1] - job[0]:.2f} to "
                            f"{job[2] - job[0]:.2f} s)" for (seconds, start), job in zip(longest, jobs, strict=True)))


def canary_main(url: str, folder: str) -> None:
    """The stall pair's canary (``--canary URL FOLDER``): handshakes until a line arrives on stdin, then prints
    ``[[start, seconds], …]`` (``time.monotonic()``, shared by the processes of one machine) as JSON."""
    token = (Path(folder) / "token").read_text(encoding="utf-8").strip()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    handshakes = []
    while not stop.is_set():
        start = time.monotonic()
        client = InpaintClient.connect(url, token, "canary", timeout=WAIT)
        handshakes.append((start, time.monotonic() - start))
        client.close()
        if len(handshakes) == 1:
            print("ready", flush=True)
        time.sleep(CANARY_PAUSE)
    json.dump(handshakes, sys.stdout)


def console_script() -> Path:
    """The ``gimp-inpaint`` console script next to this Python."""
    script = Path(sys.executable).with_name("gimp-inpaint")
    if not script.exists():
        raise RuntimeError(f"{script} is missing: pip install -e . into this environment")
    return script


def run_process(command: list[str]) -> float:
    """Wall seconds of ``command``, which must exit 0 (its output discarded)."""
    start = time.perf_counter()
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              check=False)
    seconds = time.perf_counter() - start
    if finished.returncode:
        raise RuntimeError(f"{command[:3]} exited {finished.returncode}: {finished.stderr[-1000:]}")
    return seconds


PAIRS: dict[str, Callable[[Bench, PairResult], None]] = {
    "opencv-512": lambda bench, result: pair_opencv(bench, result, "small"),
    "opencv-2048": lambda bench, result: pair_opencv(bench, result, "medium"),
    "sd-512": pair_sd,
    "opencv-linear": pair_linear,
    "memory": pair_memory,
    "cli-fill": pair_cli_fill,
    "cli-start": pair_cli_start,
    "preload": pair_preload,
    "stall": pair_stall,
}
"""The pairs in the issue's order: ``--only`` name → function (number: its place here, from 1)."""


# --------------------------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for label, package in (("NumPy", "numpy"), ("OpenCV", "opencv-python-headless"), ("torch", "torch"),
                           ("diffusers", "diffusers"), ("msgpack", "msgpack"), ("websockets", "websockets")):
        try:
            found[label] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[label] = cv2.__version__ if package.startswith("opencv") else "not installed"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    found["commit"] = commit + (" (with uncommitted changes)" if dirty else "")
    return found


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        model = f" ({found[1].strip()})" if found else ""
    return f"{os.cpu_count()} cores{model}, {psutil.virtual_memory().total / 1e9:.0f} GB"


def report(results: list[PairResult], header: list[str]) -> str:
    lines = [*header, "", "| # | measurement | measured | goal | met | noise: 1-min load before → after, "
             "widest spread |", "|---|---|---|---|---|---|"]
    for result in results:
        for row in result.rows:
            lines.append(f"| {result.number} | {row.label} | {row.shown} | {row.goal_text} | {row.met} "
                         f"| {result.noise()} |")
    lines.append("")
    for result in results:
        lines += ["", f"## {result.number}. {result.name}", "",
                  f"Load average {result.load_before} before, {result.load_after} after; {result.seconds:.0f} s.", ""]
        lines += [f"- {note}" for note in result.notes]
        if result.notes:
            lines.append("")
        lines += ["| sample set | median (min, max, spread, n) | samples |", "|---|---|---|"]
        lines += [f"| {samples.label} | {samples.text()} | {samples.raw()} |" for samples in result.samples]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 repeats: check that it runs")
    parser.add_argument("--repeat", type=int, help="samples per side of each pair (default 5; 2 with --quick)")
    names = list(PAIRS)
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[*names, *map(str, range(1, len(names) + 1))],
                        help=f"run only these pairs (names or numbers): {', '.join(names)}")
    parser.add_argument("--iopaint-venv", type=Path, default=IOPAINT_VENV, metavar="PATH",
                        help=f"IOPaint's virtual environment, for pair 6 (default: {IOPAINT_VENV})")
    parser.add_argument("--canary", nargs=2, metavar=("URL", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.canary:
        canary_main(*args.canary)
        return 0
    repeat = args.repeat or (2 if args.quick else 5)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    chosen = [name for number, name in enumerate(names, 1) if not args.only or {name, str(number)} & set(args.only)]
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up daemons and folders

    now = datetime.now(timezone.utc)
    found = versions()
    load_before = read_loadavg()
    quick = " (--quick: small sizes, not a measurement)" if args.quick else ""
    header = [f"# bench/speed.py, {now:%Y-%m-%d %H:%M} UTC{quick}",
              "",
              f"Command: `{' '.join(['bench/speed.py', *sys.argv[1:]])}`; {repeat} samples per side, interleaved, "
              "after one warm-up each.",
              "",
              "Versions: " + ", ".join(f"{label} {version}" for label, version in found.items() if label != "commit")
              + f"; commit {found['commit']}.",
              "",
              f"Machine: {machine()}; load average (1, 5, 15 min, running/total tasks) {load_before} at the start"]
    print("\n".join(header) + ".", flush=True)
    if repeat < 5 and not args.quick:
        print(f"note: {repeat} samples per side; the issue asks for a median of at least 5", flush=True)
    results: list[PairResult] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bench = Bench(stack, args.quick, repeat, args.iopaint_venv)
        for name in chosen:
            result = PairResult(names.index(name) + 1, name, load_before=read_loadavg())
            print(f"\n[{result.number} {name}] running …", flush=True)
            pair_start = time.monotonic()
            PAIRS[name](bench, result)
            result.seconds = time.monotonic() - pair_start
            result.load_after = read_loadavg()
            results.append(result)
            for samples in result.samples:
                print(f"  {samples.label}: {samples.text()}")
            for note in result.notes:
                print(f"  note: {note}")
            for row in result.rows:
                print(f"  => {row.label}: {row.shown}; goal {row.goal_text}; met: {row.met}")
            print(f"  load average {result.load_before} before, {result.load_after} after; {result.seconds:.0f} s",
                  flush=True)
    load_after = read_loadavg()
    header[-1] += f", {load_after} at the end; {time.monotonic() - started:.0f} s in all."
    text = report(results, header)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"speed-{now:%Y-%m-%dT%H%MZ}{'-quick' if args.quick else ''}.md"
    path.write_text(text, encoding="utf-8")
    print("\n" + "\n".join(text.split("\n\n## ")[0].splitlines()[len(header):]))
    print(f"load average {load_before} at the start, {load_after} at the end")
    print(f"results: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
