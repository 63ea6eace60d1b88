"""Runs one inpaint job: planes → NumPy, grown mask, one engine call per variant, compositing, :class:`Result`.

Jobs run in a single worker thread (:class:`Worker`), so engines never run concurrently and the
event loop stays free to talk to clients. :func:`run_job` never raises for a failed job: every
exception becomes an :class:`protocol.Error` with its :class:`protocol.ErrorCode`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from gimp_inpaint.protocol import Error, ErrorCode, InpaintRequest, Plane, ProtocolError, Result, Variant, quote
from gimp_inpaint.protocol.messages import SEED_MAX

from .compositing import blend_mask, grow_mask, overlay, repaint_mask
from .engines.base import CancelCheck, Engine, EngineJob, EngineLoadError, JobCancelled, is_out_of_memory

StageProgress = Callable[[int, int, str], None]
"""The worker's progress sink: ``progress(step, total, stage)`` with a stage of
:data:`protocol.messages.PROGRESS_STAGES`; the server turns each call into a :class:`protocol.Progress`."""

log = logging.getLogger(__name__)

MASK_THRESHOLD = 128
"""Grown-mask values ≥ this are repainted by the engine: diffusers' ``VaeImageProcessor.binarize`` threshold (0.5)."""


def variant_seeds(seed: int, count: int) -> list[int]:
    """Seeds of ``count`` variants: ``seed, seed+1, …``, wrapping from :data:`protocol.messages.SEED_MAX` to 0,
    from a random base seed when ``seed`` is −1.

    The random base comes from :func:`secrets.randbelow` over 0…:data:`protocol.messages.SEED_MAX`.
    """
    base = secrets.randbelow(SEED_MAX + 1) if seed == -1 else seed
    return [(base + i) % (SEED_MAX + 1) for i in range(count)]


def request_mask(request: InpaintRequest) -> np.ndarray:
    """The request's mask as an H×W uint8 array (a read-only view of the frame's bytes)."""
    return np.frombuffer(request.mask.data, dtype=np.uint8).reshape(request.mask.height, request.mask.width)


def check_request(request: InpaintRequest) -> None:
    """Reject a request that would repaint nothing (checked before it is queued).

    Raises:
        ProtocolError(INVALID_REQUEST): no mask pixel reaches :data:`MASK_THRESHOLD`.
    """
    if int(request_mask(request).max()) < MASK_THRESHOLD:
        raise ProtocolError(ErrorCode.INVALID_REQUEST,
                            f"the mask selects nothing (no pixel ≥ {MASK_THRESHOLD}); select the area to fill first")


def _inpaint(request: InpaintRequest, engine: Engine, progress: StageProgress, cancelled: CancelCheck,
             queued_seconds: float, started: float) -> Result:
    width, height = request.image.width, request.image.height
    image = np.frombuffer(request.image.data, dtype=np.uint8).reshape(height, width, 4)
    grown = grow_mask(request_mask(request), request.grow)
    blend = blend_mask(grown, request.feather)
    engine_mask = repaint_mask(blend, image[..., 3])
    blend_plane = Plane(width, height, 1, blend.tobytes())
    rgb = np.ascontiguousarray(image[..., :3])

    if cancelled():  # cancelled while it started: do not load a model (GBs, minutes) for nothing
        raise JobCancelled(f"job {quote(request.job_id)} cancelled")
    load_start = time.perf_counter()
    engine.load(lambda stage, step, total: progress(step, total, stage))
    load_seconds = time.perf_counter() - load_start

    jobs = [EngineJob(image=rgb, mask=engine_mask, prompt=request.prompt, negative_prompt=request.negative_prompt,
                      strength=request.strength, guidance_scale=request.guidance_scale,
                      num_inference_steps=request.num_inference_steps, seed=seed, scheduler=request.scheduler,
                      loras=dict(request.loras), refiner_strength=request.refiner_strength,
                      controlnet_conditioning_scale=request.controlnet_conditioning_scale)
            for seed in variant_seeds(request.seed, request.num_variants)]
    engine.check(jobs[0])  # once per job: the variants differ only in their seeds
    per_variant = max(1, engine.steps_for(jobs[0]))
    total = per_variant * len(jobs)
    done = -1

    def advance(step: int) -> None:  # forwards only steps that move forward
        nonlocal done
        if step > done:
            done = step
            progress(step, total, "inference")

    advance(0)

    images: list[tuple[Plane, float]] = []
    for index, job in enumerate(jobs):
        if cancelled():
            raise JobCancelled(f"job {quote(request.job_id)} cancelled")
        offset = index * per_variant

        def report(step: int, _engine_total: int, offset: int = offset) -> None:
            advance(offset + min(max(step, 0), per_variant))

        inference_start = time.perf_counter()
        generated = engine.inpaint(job, report, cancelled)
        inference_seconds = time.perf_counter() - inference_start
        expected = ((height, width, 3), np.uint8)
        if not isinstance(generated, np.ndarray) or (generated.shape, generated.dtype) != expected:
            found = f"{generated.shape} {generated.dtype}" if isinstance(generated, np.ndarray) else type(generated)
            raise RuntimeError(f"engine {engine.name!r} returned {found}, expected {height}×{width}×3 uint8")
        composed = overlay(image, generated, blend)
        images.append((Plane(width, height, 4, composed.tobytes()), inference_seconds))
        advance(offset + per_variant)
    if cancelled():  # an engine that ignored the flag still must not deliver a cancelled job
        raise JobCancelled(f"job {quote(request.job_id)} cancelled")

    total_seconds = queued_seconds + time.perf_counter() - started
    variants = [Variant(x=request.x, y=request.y, image=plane, mask=blend_plane, seed=job.seed,
                        timings={"queue": queued_seconds, "load": load_seconds, "inference": inference_seconds,
                                 "total": total_seconds})
                for job, (plane, inference_seconds) in zip(jobs, images, strict=True)]
    return Result(job_id=request.job_id, variants=variants)


