"""Generative inpainting with warm diffusers pipelines of every family of :data:`daemon.registry.FAMILIES`.

Importing this module is cheap: torch, diffusers and huggingface_hub are imported by
:meth:`DiffusersEngine.load`, on the first request, so the daemon starts and serves other engines
without them. What differs between families (pipeline class, native size, call arguments, refining pass) lives
in :mod:`daemon.engines.families`; downloads and placement on the device in :mod:`daemon.engines.loading`;
per-request options (scheduler, LoRAs, embeddings, prompt weighting) in :mod:`daemon.engines.options`.
"""

from __future__ import annotations

import importlib.util
import logging
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gimp_inpaint.protocol import LATENT_MULTIPLE, EngineInfo, ErrorCode, ProtocolError
from PIL import Image

from ..device import DeviceUnavailableError, describe_device, resolve_device, set_torch_threads, torch_dtype_for
from ..pool import ModelPool, release_device_memory
from ..registry import ModelSpec, Registry
from . import options
from .base import (
    CancelCheck,
    Engine,
    EngineJob,
    EngineLoadError,
    JobCancelled,
    LoadProgress,
    ProgressCallback,
    incompatible,
    is_out_of_memory,
)
from .families import (
    FAMILY_STRATEGIES,
    ControlNetFamily,
    Family,
    SDXLFamily,
    family_from_index,
    family_of_single_file,
    resolve_family,
)
from .loading import cached_folder, fetch, local_folder, new_bytes, offload, place

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "gimp-inpaint[diffusers]"'
"""How to get torch and diffusers (see pyproject.toml's ``diffusers`` extra)."""

SAFETY_CHECKER_MESSAGE = ("the model's safety checker blanked this result (seed {seed}); "
                          "try another prompt or seed")
"""The JOB_FAILED message when the model's safety checker replaced the image with a black one (``{seed}``: its seed)."""

_PIPELINE_STATE: weakref.WeakKeyDictionary[Any, PipelineState] = weakref.WeakKeyDictionary()
"""Per loaded pipeline (shared by every engine that uses it): what :mod:`daemon.engines.options` needs."""


class PipelineState:
    """Bookkeeping of one loaded pipeline, living and dying with it: its own scheduler config (captured right
    after loading, or inherited from the pipeline it was made from), the embedding tokens loaded into it, whether
    it runs with model CPU offload, and its cached image-to-image refining pipeline. (LoRA adapters need no
    bookkeeping: the pipeline lists them.)"""

    def __init__(self, pipeline: Any, scheduler_config: dict[str, Any] | None = None) -> None:
        self.scheduler_config = scheduler_config or options.default_scheduler_config(pipeline)
        self.embeddings: set[str] = set()
        self.offloaded = False
        self.refine: Any = None


def _state(pipeline: Any, scheduler_config: dict[str, Any] | None = None) -> PipelineState:
    """The :class:`PipelineState` of ``pipeline``, created on first sight (with ``scheduler_config`` as its
    default scheduler, else the one it has now)."""
    state = _PIPELINE_STATE.get(pipeline)
    if state is None:
        state = _PIPELINE_STATE[pipeline] = PipelineState(pipeline, scheduler_config)
    return state


