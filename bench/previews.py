"""Preview overhead (issue 12, item 2): what live previews cost a diffusion job, as a share of its step time.

    .venv/bin/python bench/previews.py [--repeat N] [--steps S] [--every K] [--side PX]

The model is the tiny random-weight SD inpainting pipeline (``tests/tiny_pipelines.py``, native 128 px, so its
previews take the linear latent-to-RGB map: nothing is cached offline), served by the real daemon, ``python -m
gimp_inpaint.daemon --no-tray --port 0`` in a subprocess with its own temporary configuration folder (``device =
"cpu"``), driven by :class:`gimp_inpaint.client.connection.InpaintClient` from this process, which receives every
preview (``on_preview``). The picture is scikit-image's astronaut scaled with Pillow (Lanczos) to ``--side`` (default
512) with a centred disc masked (radius side / 3.5); one variant, ``--steps`` steps (default 20), seed 1, ``grow``
0, the ``fill`` mode, no colour match.

Two measurements:

1. End to end, A/B: the same job without previews (``preview_every`` 0) and with them (``--every``, default
   :data:`protocol.DEFAULT_PREVIEW_EVERY`, at the default size), interleaved (A B, then B A, …) after one warm-up
   of each, ``--repeat`` (default 7) rounds; per job the engine's own time (the variant's ``inference`` timing,
   which holds the previews' work on the worker thread) ÷ the job's progress steps is the step time; the overhead
   is median(B) ÷ median(A) − 1.
2. Per preview, in this process, median of 200 calls each: the linear map on a latent tensor of the tiny model's
   size (``daemon.engines.previews.LinearPreviewer``), the worker's preview (scaling and mixing with the crop,
   ``daemon.worker._JobPreviews.preview``) and its msgpack frame (``protocol.encode``); their sum ÷ (``--every`` ×
   the median step time of 1.A) is the share of step time the previews take at that rate.

The load average (``/proc/loadavg``) is printed before and after; the machine is shared, so the numbers move with
its load. The results go to ``bench/results/previews-<UTC date-time>.md`` too, with the command, the versions and the
commit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from gimp_inpaint.client.connection import InpaintClient
from gimp_inpaint.daemon.config import ensure_token
from gimp_inpaint.protocol import DEFAULT_PREVIEW_EVERY, FillMode, FillOptions, InpaintRequest, Plane, Preview, encode
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
"""Where the results file goes: ``previews-<UTC date-time>.md``."""
sys.path.insert(0, str(ROOT / "tests"))

from running_daemon import daemon_process  # noqa: E402 - the tests' helpers, found through the path above
from tiny_pipelines import build_tiny_inpaint_pipeline  # noqa: E402


def load() -> str:
    """The 1-, 5- and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def request(side: int, steps: int, every: int) -> InpaintRequest:
    """The astronaut at ``side``² with a centred disc masked, for the ``tiny`` engine (see the module docstring)."""
    rgb = np.asarray(Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS))
    rgba = np.dstack([rgb, np.full((side, side), 255, np.uint8)])
    yy, xx = np.mgrid[:side, :side]
    mask = (((xx - side / 2) ** 2 + (yy - side / 2) ** 2) <= (side / 3.5) ** 2).astype(np.uint8) * 255
    options = FillOptions(engine="tiny", seed=1, grow=0, num_inference_steps=steps, fill_mode=FillMode.FILL,
                          color_match=False)
    return InpaintRequest(uuid.uuid4().hex, 0, 0, Plane(side, side, 4, rgba.tobytes()),
                          Plane(side, side, 1, mask.tobytes()), options, preview_every=every)


def step_time(client: InpaintClient, job: InpaintRequest) -> tuple[float, int]:
    """``(seconds per step of the engine, previews received)`` of one job."""
    totals: list[int] = []
    previews: list[Preview] = []
    (variant,) = client.inpaint(job, on_progress=lambda step, total, stage: totals.append(total),
                                on_preview=previews.append)
    return variant.timings["inference"] / totals[-1], len(previews)


