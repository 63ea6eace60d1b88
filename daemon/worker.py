"""Runs one inpaint job: planes → NumPy, grown mask, the fill mode's pre-fill of the hole, one engine call per
variant, its colour match and compositing, one :class:`protocol.Variant` delivered as each is done, then
:class:`protocol.Result`; meanwhile the :class:`protocol.Preview` messages the request asks for, from engines that
make them.

Jobs run in a single worker thread (:class:`Worker`), so engines never run concurrently and the
event loop stays free to talk to clients. :func:`run_job` never raises for a failed job: every
exception becomes an :class:`protocol.Error` with its :class:`protocol.ErrorCode`.

Memory: a variant is handed to its sink (which encodes and sends it) and dropped before the next one is
generated, so a job of N variants holds one variant's working set, not N (issue 8). The pre-fill is made once per
job, into the engine's own RGB copy of the crop, which every variant's engine call reads.

Depth (issue 12): a 16-bit crop (:attr:`protocol.Plane.bits`) is worked on as ``uint16``. An engine whose
:attr:`protocol.EngineInfo.bits` is 16 (the diffusion engines, which compute in floating point) gets the 16-bit RGB
and returns 16-bit pixels; an 8-bit engine (OpenCV, MI-GAN) gets the crop reduced to 8 bits
(:func:`daemon.compositing.to_8_bits`) and returns 8 bits, which are scaled to 16
(:func:`daemon.compositing.to_16_bits`: 8-bit levels, multiples of 257; an 8-bit engine that took a prompt would be
colour-matched at 8 bits first). The variants are composited at the crop's depth, so every pixel the blend mask
leaves alone is the request's own 16-bit value.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
from gimp_inpaint.protocol import (
    SEED_MAX,
    EngineInfo,
    Error,
    ErrorCode,
    FillMode,
    FillOptions,
    InpaintRequest,
    Plane,
    Preview,
    ProtocolError,
    Result,
    Stage,
    Variant,
    quote,
    resolve_fill_mode,
)

from . import prefill
from .compositing import (
    REPAINT_THRESHOLD,
    blend_mask,
    grow_mask,
    mask_box,
    overlay,
    repaint_mask,
    rgb_channels,
    to_8_bits,
    to_16_bits,
    transparency_alpha,
)
from .engines.base import (
    CancelCheck,
    Engine,
    EngineJob,
    EngineLoadError,
    JobCancelled,
    LoadProgress,
    Previews,
    is_out_of_memory,
)

StageProgress = Callable[[int, int, Stage], None]
"""The worker's progress sink: ``progress(step, total, stage)``; the server turns each call into a
:class:`protocol.Progress`."""

VariantSink = Callable[[Variant], None]
"""Takes each finished :class:`protocol.Variant` from the worker thread, and returns once it has been sent (or
dropped, for a client that has gone): the worker generates the next variant only then. It may raise
:class:`daemon.engines.base.JobCancelled` when the job is cancelled while it waits."""



@dataclass(frozen=True)
class PreviewOutlet:
    """Where a job's :class:`protocol.Preview` messages go (the server's side of :func:`run_job`'s ``previews``).

    Attributes:
        ready: True when the client can take a preview now: it is there and has been sent every earlier one. While
            it is False a due preview is skipped, before the engine decodes anything, so that previews are dropped
            rather than queued behind a slow client. Called from the worker thread; must not block.
        send: queues one preview for the client and returns at once (worker thread); it may still drop it.
    """

    ready: Callable[[], bool]
    send: Callable[[Preview], None]


log = logging.getLogger(__name__)

MASK_THRESHOLD = 128
"""Grown-mask values ≥ this are repainted by the engine: diffusers' ``VaeImageProcessor.binarize`` threshold (0.5)."""

REMOVE_PROMPT = "background scenery"
"""The prompt of the remove mode when the request's is blank: Krita AI Diffusion's for "remove object"
(``prepare`` in ``ai_diffusion/workflow.py``: an empty positive prompt becomes ``"background scenery"``)."""

