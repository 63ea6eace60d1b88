"""Transport benchmark: what raw msgpack frames cost on loopback, with and without permessage-deflate,
and the overhead a real fill through the daemon adds on top of the engine's own time.

    .venv/bin/python bench/transport.py [--repeat 5]

Prints a Markdown table; bench/README.md records a run. Uses a real photo (scikit-image's
astronaut, scaled with Pillow) so deflate sees realistic, not synthetic, pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data
from websockets.asyncio.server import ServerConnection, serve
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gimp_inpaint.client.connection import InpaintClient
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import FillOptions, InpaintRequest, Plane, encode, max_frame_bytes
from running_daemon import running_daemon


def photo_request(side: int) -> InpaintRequest:
    """A ``side × side`` RGBA crop of the astronaut photo with a centred disc mask (a quarter of the area)."""
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS))
    rgba = np.dstack([rgb, np.full((side, side), 255, np.uint8)])
    yy, xx = np.mgrid[:side, :side]
    mask = (((xx - side / 2) ** 2 + (yy - side / 2) ** 2) <= (side / 3.5) ** 2).astype(np.uint8) * 255
    return InpaintRequest(job_id="bench", x=0, y=0, image=Plane(side, side, 4, rgba.tobytes()),
                          mask=Plane(side, side, 1, mask.tobytes()),
                          options=FillOptions(engine="opencv", grow=0, feather=4))


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    """Median wall time (seconds) of ``repeat`` calls after one warm-up call."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def frame_round_trip(frame: bytes, compression: str | None, repeat: int) -> float:
    """Median seconds to send ``frame`` to a loopback server and receive a 2-byte acknowledgement."""
    ready = threading.Event()
    stop: asyncio.Future[None] | None = None
    port = 0

    async def ack(websocket: ServerConnection) -> None:
        async for _ in websocket:
            await websocket.send(b"ok")

    async def main() -> None:
        nonlocal stop, port
        stop = asyncio.get_running_loop().create_future()
        async with serve(ack, "127.0.0.1", 0, compression=compression, max_size=None) as server:
            port = server.sockets[0].getsockname()[1]
            ready.set()
            await stop

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait()
    try:
        with connect(f"ws://127.0.0.1:{port}", compression=compression, max_size=None, proxy=None) as websocket:
            return median_seconds(lambda: (websocket.send(frame), websocket.recv()), repeat)
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)  # type: ignore[union-attr]
        thread.join()


def main() -> None:
    """Run both benchmarks and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat

    print("| payload | frame | raw (no deflate) | permessage-deflate |")
    print("|---|---|---|---|")
    for side in (512, 2048):
        frame = encode(photo_request(side))
        raw = frame_round_trip(frame, None, repeat)
        deflate = frame_round_trip(frame, "deflate", max(1, repeat // 2))
        megabytes = len(frame) / 1e6
        print(f"| {side}² RGBA + mask request | {megabytes:.1f} MB | {raw * 1e3:.1f} ms ({megabytes / raw:.0f} MB/s) "
              f"| {deflate * 1e3:.0f} ms ({megabytes / deflate:.0f} MB/s) |")

    print()
    print("| fill through the daemon (opencv engine) | client wall time | engine inference | everything else |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as config, running_daemon(Path(config), [OpenCVEngine()],
                                                                 max_pixels=2048 * 2048) as (url, token):
        for side in (512, 2048):
            request = photo_request(side)
            assert len(encode(request)) <= max_frame_bytes(side * side)
            with InpaintClient.connect(url, token, "bench") as client:
                inference: list[float] = []

                def fill(client: InpaintClient = client, request: InpaintRequest = request,
                         inference: list[float] = inference) -> None:
                    (variant,) = client.inpaint(request)  # the disc's box, not the whole crop
                    inference.append(variant.timings["inference"])

                wall = median_seconds(fill, repeat)
            engine = statistics.median(inference)
            print(f"| {side}² crop | {wall * 1e3:.0f} ms | {engine * 1e3:.0f} ms | {(wall - engine) * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
