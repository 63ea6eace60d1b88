"""Generative inpainting with warm diffusers pipelines: the generic engine behind every family.

:class:`DiffusersEngine` is one registry model as an :class:`daemon.engines.base.Engine`. It knows no family by
name: what differs between families (pipeline class, native size, options used and refused, call arguments,
extra models) is its :class:`daemon.engines.family.FamilyStrategy`, one module per family, listed in
:data:`daemon.engines.families.FAMILY_STRATEGIES`; the passes of a variant and their step counts are in
:mod:`daemon.engines.refining`; a loaded pipeline's state (scheduler, adapters, embeddings, offload, pool key) is its
:class:`daemon.engines.loaded.LoadedPipeline`; per-request options in :mod:`daemon.engines.options`; downloads and
placement on the device in :mod:`daemon.engines.loading`.

Importing this module is cheap: torch, diffusers and huggingface_hub are imported by :meth:`DiffusersEngine.load`,
on the first request, so the daemon starts and serves other engines without them.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from gimp_inpaint.protocol import (
    FILL_OPTIONS,
    LATENT_MULTIPLE,
    EngineInfo,
    ErrorCode,
    Family,
    FillOptions,
    ProtocolError,
    Scheduler,
)
from PIL import Image

from ..device import DeviceUnavailableError, describe_device, resolve_device, set_torch_threads, torch_dtype_for
from ..licences import licence_of
from ..pool import ModelPool, release_device_memory
from ..quantization import label as quantization_label
from ..registry import LoraSpec, ModelSpec, Registry
from . import options
from .base import (
    CancelCheck,
    Engine,
    EngineJob,
    EngineLoadError,
    JobCancelled,
    LoadProgress,
    ModelState,
    ProgressCallback,
    incompatible,
    is_out_of_memory,
)
from .families import (
    FAMILY_STRATEGIES,
    family_from_index,
    family_of_pipeline,
    family_of_single_file,
    model_index,
    resolve_declared,
    resolve_family,
)
from .family import FamilyStrategy
from .loaded import LoadedPipeline
from .loading import (
    LoadContext,
    cached_folder,
    check_quantization,
    fetch,
    local_folder,
    new_bytes,
    place,
    plan_quantization,
    quantization_kwargs,
    quantization_of,
)
from .previews import Previewer, load_previewer
from .refining import VariantCall, check_denoising

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "gimp-inpaint[diffusers]"'
"""How to get torch and diffusers (see pyproject.toml's ``diffusers`` extra)."""

SAFETY_CHECKER_MESSAGE = ("the model's safety checker blanked this result (seed {seed}); "
                          "try another prompt or seed")
"""The JOB_FAILED message when the model's safety checker replaced the image with a black one (``{seed}``: its seed)."""

StepKey = tuple[Scheduler, int, float, float]
"""What a step count depends on: scheduler, ``num_inference_steps``, ``strength``, ``refiner_strength``."""


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


def resized(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``pixels`` (H×W or H×W×C uint8, uint16 or float32) at ``width × height`` pixels: OpenCV's area interpolation
    when it shrinks (``cv2.INTER_AREA``, OpenCV's ``resize`` documentation: "the preferred method for image
    decimation"), Lanczos over 8×8 pixels when it grows (``cv2.INTER_LANCZOS4``); the array itself when the size is
    already that.

    OpenCV releases the GIL while it resizes; Pillow's Lanczos, used before, took 4.6 ms to shrink a 512² crop to
    128² where this takes 0.3 ms (bench/README.md, issue 10's tiny-SD pair).
    """
    if pixels.shape[:2] == (height, width):
        return pixels
    shrinking = width * height < pixels.shape[0] * pixels.shape[1]
    return cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)


def float_to_16_bits(pixels: np.ndarray) -> np.ndarray:
    """H×W×3 float32 RGB in 0…1 (a pipeline's ``output_type="np"``; Lanczos scaling may overshoot a little) as
    uint16: clipped to 0…1, times 65535, rounded to the nearest (a new array)."""
    scaled = np.clip(pixels, 0, 1) * np.float32(65535)
    return np.rint(scaled, out=scaled).astype(np.uint16)


class DiffusersEngine(Engine):
    """One registry model (:class:`daemon.registry.ModelSpec`) as an engine: its pipelines are loaded on first use
    into the shared :class:`daemon.pool.ModelPool` and stay warm until the pool evicts them.

    Per request, as the worker calls it: :meth:`check` validates the options and changes nothing; :meth:`prepare`
    applies them once (scheduler, LoRAs, embeddings) and returns the steps per variant; :meth:`inpaint` runs one
    variant. The crop is scaled so its long side is the model's native resolution (:func:`scaled_size`, on the
    family's size multiple), run through the pipeline with the job's prompt (Compel-weighted or plain), strength,
    guidance_scale, num_inference_steps and seed, optionally refined (``refiner_strength``: the SDXL refiner of
    ``spec.refiner``, else a second pass of the same model), and the result is scaled back to the crop's size
    (:func:`resized`). Compositing is left to :mod:`daemon.compositing`.

    Pool keys: the base pipeline of a model source lives under ``source:MODEL:VARIANT:DTYPE``, so engines on the
    same source (plain SD and its ControlNet variant) share it; a derived family's pipeline (ControlNet:
    ``from_pipe`` of that base, its modules the same objects) under ``NAME:SUFFIX`` (``NAME:controlnet``); an SDXL
    refiner under ``refiner:REFINER:BASE KEY``. The pool holds each as its :class:`LoadedPipeline`.

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
        self._declared = FAMILY_STRATEGIES[spec.family] if spec.family is not None else None
        self._family: FamilyStrategy | None = None  # resolved at load
        self._device: torch.device | None = None
        self._step_counts: dict[StepKey, int] = {}
        self._device_description = ""
        self._load_error = ""
        self._previewer: Previewer | None = None
        self._previewer_loaded = False  # the previewer (None: no previews) is made once, with the first load
        derived = self._declared if self._declared is not None and self._declared.derived else None
        self.base_key = f"source:{spec.model}:{spec.variant}:{spec.dtype}" + (
            f":{spec.quantization}:{spec.gguf}" if spec.quantization != "auto" else "")
        self.main_key = f"{spec.name}:{derived.key_suffix}" if derived is not None else self.base_key
        self.refiner_key = f"refiner:{spec.refiner}:{self.base_key}" if spec.refiner else ""
        self._found_family, self._model_index = self._read_index()

    def _read_index(self) -> tuple[Family | None, dict[str, Any]]:
        """The family of an ``auto`` model read from its folder (or cached hub snapshot) without loading it
        (:func:`daemon.engines.families.family_from_index`), so the handshake lists its family and LoRAs before
        the first request (None for declared families), and the folder's ``model_index.json``, for the family's
        settings of this model (:meth:`~daemon.engines.family.FamilyStrategy.for_model`); ``(None, {})`` for single
        files and models not on disk."""
        if self.spec.single_file:
            return None, {}
        try:
            folder = local_folder(self.spec.model) or cached_folder(self.spec.model)
        except EngineLoadError:  # a path with nothing there: info() says so
            return None, {}
        if folder is None:
            return None, {}
        return family_from_index(folder) if self.spec.family is None else None, model_index(folder)

    # --- what the handshake shows ---

    @property
    def strategy(self) -> FamilyStrategy | None:
        """The resolved family once loaded, else the one read from the model's folder at start, else the declared
        one; None while unknown (``auto``)."""
        if self._family is not None:
            return self._family
        found = FAMILY_STRATEGIES[self._found_family] if self._found_family is not None else self._declared
        return found.for_model(self._model_index) if found is not None else None

    @property
    def family(self) -> Family | None:
        """:attr:`strategy`'s family, None while unknown."""
        strategy = self.strategy
        return strategy.family if strategy is not None else None

    @property
    def keys(self) -> list[str]:
        """This engine's pool keys (the base's is shared with engines on the same model source)."""
        return [key for key in dict.fromkeys((self.base_key, self.main_key, self.refiner_key)) if key]

    @property
    def pipeline(self) -> Any:
        """The warm diffusers pipeline that runs the first pass, or None (never loads)."""
        loaded = self.pool.peek(self.main_key)
        return loaded.pipeline if loaded is not None else None

    def info(self) -> EngineInfo:
        """Availability without loading or blocking: False when torch/diffusers are missing, the last load
        failed or the model's local path does not exist (a request still retries: the user may have put it there
        since); the family, the options it uses, the LoRAs and embedding tokens of the registry for its base, the
        model's licence (:func:`daemon.licences.licence_of`), its quantization once loaded
        (:func:`daemon.engines.loading.quantization_of`, ``+offload`` when offloaded)."""
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
        strategy = self.strategy
        base = strategy.base if strategy is not None else None
        known = licence_of(self.spec.model, self.spec.licence, self.spec.non_commercial)
        return EngineInfo(name=self.name, kind="diffusers", model=self.model, available=available,
                          uses_prompt=True, detail=detail, family=self.family,
                          loras=[lora.name for lora in self.registry.loras_for(base)],
                          embeddings=[embedding.token for embedding in self.registry.embeddings_for(base)],
                          refiner=strategy is None or strategy.refinable,
                          options=strategy.options() if strategy is not None else list(FILL_OPTIONS),
                          defaults=strategy.defaults() if strategy is not None else {}, bits=16,
                          licence=known.name if known else "", non_commercial=bool(known and known.non_commercial),
                          quantization=quantization_label(quantization_of(self.pipeline), self._offloaded())
                          if self.pipeline is not None else "")

    def model_state(self) -> ModelState:
        """LOADED while the first-pass pipeline is warm in the pool; otherwise ON_DISK when the model's folder or
        file is here or a hub model's ``model_index.json`` is in the Hugging Face cache (no network), else
        NOT_DOWNLOADED; UNAVAILABLE without torch and diffusers, or when the local path it names does not exist.
        Never loads, never blocks (a few file lookups)."""
        if not diffusers_available():
            return ModelState.UNAVAILABLE
        if self.pipeline is not None:
            return ModelState.LOADED
        if self.spec.single_file:
            return ModelState.ON_DISK if Path(self.spec.model).expanduser().is_file() else ModelState.UNAVAILABLE
        try:
            folder = local_folder(self.spec.model) or cached_folder(self.spec.model)
        except EngineLoadError:  # a path with nothing there
            return ModelState.UNAVAILABLE
        return ModelState.ON_DISK if folder is not None else ModelState.NOT_DOWNLOADED

    def unload(self) -> None:
        """Evict this engine's pipelines from the pool (every key of :attr:`keys`, then one release of memory; worker
        thread only). An engine on the same model source that is warm keeps the shared modules in memory, and its
        next request loads the evicted base again."""
        self.pool.evict(*self.keys)

    def _offloaded(self) -> bool:
        """True when a warm pipeline of this engine runs with model CPU offload (never loads, never blocks)."""
        warm = (self.pool.peek(key) for key in (self.main_key, self.refiner_key) if key)
        return any(loaded.offloaded for loaded in warm if loaded is not None)

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
        self._warm(progress)

    def _warm(self, progress: LoadProgress | None = None) -> tuple[LoadedPipeline, LoadedPipeline | None]:
        """:meth:`_pipelines`, remembering a load failure for :meth:`info` (and forgetting it on success).

        Raises:
            EngineLoadError: as :meth:`load`.
        """
        try:
            pipelines = self._pipelines(progress)
        except EngineLoadError as error:
            self._load_error = str(error)
            raise
        self._load_error = ""
        return pipelines

    def _pipelines(self, progress: LoadProgress | None = None) -> tuple[LoadedPipeline, LoadedPipeline | None]:
        """``(first-pass pipeline, SDXL refiner or None)`` from the pool, loading what is not warm (each becomes
        the most recently used)."""
        started = False

        def report(stage: str, step: int, total: int) -> None:  # "load" once, however many models load
            nonlocal started
            if progress is not None and (stage != "load" or not started):
                progress(stage, step, total)
            started |= stage == "load"

        main: LoadedPipeline = self.pool.get(self.main_key, lambda: self._load_main(report), keep=self.keys)
        if self._family is None:  # warm in the pool through another engine on the same source
            self._family = main.strategy if main.strategy.derived else resolve_family(self.spec.family, main.pipeline)
        if not self._previewer_loaded:  # spec.previews for the family's latents (daemon.engines.previews)
            self._previewer = load_previewer(self.spec.previews, self._family.architecture, report)
            self._previewer_loaded = True
            log.info("%s: previews %s", self.name, self._previewer.name if self._previewer is not None else "off")
        if not self.refiner_key:
            return main, None
        refiner: LoadedPipeline = self.pool.get(self.refiner_key, lambda: self._load_refiner(main, report),
                                                keep=self.keys)
        return main, refiner

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

    def _context(self, progress: LoadProgress, strategy: FamilyStrategy) -> LoadContext:
        """What a family's loading code needs: the progress, the dtype on this engine's device (``strategy``'s on
        CUDA with ``dtype = "auto"``), the variant."""
        dtype = torch_dtype_for(self._prepare_device(), self.spec.dtype, strategy.cuda_dtype)
        return LoadContext(progress=progress, torch_dtype=dtype, variant=self.spec.variant)

    def _load_main(self, progress: LoadProgress) -> LoadedPipeline:
        """The first-pass pipeline: the base, or for a derived family (ControlNet) its pipeline made from the
        shared base (:meth:`daemon.engines.family.FamilyStrategy.derive`)."""
        if self._declared is None or not self._declared.derived:
            return self._load_base(progress)
        base: LoadedPipeline = self.pool.get(self.base_key, lambda: self._load_base(progress), keep=self.keys)
        family = self._family = resolve_family(self.spec.family, base.pipeline)  # raises for a base of another kind
        pipeline = family.derive(base.pipeline, self.spec, self._context(progress, family))
        # from_pipe hands over the base's scheduler of the moment: the default stays the base's own
        loaded = LoadedPipeline(pipeline, family, key=self.main_key,
                                default_scheduler_config=base.default_scheduler_config)
        self._place(loaded, new_bytes(pipeline, shared_with=[base.pipeline]),
                    label=f"{self.name} ({family.key_suffix})")
        return loaded

    def _load_base(self, progress: LoadProgress) -> LoadedPipeline:
        """The model source's pipeline, on the device (or offloaded).

        The strategy that loads it: the declared family's (a derived family's :attr:`~FamilyStrategy.loads_as`);
        for ``auto``, the family of a single file's header, or of a folder's ``model_index.json``, else the
        generic loader (``AutoPipelineForInpainting``). A declared family that the folder's ``model_index.json``
        says the model is not of is refused before loading (:func:`daemon.engines.families.resolve_declared`):
        the transformer families load with their own pipeline class, whatever the folder holds. Its
        quantization is refused up front when this machine cannot run it, then chosen for the downloaded folder
        (:func:`daemon.engines.loading.plan_quantization`) and applied as it loads.
        """
        check_quantization(self.spec.quantization, self._prepare_device())
        declared = self._declared
        loader = FAMILY_STRATEGIES[declared.loads_as or declared.family] if declared is not None else None
        if self.spec.single_file:
            source = str(Path(self.spec.model).expanduser())
            if not Path(source).is_file():
                raise EngineLoadError(f"checkpoint file {source} does not exist")
            strategy = loader or family_of_single_file(Path(source))
            hint = ("the file must be an original-format (LDM) SD/SDXL checkpoint; set config to the model's "
                    "diffusers folder or hub id to load it offline")
        else:
            source, hint = fetch(self.spec.model, self.spec.variant, progress)
            found = family_from_index(Path(source))
            if found is not None:
                resolve_declared(self.spec.family, FAMILY_STRATEGIES[found], FAMILY_STRATEGIES[found].pipeline_class)
            strategy = loader or FAMILY_STRATEGIES[found or Family.SD_INPAINT]  # any: AutoPipelineForInpainting
        context = self._context(progress, strategy)
        choice = plan_quantization(self.spec.quantization, Path(source), self.spec.variant,
                                   lambda: self.pool.budget_bytes, self._prepare_device(), context.torch_dtype,
                                   self.name)
        progress("load", 0, 0)
        quantized = quantization_kwargs(choice, Path(source), context.torch_dtype, self.spec.gguf)
        try:
            pipeline = strategy.load(source, single_file=self.spec.single_file, config=self.spec.config,
                                     torch_dtype=context.torch_dtype, variant=self.spec.variant, quantization=quantized)
        except Exception as error:  # any failure here (OSError, ValueError, HTTP errors) means "cannot load"
            raise EngineLoadError(f"could not load {self.model!r}: {error} ({hint})") from error
        self._family = resolve_family(self.spec.family, pipeline)
        self._family.check_components(pipeline)
        loaded = LoadedPipeline(pipeline, family_of_pipeline(pipeline), key=self.base_key)
        self._place(loaded, new_bytes(pipeline), label=self.name, offload_as=choice.offload)
        return loaded

    def _load_refiner(self, base: LoadedPipeline, progress: LoadProgress) -> LoadedPipeline:
        """The separate refiner of ``spec.refiner`` (:meth:`daemon.engines.family.FamilyStrategy.load_refiner`:
        SDXL's shares ``base``'s ``text_encoder_2`` and ``vae``)."""
        family = self._family
        assert family is not None, "the base is loaded first"
        pipeline = family.load_refiner(base.pipeline, self.spec, self._context(progress, family))
        loaded = LoadedPipeline(pipeline, family, key=self.refiner_key)
        self._place(loaded, new_bytes(pipeline, shared_with=[base.pipeline]), label=f"{self.name} (refiner)")
        return loaded

    def _place(self, loaded: LoadedPipeline, size: int, label: str, offload_as: str = "") -> None:
        """Put ``loaded`` on the device within the pool's budget (:func:`daemon.engines.loading.place`;
        ``offload_as``: the quantization choice's offload)."""
        loaded.offloaded = place(loaded.pipeline, self._prepare_device(), self.pool, size=size, keep=self.keys,
                                 compile_unet=self.spec.compile, label=label, offload_as=offload_as)

    # --- per request ---

    def _resolved(self) -> FamilyStrategy:
        family = self._family
        assert family is not None, "resolved when the pipelines load"
        return family

    def _loras(self, family: FamilyStrategy) -> dict[str, LoraSpec]:
        """The registry's LoRAs for ``family``'s base, by name."""
        return {lora.name: lora for lora in self.registry.loras_for(family.base)}

    def check(self, job: EngineJob) -> None:
        """Refuse options the model cannot honour, before anything runs; changes nothing (loads the model if it
        is not warm).

        In order: a first pass without a denoising step (before loading); options the family does not use
        (:meth:`daemon.engines.family.FamilyStrategy.check`); prompt weighting without a Compel base; LoRAs on a
        UNet compiled on CUDA; a scheduler the pipelines cannot run (built, not installed:
        :meth:`LoadedPipeline.scheduler_for`); LoRA names that are not the registry's for this base; a refining
        pass without a step.

        Raises:
            EngineLoadError: as :meth:`load`.
            ProtocolError: INVALID_REQUEST (no denoising or refining step: the message says what to raise);
                INCOMPATIBLE from the family (ControlNet scale without ControlNet; Kandinsky: strength < 1, LoRAs,
                refining), for LoRAs on a compiled UNet, or from :mod:`daemon.engines.options` (prompt weighting,
                scheduler, LoRA).
        """
        opts = job.options
        check_denoising(opts)
        main, refiner = self._warm()
        family = self._resolved()
        family.check(job)
        options.check_weighting(family.compel_base, opts.prompt, opts.negative_prompt, family=str(family.family))
        if self.spec.compile and opts.loras and self._device is not None and self._device.type == "cuda":
            raise incompatible("LoRAs change the UNet that compile = true compiled (every request would recompile): "
                               "set compile = false for this model in daemon.toml to use LoRAs")
        for loaded in (main, refiner):
            if loaded is not None:
                loaded.scheduler_for(opts.scheduler)
        if family.base is not None:
            options.check_loras(opts.loras, self._loras(family),
                                all_loras={lora.name: lora for lora in self.registry.loras})
        self._count(opts, main, refiner)

    def prepare(self, job: EngineJob) -> int:
        """Apply the request's options once, for all its variants (after :meth:`check`): its scheduler on every
        pipeline (:meth:`LoadedPipeline.use_scheduler`), its LoRAs at their weights (exactly those: the others are
        switched off) and the embeddings its prompts use on the first-pass pipeline; each pipeline then records
        them as applied (:attr:`LoadedPipeline.applied`).

        Returns:
            The denoising steps :meth:`inpaint` reports per variant (both passes): :mod:`daemon.engines.refining`'s
            count with the request's scheduler, cached per scheduler, steps, strength and refiner_strength.

        Raises:
            EngineLoadError: as :meth:`load`.
            ProtocolError(INCOMPATIBLE): a LoRA or embedding file is missing or does not fit the model (the pipeline
                runs as before the call); the others as :meth:`check`.
        """
        opts = job.options
        main, refiner = self._warm()
        family = self._resolved()
        pipelines = [loaded for loaded in (main, refiner) if loaded is not None]
        for loaded in pipelines:
            loaded.applied = None
        for loaded in pipelines:
            loaded.use_scheduler(opts.scheduler)
        if family.base is not None:
            main.apply_loras(opts.loras, self._loras(family), {lora.name: lora for lora in self.registry.loras})
            main.load_embeddings([opts.prompt, opts.negative_prompt], self.registry.embeddings_for(family.base))
        steps = self._count(opts, main, refiner)
        for loaded in pipelines:
            loaded.applied = (self.name, opts)
        return steps

    def _count(self, opts: FillOptions, main: LoadedPipeline, refiner: LoadedPipeline | None) -> int:
        """Denoising steps per variant for ``opts`` (:meth:`daemon.engines.refining.Refinement.count` with the
        schedulers the request uses), cached per :data:`StepKey`.

        Raises:
            ProtocolError(INVALID_REQUEST): the refining pass would run no step.
        """
        key = (opts.scheduler, opts.num_inference_steps, opts.strength, opts.refiner_strength)
        if key not in self._step_counts:
            refinement = self._resolved().refinement(opts.refiner_strength, refiner is not None)
            self._step_counts[key] = refinement.count(
                opts, main.scheduler_for(opts.scheduler),
                refiner.scheduler_for(opts.scheduler) if refiner is not None else None)
        return self._step_counts[key]

    def _prepared(self, job: EngineJob, main: LoadedPipeline, refiner: LoadedPipeline | None) -> int:
        """The steps per variant of ``job``, :meth:`check` and :meth:`prepare` first unless its options are the
        ones applied to every pipeline (another engine sharing a pipeline, or a caller that skipped
        :meth:`prepare`, leaves them otherwise)."""
        applied = (self.name, job.options)
        if all(loaded.applied == applied for loaded in (main, refiner) if loaded is not None):
            return self._count(job.options, main, refiner)
        self.check(job)
        return self.prepare(job)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Generate ``job.mask``'s area of ``job.image`` (H×W×3 uint8 or uint16 RGB, mask H×W uint8, 255 = repaint)
        with the options :meth:`prepare` applied (it checks and prepares them first when they are not those).

        A 16-bit crop goes to the pipeline as floating point and comes back so (:attr:`protocol.EngineInfo.bits` is
        16): see :meth:`_generate`.

        Progress is ``(i, total)`` after each denoising step of either pass, ``total`` = :meth:`prepare`'s count.
        With ``job.previews``, after each step that it says is due the step's latents are decoded by the model's
        previewer (:mod:`daemon.engines.previews`, chosen by ``spec.previews`` when the model loads) and shown; a
        model without one (``off``, Kandinsky 2.2) shows none. Cancel is checked after each step: the pipeline is
        interrupted (diffusers' ``_interrupt`` flag, its documented way to stop early; a family whose pipelines lack
        it, Kandinsky, raises from the callback) and :class:`JobCancelled` raised.

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
            H×W×3 RGB, the crop's size and type (uint8, or uint16 for a 16-bit crop).

        Raises:
            JobCancelled: ``cancelled()`` became True.
            EngineLoadError: as :meth:`load`.
            ProtocolError: as :meth:`check` and :meth:`prepare`; JOB_FAILED (:data:`SAFETY_CHECKER_MESSAGE`) when
                the model's safety checker blanked the image.
        """
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        main, refiner = self._warm()
        total = self._prepared(job, main, refiner)
        try:
            return self._generate(job, main, refiner, progress, cancelled, total)
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            log.warning("%s: out of memory (%s); evicting the other models and retrying once", self.name, error)
            self._free_memory(main, refiner)
        return self._generate(job, main, refiner, progress, cancelled, total)

    def _free_memory(self, main: LoadedPipeline, refiner: LoadedPipeline | None) -> None:
        """Evict every other model, release cached memory, and on CUDA offload this model's pipelines."""
        self.pool.evict_others(keep=self.keys)
        release_device_memory()  # also when nothing was evicted: torch's cache may hold freed blocks
        if self._device is None or self._device.type != "cuda":
            return
        for loaded in (main, refiner):
            if loaded is not None and not loaded.offloaded:
                loaded.offload(self._device)
                log.info("%s: model CPU offload enabled after running out of memory", self.name)

    def _generate(self, job: EngineJob, main: LoadedPipeline, refiner: LoadedPipeline | None,
                  progress: ProgressCallback, cancelled: CancelCheck, total: int) -> np.ndarray:
        """Run one variant on the prepared pipelines and return its pixels (H×W×3, the crop's size and type).

        1. Scale the crop and its mask to the model's size: the long side at the family's native size, both sides
           multiples of its size multiple (:func:`scaled_size`, :func:`resized`). An 8-bit crop goes to the pipeline
           as PIL RGB; a 16-bit one as floating point, the family's
           :meth:`daemon.engines.family.FamilyStrategy.float_image` (never rounded to 8 bits), and its last pass
           returns floats (``output_type="np"``) instead of 8-bit PIL.
        2. The step callback: after every denoising step of every pass it reports ``(done, total)`` and, once
           ``cancelled()``, stops the pipeline (diffusers' ``_interrupt``; for a family whose pipelines ignore it,
           it raises :class:`JobCancelled`); otherwise, when ``job.previews`` says a preview is due, it decodes the
           step's ``latents`` (the family's :meth:`~daemon.engines.family.FamilyStrategy.preview_latents`: FLUX.1's
           packed ones unpacked) with the previewer and shows them.
        3. The call arguments (:class:`daemon.engines.refining.VariantCall`): the prompts (plain, or Compel
           embeddings), what every pass shares (mask, size, guidance under the family's
           :attr:`~daemon.engines.family.FamilyStrategy.guidance_argument`, steps, the variant's seeded CPU
           generator, the callback) and the family's own (strength, ControlNet's control image and scale).
        4. The passes of the request's refinement (:mod:`daemon.engines.refining`): the first pass alone, the SDXL
           base handing over to its refiner, or a second pass of the same model; each output goes through
           :meth:`_images` (cancel, safety checker).
        5. Scale the last pass's image back to the crop's size (:func:`resized`; a 16-bit crop's in float32, then
           clipped to 0…1 and rounded to 16 bits, :func:`float_to_16_bits`).

        Raises:
            JobCancelled, ProtocolError(JOB_FAILED): as :meth:`inpaint`; whatever the pipeline raises.
        """
        import torch

        family = self._resolved()
        # 1. the model's size
        height, width = job.image.shape[:2]
        model_width, model_height = scaled_size(width, height, family.native_size(main.pipeline), family.size_multiple)
        deep = job.image.dtype == np.uint16
        model_pixels = resized(job.image, model_width, model_height)
        image = family.float_image(model_pixels) if deep else Image.fromarray(model_pixels)
        mask = Image.fromarray(resized(job.mask, model_width, model_height))

        # 2. progress, cancel and previews after each step
        done = 0
        previews = job.previews

        def on_step_end(pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]) -> dict[str, Any]:
            nonlocal done
            done += 1
            progress(done, total)
            if cancelled():
                if not family.interruptible:
                    raise JobCancelled(f"{self.name}: cancelled")
                pipe._interrupt = True
            elif previews is not None and self._previewer is not None and previews.due(done):
                try:
                    rgb = self._previewer(family.preview_latents(pipe, tensors["latents"], model_width, model_height))
                except Exception as error:  # previews never make a fill fail: off for this model from now on
                    log.warning("%s: previews off, %s cannot decode its latents: %s", self.name, self._previewer.name,
                                error)
                    self._previewer = None
                else:
                    previews.show(done, rgb)
            return tensors

        # 3. the call arguments
        opts = job.options
        call = VariantCall(
            options=opts,
            image=image,
            prompts=main.prompt_kwargs(opts.prompt, opts.negative_prompt),
            shared={
                "mask_image": mask,  # diffusers' convention, like ours: white (255) = repaint
                "height": model_height,  # without these, diffusers would resize to the native square
                "width": model_width,
                family.guidance_argument: opts.guidance_scale,
                "num_inference_steps": opts.num_inference_steps,
                "generator": torch.Generator("cpu").manual_seed(job.seed),
                "callback_on_step_end": on_step_end,
            },
            family=family.call_kwargs(job, image, mask),
            output_type="np" if deep else "pil",
        )

        # 4. the passes
        def run(pipeline: Any, **kwargs: Any) -> Any:
            return self._images(pipeline(**kwargs), job, cancelled)

        result = family.refinement(opts.refiner_strength, refiner is not None).run(call, run, main, refiner)

        # 5. back to the crop's size
        if deep:
            return float_to_16_bits(resized(np.asarray(result, dtype=np.float32)[0], width, height))
        return resized(np.asarray(result.convert("RGB")), width, height)

    def _images(self, output: Any, job: EngineJob, cancelled: CancelCheck) -> Any:
        """The first image (PIL), the images (B×H×W×3 float32 NumPy, ``output_type="np"``) or latents (1×C×h×w
        tensor) of a pipeline ``output``.

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