REMOVE_STRENGTH = 0.6
"""The most ``strength`` (diffusers' meaning) the remove mode diffuses its pre-fill with. At strength s the pipeline
noises the input's latents to the schedule's point s and runs the last s of its steps; at 1.0 the hole's latents
are pure noise ("a value of 1, therefore, essentially ignores the masked portion of the reference image":
``StableDiffusionInpaintPipeline.__call__``'s ``strength``), and an inpainting UNet's masked-image input blanks the
hole as well, so the removal engine's fill would count for nothing. 0.6 is this project's choice: below it the
result keeps the pre-fill's smoothness, above it the model has noise enough to paint a new object where the old one
was. A request's lower strength is kept."""


def variant_seeds(seed: int, count: int) -> list[int]:
    """Seeds of ``count`` variants: ``seed, seed+1, …``, wrapping from :data:`protocol.SEED_MAX` to 0,
    from a random base seed when ``seed`` is −1.

    The random base comes from :func:`secrets.randbelow` over 0…:data:`protocol.SEED_MAX`.
    """
    base = secrets.randbelow(SEED_MAX + 1) if seed == -1 else seed
    return [(base + i) % (SEED_MAX + 1) for i in range(count)]


def request_mask(request: InpaintRequest) -> np.ndarray:
    """The request's mask as an H×W uint8 array (a read-only view of the frame's bytes)."""
    return np.frombuffer(request.mask.data, dtype=np.uint8).reshape(request.mask.height, request.mask.width)


def request_image(request: InpaintRequest) -> np.ndarray:
    """The request's crop as an H×W×4 array (a read-only view of the frame's bytes): uint8 for an 8-bit plane,
    uint16 for a 16-bit one (its little-endian samples; a copy in native order on a big-endian machine)."""
    plane = request.image
    if plane.bits == 8:
        return np.frombuffer(plane.data, dtype=np.uint8).reshape(plane.height, plane.width, 4)
    samples = np.frombuffer(plane.data, dtype="<u2").reshape(plane.height, plane.width, 4)
    return samples.astype(np.uint16, copy=False)  # the same array where little-endian is native


def plane_data(array: np.ndarray) -> memoryview:
    """A :class:`protocol.Plane`'s data for ``array`` (H×W or H×W×C uint8, or uint16 for a 16-bit plane): a
    read-only 1-D byte view of it, made C-contiguous (and little-endian) first if it is not (NumPy's copy releases
    the GIL). The codec sends the view as it is (:func:`protocol.codec.encode_fragments`); ``ndarray.tobytes`` would
    copy it again with the GIL held, which stalled the daemon's event loop 40–60 ms at 4096² (issue 10)."""
    if array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(array).data.cast("B").toreadonly()


def check_request(request: InpaintRequest) -> None:
    """Reject a request that would repaint nothing (checked before it is queued).

    Raises:
        ProtocolError(INVALID_REQUEST): no mask pixel reaches :data:`MASK_THRESHOLD`.
    """
    if int(request_mask(request).max()) < MASK_THRESHOLD:
        raise ProtocolError(ErrorCode.INVALID_REQUEST,
                            f"the mask selects nothing (no pixel ≥ {MASK_THRESHOLD}); select the area to fill first")


def covers_transparent(blend: np.ndarray, alpha: np.ndarray) -> bool:
    """Whether the selection covers transparent canvas: some pixel the selection repaints (blend mask ≥
    :data:`daemon.compositing.REPAINT_THRESHOLD`) has alpha 0.

    Args:
        blend: H×W uint8 blend mask.
        alpha: H×W uint8, the crop's alpha channel (a strided view will do; a 16-bit crop's
            :func:`daemon.compositing.transparency_alpha`).
    """
    _, selected = cv2.threshold(blend, REPAINT_THRESHOLD - 1, 255, cv2.THRESH_BINARY)
    _, transparent = cv2.threshold(alpha, 0, 255, cv2.THRESH_BINARY_INV)
    return bool(cv2.countNonZero(cv2.bitwise_and(selected, transparent)))


def remove_options(options: FillOptions, info: EngineInfo) -> FillOptions:
    """The options the diffusion engine runs the remove mode with: the prompt :data:`REMOVE_PROMPT` when the
    request's is blank, and ``strength`` at most :data:`REMOVE_STRENGTH` when the engine uses it (a family that
    always starts from noise, Kandinsky, refuses any other strength, and would gain nothing from a lower one)."""
    prompt = options.prompt if options.prompt.strip() else REMOVE_PROMPT
    strength = min(options.strength, REMOVE_STRENGTH) if "strength" in info.options else options.strength
    return dataclasses.replace(options, prompt=prompt, strength=strength)