def run_job(request: InpaintRequest, engine: Engine, progress: StageProgress, cancelled: CancelCheck,
            queued_seconds: float = 0.0) -> Result | Error:
    """Run ``request`` on ``engine`` and composite each variant; never raises for a failed job.

    Steps: the mask (255 = repaint) is grown by ``request.grow`` pixels
    (:func:`daemon.compositing.grow_mask`); the blend mask is the grown mask with a fade of
    ``request.feather`` pixels outward (:func:`daemon.compositing.blend_mask`); the engine repaints
    where that fade is ≥ 16 % and wherever the crop is fully transparent (:func:`daemon.compositing.repaint_mask`);
    each variant's image is the engine's RGB where the blend mask is > 0 and the request's RGBA exactly elsewhere
    (:func:`daemon.compositing.overlay`).
    Variant ``i`` uses seed ``seed + i`` (:func:`variant_seeds`). The engine loads (reporting ``download`` and
    ``load`` progress), then :meth:`Engine.check` refuses options it cannot honour before any step runs.

    Args:
        request: the validated request; its planes are RGBA and a 1-channel mask of equal size.
        engine: the engine named by ``request.engine``.
        progress: called as ``progress(step, total, stage)``: the engine's ``download``/``load`` reports while
            it loads, then ``inference`` with ``total`` = engine steps per variant × variants, first
            ``(0, total)`` once the engine is loaded, last ``(total, total)``.
        cancelled: polled before the engine loads, between variants and by the engine between its steps.
        queued_seconds: how long the job waited in the queue (reported in the timings).

    Returns:
        A :class:`Result` whose variants carry timings in seconds: ``queue`` (waiting),
        ``load`` (engine load, ~0 when warm), ``inference`` (this variant's engine call) and
        ``total`` (from acceptance to the end of the job); or an :class:`Error` with the job id:
        CANCELLED (:class:`JobCancelled`), ENGINE_UNAVAILABLE (:class:`EngineLoadError`, its message
        says what to do), OUT_OF_MEMORY (:func:`is_out_of_memory`), the code of a
        :class:`ProtocolError`, or JOB_FAILED with the exception's message for anything else.
    """
    started = time.perf_counter()
    try:
        return _inpaint(request, engine, progress, cancelled, queued_seconds, started)
    except JobCancelled:
        return Error(ErrorCode.CANCELLED.value, f"job {quote(request.job_id)} was cancelled", request.job_id)
    except EngineLoadError as exc:
        return Error(ErrorCode.ENGINE_UNAVAILABLE.value, f"engine {engine.name!r} is unavailable: {exc}",
                     request.job_id)
    except ProtocolError as exc:
        return Error(exc.code.value, exc.message, request.job_id)
    except Exception as exc:
        if is_out_of_memory(exc):
            log.warning("job %s ran out of memory on %s: %s", quote(request.job_id), engine.name, exc)
            return Error(ErrorCode.OUT_OF_MEMORY.value,
                         f"engine {engine.name!r} ran out of memory ({exc}); try a smaller selection or padding, "
                         "fewer variants, or close other programs using the GPU", request.job_id)
        log.exception("job %s failed on %s", quote(request.job_id), engine.name)
        return Error(ErrorCode.JOB_FAILED.value, f"engine {engine.name!r} failed: {type(exc).__name__}: {exc}",
                     request.job_id)


class Worker:
    """The daemon's single worker thread (``ThreadPoolExecutor(max_workers=1)``): jobs run one at a time."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gimp-inpaint-worker")

    def submit(self, request: InpaintRequest, engine: Engine, progress: StageProgress,
               cancelled: Callable[[], bool], queued_seconds: float) -> Future[Result | Error]:
        """Schedule :func:`run_job` on the worker thread; the future's result is never an exception."""
        return self._executor.submit(run_job, request, engine, progress, cancelled, queued_seconds)

    def shutdown(self) -> None:
        """Stop accepting jobs and wait for the running one (which should have been cancelled) to end."""
        self._executor.shutdown(wait=True, cancel_futures=True)