def per_preview_seconds(job: InpaintRequest, latent_side: int) -> dict[str, float]:
    """Median seconds of each part of one preview (see the module docstring), in this process."""
    import torch
    from gimp_inpaint.daemon.compositing import blend_mask
    from gimp_inpaint.daemon.engines.previews import LATENT_SPACES, LinearPreviewer
    from gimp_inpaint.daemon.worker import PreviewOutlet, _JobPreviews, request_mask

    image = np.frombuffer(job.image.data, np.uint8).reshape(job.image.height, job.image.width, 4)
    blend = blend_mask(request_mask(job), job.options.feather)
    previews = _JobPreviews(job, image, blend, 21, 21, lambda: False, PreviewOutlet(lambda: True, lambda p: None))
    latents = torch.randn(1, 4, latent_side, latent_side)
    linear = LinearPreviewer(LATENT_SPACES["sd"])
    rgb = linear(latents)
    preview = previews.preview(2, rgb)
    parts = {"linear map": lambda: linear(latents), "scale and mix": lambda: previews.preview(2, rgb),
             "encode": lambda: encode(preview)}
    medians = {}
    for name, call in parts.items():
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
        medians[name] = statistics.median(samples)
    return medians


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=DEFAULT_PREVIEW_EVERY)
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args(argv)
    import diffusers
    import torch

    started = datetime.now(timezone.utc)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    lines = [f"# bench/previews.py, {started:%Y-%m-%d %H:%M} UTC", "",
             f"Command: `bench/previews.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
             f"torch {torch.__version__}, diffusers {diffusers.__version__}, commit {commit.strip()}; "
             f"load average before {load()}", ""]
    print(lines[-2])
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        model = build_tiny_inpaint_pipeline(folder / "tiny-inpaint")
        config = folder / "config"
        config.mkdir()
        (config / "daemon.toml").write_text(f'device = "cpu"\n[models.tiny]\nmodel = {json.dumps(str(model))}\n',
                                            encoding="utf-8")
        token = ensure_token(config)
        with daemon_process(config) as (url, _), InpaintClient.connect(url, token, "bench/previews", 30) as client:
            samples: dict[int, list[float]] = {0: [], args.every: []}
            received = 0
            for round_ in range(args.repeat + 1):
                order = (0, args.every) if round_ % 2 == 0 else (args.every, 0)
                for every in order:
                    seconds, count = step_time(client, request(args.side, args.steps, every))
                    if round_:  # the first round warms both up
                        samples[every].append(seconds)
                        received = max(received, count)
    without, with_previews = statistics.median(samples[0]), statistics.median(samples[args.every])
    parts = per_preview_seconds(request(args.side, args.steps, args.every), 128 // 8)
    cost = sum(parts.values())
    results = [
        f"- End to end, {args.side}² crop, {args.steps} steps, median of {args.repeat}: {1000 * without:.2f} ms a step "
        f"without previews, {1000 * with_previews:.2f} ms with one every {args.every} ({received} a job): "
        f"{100 * (with_previews / without - 1):+.1f} %",
        f"  - without: {', '.join(f'{1000 * s:.2f}' for s in samples[0])} ms",
        f"  - with:    {', '.join(f'{1000 * s:.2f}' for s in samples[args.every])} ms",
        f"- Per preview (256 px, the tiny model's 16² latents, median of 200): {1000 * cost:.3f} ms = "
        + " + ".join(f"{name} {1000 * seconds:.3f}" for name, seconds in parts.items())
        + f" ms; at one every {args.every} steps: {100 * cost / (args.every * without):.2f} % of the step time",
        "", f"Load average after {load()}."]
    print("\n".join(results))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"previews-{started:%Y-%m-%dT%H%MZ}.md"
    path.write_text("\n".join(lines + results) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
