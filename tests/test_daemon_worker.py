"""daemon.worker.run_job on its own: what it asks of the engine, and when it asks nothing; what it delivers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from gimp_inpaint.daemon.engines.base import CancelCheck, EngineJob, JobCancelled, LoadProgress, ProgressCallback
from gimp_inpaint.daemon.worker import run_job, variant_seeds
from gimp_inpaint.protocol import (
    SEED_MAX,
    Error,
    ErrorCode,
    FillOptions,
    InpaintRequest,
    Plane,
    ProtocolError,
    Result,
    Scheduler,
    Stage,
    Variant,
)
from running_daemon import StepEngine, assert_box_loses_nothing, crop_arrays
from skimage import data


class CountingEngine(StepEngine):
    """A :class:`StepEngine` that counts its ``load``, ``check`` and ``prepare`` calls, reports a download and a
    load the first time, and refuses LoRAs (as an engine whose model has none would)."""

    def __init__(self) -> None:
        super().__init__("counting", steps=3)
        self.loads = 0
        self.checked: list[EngineJob] = []
        self.prepared: list[EngineJob] = []

    def load(self, progress: LoadProgress | None = None) -> None:
        self.loads += 1
        if progress is not None and self.loads == 1:
            progress("download", 512, 1024)
            progress("download", 1024, 1024)
            progress("load", 0, 0)

    def check(self, job: EngineJob) -> None:
        self.checked.append(job)
        if job.options.loras:
            raise ProtocolError(ErrorCode.INCOMPATIBLE, "this model takes no LoRA")

    def prepare(self, job: EngineJob) -> int:
        self.prepared.append(job)
        return super().prepare(job)


def astronaut_request(num_variants: int = 1, transparent: tuple[slice, slice] | None = None, x: int = 0,
                      y: int = 0, **options: object) -> InpaintRequest:
    """A 64×96 RGBA crop of the astronaut photo at ``(x, y)`` with an elliptic mask over her face; the
    ``transparent`` (rows, columns) of it have alpha 0."""
    rgb = np.ascontiguousarray(data.astronaut()[60:124, 180:276])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    if transparent is not None:
        rgba[(*transparent, 3)] = 0
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (48, 32), (20, 14), 0, 0, 360, 255, -1)
    return InpaintRequest(job_id="w", x=x, y=y, image=Plane(96, 64, 4, rgba.tobytes()),
                          mask=Plane(96, 64, 1, mask.tobytes()),
                          options=FillOptions(engine="counting", seed=5, num_variants=num_variants,
                                              **options))  # type: ignore[arg-type]


def collect(request: InpaintRequest, engine: StepEngine, cancelled: CancelCheck = lambda: False,
            reports: list[tuple[int, int, Stage]] | None = None) -> tuple[Result | Error, list[Variant]]:
    """``run_job``'s outcome and the variants it delivered, in order."""
    delivered: list[Variant] = []
    outcome = run_job(request, engine, (lambda *report: None) if reports is None else
                      (lambda *report: reports.append(report)), cancelled, delivered.append)
    return outcome, delivered


def test_a_job_cancelled_before_it_starts_loads_nothing() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int, Stage]] = []
    outcome, delivered = collect(astronaut_request(), engine, lambda: True, reports)
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.CANCELLED and outcome.job_id == "w"
    assert (engine.loads, engine.prepared, engine.seen, reports, delivered) == (0, [], [], [], [])


def test_load_check_and_prepare_once_per_job() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int, Stage]] = []
    request = astronaut_request(num_variants=3, scheduler="euler_a", refiner_strength=0.25,
                                controlnet_conditioning_scale=0.5)
    outcome, delivered = collect(request, engine, reports=reports)
    assert outcome == Result(job_id="w", num_variants=3)
    assert [(variant.job_id, variant.index, variant.seed) for variant in delivered] == [
        ("w", 0, 5), ("w", 1, 6), ("w", 2, 7)]
    assert (engine.loads, len(engine.checked), len(engine.prepared)) == (1, 1, 1)
    assert engine.prepared[0] is engine.checked[0]
    # the download and load stages first, then 3 steps × 3 variants
    assert reports == [(512, 1024, Stage.DOWNLOAD), (1024, 1024, Stage.DOWNLOAD), (0, 0, Stage.LOAD),
                       *((step, 9, Stage.INFERENCE) for step in range(10))]
    assert all(isinstance(stage, Stage) for *_, stage in reports)
    job = engine.checked[0]
    assert job.options is request.options  # the request's record, unchanged
    assert (job.options.scheduler, job.options.refiner_strength, job.options.controlnet_conditioning_scale,
            job.seed) == (Scheduler.EULER_A, 0.25, 0.5, 5)


