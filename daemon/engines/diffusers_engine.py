"""Generative inpainting with a warm diffusers pipeline (Stable Diffusion family, UNet-based).

Importing this module is cheap: torch, diffusers and huggingface_hub are imported by
:meth:`DiffusersEngine.load`, on the first request, so the daemon starts and serves other engines
without them.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from protocol import LATENT_MULTIPLE, EngineInfo, ErrorCode, ProtocolError

from ..device import DeviceUnavailableError, describe_device, resolve_device, set_torch_threads, torch_dtype_for
from .base import CancelCheck, Engine, EngineJob, EngineLoadError, JobCancelled, ProgressCallback

if TYPE_CHECKING:
    import torch

INSTALL_HINT = 'pip install "gimp-inpaint[diffusers]"'
"""How to get torch and diffusers (see pyproject.toml's ``diffusers`` extra)."""

SAFETY_CHECKER_MESSAGE = ("the model's safety checker blanked this result (seed {seed}); "
                          "try another prompt or seed")
"""The JOB_FAILED message when the model's safety checker replaced the image with a black one (``{seed}``: its seed)."""


def diffusers_available() -> bool:
    """True when torch, diffusers and transformers are installed (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "diffusers", "transformers"))


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The ``(width, height)`` in pixels at which a ``width × height`` crop is sent to the model.

    The crop's longer side becomes ``long_side`` (the model's native resolution, 512 for SD 1.5),
    the shorter keeps the aspect ratio; both are rounded to multiples of
    :data:`protocol.LATENT_MULTIPLE` (8, the VAE's downsampling) and are at least 8. Small crops
    are scaled up, large ones down: SD models draw best at the size they were trained at.
    """

    def side(length: int) -> int:
        return max(LATENT_MULTIPLE, round(length * long_side / max(width, height) / LATENT_MULTIPLE) * LATENT_MULTIPLE)

    return side(width), side(height)


def _local_folder(model: str) -> Path | None:
    """``model`` as a local folder, or None when it is a Hugging Face Hub id (``owner/name``).

    Raises:
        EngineLoadError: ``model`` is written as a path (absolute, ``./``, ``~``, or more than one
            ``/``) but nothing is there.
    """
    path = Path(model).expanduser()
    if path.exists():
        return path
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") != 1 or "\\" in model:
        raise EngineLoadError(
            f"model folder {path} does not exist: point the model at a diffusers pipeline folder "
            "(one with model_index.json, e.g. written by save_pretrained) or at a Hugging Face Hub id such as "
            "stable-diffusion-v1-5/stable-diffusion-inpainting")
    return None


def _hub_model_hint(model: str) -> str:
    """Check that the hub model ``model`` can be loaded at all; return the advice for a failed load.

    ``HF_HUB_OFFLINE=1`` forbids downloads, so a model that is not in the Hugging Face cache cannot load.

    Raises:
        EngineLoadError: offline mode is on and ``model``'s ``model_index.json`` is not cached.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    download = ("start the daemon once with network access and without HF_HUB_OFFLINE to download it, "
                "or point the model at a local folder that holds it")
    if not constants.HF_HUB_OFFLINE:
        return "check the network connection and the model id, or point the model at a local folder"
    if not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        raise EngineLoadError(
            f"model {model!r} is not downloaded (not in the Hugging Face cache {constants.HF_HUB_CACHE}) and "
            f"offline mode is on (HF_HUB_OFFLINE=1): {download}")
    return f"offline mode is on (HF_HUB_OFFLINE=1) and the download may be incomplete: {download}"


class DiffusersEngine(Engine):
    """A diffusers inpainting pipeline (``AutoPipelineForInpainting``), loaded once and kept warm.

    The crop is scaled so its long side is the model's native resolution (``scaled_size``), run
    through the pipeline with the job's prompt, strength, guidance_scale, num_inference_steps and
    seed, and the result is scaled back to the crop's size (Pillow, Lanczos). Compositing is left
    to :mod:`daemon.compositing`.

    Load failures are remembered: :meth:`info` reports ``available=False`` with the error as
    ``detail`` until a later :meth:`load` succeeds. Every request retries the load, so a model that
    was downloaded or a network that came back is picked up without restarting the daemon.

    Args:
        name: the engine name offered in the handshake.
        model: a Hugging Face Hub id (downloaded to the Hugging Face cache on first load) or a local
            diffusers pipeline folder, as ``AutoPipelineForInpainting.from_pretrained`` takes it.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (see :mod:`daemon.device`).
        torch_threads: CPU threads torch may use; 0 keeps torch's default.
    """

    def __init__(self, name: str, model: str, *, device: str = "auto", torch_threads: int = 0) -> None:
        if torch_threads < 0:
            raise ValueError(f"torch_threads must be ≥ 0, got {torch_threads}")
        self.name = name
        self.model = model
        self.device = device
        self.torch_threads = torch_threads
        self._pipeline: Any = None
        self._step_counts: dict[tuple[int, int], int] = {}  # (num_inference_steps, denoising steps) → steps_for
        self._device_description = ""
        self._load_error = ""
        self._load_lock = threading.Lock()

    def info(self) -> EngineInfo:
        """Availability without loading: False when torch/diffusers are missing or the last load failed."""
        if not diffusers_available():
            available, detail = False, f"torch and diffusers are not installed: {INSTALL_HINT}"
        elif self._load_error:
            available, detail = False, self._load_error
        elif self._pipeline is not None:
            available, detail = True, f"loaded on {self._device_description}"
        else:
            available, detail = True, "loads on first use"
        return EngineInfo(name=self.name, kind="diffusers", model=self.model, available=available,
                          uses_prompt=True, detail=detail)

    def load(self) -> None:
        """Load the pipeline onto the device unless it is loaded (idempotent, thread-safe).

        Raises:
            EngineLoadError: torch/diffusers are missing, the device is unavailable, the model folder
                does not exist, the model is not downloaded and offline mode is on, the download
                failed, or the files are not a diffusers inpainting pipeline. The message says what
                to do; :meth:`info` reports it until a load succeeds.
        """
        with self._load_lock:
            if self._pipeline is not None:
                return
            try:
                self._pipeline = self._load_pipeline()
            except EngineLoadError as error:
                self._load_error = str(error)
                raise
            self._load_error = ""

    def _load_pipeline(self) -> Any:
        if not diffusers_available():
            raise EngineLoadError(f"torch and diffusers are not installed: {INSTALL_HINT}")
        from diffusers import AutoPipelineForInpainting

        try:
            device = resolve_device(self.device)
        except (ValueError, DeviceUnavailableError) as error:
            raise EngineLoadError(str(error)) from error
        set_torch_threads(self.torch_threads)
        folder = _local_folder(self.model)
        hint = ("the folder must hold a diffusers inpainting pipeline (model_index.json and its components)"
                if folder is not None else _hub_model_hint(self.model))
        try:
            # torch_dtype: newer diffusers call it dtype (and warn), older ones know only torch_dtype
            pipeline = AutoPipelineForInpainting.from_pretrained(
                str(folder or self.model), torch_dtype=torch_dtype_for(device))
            pipeline = pipeline.to(device)
        except Exception as error:  # any failure here (OSError, ValueError, HTTP errors) means "cannot load"
            raise EngineLoadError(f"could not load {self.model!r}: {error} ({hint})") from error
        if device.type == "mps":
            pipeline.enable_attention_slicing()  # diffusers' MPS guide, for machines with < 64 GB of RAM
        pipeline.set_progress_bar_config(disable=True)
        self._device_description = describe_device(device)
        return pipeline

    def steps_for(self, job: EngineJob) -> int:
        """Denoising steps the pipeline runs for ``job``: the number of progress reports of :meth:`inpaint`.

        diffusers runs ``int(num_inference_steps × strength)`` of the scheduler's steps; some
        schedulers have more timesteps than steps (PNDM: one more), so the scheduler is asked, as
        ``StableDiffusionInpaintPipeline.get_timesteps`` does. The answer is cached per
        ``(num_inference_steps, denoising steps)``: a fresh scheduler is built only the first time
        (the pipeline, hence its scheduler, never changes once loaded). Loads the pipeline if needed.

        Raises:
            EngineLoadError: as :meth:`load`.
            ProtocolError(INVALID_REQUEST): ``strength × num_inference_steps`` < 1, so no step would run.
        """
        steps = job.num_inference_steps
        denoising = min(int(steps * job.strength), steps)
        if denoising < 1:
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"strength {job.strength} × {steps} steps runs no denoising step (diffusers runs "
                f"int(num_inference_steps × strength)): raise strength to ≥ {1 / steps:.3g} "
                f"or num_inference_steps to ≥ {int(np.ceil(1 / job.strength))}")
        self.load()
        key = (steps, denoising)
        if key not in self._step_counts:
            scheduler = type(self._pipeline.scheduler).from_config(self._pipeline.scheduler.config)
            scheduler.set_timesteps(steps)
            self._step_counts[key] = len(scheduler.timesteps[(steps - denoising) * scheduler.order:])
        return self._step_counts[key]

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Generate ``job.mask``'s area of ``job.image`` (H×W×3 uint8 RGB, mask H×W uint8, 255 = repaint).

        Progress is ``(i, total)`` after each denoising step, ``total`` = :meth:`steps_for`.
        Cancel is checked after each step: the pipeline is interrupted (diffusers' ``_interrupt``
        flag, its documented way to stop early) and :class:`JobCancelled` raised.

        The noise comes from a CPU ``torch.Generator`` seeded with ``job.seed``, as diffusers'
        "Reproducible pipelines" guide recommends: a seed gives the same picture on every device
        (up to floating-point differences).

        Models that ship a safety checker (stable-diffusion-inpainting does) replace an image it
        flags with a black one and say so in the output's ``nsfw_content_detected``; that black
        image is never returned.

        Returns:
            H×W×3 uint8 RGB, the crop's size.

        Raises:
            JobCancelled: ``cancelled()`` became True.
            EngineLoadError: as :meth:`load`.
            ProtocolError: as :meth:`steps_for`; JOB_FAILED (:data:`SAFETY_CHECKER_MESSAGE`) when the
                model's safety checker blanked the image.
        """
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        total = self.steps_for(job)
        import torch

        pipeline = self._pipeline
        height, width = job.image.shape[:2]
        native = pipeline.unet.config.sample_size * pipeline.vae_scale_factor
        model_width, model_height = scaled_size(width, height, native)
        image = Image.fromarray(job.image).resize((model_width, model_height), Image.Resampling.LANCZOS)
        mask = Image.fromarray(job.mask).resize((model_width, model_height), Image.Resampling.LANCZOS)

        def on_step_end(pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]) -> dict[str, Any]:
            progress(step + 1, total)
            if cancelled():
                pipe._interrupt = True
            return tensors

        output = pipeline(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            image=image,
            mask_image=mask,  # diffusers' convention, like ours: white (255) = repaint
            height=model_height,  # without these, diffusers would resize to the native square
            width=model_width,
            strength=job.strength,
            guidance_scale=job.guidance_scale,
            num_inference_steps=job.num_inference_steps,
            generator=torch.Generator("cpu").manual_seed(job.seed),
            output_type="pil",
            callback_on_step_end=on_step_end,
        )
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        flagged = getattr(output, "nsfw_content_detected", None)  # None: no safety checker (or an SDXL pipeline)
        if flagged is not None and bool(flagged[0]):
            raise ProtocolError(ErrorCode.JOB_FAILED, SAFETY_CHECKER_MESSAGE.format(seed=job.seed))
        image = output.images[0]
        return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))
