"""Memory benchmark (issue 8, item 3): the daemon's resident memory (RSS) before, during and after a 16-variant
2048² job, with and without glibc's allocator tweaks of :mod:`daemon.memory`.

    .venv/bin/python bench/memory.py [--side 2048] [--variants 16]

Each configuration runs in a fresh daemon process (the real :class:`daemon.server.DaemonServer` with a fake engine
that inverts the crop: no model, no OpenCV inpainting), and this process is its client, so the RSS read (psutil,
every 5 ms) is the daemon's alone. Configurations:

- ``none``: glibc's defaults (the dynamic mmap threshold), no trim;
- ``mallopt``: ``mallopt(M_MMAP_THRESHOLD, 8 MiB)`` and ``mallopt(M_TRIM_THRESHOLD, 64 MiB)`` at start
  (:func:`daemon.memory.limit_mmap_threshold`);
- ``trim``: ``malloc_trim(0)`` after each job (:func:`daemon.memory.release_free_memory`, as the server does);
- ``both``: what ``gimp-inpaint-daemon`` does.

"idle" is after a 64² warm-up job, "peak" the highest RSS seen during the big job, "after job" one second after
its Result (the connection still open), "after close" one second after the client disconnected. Prints a Markdown
table; bench/README.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import msgpack
import numpy as np
import psutil
import websockets
from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    Error,
    FillOptions,
    Hello,
    InpaintRequest,
    Plane,
    Result,
    Variant,
    Welcome,
    decode,
    encode,
)
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
MODES = ("none", "mallopt", "trim", "both")
TOKEN = "b" * 64


def request(side: int, variants: int, job_id: str) -> InpaintRequest:
    """A ``side``² RGBA gradient with a centred disc masked (radius side/3.5, a quarter of the area)."""
    ramp = np.linspace(0, 255, side).astype(np.uint8)
    rgba = np.empty((side, side, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = ramp[None, :], ramp[:, None], 90, 255
    yy, xx = np.mgrid[:side, :side]
    mask = (((xx - side / 2) ** 2 + (yy - side / 2) ** 2) <= (side / 3.5) ** 2).astype(np.uint8) * 255
    return InpaintRequest(job_id=job_id, x=0, y=0, image=Plane(side, side, 4, rgba.tobytes()),
                          mask=Plane(side, side, 1, mask.tobytes()),
                          options=FillOptions(engine="invert", seed=1, num_variants=variants))


def child(mode: str) -> None:
    """The daemon side: apply ``mode``, serve the fake engine on a free port, print the URL, run until killed."""
    from gimp_inpaint.daemon import memory
    from gimp_inpaint.daemon import server as server_module
    from gimp_inpaint.daemon.config import Settings
    from gimp_inpaint.daemon.engines.base import CancelCheck, Engine, EngineJob, ProgressCallback
    from gimp_inpaint.protocol import EngineInfo

    class InvertEngine(Engine):
        name = "invert"

        def info(self) -> EngineInfo:
            return EngineInfo(name=self.name, kind="bench", model="invert", available=True, uses_prompt=False)

        def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
            progress(1, 1)
            return 255 - job.image

    if mode in ("mallopt", "both"):
        assert memory.limit_mmap_threshold(), "mallopt refused the threshold (not glibc?)"
    if mode in ("none", "mallopt"):
        server_module.release_free_memory = lambda: False  # the server's trim after each job, switched off
    config = Path(tempfile.mkdtemp(prefix="gimp-inpaint-bench-"))
    settings = Settings(config_dir=config, log_file=config / "daemon.log", port=0, max_pixels=4096 * 4096,
                        tray=False)
    server = server_module.DaemonServer(settings, [InvertEngine()], TOKEN)
    asyncio.run(server.serve(lambda url: print(url, flush=True)))


def run_job(ws: ClientConnection, message: InpaintRequest) -> int:
    """Send ``message`` and read, and drop, its replies up to the Result; the number of variants received."""
    ws.send(encode(message))
    variants = 0
    while True:
        reply = decode(ws.recv(timeout=120), max_pixels=4096 * 4096)
        if isinstance(reply, Error):
            raise RuntimeError(reply.message)
        variants += isinstance(reply, Variant)
        if isinstance(reply, Result):
            assert reply.num_variants == variants
            return variants


def measure(mode: str, side: int, variants: int) -> dict[str, float]:
    """RSS (MiB) of a fresh daemon in ``mode``: idle, peak during the job, after it, after the client closed."""
    process = subprocess.Popen([sys.executable, __file__, "--child", mode], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        daemon = psutil.Process(process.pid)

        def rss() -> float:
            return daemon.memory_info().rss / MIB

        with connect(url, compression=None, max_size=None, proxy=None) as ws:
            ws.send(encode(Hello(protocol_version=PROTOCOL_VERSION, client="bench", token=TOKEN)))
            assert isinstance(decode(ws.recv(timeout=30)), Welcome)
            run_job(ws, request(64, 1, "warm-up"))
            big = request(side, variants, "big")
            time.sleep(1.0)
            idle, peak, stop = rss(), [0.0], threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss())
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            received = run_job(ws, big)
            seconds = time.perf_counter() - started
            time.sleep(1.0)
            stop.set()
            sampler.join()
            assert received == variants, received
            after_job = rss()
        time.sleep(1.0)
        after_close = rss()
    finally:
        process.terminate()
        process.wait(30)
    return {"idle": idle, "peak": peak[0], "after job": after_job, "after close": after_close, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--variants", type=int, default=16)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    load_before = os.getloadavg()
    rows = [(mode, measure(mode, args.side, args.variants)) for mode in MODES]
    load_after = os.getloadavg()
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.side}² × {args.variants} variants; Python "
          f"{platform.python_version()}, {' '.join(platform.libc_ver())}, NumPy {np.__version__}, msgpack "
          f"{'.'.join(map(str, msgpack.version))}, websockets {websockets.__version__}, psutil {psutil.__version__}; "
          f"{os.cpu_count()} cores, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after\n")
    print("| configuration | idle | peak | after job | after close | job time |")
    print("|---|---|---|---|---|---|")
    for mode, numbers in rows:
        print(f"| `{mode}` | {numbers['idle']:.0f} MiB | {numbers['peak']:.0f} MiB | {numbers['after job']:.0f} MiB "
              f"| {numbers['after close']:.0f} MiB | {numbers['seconds']:.2f} s |")


if __name__ == "__main__":
    main()
