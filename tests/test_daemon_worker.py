"""daemon.worker.run_job on its own: what it asks of the engine, and when it asks nothing; what it delivers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from gimp_inpaint.daemon import prefill
from gimp_inpaint.daemon.compositing import repaint_mask
from gimp_inpaint.daemon.engines.base import (
    CancelCheck,
    EngineJob,
    EngineLoadError,
    JobCancelled,
    LoadProgress,
    ProgressCallback,
)
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.prefill import RING_WIDTH
from gimp_inpaint.daemon.worker import REMOVE_PROMPT, REMOVE_STRENGTH, remove_options, run_job, variant_seeds
from gimp_inpaint.protocol import (
    FILL_OPTIONS,
    SEED_MAX,
    EngineInfo,
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
from running_daemon import StepEngine, assert_box_loses_nothing, crop_arrays, variant_box
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
    request = astronaut_request(num_variants=3, x=1000, y=-20, grow=3, feather=4, color_match=False)
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
        assert set(variant.timings) == {"queue", "load", "prefill", "inference", "total"}
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
    request = astronaut_request(transparent=stripe, grow=2, feather=2, color_match=False)
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


# -- fill modes' pre-fills and the colour match (issue 11) -------------------------------------------------------------

class PromptEngine(StepEngine):
    """A :class:`StepEngine` that takes a prompt and a strength (as a diffusion engine does), records a copy of every
    job it runs (the image it was given included) and returns that image inverted."""

    def __init__(self) -> None:
        super().__init__("prompted", steps=2)
        self.jobs: list[EngineJob] = []

    def info(self) -> EngineInfo:
        return EngineInfo(name=self.name, kind="test", model="invert", available=True, uses_prompt=True)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.jobs.append(dataclasses.replace(job, image=job.image.copy()))
        return self.paint(job, progress, cancelled)


class CountingRemover(OpenCVEngine):
    """The OpenCV engine (Telea) as the daemon's remover, counting its loads and recording the jobs it runs."""

    def __init__(self) -> None:
        super().__init__("remover")
        self.loads = 0
        self.jobs: list[EngineJob] = []

    def load(self, progress: LoadProgress | None = None) -> None:
        self.loads += 1

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        self.jobs.append(job)
        return super().inpaint(job, progress, cancelled)


def photo_request(transparent: tuple[slice, slice] | None = None, **options: object) -> InpaintRequest:
    """A 160×224 RGBA crop of the chelsea photo (rows 40…199, columns 110…333: the cat's head) with an elliptic
    mask in its middle (grow 4, feather 6 unless given), for the engine "prompted"; the ``transparent`` (rows,
    columns) have alpha 0."""
    rgb = np.ascontiguousarray(data.chelsea()[40:200, 110:334])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    if transparent is not None:
        rgba[(*transparent, 3)] = 0
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (112, 80), (40, 28), 20, 0, 360, 255, -1)
    values = {"engine": "prompted", "seed": 3, "grow": 4, "feather": 6, **options}
    return InpaintRequest(job_id="f", x=7, y=9, image=Plane(224, 160, 4, rgba.tobytes()),
                          mask=Plane(224, 160, 1, mask.tobytes()),
                          options=FillOptions(**values))  # type: ignore[arg-type]


def run(request: InpaintRequest, engine: StepEngine, remover: CountingRemover | None = None,
        reports: list[tuple[int, int, Stage]] | None = None) -> list[Variant]:
    """The variants ``run_job`` delivers for ``request`` (which must succeed), with ``remover`` as the daemon's."""
    delivered: list[Variant] = []
    outcome = run_job(request, engine, (lambda *report: None) if reports is None else
                      (lambda *report: reports.append(report)), lambda: False, delivered.append, remover=remover)
    assert outcome == Result(job_id=request.job_id, num_variants=request.options.num_variants), outcome
    return delivered


