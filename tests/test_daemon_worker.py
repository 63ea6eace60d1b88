"""daemon.worker.run_job on its own: what it asks of the engine, and when it asks nothing."""

from __future__ import annotations

import cv2
import numpy as np
from gimp_inpaint.daemon.engines.base import EngineJob, LoadProgress
from gimp_inpaint.daemon.worker import run_job, variant_seeds
from gimp_inpaint.protocol import ErrorCode, InpaintRequest, Plane, ProtocolError, Result
from gimp_inpaint.protocol.messages import SEED_MAX
from running_daemon import StepEngine
from skimage import data


class CountingEngine(StepEngine):
    """A :class:`StepEngine` that counts its ``load``, ``check`` and ``steps_for`` calls, reports a download and a
    load the first time, and refuses LoRAs (as an engine whose model has none would)."""

    def __init__(self) -> None:
        super().__init__("counting", steps=3)
        self.loads = 0
        self.checked: list[EngineJob] = []
        self.step_queries = 0

    def load(self, progress: LoadProgress | None = None) -> None:
        self.loads += 1
        if progress is not None and self.loads == 1:
            progress("download", 512, 1024)
            progress("download", 1024, 1024)
            progress("load", 0, 0)

    def check(self, job: EngineJob) -> None:
        self.checked.append(job)
        if job.loras:
            raise ProtocolError(ErrorCode.INCOMPATIBLE, "this model takes no LoRA")

    def steps_for(self, job: EngineJob) -> int:
        self.step_queries += 1
        return super().steps_for(job)


def astronaut_request(num_variants: int = 1, transparent: tuple[slice, slice] | None = None,
                      **options: object) -> InpaintRequest:
    """A 64×96 RGBA crop of the astronaut photo with an elliptic mask over her face; the ``transparent``
    (rows, columns) of it have alpha 0."""
    rgb = np.ascontiguousarray(data.astronaut()[60:124, 180:276])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    if transparent is not None:
        rgba[(*transparent, 3)] = 0
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (48, 32), (20, 14), 0, 0, 360, 255, -1)
    return InpaintRequest(job_id="w", engine="counting", x=0, y=0, image=Plane(96, 64, 4, rgba.tobytes()),
                          mask=Plane(96, 64, 1, mask.tobytes()), seed=5, num_variants=num_variants,
                          **options)  # type: ignore[arg-type]


def test_a_job_cancelled_before_it_starts_loads_nothing() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int, str]] = []
    outcome = run_job(astronaut_request(), engine, lambda *report: reports.append(report), lambda: True)
    assert outcome.code == ErrorCode.CANCELLED.value and outcome.job_id == "w"
    assert (engine.loads, engine.step_queries, engine.seen, reports) == (0, 0, [], [])


def test_load_and_steps_for_once_per_job() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int, str]] = []
    request = astronaut_request(num_variants=3, scheduler="euler_a", refiner_strength=0.25,
                                controlnet_conditioning_scale=0.5)
    outcome = run_job(request, engine, lambda *report: reports.append(report), lambda: False)
    assert isinstance(outcome, Result) and [variant.seed for variant in outcome.variants] == [5, 6, 7]
    assert (engine.loads, len(engine.checked), engine.step_queries) == (1, 1, 1)
    # the download and load stages first, then 3 steps × 3 variants
    assert reports == [(512, 1024, "download"), (1024, 1024, "download"), (0, 0, "load"),
                       *((step, 9, "inference") for step in range(10))]
    job = engine.checked[0]
    assert (job.scheduler, job.refiner_strength, job.controlnet_conditioning_scale, job.seed) == (
        "euler_a", 0.25, 0.5, 5)


def test_check_refuses_before_any_step() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int, str]] = []
    outcome = run_job(astronaut_request(loras={"pixel-art": 0.7}), engine, lambda *report: reports.append(report),
                      lambda: False)
    assert outcome.code == ErrorCode.INCOMPATIBLE.value and "takes no LoRA" in outcome.message
    assert engine.checked[0].loras == {"pixel-art": 0.7}
    assert (engine.step_queries, engine.seen) == (0, [])
    assert all(stage != "inference" for *_, stage in reports)


def test_fully_transparent_context_is_repainted_but_stays_transparent_outside_the_fade() -> None:
    """Transparent pixels are part of the engine's hole (it must not take their colour as context), but the
    result shows only within the selection's fade: a transparent stripe far from it stays transparent."""
    engine = CountingEngine()
    stripe = (slice(None), slice(0, 6))  # columns 0…5; the ellipse spans 28…68, its fade ends before 12
    outcome = run_job(astronaut_request(transparent=stripe, grow=2, feather=2), engine, lambda *_: None,
                      lambda: False)
    assert isinstance(outcome, Result)
    engine_mask = engine.checked[0].mask
    assert (engine_mask[stripe] == 255).all() and (engine_mask[:, 6:12] == 0).all()
    [variant] = outcome.variants
    blend = np.frombuffer(variant.mask.data, np.uint8).reshape(64, 96)
    image = np.frombuffer(variant.image.data, np.uint8).reshape(64, 96, 4)
    assert not blend[:, :12].any()
    assert not image[(*stripe, 3)].any() and (image[blend > 0, 3] == 255).all()


def test_random_seeds_stay_in_the_protocol_range(monkeypatch) -> None:
    """The largest base seed the daemon can draw, then one more variant: every seed is ≤ SEED_MAX = 2³¹−1."""
    assert SEED_MAX == 2**31 - 1
    monkeypatch.setattr("secrets.randbelow", lambda limit: limit - 1)
    assert variant_seeds(-1, 3) == [SEED_MAX, 0, 1]
    monkeypatch.undo()
    seeds = [seed for _ in range(200) for seed in variant_seeds(-1, 2)]
    assert all(0 <= seed <= SEED_MAX for seed in seeds)