def job_fill_mode(options: FillOptions, info: EngineInfo, blend: np.ndarray, alpha: np.ndarray,
                  engine_mask: np.ndarray, remover: Engine | None) -> FillMode | None:
    """The fill mode whose pre-fill the engine's input gets, or None for none.

    None for an engine that takes no prompt (``info.uses_prompt`` False: a classical method such as OpenCV's fills
    the hole from its surroundings itself). Otherwise the request's mode, ``auto`` resolved by
    :func:`protocol.resolve_fill_mode` with what the daemon can see of the crop: the canvas edge is the client's to
    know (a client that knows it resolves ``auto`` itself and sends the concrete mode), so ``touches_edge`` is
    False, and ``covers_transparent`` is :func:`covers_transparent`. ``remove`` becomes ``fill`` without a
    ``remover``, and where the hole leaves no known pixel (there is nothing to fill it from).

    Args:
        options: the request's options.
        info: the engine's :meth:`Engine.info`.
        blend: H×W uint8 blend mask; alpha: H×W uint8 alpha of the crop; engine_mask: H×W uint8, 255 = repaint.
        remover: the daemon's removal engine, or None.
    """
    if not info.uses_prompt:
        return None
    mode = resolve_fill_mode(options.fill_mode, options.prompt, touches_edge=False,
                             covers_transparent=covers_transparent(blend, alpha))
    if mode is FillMode.REMOVE and (remover is None or cv2.countNonZero(engine_mask) == engine_mask.size):
        return FillMode.FILL
    return mode


def _checked_output(engine: Engine, generated: object, job: EngineJob) -> np.ndarray:
    """``generated`` if it is the array an engine must return for ``job``: ``job.image``'s shape and type (H×W×3,
    uint8 or uint16).

    Raises:
        RuntimeError: it is anything else (names the engine and what it returned).
    """
    expected = job.image
    if not isinstance(generated, np.ndarray) or (generated.shape, generated.dtype) != (expected.shape, expected.dtype):
        found = f"{generated.shape} {generated.dtype}" if isinstance(generated, np.ndarray) else type(generated)
        shape = "×".join(map(str, expected.shape))
        raise RuntimeError(f"engine {engine.name!r} returned {found}, expected {shape} {expected.dtype}")
    return generated


def engine_input(info: EngineInfo, rgb: np.ndarray) -> np.ndarray:
    """The RGB an engine is given of the crop ``rgb`` (H×W×3 uint8 or uint16): ``rgb`` itself, unless it is 16-bit
    and the engine generates 8-bit pixels (``info.bits`` 8), which gets it reduced to 8 bits
    (:func:`daemon.compositing.to_8_bits`)."""
    return to_8_bits(rgb) if rgb.dtype == np.uint16 and info.bits == 8 else rgb


def _prefill(mode: FillMode, rgb: np.ndarray, engine_mask: np.ndarray, job: EngineJob, remover: Engine | None,
             load_progress: LoadProgress, cancelled: CancelCheck) -> None:
    """Write ``mode``'s pre-fill into the hole (``engine_mask`` non-zero) of ``rgb``, in place, once for the job.

    ``fill`` and ``expand`` are :func:`daemon.prefill.fill` and :func:`daemon.prefill.expand`; ``remove`` is the
    removal engine's output in the hole: the remover is loaded (reporting to ``load_progress``), checked, prepared
    and run once on ``job`` (the request's first variant with the request's own options), its progress not
    reported (the job's steps are the engine's); at 16 bits an 8-bit remover gets ``rgb`` reduced to 8 bits and its
    fill is scaled back (:func:`engine_input`, :func:`daemon.compositing.to_16_bits`).

    Raises:
        EngineLoadError: the remover cannot be loaded (the message names it).
        JobCancelled, ProtocolError, RuntimeError: from the remover's calls, as from the engine's.
    """
    if mode is FillMode.REMOVE and remover is not None:
        try:
            remover.load(load_progress)
        except EngineLoadError as exc:
            raise EngineLoadError(f"the removal engine {remover.name!r} cannot be loaded: {exc}") from exc
        job = dataclasses.replace(job, image=engine_input(remover.info(), rgb))
        remover.check(job)
        remover.prepare(job)
        removed = _checked_output(remover, remover.inpaint(job, lambda step, total: None, cancelled), job)
        cv2.copyTo(removed if removed.dtype == rgb.dtype else to_16_bits(removed), engine_mask, rgb)  # into ``rgb``
        return
    np.copyto(rgb, prefill.expand(rgb, engine_mask) if mode is FillMode.EXPAND else prefill.fill(rgb, engine_mask))