def engine_inputs(request: InpaintRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The request's RGB crop, the hole the engine repaints (H×W, 255 = repaint) and where the pixels outside it
    are."""
    image, blend = crop_arrays(request)
    hole = repaint_mask(blend, image[..., 3])
    return np.ascontiguousarray(image[..., :3]), hole, hole == 0


def test_remove_prefills_with_the_remover_once_then_diffuses_with_the_neutral_prompt_at_a_capped_strength() -> None:
    """auto with a blank prompt is remove: the remover (loaded, run once for the three variants) fills the hole of
    the engine's input, every other pixel the request's own; the engine runs with Krita's neutral prompt and the
    strength capped; the remover's steps are not the job's progress."""
    engine, remover = PromptEngine(), CountingRemover()
    request = photo_request(num_variants=3, color_match=False)
    reports: list[tuple[int, int, Stage]] = []
    delivered = run(request, engine, remover, reports)
    rgb, hole, outside = engine_inputs(request)
    assert (remover.loads, len(remover.jobs), len(engine.jobs)) == (1, 1, 3)
    assert remover.jobs[0].options is request.options and np.array_equal(remover.jobs[0].mask, hole)
    telea = cv2.inpaint(rgb, hole, 3, cv2.INPAINT_TELEA)
    for job in engine.jobs:
        assert (job.options.prompt, job.options.strength) == (REMOVE_PROMPT, REMOVE_STRENGTH) == ("background scenery",
                                                                                                  0.6)
        assert job.options == dataclasses.replace(request.options, prompt=REMOVE_PROMPT, strength=REMOVE_STRENGTH)
        assert np.array_equal(job.image[outside], rgb[outside])  # the pre-fill is the hole's alone …
        assert np.array_equal(job.image[~outside], telea[~outside])  # … the remover's fill
    assert reports == [(step, 6, Stage.INFERENCE) for step in range(7)]
    for variant in delivered:
        assert_box_loses_nothing(variant, request, 255 - engine.jobs[0].image)  # unmasked pixels exact


def test_remove_keeps_a_given_prompt_and_a_lower_strength() -> None:
    engine = PromptEngine()
    run(photo_request(fill_mode="remove", prompt="grass", strength=0.3), engine, CountingRemover())
    assert (engine.jobs[0].options.prompt, engine.jobs[0].options.strength) == ("grass", 0.3)


def test_remove_without_a_remover_prefills_as_fill_and_changes_no_option() -> None:
    engine = PromptEngine()
    request = photo_request(fill_mode="remove", strength=0.7)
    run(request, engine)
    rgb, hole, _ = engine_inputs(request)
    assert engine.jobs[0].options is request.options
    assert np.array_equal(engine.jobs[0].image, prefill.fill(rgb, hole))


def test_fill_prefills_the_hole_with_the_blur_of_its_surroundings() -> None:
    engine, remover = PromptEngine(), CountingRemover()
    request = photo_request(fill_mode="fill", prompt="a hat", strength=0.7, color_match=False)
    (variant,) = run(request, engine, remover)
    rgb, hole, outside = engine_inputs(request)
    (job,) = engine.jobs
    assert job.options is request.options and (remover.loads, remover.jobs) == (0, [])
    assert np.array_equal(job.image, prefill.fill(rgb, hole))
    assert np.array_equal(job.image[outside], rgb[outside])
    assert np.abs(job.image[~outside].astype(int) - rgb[~outside]).mean() > 10  # the cat's face is gone from it
    assert_box_loses_nothing(variant, request, 255 - job.image)


@pytest.mark.parametrize("mode", ["fill", "expand"])
def test_at_full_strength_the_engine_gets_the_crop_without_a_prefill(mode: str) -> None:
    """At strength 1.0 diffusers starts the hole from pure noise (and an inpainting UNet sees it blanked), so no
    pre-fill could reach the output: the engine gets the request's own pixels, and no remover runs."""
    engine, remover = PromptEngine(), CountingRemover()
    request = photo_request(fill_mode=mode, prompt="a hat", color_match=False)
    run(request, engine, remover)
    rgb, _, _ = engine_inputs(request)
    assert np.array_equal(engine.jobs[0].image, rgb) and (remover.loads, remover.jobs) == (0, [])


def test_auto_over_transparent_canvas_expands_from_the_border() -> None:
    """A selection reaching over transparent pixels (the crop's right quarter) is expand, even with a blank prompt:
    the engine's hole, the selection and the transparent pixels, continues the visible border."""
    engine, remover = PromptEngine(), CountingRemover()
    request = photo_request(transparent=(slice(None), slice(140, None)), prompt="", strength=0.7, color_match=False)
    (variant,) = run(request, engine, remover)
    rgb, hole, outside = engine_inputs(request)
    assert (hole[:, 140:] == 255).all() and (remover.loads, remover.jobs) == (0, [])
    (job,) = engine.jobs
    assert job.options is request.options
    assert np.array_equal(job.image, prefill.expand(rgb, hole))
    assert np.array_equal(job.image[outside], rgb[outside])
    assert_box_loses_nothing(variant, request, 255 - job.image)


def test_a_prompt_less_engine_gets_no_prefill_and_no_remover_runs() -> None:
    engine, remover = CountingEngine(), CountingRemover()
    request = photo_request(engine="counting", fill_mode="remove", color_match=False)
    (variant,) = run(request, engine, remover)
    rgb, _, _ = engine_inputs(request)
    assert np.array_equal(engine.checked[0].image, rgb) and engine.checked[0].options is request.options
    assert (remover.loads, remover.jobs) == (0, [])
    assert_box_loses_nothing(variant, request, 255 - rgb)


def test_a_remover_that_cannot_load_fails_the_job_naming_it() -> None:
    class MissingRemover(CountingRemover):
        def load(self, progress: LoadProgress | None = None) -> None:
            raise EngineLoadError("download its weights first")

    engine = PromptEngine()
    outcome = run_job(photo_request(), engine, lambda *_: None, lambda: False, lambda _: None,
                      remover=MissingRemover())
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.ENGINE_UNAVAILABLE
    assert "removal engine 'remover'" in outcome.message and "download its weights first" in outcome.message
    assert engine.jobs == []


def test_a_strength_the_engine_does_not_use_is_not_capped() -> None:
    """A family without ``strength`` (Kandinsky, which refuses any but 1.0) keeps it; the prompt is still neutral."""
    info = EngineInfo(name="k", kind="diffusers", model="m", available=True, uses_prompt=True,
                      options=[name for name in FILL_OPTIONS if name != "strength"])
    assert remove_options(FillOptions(), info) == FillOptions(prompt=REMOVE_PROMPT, strength=1.0)
    blank = remove_options(FillOptions(prompt=" ", strength=0.9), PromptEngine().info())  # whitespace is blank
    assert (blank.prompt, blank.strength) == (REMOVE_PROMPT, REMOVE_STRENGTH)


class ShiftingEngine(PromptEngine):
    """Returns Telea's fill of the request's crop with its colours shifted on purpose: +30 in b* and its L* contrast
    × 0.6 around its mean (a yellow, flat cast), as a model with a colour drift might."""

    def paint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        lab = cv2.cvtColor(cv2.inpaint(job.image, job.mask, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255,
                           cv2.COLOR_RGB2Lab)
        lab[..., 0] = (lab[..., 0] - lab[..., 0].mean()) * 0.6 + lab[..., 0].mean()
        lab[..., 2] += 30
        return np.clip(np.rint(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB) * 255), 0, 255).astype(np.uint8)


def lab_statistics(rgb: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the CIELAB values of ``rgb`` (H×W×3 uint8) where ``where`` is True."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[where]
    return lab.mean(axis=0), lab.std(axis=0)


def test_the_colour_match_restores_the_rings_statistics_in_the_composite() -> None:
    """An engine's colour cast is undone before compositing: the composite's generated area has the CIELAB mean and
    spread of the original ring around the blend mask; off, the delivered pixels are the engine's, bit for bit."""
    request = photo_request(fill_mode="fill", prompt="fur")
    (variant,) = run(request, ShiftingEngine())
    image, blend = crop_arrays(request)
    generated = blend > 0
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_WIDTH + 1, 2 * RING_WIDTH + 1))
    ring = (cv2.dilate(generated.astype(np.uint8), disc) > 0) & ~generated
    ring_mean, ring_std = lab_statistics(np.ascontiguousarray(image[..., :3]), ring)
    box = variant_box(variant, request)
    composite = np.ascontiguousarray(image[..., :3])
    composite[box] = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width,
                                                                         4)[..., :3]
    mean, std = lab_statistics(composite, generated)
    assert np.abs(mean - ring_mean).max() < 0.5 and np.abs(std - ring_std).max() < 0.5, (mean, ring_mean, std, ring_std)
    engine = ShiftingEngine()
    (unmatched,) = run(dataclasses.replace(request, options=dataclasses.replace(request.options, color_match=False)),
                       engine)
    shifted = engine.paint(engine.jobs[0], lambda *_: None, lambda: False)
    assert_box_loses_nothing(unmatched, request, shifted)  # off: the engine's own pixels
    shifted_mean, _ = lab_statistics(shifted, generated)
    assert shifted_mean[2] - ring_mean[2] > 10  # the cast the match removed
    assert_box_loses_nothing(variant, request, prefill.match_colors(shifted, image, blend))  # unmasked pixels exact