def diffusers_available() -> bool:
    """True when torch, diffusers and transformers are installed (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers", "transformers"))


def scaled_size(width: int, height: int, long_side: int, multiple: int = LATENT_MULTIPLE) -> tuple[int, int]:
    """The ``(width, height)`` in pixels at which a ``width × height`` crop is sent to the model.

    The crop's longer side becomes ``long_side`` (the model's native resolution, 512 for SD 1.5),
    the shorter keeps the aspect ratio; both are rounded to multiples of ``multiple`` (default
    :data:`protocol.LATENT_MULTIPLE`, 8, the VAE's downsampling; 64 for Kandinsky 2.2) and are at least
    ``multiple``. Small crops are scaled up, large ones down: models draw best at the size they were trained at.
    """

    def side(length: int) -> int:
        return max(multiple, round(length * long_side / max(width, height) / multiple) * multiple)

    return side(width), side(height)


def count_steps(scheduler: Any, num_inference_steps: int, strength: float = 1.0,
                denoising_start: float | None = None, denoising_end: float | None = None) -> int:
    """Denoising steps a pipeline with ``scheduler`` (a template: a fresh copy is made) runs, i.e. the number of
    its ``callback_on_step_end`` calls.

    Without ``denoising_start``: ``int(num_inference_steps × strength)`` of the scheduler's steps, each
    ``scheduler.order`` timesteps (some schedulers have more timesteps than steps: PNDM one more), as
    ``get_timesteps`` of the SD pipelines does. ``denoising_start`` (SDXL refiner): the timesteps below the
    cutoff, one more for an even count on a 2nd-order scheduler; ``denoising_end`` (SDXL base): the timesteps at
    or above the cutoff (``StableDiffusionXLInpaintPipeline.get_timesteps`` and ``__call__``).
    """
    scheduler = type(scheduler).from_config(scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    train_steps = scheduler.config.num_train_timesteps
    if denoising_start is None:
        denoising = min(int(num_inference_steps * strength), num_inference_steps)
        timesteps = timesteps[(num_inference_steps - denoising) * scheduler.order:]
    else:
        cutoff = round(train_steps - denoising_start * train_steps)
        count = int((timesteps < cutoff).sum())
        if scheduler.order == 2 and count % 2 == 0:
            count += 1
        timesteps = timesteps[len(timesteps) - count:]
    if denoising_end is not None:
        cutoff = round(train_steps - denoising_end * train_steps)
        timesteps = [t for t in timesteps if t >= cutoff]
    return len(timesteps)


def handover(job: EngineJob) -> float:
    """Where the SDXL base hands over to the refiner, as a fraction of the whole noise schedule (diffusers'
    ``denoising_end`` of the base = ``denoising_start`` of the refiner): ``1 − strength × refiner_strength``.

    The base starts at ``strength`` of the schedule (its ``strength``), so the refiner does ``refiner_strength``
    of the denoising actually run; with ``strength`` 1 this is the guide's ``high_noise_frac`` = 1 − share.
    """
    return 1 - job.strength * job.refiner_strength


class DiffusersEngine(Engine):
    """One registry model (:class:`daemon.registry.ModelSpec`) as an engine: its pipelines are loaded on first use
    into the shared :class:`daemon.pool.ModelPool` and stay warm until the pool evicts them.

    The crop is scaled so its long side is the model's native resolution (:func:`scaled_size`, on the family's
    size multiple), run through the pipeline with the job's prompt (Compel-weighted or plain), strength,
    guidance_scale, num_inference_steps, seed, scheduler and LoRAs, optionally refined (``refiner_strength``:
    the SDXL refiner of ``spec.refiner``, else a second pass of the same model), and the result is scaled back to
    the crop's size (Pillow, Lanczos). Compositing is left to :mod:`daemon.compositing`.

    Pool keys: the base pipeline of a model source lives under ``source:MODEL:VARIANT:DTYPE``, so engines on the
    same source (plain SD and its ControlNet variant) share it; a ControlNet pipeline (``from_pipe`` of that base,
    its modules the same objects) under ``NAME:controlnet``; an SDXL refiner under ``refiner:REFINER:BASE KEY``.

    Load failures are remembered: :meth:`info` reports ``available=False`` with the error as ``detail`` until a
    later :meth:`load` succeeds. Every request retries the load, so a model that was downloaded or a network
    that came back is picked up without restarting the daemon.

    Args:
        spec: the model (hub id, diffusers folder or single file; family, dtype, variant, controlnet, refiner,
            config, compile).
        registry: the LoRAs and embeddings offered for the model's family.
        pool: where the pipelines stay warm, within its memory budget.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (see :mod:`daemon.device`).
        torch_threads: CPU threads torch may use; 0 keeps torch's default.
    """

    def __init__(self, spec: ModelSpec, registry: Registry, pool: ModelPool, *, device: str = "auto",
                 torch_threads: int = 0) -> None:
        if torch_threads < 0:
            raise ValueError(f"torch_threads must be ≥ 0, got {torch_threads}")
        self.spec = spec
        self.name = spec.name
        self.model = spec.model
        self.registry = registry
        self.pool = pool
        self.device = device
        self.torch_threads = torch_threads
        self._family: Family | None = None  # resolved at load
        self._device: torch.device | None = None
        self._step_counts: dict[tuple[Any, ...], int] = {}
        self._device_description = ""
        self._load_error = ""
        self.base_key = f"source:{spec.model}:{spec.variant}:{spec.dtype}"
        self.main_key = f"{spec.name}:controlnet" if spec.controlnet else self.base_key
        self.refiner_key = f"refiner:{spec.refiner}:{self.base_key}" if spec.refiner else ""
        self._found_family = self._read_family()

    def _read_family(self) -> str | None:
        """The family of an ``auto`` model read from its folder (or cached hub snapshot) without loading it
        (:func:`daemon.engines.families.family_from_index`), so the handshake lists its family and LoRAs before
        the first request; None for single files, declared families and models not on disk."""
        if self.spec.family != "auto" or self.spec.single_file:
            return None
        try:
            folder = local_folder(self.spec.model) or cached_folder(self.spec.model)
        except EngineLoadError:  # a path with nothing there: info() says so
            return None
        return family_from_index(folder) if folder is not None else None

    # --- what the handshake shows ---

    @property
    def family(self) -> str:
        """The resolved family once loaded, else the one read from the model's folder at start, else the declared
        one (possibly ``auto``)."""
        if self._family is not None:
            return self._family.name
        return self._found_family or self.spec.family

    @property
    def keys(self) -> list[str]:
        """This engine's pool keys (the base's is shared with engines on the same model source)."""
        return [key for key in dict.fromkeys((self.base_key, self.main_key, self.refiner_key)) if key]

    @property
    def pipeline(self) -> Any:
        """The warm pipeline that runs the first pass, or None (never loads)."""
        return self.pool.peek(self.main_key)

    def info(self) -> EngineInfo:
        """Availability without loading or blocking: False when torch/diffusers are missing, the last load
        failed or the model's local path does not exist (a request still retries: the user may have put it there
        since); the LoRAs and embedding tokens of the registry for the model's family."""
        if not diffusers_available():
            available, detail = False, f"torch and diffusers are not installed: {INSTALL_HINT}"
        elif self._load_error:
            available, detail = False, self._load_error
        elif self.pipeline is not None:
            available, detail = True, f"loaded on {self._device_description}"
            if self._offloaded():
                detail += ", offloaded (model CPU offload, VAE tiling)"
        else:
            try:
                local_folder(self.spec.model)
                available, detail = True, "loads on first use"
            except EngineLoadError as error:
                available, detail = False, str(error)
        family = self.family
        strategy = FAMILY_STRATEGIES.get(family)
        return EngineInfo(name=self.name, kind="diffusers", model=self.model, available=available,
                          uses_prompt=True, detail=detail, family=family,
                          loras=[lora.name for lora in self.registry.loras_for(family)],
                          embeddings=[embedding.token for embedding in self.registry.embeddings_for(family)],
                          refiner=strategy is None or strategy.refinable)

    def _offloaded(self) -> bool:
        """True when a warm pipeline of this engine runs with model CPU offload (never loads, never blocks)."""
        warm = (self.pool.peek(key) for key in (self.main_key, self.refiner_key) if key)
        return any(_state(pipeline).offloaded for pipeline in warm if pipeline is not None)

    # --- loading ---

    def load(self, progress: LoadProgress | None = None) -> None:
        """Load the model's pipelines into the pool unless they are warm (idempotent; worker thread only).

        Reports ``("download", bytes done, bytes total)`` while a hub model downloads and ``("load", 0, 0)`` when
        loading from disk starts.

        Raises:
            EngineLoadError: torch/diffusers are missing, the device is unavailable, the model path does not
                exist, the model is not downloaded and offline mode is on, the download failed, or the files are
                not a pipeline of a supported family (or not of the declared one). The message says what to do;
                :meth:`info` reports it until a load succeeds.
        """
        try:
            self._pipelines(progress)
        except EngineLoadError as error:
            self._load_error = str(error)
            raise
        self._load_error = ""

    def _pipelines(self, progress: LoadProgress | None = None) -> tuple[Any, Any]:
        """``(first-pass pipeline, SDXL refiner or None)`` from the pool, loading what is not warm (each becomes
        the most recently used)."""
        started = False

        def report(stage: str, step: int, total: int) -> None:  # "load" once, however many models load
            nonlocal started
            if progress is not None and (stage != "load" or not started):
                progress(stage, step, total)
            started |= stage == "load"

        main = self.pool.get(self.main_key, lambda: self._load_main(report), keep=self.keys)
        if self._family is None:  # warm in the pool through another engine on the same source
            self._family = resolve_family(self.spec.family, main)
        if not self.refiner_key:
            return main, None
        return main, self.pool.get(self.refiner_key, lambda: self._load_refiner(main, report), keep=self.keys)

    def _prepare_device(self) -> torch.device:
        if not diffusers_available():
            raise EngineLoadError(f"torch and diffusers are not installed: {INSTALL_HINT}")
        if self._device is None:
            try:
                self._device = resolve_device(self.device)
            except (ValueError, DeviceUnavailableError) as error:
                raise EngineLoadError(str(error)) from error
            set_torch_threads(self.torch_threads)
            self._device_description = describe_device(self._device)
        return self._device

    def _dtype(self) -> torch.dtype:
        return torch_dtype_for(self._prepare_device(), self.spec.dtype, self.spec.family)

    def _load_main(self, progress: LoadProgress) -> Any:
        """The first-pass pipeline: the base, or for a ControlNet model ``from_pipe`` of the shared base."""
        if not self.spec.controlnet:
            return self._load_base(progress)
        base = self.pool.get(self.base_key, lambda: self._load_base(progress), keep=self.keys)
        family = self._family = resolve_family(self.spec.family, base)  # raises unless base is SD 1.x/2.x
        assert isinstance(family, ControlNetFamily)
        from diffusers import ControlNetModel

        source, hint = fetch(self.spec.controlnet, self.spec.variant, progress, pipeline=False)
        progress("load", 0, 0)
        try:
            controlnet = ControlNetModel.from_pretrained(source, torch_dtype=self._dtype(),
                                                         variant=self.spec.variant or None)
        except Exception as error:  # any failure here (OSError, ValueError) means "cannot load"
            raise EngineLoadError(
                f"could not load the ControlNet {self.spec.controlnet!r}: {error} ({hint})") from error
        pipeline = family.attach(base, controlnet)
        # from_pipe hands over the base's scheduler of the moment: the default stays the base's own
        _state(pipeline, scheduler_config=_state(base).scheduler_config)
        self._place(pipeline, new_bytes(controlnet), label=f"{self.name} (ControlNet)")
        return pipeline

    def _load_base(self, progress: LoadProgress) -> Any:
        """The model source's pipeline, on the device (or offloaded)."""
        self._prepare_device()
        declared = self.spec.family
        if self.spec.single_file:
            source = str(Path(self.spec.model).expanduser())
            if not Path(source).is_file():
                raise EngineLoadError(f"checkpoint file {source} does not exist")
            if declared == "auto":
                family = family_of_single_file(Path(source))
            else:  # a ControlNet model's base is a plain SD checkpoint
                family = FAMILY_STRATEGIES["sd" if declared == "sd-controlnet-inpaint" else declared]
            hint = ("the file must be an original-format (LDM) SD/SDXL checkpoint; set config to the model's "
                    "diffusers folder or hub id to load it offline")
        else:
            source, hint = fetch(self.spec.model, self.spec.variant, progress)
            family = FAMILY_STRATEGIES["sd"]  # folders load through AutoPipelineForInpainting whatever the family
        progress("load", 0, 0)
        try:
            pipeline = family.load(source, single_file=self.spec.single_file, config=self.spec.config,
                                   torch_dtype=self._dtype(), variant=self.spec.variant)
        except Exception as error:  # any failure here (OSError, ValueError, HTTP errors) means "cannot load"
            raise EngineLoadError(f"could not load {self.model!r}: {error} ({hint})") from error
        self._family = resolve_family(declared, pipeline)
        _state(pipeline)
        self._place(pipeline, new_bytes(pipeline), label=self.name)
        return pipeline

    def _load_refiner(self, base: Any, progress: LoadProgress) -> Any:
        """The SDXL refiner of ``spec.refiner``, sharing ``base``'s ``text_encoder_2`` and ``vae``."""
        family = self._family
        if not isinstance(family, SDXLFamily):
            raise EngineLoadError(f"a refiner is for SDXL models; {self.model!r} is {self.family}")
        source, hint = fetch(self.spec.refiner, self.spec.variant, progress)
        progress("load", 0, 0)
        try:
            refiner = family.load_refiner(source, base, torch_dtype=self._dtype(), variant=self.spec.variant)
        except Exception as error:  # any failure here (OSError, ValueError) means "cannot load"
            raise EngineLoadError(f"could not load the refiner {self.spec.refiner!r}: {error} ({hint})") from error
        _state(refiner)
        self._place(refiner, new_bytes(refiner, shared_with=[base]), label=f"{self.name} (refiner)")
        return refiner

    def _place(self, pipeline: Any, size: int, label: str) -> None:
        device = self._prepare_device()
        _state(pipeline).offloaded = place(pipeline, device, self.pool, size=size, keep=self.keys,
                                           compile_unet=self.spec.compile, label=label)

    # --- per request ---

    def _prepare(self, job: EngineJob, main: Any, refiner: Any) -> None:
        """Apply the job's scheduler (both pipelines), LoRAs and embeddings (first pass) through
        :mod:`daemon.engines.options`; raises its ProtocolErrors."""
        family = self._family
        assert family is not None
        self._set_scheduler(job, main, refiner)
        if family.lora_base is None:
            return
        state = _state(main)
        options.apply_loras(main, job.loras, {lora.name: lora for lora in self.registry.loras_for(family.name)},
                            all_loras={lora.name: lora for lora in self.registry.loras})
        options.load_embeddings(main, [job.prompt, job.negative_prompt], self.registry.embeddings_for(family.name),
                                state.embeddings)

    @staticmethod
    def _set_scheduler(job: EngineJob, main: Any, refiner: Any) -> None:
        """The job's scheduler on both pipelines (:func:`daemon.engines.options.set_scheduler`)."""
        for pipeline in (main, refiner) if refiner is not None else (main,):
            options.set_scheduler(pipeline, job.scheduler, _state(pipeline).scheduler_config)

    def check(self, job: EngineJob) -> None:
        """Refuse options the model cannot honour, and apply the others (scheduler, LoRAs, embeddings), before
        anything runs. Loads the model if needed.

        Raises:
            EngineLoadError: as :meth:`load`.
            ProtocolError: INCOMPATIBLE from the family (ControlNet scale without ControlNet; Kandinsky: strength
                < 1, LoRAs, refining), for LoRAs on a UNet compiled on CUDA, or from :mod:`daemon.engines.options`
                (prompt weighting, scheduler, LoRA, embedding).
        """
        self.load()
        family = self._family
        assert family is not None
        family.check(job)
        options.check_weighting(family.name, job.prompt, job.negative_prompt)
        if self.spec.compile and job.loras and self._device is not None and self._device.type == "cuda":
            raise incompatible("LoRAs change the UNet that compile = true compiled (every request would recompile): "
                               "set compile = false for this model in daemon.toml to use LoRAs")
        self._prepare(job, *self._pipelines())

    def steps_for(self, job: EngineJob) -> int:
        """Denoising steps :meth:`inpaint` runs for ``job`` (both passes): the number of its progress reports
        (:func:`count_steps` with the scheduler the job uses; cached per scheduler, steps, strength and
        refiner_strength). Loads the pipelines if needed.

        Raises:
            EngineLoadError: as :meth:`load`.
            ProtocolError(INVALID_REQUEST): ``strength × num_inference_steps`` < 1, so no step would run, or the
                refining pass would run none.
        """
        steps = job.num_inference_steps
        if min(int(steps * job.strength), steps) < 1:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"strength {job.strength} × {steps} steps runs no denoising step (diffusers runs "
                f"int(num_inference_steps × strength)): raise strength to ≥ {1 / steps:.3g} "
                f"or num_inference_steps to ≥ {int(np.ceil(1 / job.strength))}")
        self.load()
        main, refiner = self._pipelines()
        key = (job.scheduler, steps, job.strength, job.refiner_strength)
        if key not in self._step_counts:
            self._set_scheduler(job, main, refiner)  # the count depends on it (PNDM runs one timestep more)
            self._step_counts[key] = self._count(main, refiner, job)
        return self._step_counts[key]

    def _count(self, main: Any, refiner: Any, job: EngineJob) -> int:
        steps, share = job.num_inference_steps, job.refiner_strength
        if share == 0:
            return count_steps(main.scheduler, steps, job.strength)
        if refiner is not None:
            first = count_steps(main.scheduler, steps, job.strength, denoising_end=handover(job))
            second = count_steps(refiner.scheduler, steps, denoising_start=handover(job))
        else:
            first = count_steps(main.scheduler, steps, job.strength)
            second = count_steps(main.scheduler, steps, share)
        if second < 1 or int(steps * share) < 1:  # as for strength: diffusers runs int(steps × share) steps
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"refiner_strength {share} × {steps} steps runs no refining step: raise refiner_strength to "
                f"≥ {1 / steps:.3g} or num_inference_steps to ≥ {int(np.ceil(1 / share))}, or set it to 0")
        return first + second

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Generate ``job.mask``'s area of ``job.image`` (H×W×3 uint8 RGB, mask H×W uint8, 255 = repaint).

        Progress is ``(i, total)`` after each denoising step of either pass, ``total`` = :meth:`steps_for`.
        Cancel is checked after each step: the pipeline is interrupted (diffusers' ``_interrupt`` flag, its
        documented way to stop early; Kandinsky's pipelines lack it, so the callback raises there) and
        :class:`JobCancelled` raised.

        The noise comes from a CPU ``torch.Generator`` seeded with ``job.seed``, as diffusers'
        "Reproducible pipelines" guide recommends: a seed gives the same picture on every device
        (up to floating-point differences).

        Models that ship a safety checker (stable-diffusion-inpainting does) replace an image it
        flags with a black one and say so in the output's ``nsfw_content_detected``; that black
        image is never returned.

        Out of memory (torch's ``OutOfMemoryError`` or ``MemoryError``, :func:`daemon.engines.base.is_out_of_memory`):
        once per call, every other model is evicted from the pool, memory released, on CUDA this model's
        pipelines switch to model CPU offload, and the variant runs again; a second one propagates.

        Returns:
            H×W×3 uint8 RGB, the crop's size.

        Raises:
            JobCancelled: ``cancelled()`` became True.
            EngineLoadError: as :meth:`load`.
            ProtocolError: as :meth:`check` and :meth:`steps_for`; JOB_FAILED (:data:`SAFETY_CHECKER_MESSAGE`)
                when the model's safety checker blanked the image.
        """
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        total = self.steps_for(job)
        try:
            return self._generate(job, progress, cancelled, total)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            log.warning("%s: out of memory (%s); evicting the other models and retrying once", self.name, error)
            self._free_memory()
        return self._generate(job, progress, cancelled, total)

    def _free_memory(self) -> None:
        """Evict every other model, release cached memory, and on CUDA offload this model's pipelines."""
        self.pool.evict_others(keep=self.keys)
        release_device_memory()  # also when nothing was evicted: torch's cache may hold freed blocks
        if self._device is None or self._device.type != "cuda":
            return
        for pipeline in self._pipelines():
            if pipeline is not None and not _state(pipeline).offloaded:
                offload(pipeline, self._device)
                _state(pipeline).offloaded = True
                log.info("%s: model CPU offload enabled after running out of memory", self.name)

    def _generate(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck, total: int) -> np.ndarray:
        import torch

        main, refiner = self._pipelines()
        self._prepare(job, main, refiner)
        family = self._family
        assert family is not None
        height, width = job.image.shape[:2]
        model_width, model_height = scaled_size(width, height, family.native_size(main), family.size_multiple)
        image = Image.fromarray(job.image).resize((model_width, model_height), Image.Resampling.LANCZOS)
        mask = Image.fromarray(job.mask).resize((model_width, model_height), Image.Resampling.LANCZOS)
        done = 0

        def on_step_end(pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done += 1
            progress(done, total)
            if cancelled():
                if not family.interruptible:
                    raise JobCancelled(f"{self.name}: cancelled")
                pipe._interrupt = True
            return tensors

        common = {
            "mask_image": mask,  # diffusers' convention, like ours: white (255) = repaint
            "height": model_height,  # without these, diffusers would resize to the native square
            "width": model_width,
            "guidance_scale": job.guidance_scale,
            "num_inference_steps": job.num_inference_steps,
            "generator": torch.Generator("cpu").manual_seed(job.seed),
            "callback_on_step_end": on_step_end,
        }
        prompts = options.prompt_kwargs(main, family.name, job.prompt, job.negative_prompt)
        first = {**prompts, **common, "image": image, **family.call_kwargs(job, image, mask)}
        share = job.refiner_strength
        if share == 0:
            result = self._images(main(**first, output_type="pil"), job, cancelled)
        elif refiner is not None:  # diffusers' SDXL guide: base stops at denoising_end, the refiner starts there
            latents = self._images(main(**first, denoising_end=handover(job), output_type="latent"), job, cancelled)
            # the refiner has only the second text encoder, which options' Compel conditioning does not fit
            result = self._images(refiner(prompt=job.prompt, negative_prompt=job.negative_prompt, **common,
                                          image=latents, denoising_start=handover(job), output_type="pil"),
                                  job, cancelled)
        else:
            state = _state(main)
            if state.refine is None:
                state.refine = family.refine_pipeline(main)
            second_pass = state.refine
            second_pass.scheduler = main.scheduler  # the job's scheduler, set on main by _prepare
            if second_pass is main:  # inpainting UNet: a second inpainting pass over the first one's pixels
                image_1 = self._images(main(**first, output_type="pil"), job, cancelled)
                result = self._images(main(**{**first, "image": image_1, "strength": share}, output_type="pil"),
                                      job, cancelled)
            else:  # image-to-image pass of the same modules over the first pass's latents
                latents = self._images(main(**first, output_type="latent"), job, cancelled)
                result = self._images(second_pass(**prompts, **{k: v for k, v in common.items() if k != "mask_image"},
                                                  image=latents, strength=share, output_type="pil"),
                                      job, cancelled)
        return np.asarray(result.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))

    def _images(self, output: Any, job: EngineJob, cancelled: CancelCheck) -> Any:
        """The first image (PIL) or latents (1×C×h×w tensor) of a pipeline ``output``.

        Raises:
            JobCancelled: ``cancelled()`` is True (the pipeline was interrupted).
            ProtocolError(JOB_FAILED): the safety checker flagged it (:data:`SAFETY_CHECKER_MESSAGE`).
        """
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        flagged = getattr(output, "nsfw_content_detected", None)  # None: no safety checker (or an SDXL pipeline)
        if flagged is not None and bool(flagged[0]):
            raise ProtocolError(ErrorCode.JOB_FAILED, SAFETY_CHECKER_MESSAGE.format(seed=job.seed))
        images = output.images
        return images if not isinstance(images, list) else images[0]