class _JobPreviews:
    """The previews of one job: each variant's :class:`daemon.engines.base.Previews` (:meth:`for_variant`) and the
    :class:`protocol.Preview` made of an engine's picture (:meth:`preview`).

    A preview is the whole crop at :meth:`protocol.InpaintRequest.preview_dimensions`: the engine's picture scaled
    there (OpenCV's area interpolation when it shrinks, bilinear when it grows), mixed with the request's crop by
    the blend mask as the client will mix the variant (``crop × (1 − blend/255) + picture × blend/255``, the
    picture opaque; ``cv2.blendLinear``), crop and blend mask scaled once per job with ``cv2.INTER_AREA``.

    Args:
        request: the job's request (``preview_every`` ≥ 1).
        image: H×W×4 uint8, the request's crop; blend: H×W uint8, its blend mask.
        per_variant: the engine's progress units per variant; total: the job's (× variants).
        cancelled: the job's cancel check; outlet: where the previews go.
    """

    def __init__(self, request: InpaintRequest, image: np.ndarray, blend: np.ndarray, per_variant: int, total: int,
                 cancelled: CancelCheck, outlet: PreviewOutlet) -> None:
        self.job_id, self.every = request.job_id, request.preview_every
        self.per_variant, self.total = per_variant, total
        self.size = request.preview_dimensions()
        self._cancelled, self._outlet = cancelled, outlet
        self._crop = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        weights = cv2.resize(blend, self.size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        self._weights, self._crop_weights = weights, 1 - weights

    def for_variant(self, offset: int) -> Previews:
        """The previews of the variant whose first step is the job's ``offset + 1``: due at every job step that is a
        multiple of ``preview_every``, but the variant's last, while the job is not cancelled and the outlet is
        ready."""

        def due(step: int) -> bool:
            return (0 < step < self.per_variant and (offset + step) % self.every == 0 and not self._cancelled()
                    and self._outlet.ready())

        def show(step: int, rgb: np.ndarray) -> None:
            self._outlet.send(self.preview(offset + step, rgb))

        return Previews(due, show)

    def preview(self, step: int, rgb: np.ndarray) -> Preview:
        """The :class:`protocol.Preview` at job step ``step`` of the engine's picture ``rgb`` (H×W×3 uint8).

        Raises:
            ValueError: ``rgb`` is not an H×W×3 uint8 array.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"a preview picture must be H×W×3 uint8, got {rgb.shape} {rgb.dtype}")
        shrinking = rgb.shape[0] * rgb.shape[1] > self.size[0] * self.size[1]
        scaled = cv2.resize(rgb, self.size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        pixels = cv2.blendLinear(cv2.cvtColor(scaled, cv2.COLOR_RGB2RGBA), self._crop, self._weights,
                                 self._crop_weights)
        return Preview(self.job_id, step, self.total, Plane(*self.size, 4, plane_data(pixels)))


def _inpaint(request: InpaintRequest, engine: Engine, progress: StageProgress, cancelled: CancelCheck,
             deliver: VariantSink, queued_seconds: float, started: float, remover: Engine | None,
             outlet: PreviewOutlet | None) -> Result:
    options = request.options
    image = request_image(request)
    alpha = transparency_alpha(image)
    blend = blend_mask(grow_mask(request_mask(request), options.grow), options.feather)
    engine_mask = repaint_mask(blend, alpha)
    box = mask_box(blend)  # only what the blend mask touches travels back
    rows, columns = box
    box_width, box_height = columns.stop - columns.start, rows.stop - rows.start
    blend_plane = Plane(box_width, box_height, 1, plane_data(blend[box]))
    rgb = rgb_channels(image)

    if cancelled():  # cancelled while it started: do not load a model (GBs, minutes) for nothing
        raise JobCancelled(f"job {quote(request.job_id)} cancelled")

    def load_progress(stage: str, step: int, total: int) -> None:  # the engine's and the remover's
        progress(step, total, Stage(stage))

    load_start = time.perf_counter()
    engine.load(load_progress)
    load_seconds = time.perf_counter() - load_start

    info = engine.info()
    mode = job_fill_mode(options, info, blend, alpha, engine_mask, remover)
    engine_options = remove_options(options, info) if mode is FillMode.REMOVE else options
    seeds = variant_seeds(options.seed, options.num_variants)
    rgb = engine_input(info, rgb)  # at the engine's depth
    reduced = rgb.dtype != image.dtype  # a 16-bit crop for an 8-bit engine
    color_match = options.color_match and info.uses_prompt  # a prompt-less engine's fill is the surroundings' own
    matched_original = to_8_bits(image) if reduced and color_match else image  # at the engine's depth
    first = EngineJob(image=rgb, mask=engine_mask, options=engine_options, seed=seeds[0])
    engine.check(first)  # once per job: the variants differ only in their seeds
    per_variant = max(1, engine.prepare(first))
    prefill_seconds = 0.0
    if mode is not None and engine_options.strength < 1.0:  # after check and prepare: a refused job costs none
        # (at strength 1.0 diffusers starts the hole from pure noise and its inpainting models see it blanked, so no
        # pre-fill could reach the output; the fill mode's pull-push was 9 ms of a 512² tiny-SD job for nothing)
        prefill_start = time.perf_counter()
        _prefill(mode, rgb, engine_mask, EngineJob(rgb, engine_mask, options, seeds[0]), remover, load_progress,
                 cancelled)
        prefill_seconds = time.perf_counter() - prefill_start
    total = per_variant * len(seeds)
    done = -1
    previews = _JobPreviews(request, image if image.dtype == np.uint8 else to_8_bits(image), blend, per_variant,
                            total, cancelled, outlet) if outlet is not None and request.preview_every else None

    def advance(step: int) -> None:  # forwards only steps that move forward
        nonlocal done
        if step > done:
            done = step
            progress(step, total, Stage.INFERENCE)

    advance(0)
    for index, seed in enumerate(seeds):
        if cancelled():
            raise JobCancelled(f"job {quote(request.job_id)} cancelled")
        offset = index * per_variant

        def report(step: int, _engine_total: int, offset: int = offset) -> None:
            advance(offset + min(max(step, 0), per_variant))

        job = first if index == 0 else EngineJob(rgb, engine_mask, engine_options, seed)
        if previews is not None:
            job = dataclasses.replace(job, previews=previews.for_variant(offset))
        inference_start = time.perf_counter()
        generated = _checked_output(engine, engine.inpaint(job, report, cancelled), job)
        inference_seconds = time.perf_counter() - inference_start
        if color_match:  # before compositing, so the fade mixes the matched colours
            generated = prefill.match_colors(generated, matched_original, blend)
        region = to_16_bits(generated[box]) if reduced else generated[box]  # an 8-bit engine's levels at 16 bits
        pixels = plane_data(overlay(image[box], region, blend[box]))  # the box's RGBA, at the crop's depth
        del region
        del generated  # before the variant is packed: one variant's arrays at a time
        advance(offset + per_variant)
        if cancelled():  # an engine that ignored the flag still must not deliver a cancelled job
            raise JobCancelled(f"job {quote(request.job_id)} cancelled")
        deliver(Variant(job_id=request.job_id, index=index, x=request.x + columns.start, y=request.y + rows.start,
                        image=Plane(box_width, box_height, 4, pixels, bits=request.image.bits), mask=blend_plane,
                        seed=seed,
                        timings={"queue": queued_seconds, "load": load_seconds, "prefill": prefill_seconds,
                                 "inference": inference_seconds,
                                 "total": queued_seconds + time.perf_counter() - started}))
        del pixels  # sent: nothing of this variant is kept while the next one is generated
    return Result(job_id=request.job_id, num_variants=len(seeds))


def run_job(request: InpaintRequest, engine: Engine, progress: StageProgress, cancelled: CancelCheck,
            deliver: VariantSink, queued_seconds: float = 0.0, remover: Engine | None = None,
            previews: PreviewOutlet | None = None) -> Result | Error:
    """Run ``request`` on ``engine``, composite each variant and hand it to ``deliver``; never raises for a failed
    job.

    Steps:

    1. the mask (255 = repaint) is grown by ``options.grow`` pixels (:func:`daemon.compositing.grow_mask`); the
       blend mask is the grown mask with a fade of ``options.feather`` pixels outward
       (:func:`daemon.compositing.blend_mask`); the engine repaints where that fade is ≥ 16 % and wherever the crop
       is fully transparent (:func:`daemon.compositing.repaint_mask`);
    2. the engine loads (reporting ``download`` and ``load`` progress); for an engine that takes a prompt the fill
       mode is settled (:func:`job_fill_mode`: ``auto`` resolved, ``remove`` without a remover is ``fill``), and
       ``remove`` runs the engine with :func:`remove_options` (a neutral prompt for a blank one, the strength
       capped); :meth:`Engine.check` refuses options it cannot honour before any step runs, and
       :meth:`Engine.prepare` applies them, once for all variants;
    3. the hole of the engine's input (its RGB copy of the crop, where the engine repaints) gets the mode's pre-fill,
       once for all variants (:mod:`daemon.prefill`: ``fill`` a blur of its surroundings, ``expand`` its border
       continued, ``remove`` the ``remover``'s output); an engine without a prompt gets none, nor one that runs at
       ``strength`` 1.0 (diffusers' ``is_strength_max``: its latents start as pure noise, so nothing of the hole
       reaches the output);
    4. variant ``i`` is generated with seed ``seed + i`` (:func:`variant_seeds`); with ``options.color_match``, an
       engine that takes a prompt gets its pixels inside the blend mask moved to the CIELAB mean and spread of the
       original ring around it (:func:`daemon.prefill.match_colors`; an engine without one fills from the
       surroundings already, and matching lowered Telea's hole PSNR from 17.9 to 16.6 dB, ``bench/removal.py``);
       inside the blend mask's bounding box
       (:func:`daemon.compositing.mask_box`) its image is that RGB where the blend mask is > 0 and the request's
       RGBA exactly elsewhere (:func:`daemon.compositing.overlay`: the pre-fill never reaches an unmasked pixel),
       and that box is handed to ``deliver`` before the next variant starts; a 16-bit crop's variants are 16-bit,
       the engine's pixels at the engine's depth (:attr:`protocol.EngineInfo.bits`: an 8-bit engine works on the
       crop reduced to 8 bits, a colour match included, and its output is scaled to 16 bits for the overlay: see the
       module's docstring);
    5. with ``previews`` and the request's ``preview_every`` ≥ 1, each variant's engine job carries its
       :class:`daemon.engines.base.Previews` (:class:`_JobPreviews`: due at the job steps that are multiples of
       ``preview_every`` but a variant's last, while the job is not cancelled and ``previews.ready()``), and each
       preview the engine shows goes to ``previews.send`` as a :class:`protocol.Preview` (the whole crop at the
       request's preview size, mixed with the crop by the blend mask). An engine that makes none sends none.

    Args:
        request: the validated request; its planes are RGBA and a 1-channel mask of equal size.
        engine: the engine named by ``request.options.engine``.
        progress: called as ``progress(step, total, stage)``: the engine's ``download``/``load`` reports while
            it loads, then ``inference`` with ``total`` = engine steps per variant × variants, first
            ``(0, total)`` once the engine is loaded, last ``(total, total)``.
        cancelled: polled before the engine loads, between variants and by the engine between its steps.
        deliver: takes each :class:`Variant` (:data:`VariantSink`), whose timings are seconds: ``queue``
            (waiting), ``load`` (engine load, ~0 when warm), ``prefill`` (the job's pre-fill, the remover's load
            and call included; 0 without one), ``inference`` (this variant's engine call) and ``total`` (from
            acceptance until this variant was done).
        queued_seconds: how long the job waited in the queue (reported in the timings).
        remover: the daemon's removal engine (one without a prompt) whose output pre-fills the ``remove`` mode's
            hole; None: that mode pre-fills as ``fill`` does.
        previews: where the job's previews go (:class:`PreviewOutlet`); None: none are made, whatever the request
            asks.

    Returns:
        A :class:`Result` with the number of variants delivered; or an :class:`Error` with the job id (variants
        delivered before it are void):
        CANCELLED (:class:`JobCancelled`), ENGINE_UNAVAILABLE (:class:`EngineLoadError`, its message
        says what to do), OUT_OF_MEMORY (:func:`is_out_of_memory`), the code of a
        :class:`ProtocolError`, or JOB_FAILED with the exception's message for anything else.
    """
    started = time.perf_counter()
    try:
        return _inpaint(request, engine, progress, cancelled, deliver, queued_seconds, started, remover, previews)
    except JobCancelled:
        return Error(ErrorCode.CANCELLED, f"job {quote(request.job_id)} was cancelled", request.job_id)
    except EngineLoadError as exc:
        return Error(ErrorCode.ENGINE_UNAVAILABLE, f"engine {engine.name!r} is unavailable: {exc}",
                     request.job_id)
    except ProtocolError as exc:
        return Error(exc.code, exc.message, request.job_id)
    except Exception as exc:
        if is_out_of_memory(exc):
            log.warning("job %s ran out of memory on %s: %s", quote(request.job_id), engine.name, exc)
            return Error(ErrorCode.OUT_OF_MEMORY,
                         f"engine {engine.name!r} ran out of memory ({exc}); try a smaller selection or padding, "
                         "fewer variants, or close other programs using the GPU", request.job_id)
        log.exception("job %s failed on %s", quote(request.job_id), engine.name)
        return Error(ErrorCode.JOB_FAILED, f"engine {engine.name!r} failed: {type(exc).__name__}: {exc}",
                     request.job_id)


class JobRunner(Protocol):
    """What the server runs jobs on: :class:`Worker` (this machine, one job at a time) or
    :class:`daemon.ray_backend.RayBackend` (a Ray Serve deployment, :attr:`slots` jobs at once)."""

    slots: int
    """Jobs the server may have running at once."""

    models_here: bool
    """Whether the jobs run with the models of this process's engines, so that their ``load`` and ``unload`` (the
    tray's Load and Unload, ``preload``) change what the next job finds."""

    def submit(self, request: InpaintRequest, engine: Engine, progress: StageProgress,
               cancelled: Callable[[], bool], deliver: VariantSink, queued_seconds: float, *,
               remover: Engine | None = None, previews: PreviewOutlet | None = None) -> Future[Result | Error]:
        """Run :func:`run_job` (or its equivalent) on the job; the future's result is never an exception."""

    def call(self, function: Callable[[], None]) -> Future[None]:
        """Run ``function()`` between jobs (a model's load or unload); its exception is the future's."""

    def shutdown(self) -> None:
        """Stop taking jobs and wait for the running ones."""


class Worker:
    """The daemon's single worker thread (``ThreadPoolExecutor(max_workers=1)``): jobs run one at a time."""

    slots = 1
    """One job at a time (:class:`JobRunner`)."""

    models_here = True
    """The jobs run on this process's engines (:class:`JobRunner`)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gimp-inpaint-worker")

    def submit(self, request: InpaintRequest, engine: Engine, progress: StageProgress,
               cancelled: Callable[[], bool], deliver: VariantSink, queued_seconds: float, *,
               remover: Engine | None = None, previews: PreviewOutlet | None = None) -> Future[Result | Error]:
        """Schedule :func:`run_job` (``remover`` and ``previews`` as there) on the worker thread; the future's result
        is never an exception."""
        return self._executor.submit(run_job, request, engine, progress, cancelled, deliver, queued_seconds, remover,
                                     previews)

    def call(self, function: Callable[[], None]) -> Future[None]:
        """Schedule ``function()`` on the worker thread, after what was submitted before it and before what comes
        after (the daemon's preload, :meth:`daemon.server.DaemonServer.serve`); its exception is the future's."""
        return self._executor.submit(function)

    def shutdown(self) -> None:
        """Stop accepting jobs and wait for the running one (which should have been cancelled) to end."""
        self._executor.shutdown(wait=True, cancel_futures=True)