def test_a_prompt_less_engines_output_is_not_colour_matched() -> None:
    """A prompt-less engine fills from the surroundings already (on the removal benchmark the match lowered Telea's
    hole PSNR, 17.9 → 16.6 dB): on or off, the variant is the overlay of the engine's own pixels, bit for bit."""
    request = photo_request(engine="counting", color_match=False)
    (off,) = run(request, CountingEngine())
    image, _ = crop_arrays(request)
    assert_box_loses_nothing(off, request, 255 - np.ascontiguousarray(image[..., :3]))
    (on,) = run(dataclasses.replace(request, options=dataclasses.replace(request.options, color_match=True)),
                CountingEngine())
    assert on.image == off.image


@pytest.mark.diffusers
def test_remove_on_a_tiny_diffusion_model_diffuses_the_removers_fill_in_fewer_steps(tiny_inpaint_model: Path) -> None:
    """The remove mode through a real (tiny, random-weight) SD inpainting pipeline: its check accepts the capped
    strength, the job's progress counts the steps of that strength (fewer than at 1.0), the remover runs once for
    both variants, and every unmasked pixel of the composite is the request's."""
    from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
    from gimp_inpaint.daemon.pool import ModelPool
    from gimp_inpaint.daemon.registry import ModelSpec, Registry

    engine = DiffusersEngine(ModelSpec("tiny", str(tiny_inpaint_model)), Registry(), ModelPool(100 * 10**9),
                             device="cpu")
    remover = CountingRemover()
    request = photo_request(engine="tiny", num_inference_steps=10, num_variants=2)  # auto, blank prompt: remove
    reports: list[tuple[int, int, Stage]] = []
    delivered = run(request, engine, remover, reports)
    rgb, hole, _ = engine_inputs(request)

    def steps(options: FillOptions) -> int:
        return engine.prepare(EngineJob(rgb, hole, options, 0))

    capped = steps(remove_options(request.options, engine.info()))
    assert capped < steps(request.options)
    inference = [(step, total) for step, total, stage in reports if stage is Stage.INFERENCE]
    assert inference[0] == (0, 2 * capped) and inference[-1] == (2 * capped, 2 * capped)
    assert (remover.loads, len(remover.jobs)) == (1, 1)
    image, blend = crop_arrays(request)
    for variant in delivered:
        box = variant_box(variant, request)
        out = np.frombuffer(variant.image.data, np.uint8).reshape(variant.image.height, variant.image.width, 4)
        keep = blend[box] == 0
        assert np.array_equal(out[keep], image[box][keep])
