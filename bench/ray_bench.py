"""Ray backend benchmark (issue 14): jobs per second through the daemon's WebSocket front end with the local backend
and with the Ray backend at 1 and 2 CPU replicas, in one run, on the opencv engine, and the latency the Ray path adds
to one job.

    .venv/bin/python bench/ray_bench.py [--side 512] [--clients 4] [--jobs 10] [--repeat 10]

Each setup is a real :class:`daemon.server.DaemonServer` on loopback (a local Ray of 4 logical CPUs for the Ray
ones, each replica 0.5 of them): first ``--repeat`` jobs one after the other from one client (latency: the client's
wall time per job, and the server's ``total`` timing), then ``--clients`` clients at once, each sending ``--jobs``
jobs one after the other (throughput: jobs done / wall time). The requests are scikit-image's astronaut at
``--side``² with a centred disc mask (bench/transport.py's ``photo_request``). Writes
``bench/results/ray-<UTC date-time>.md`` with the date, versions, the machine's CPUs and load, and the tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gimp_inpaint.client.connection import InpaintClient
from gimp_inpaint.daemon.config import Settings, ensure_token
from gimp_inpaint.daemon.engines.base import Engine
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.server import DaemonServer
from gimp_inpaint.daemon.worker import JobRunner
from gimp_inpaint.protocol import InpaintRequest
from running_daemon import serving
from transport import photo_request

RESULTS = Path(__file__).resolve().parent / "results"


def opencv_only() -> list[Engine]:
    """The replicas' engines: opencv alone."""
    return [OpenCVEngine()]


@dataclasses.dataclass(frozen=True)
class Measured:
    """One setup's numbers (seconds, jobs per second)."""

    name: str
    wall: float
    """Median client wall time of one job alone."""
    server: float
    """Median server ``total`` timing of one job alone (acceptance to variant done)."""
    inference: float
    """Median engine time of one job alone."""
    rate: float
    """Jobs per second with the clients at once."""
    replicas: int
    """Distinct replica ranks seen in the timings (0 for the local backend)."""


def measure(name: str, backend: Callable[[], JobRunner | None], request: InpaintRequest, clients: int, jobs: int,
            repeat: int, config: Path) -> Measured:
    """Serve opencv with ``backend()`` (None: the local worker) and time it (the module's docstring)."""
    token = ensure_token(config)
    settings = Settings(config_dir=config, log_file=config / "daemon.log", port=0, tray=False,
                        max_pixels=request.image.width * request.image.height)
    seen: set[float] = set()
    with serving(DaemonServer(settings, [OpenCVEngine()], token, backend=backend())) as server:
        url = str(server.url)
        with InpaintClient.connect(url, token, "bench") as client:
            walls, servers, inferences = [], [], []
            for index in range(repeat + 3):  # 3 warm-up jobs
                start = time.perf_counter()
                (variant,) = client.inpaint(dataclasses.replace(request, job_id=f"alone-{index}"))
                if index >= 3:
                    walls.append(time.perf_counter() - start)
                    servers.append(variant.timings["total"])
                    inferences.append(variant.timings["inference"])
                seen.add(variant.timings.get("replica", -1.0))

        def client_run(number: int) -> None:
            with InpaintClient.connect(url, token, f"bench-{number}") as each:
                for index in range(jobs):
                    (variant,) = each.inpaint(dataclasses.replace(request, job_id=f"c{number}-{index}"))
                    seen.add(variant.timings.get("replica", -1.0))

        threads = [threading.Thread(target=client_run, args=(number,)) for number in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    return Measured(name, statistics.median(walls), statistics.median(servers), statistics.median(inferences),
                    clients * jobs / elapsed, len(seen - {-1.0}))


def main() -> None:
    """Run the three setups and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    import ray
    from gimp_inpaint.daemon.ray_backend import RayBackend, RaySettings

    request = photo_request(args.side)
    load_before = os.getloadavg()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}})

    def ray_backend(replicas: int) -> Callable[[], JobRunner]:
        return lambda: RayBackend(opencv_only, RaySettings(min_replicas=replicas, max_replicas=replicas,
                                                           gpus_per_replica=0.0, cpus_per_replica=0.5))

    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, backend in (("local backend", lambda: None), ("Ray, 1 CPU replica", ray_backend(1)),
                              ("Ray, 2 CPU replicas", ray_backend(2))):
            results.append(measure(name, backend, request, args.clients, args.jobs, args.repeat, Path(folder)))
            print(results[-1], flush=True)
    ray.shutdown()
    load_after = os.getloadavg()

    local = results[0]
    now = datetime.now(timezone.utc)
    lines = [f"# Ray backend benchmark, {now:%Y-%m-%d %H:%M} UTC", "",
             f"`.venv/bin/python bench/ray_bench.py --side {args.side} --clients {args.clients} --jobs {args.jobs} "
             f"--repeat {args.repeat}`", "",
             f"- Python {platform.python_version()}, ray {ray.__version__}, NumPy {np.__version__}, OpenCV "
             f"{cv2.__version__}, {platform.platform()}",
             f"- {os.cpu_count()} CPU cores (shared with other sessions); load average (1, 5, 15 min) "
             f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} before, "
             f"{load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} after",
             f"- local Ray with 4 logical CPUs, 0.5 per replica; no GPU. Requests: the astronaut at {args.side}² with "
             "a centred disc mask, opencv (Telea), 1 variant", "",
             f"| setup | one job alone: client wall | server total | engine | wall − engine | Ray's added latency | "
             f"jobs/s with {args.clients} clients | replicas used |", "|---|---|---|---|---|---|---|---|"]
    for result in results:
        overhead = result.wall - result.inference
        added = "—" if result is local else f"{(overhead - (local.wall - local.inference)) * 1e3:+.1f} ms"
        lines.append(f"| {result.name} | {result.wall * 1e3:.1f} ms | {result.server * 1e3:.1f} ms | "
                     f"{result.inference * 1e3:.1f} ms | {overhead * 1e3:.1f} ms | {added} | {result.rate:.1f} | "
                     f"{result.replicas or '—'} |")
    lines += ["", "Medians of the jobs alone. wall − engine: everything but the engine's call (the WebSocket front "
              "end, the codec, the worker's compositing; with Ray also the object store, Serve's routing and the "
              "streamed response). Ray's added latency: that less the local backend's."]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ray-{now:%Y-%m-%dT%H%MZ}.md"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