def test_check_refuses_before_any_step() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int, Stage]] = []
    outcome, delivered = collect(astronaut_request(loras={"pixel-art": 0.7}), engine, reports=reports)
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.INCOMPATIBLE
    assert "takes no LoRA" in outcome.message
    assert engine.checked[0].options.loras == {"pixel-art": 0.7}
    assert (engine.prepared, engine.seen, delivered) == ([], [], [])
    assert all(stage is not Stage.INFERENCE for *_, stage in reports)


def test_each_variant_is_delivered_before_the_next_is_generated() -> None:
    """Variant k reaches ``deliver`` when the engine has run k + 1 times, cut to the blend mask's box and placed
    in the client's image; the box is the same region of the whole-crop result, and outside it the blend is 0."""
    engine = CountingEngine()
    request = astronaut_request(num_variants=3, x=1000, y=-20, grow=3, feather=4)
    runs_seen: list[int] = []
    delivered: list[Variant] = []

    def deliver(variant: Variant) -> None:
        runs_seen.append(len(engine.seen))
        delivered.append(variant)

    outcome = run_job(request, engine, lambda *_: None, lambda: False, deliver)
    assert outcome == Result(job_id="w", num_variants=3) and runs_seen == [1, 2, 3]
    image, _ = crop_arrays(request)
    for variant in delivered:
        assert_box_loses_nothing(variant, request, 255 - np.ascontiguousarray(image[..., :3]))
        assert variant.mask == delivered[0].mask and variant.x >= 1000 and variant.y >= -20
        assert variant.image.width < 96 and variant.image.height < 64  # only the box travels
        assert set(variant.timings) == {"queue", "load", "inference", "total"}
    assert delivered[0].timings["total"] <= delivered[1].timings["total"] <= delivered[2].timings["total"]


def test_a_deliver_cancelled_while_it_waits_ends_the_job() -> None:
    """The server's sink raises JobCancelled when the job is cancelled while its variant waits to be sent: the
    job ends CANCELLED and no further variant is generated."""
    engine = CountingEngine()

    def deliver(variant: Variant) -> None:
        raise JobCancelled("cancelled while its variant was sent")

    outcome = run_job(astronaut_request(num_variants=3), engine, lambda *_: None, lambda: False, deliver)
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.CANCELLED and outcome.job_id == "w"
    assert len(engine.seen) == 1


def test_fully_transparent_context_is_repainted_but_stays_transparent_outside_the_fade() -> None:
    """Transparent pixels are part of the engine's hole (it must not take their colour as context), but the
    result shows only within the selection's fade: a transparent stripe far from it stays transparent (it is
    outside the variant's box, where the blend mask is 0, so the client keeps its transparent pixels)."""
    engine = CountingEngine()
    stripe = (slice(None), slice(0, 6))  # columns 0…5; the ellipse spans 28…68, its fade ends before 12
    request = astronaut_request(transparent=stripe, grow=2, feather=2)
    outcome, [variant] = collect(request, engine)
    assert outcome == Result(job_id="w", num_variants=1)
    engine_mask = engine.checked[0].mask
    assert (engine_mask[stripe] == 255).all() and (engine_mask[:, 6:12] == 0).all()
    image, blend = crop_arrays(request)
    assert_box_loses_nothing(variant, request, 255 - np.ascontiguousarray(image[..., :3]))
    assert variant.x >= 12 and not blend[:, :12].any()  # the stripe is not sent: the client's stays as it is
    out = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width, 4)
    sent_blend = np.frombuffer(variant.mask.data, np.uint8).reshape(out.shape[:2])
    assert (out[sent_blend > 0, 3] == 255).all()


@pytest.mark.parametrize("returned", [np.zeros((64, 96, 4), np.uint8), np.zeros((32, 96, 3), np.uint8), None])
def test_an_engine_returning_the_wrong_array_fails_the_job(returned: np.ndarray | None) -> None:
    class WrongEngine(StepEngine):
        def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
            return returned  # type: ignore[return-value]

    outcome, delivered = collect(astronaut_request(), WrongEngine("counting"))
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.JOB_FAILED and delivered == []
    assert "expected 64×96×3 uint8" in outcome.message


def test_random_seeds_stay_in_the_protocol_range(monkeypatch) -> None:
    """The largest base seed the daemon can draw, then one more variant: every seed is ≤ SEED_MAX = 2³¹−1."""
    assert SEED_MAX == 2**31 - 1
    monkeypatch.setattr("secrets.randbelow", lambda limit: limit - 1)
    assert variant_seeds(-1, 3) == [SEED_MAX, 0, 1]
    monkeypatch.undo()
    seeds = [seed for _ in range(200) for seed in variant_seeds(-1, 2)]
    assert all(0 <= seed <= SEED_MAX for seed in seeds)
