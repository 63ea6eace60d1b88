"""Model families: how each kind of diffusers inpainting pipeline is loaded, sized, called and refined.

One small strategy object per family of :data:`daemon.registry.FAMILIES` (except ``auto``, which is resolved to
one of them from the loaded pipeline or from a single file's header); the engine asks its family instead of
branching on names. Importing this module is cheap: diffusers and torch are imported inside the methods.

Sources: diffusers' "Inpainting" guide (pipelines, ``make_inpaint_condition``, the SDXL refiner, Kandinsky's mask
convention) and "Load pipelines" (``from_pipe``, ``from_single_file``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from ..registry import base_of
from .base import EngineJob, EngineLoadError, incompatible

if TYPE_CHECKING:
    import torch


def make_inpaint_condition(image: Image.Image, mask: Image.Image) -> torch.Tensor:
    """The control image of an inpainting ControlNet: 1×3×H×W float32 RGB in [0, 1], masked pixels set to −1.

    ``image``: RGB, ``mask``: L of the same size (≥ 128 = repaint). From diffusers' "ControlNet" guide
    (``make_inpaint_condition``, for ``lllyasviel/control_v11p_sd15_inpaint``).
    """
    import torch

    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    masked = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0 > 0.5
    pixels = pixels.copy()
    pixels[masked] = -1.0
    return torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())


@dataclass(frozen=True)
class Family:
    """Stable Diffusion 1.x/2.x: ``sd-inpaint`` (9-channel inpainting UNet) or ``sd`` (4-channel text-to-image
    UNet, inpainted by blending the known latents back after each step), both run by
    ``StableDiffusionInpaintPipeline``.

    Attributes:
        name: the family name (:data:`daemon.registry.FAMILIES`).
        pipeline_class: the diffusers class loaded for it (``from_pretrained``, ``from_single_file``).
        inpaint_unet: True when the UNet takes 9 input channels (noisy latents, mask, masked-image latents).
        size_multiple: width and height sent to the pipeline are multiples of this (pixels).
        refinable: a refining pass (``refiner_strength`` > 0) is possible.
        interruptible: the pipeline honours ``_interrupt`` (diffusers' documented early stop); otherwise the
            step callback raises to stop it.
    """

    name: str
    pipeline_class: str
    inpaint_unet: bool
    size_multiple: int = 8
    refinable: bool = True
    interruptible: bool = True

    @property
    def lora_base(self) -> str | None:
        """The LoRA/embedding base (:func:`daemon.registry.base_of`), None when the family takes none."""
        return base_of(self.name)

    def load(self, source: str, *, single_file: bool, config: str, torch_dtype: torch.dtype,
             variant: str) -> Any:
        """The pipeline from a local folder, a hub snapshot folder or a single file, on the CPU.

        Folders load with ``AutoPipelineForInpainting.from_pretrained``, which maps every family's
        ``model_index.json`` class to its inpainting pipeline (a plain SD or SDXL text-to-image repo included).
        A single file loads with ``<pipeline_class>.from_single_file(source, config=config, ...)``. A local
        diffusers folder as ``config`` is all it takes to stay offline: diffusers then reads ``model_index.json``,
        the components' configs, the tokenizer and the scheduler from that folder (``loaders/single_file.py``,
        the ``os.path.isdir(config)`` branch) and converts the checkpoint's weights; no ``local_files_only``
        needed. Without ``config`` diffusers fetches the default config of the detected model type from the Hub.
        """
        import diffusers

        if single_file:
            return getattr(diffusers, self.pipeline_class).from_single_file(
                source, config=os.path.expanduser(config) if config else None, torch_dtype=torch_dtype)
        return diffusers.AutoPipelineForInpainting.from_pretrained(source, torch_dtype=torch_dtype,
                                                                   variant=variant or None)

    def native_size(self, pipeline: Any) -> int:
        """The side (pixels) the model was trained at: ``unet.config.sample_size × vae_scale_factor``
        (512 for SD 1.5, 1024 for SDXL)."""
        return int(pipeline.unet.config.sample_size * pipeline.vae_scale_factor)

    def check(self, job: EngineJob) -> None:
        """Refuse options this family cannot honour.

        Raises:
            ProtocolError(INCOMPATIBLE): a ControlNet conditioning scale other than 1 on a model without
                ControlNet.
        """
        if job.controlnet_conditioning_scale != 1.0:
            raise incompatible(f"controlnet_conditioning_scale={job.controlnet_conditioning_scale} needs a "
                               f"ControlNet model; this model's family is {self.name}")

    def call_kwargs(self, job: EngineJob, image: Image.Image, mask: Image.Image) -> dict[str, Any]:
        """The family-specific arguments of the pipeline call (beyond prompt, image, mask, size, steps, seed)."""
        return {"strength": job.strength}

    def refine_pipeline(self, pipeline: Any) -> Any:
        """The pipeline of the refining pass when the model has no separate refiner.

        4-channel UNets: ``AutoPipelineForImage2Image.from_pipe(pipeline)`` (every component shared, no new
        weights), run on the first pass's latents. 9-channel inpainting UNets cannot run image-to-image (they
        need the mask and masked-image channels), so the inpainting pipeline itself makes the second pass, on
        the first pass's pixels.
        """
        if self.inpaint_unet:
            return pipeline
        from diffusers import AutoPipelineForImage2Image

        refine = AutoPipelineForImage2Image.from_pipe(pipeline, torch_dtype=pipeline.dtype)
        refine.set_progress_bar_config(disable=True)
        return refine


@dataclass(frozen=True)
class SDXLFamily(Family):
    """SDXL: ``sdxl-inpaint`` (9-channel, e.g. diffusers/stable-diffusion-xl-1.0-inpainting-0.1) or ``sdxl``,
    run by ``StableDiffusionXLInpaintPipeline`` at ~1024². An optional refiner (``spec.refiner``) shares the
    base's ``text_encoder_2`` and ``vae`` (diffusers' SDXL guide)."""

    def load_refiner(self, source: str, base: Any, *, torch_dtype: torch.dtype, variant: str) -> Any:
        """The SDXL refiner ``source`` as a ``StableDiffusionXLInpaintPipeline`` sharing ``base``'s
        ``text_encoder_2`` and ``vae`` (the same objects: loaded once, counted once by the pool)."""
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        return cls.from_pretrained(source, text_encoder_2=base.text_encoder_2, vae=base.vae,
                                   torch_dtype=torch_dtype, variant=variant or None)


@dataclass(frozen=True)
class ControlNetFamily(Family):
    """``sd-controlnet-inpaint``: an SD 1.x checkpoint plus an inpainting ControlNet
    (``lllyasviel/control_v11p_sd15_inpaint``) in ``StableDiffusionControlNetInpaintPipeline``, made with
    ``from_pipe`` from the plain SD inpainting pipeline of the same checkpoint, whose modules it shares."""

    def attach(self, base: Any, controlnet: Any) -> Any:
        """``StableDiffusionControlNetInpaintPipeline.from_pipe(base, controlnet=controlnet)`` in ``base``'s dtype
        (``base``: an SD 1.x/2.x inpainting pipeline, checked by :func:`resolve_family`). ``from_pipe`` casts the
        new pipeline, shared modules included, to its ``torch_dtype`` (float32 when none is given), so the
        base's dtype must be passed or the base's float16 modules would become float32."""
        import diffusers

        cls = getattr(diffusers, self.pipeline_class)
        return cls.from_pipe(base, controlnet=controlnet, torch_dtype=base.dtype)

    def check(self, job: EngineJob) -> None:
        """Every option of the SD family, and any ControlNet scale (the request validates its range)."""

    def call_kwargs(self, job: EngineJob, image: Image.Image, mask: Image.Image) -> dict[str, Any]:
        """``strength``, ``control_image`` (:func:`make_inpaint_condition`) and ``controlnet_conditioning_scale``."""
        return {"strength": job.strength, "control_image": make_inpaint_condition(image, mask),
                "controlnet_conditioning_scale": job.controlnet_conditioning_scale}

    def refine_pipeline(self, pipeline: Any) -> Any:
        """The ControlNet pipeline itself (a second pass with the same control image)."""
        return pipeline


@dataclass(frozen=True)
class KandinskyFamily(Family):
    """``kandinsky22-inpaint``: ``KandinskyV22InpaintCombinedPipeline`` (prior + decoder + MoVQ).

    Since diffusers 0.19 its mask is white = repaint, like ours. Width and height are rounded up to multiples
    of 64 by the decoder (``downscale_height_and_width``: ``movq_scale_factor²``), so they are sent as such. It
    takes no ``strength`` (it always starts from noise), no LoRA, embeddings, refiner or ControlNet scale; its
    decoder and prior do not honour ``_interrupt``. Progress comes from the decoder's ``callback_on_step_end``
    (``num_inference_steps`` steps); the prior runs ``prior_num_inference_steps`` (diffusers' default, 25)
    unreported steps first.
    """

    def native_size(self, pipeline: Any) -> int:
        """``unet.config.sample_size × movq_scale_factor`` of the decoder."""
        return int(pipeline.unet.config.sample_size * pipeline.decoder_pipe.movq_scale_factor)

    def check(self, job: EngineJob) -> None:
        """Raises ProtocolError(INCOMPATIBLE) for strength < 1, LoRAs, a refining pass or a ControlNet scale."""
        super().check(job)
        if job.strength < 1.0:
            raise incompatible(f"strength={job.strength}: Kandinsky 2.2 inpainting always repaints from noise "
                               "(its pipeline has no strength argument); use strength 1")
        if job.loras:
            raise incompatible("Kandinsky 2.2 models take no LoRA")
        if job.refiner_strength > 0:
            raise incompatible("Kandinsky 2.2 models have no refining pass: use refiner_strength 0")

    def call_kwargs(self, job: EngineJob, image: Image.Image, mask: Image.Image) -> dict[str, Any]:
        """No family-specific arguments (the prior keeps diffusers' defaults)."""
        return {}


FAMILY_STRATEGIES: Mapping[str, Family] = {family.name: family for family in (
    Family("sd-inpaint", "StableDiffusionInpaintPipeline", inpaint_unet=True),
    Family("sd", "StableDiffusionInpaintPipeline", inpaint_unet=False),
    SDXLFamily("sdxl-inpaint", "StableDiffusionXLInpaintPipeline", inpaint_unet=True),
    SDXLFamily("sdxl", "StableDiffusionXLInpaintPipeline", inpaint_unet=False),
    KandinskyFamily("kandinsky22-inpaint", "KandinskyV22InpaintCombinedPipeline", inpaint_unet=False,
                    size_multiple=64, refinable=False, interruptible=False),
    ControlNetFamily("sd-controlnet-inpaint", "StableDiffusionControlNetInpaintPipeline", inpaint_unet=False),
)}
"""The strategy of each family of :data:`daemon.registry.FAMILIES` but ``auto``."""


def family_of_pipeline(pipeline: Any) -> Family:
    """The family of a pipeline ``AutoPipelineForInpainting`` loaded: its class and ``unet.config.in_channels``.

    Raises:
        EngineLoadError: a pipeline of none of the families (e.g. Kandinsky 2.1, an SD3 or Flux model).
    """
    name = type(pipeline).__name__
    if name == "KandinskyV22InpaintCombinedPipeline":
        return FAMILY_STRATEGIES["kandinsky22-inpaint"]
    nine_channels = getattr(getattr(getattr(pipeline, "unet", None), "config", None), "in_channels", 4) == 9
    if name == "StableDiffusionInpaintPipeline":
        return FAMILY_STRATEGIES["sd-inpaint" if nine_channels else "sd"]
    if name == "StableDiffusionXLInpaintPipeline":
        return FAMILY_STRATEGIES["sdxl-inpaint" if nine_channels else "sdxl"]
    raise EngineLoadError(f"the model loads as a {name}, which is none of the supported families "
                          "(sd-inpaint, sd, sdxl-inpaint, sdxl, kandinsky22-inpaint)")


INDEX_CLASS_FAMILIES: Mapping[str, tuple[str, str]] = {
    "StableDiffusionPipeline": ("sd-inpaint", "sd"),
    "StableDiffusionInpaintPipeline": ("sd-inpaint", "sd"),
    "StableDiffusionXLPipeline": ("sdxl-inpaint", "sdxl"),
    "StableDiffusionXLInpaintPipeline": ("sdxl-inpaint", "sdxl"),
    "KandinskyV22Pipeline": ("kandinsky22-inpaint", "kandinsky22-inpaint"),
    "KandinskyV22InpaintPipeline": ("kandinsky22-inpaint", "kandinsky22-inpaint"),
    "KandinskyV22InpaintCombinedPipeline": ("kandinsky22-inpaint", "kandinsky22-inpaint"),
}
"""``(family with a 9-channel UNet, family with a 4-channel one)`` of each ``model_index.json`` class that
``AutoPipelineForInpainting`` turns into a pipeline of a supported family."""


def family_from_index(folder: Path) -> str | None:
    """The family of the diffusers pipeline folder ``folder``, read from its ``model_index.json`` class and its
    ``unet/config.json`` ``in_channels`` (two small JSON files: no torch, no weights), as :func:`family_of_pipeline`
    would find it after loading. None when the files are missing, unreadable or of no supported family.
    """
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        families = INDEX_CLASS_FAMILIES.get(index.get("_class_name", ""))
        if families is None:
            return None
        unet = folder / "unet" / "config.json"
        in_channels = json.loads(unet.read_text(encoding="utf-8")).get("in_channels", 4) if unet.is_file() else 4
    except (OSError, ValueError, AttributeError):
        return None
    return families[0] if in_channels == 9 else families[1]


def resolve_family(declared: str, pipeline: Any) -> Family:
    """The family a loaded base ``pipeline`` runs as, given the ``declared`` one (``auto`` or a family name).

    The pipeline's class and UNet decide (:func:`family_of_pipeline`): ``sd`` declared for a 9-channel
    checkpoint runs as ``sd-inpaint`` (the UNet decides how the refining pass runs). ``sd-controlnet-inpaint``
    stays itself when the base is an SD 1.x/2.x pipeline.

    Raises:
        EngineLoadError: the model is of another architecture than declared (an SDXL model declared ``sd``, a
            ControlNet on an SDXL or Kandinsky model, ...).
    """
    found = family_of_pipeline(pipeline)
    wanted = FAMILY_STRATEGIES["sd"] if declared == "sd-controlnet-inpaint" else FAMILY_STRATEGIES.get(declared)
    if wanted is None:
        return found
    if type(found) is not type(wanted) or found.lora_base != wanted.lora_base:
        raise EngineLoadError(
            f"the model is a {type(pipeline).__name__} ({found.name}), not of family {declared!r}"
            + ("; diffusers' inpainting ControlNet pipeline is for SD 1.x/2.x models"
               if declared == "sd-controlnet-inpaint" else ": fix family in daemon.toml or leave it out (auto)"))
    return FAMILY_STRATEGIES[declared] if declared == "sd-controlnet-inpaint" else found


SINGLE_FILE_MODEL_TYPES: Mapping[str, str] = {
    "v1": "sd", "v2": "sd", "inpainting": "sd-inpaint", "inpainting_v2": "sd-inpaint",
    "xl_base": "sdxl", "xl_inpaint": "sdxl-inpaint",
}
"""Family of each model type that diffusers' ``infer_diffusers_model_type`` (loaders/single_file_utils.py) reads
from an original-format (LDM) checkpoint."""


class _Shape:
    """A tensor stand-in that has only the ``shape`` of a safetensors slice (no data read)."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = tuple(shape)


class _HeaderView(Mapping[str, _Shape]):
    """A safetensors file as the key → tensor mapping diffusers' model-type detection reads, from its header
    only (``safe_open`` keys and ``get_slice(key).get_shape()``)."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._keys = set(handle.keys())

    def __getitem__(self, key: str) -> _Shape:
        if key not in self._keys:
            raise KeyError(key)
        return _Shape(self._handle.get_slice(key).get_shape())

    def __iter__(self) -> Any:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys


def family_of_single_file(path: Path) -> Family:
    """The family of an original-format ``.safetensors`` checkpoint, read from its header (no weights loaded):
    SD vs SDXL and 4 vs 9 UNet input channels, by diffusers' own ``infer_diffusers_model_type``.

    Raises:
        EngineLoadError: not a safetensors file (``.ckpt`` needs an explicit family), unreadable, or a model
            type of no supported family.
    """
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type
    from safetensors import safe_open

    if path.suffix.lower() != ".safetensors":
        raise EngineLoadError(f"{path}: the family of a {path.suffix} file cannot be read from a header; "
                              "set family = \"sd-inpaint\", \"sd\", \"sdxl-inpaint\" or \"sdxl\"")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = _HeaderView(handle)
            # the UNet's first convolution: without it diffusers' detection falls back to "v1" for any file
            model_type = infer_diffusers_model_type(header) if CHECKPOINT_KEY_NAMES["inpainting"] in header else None
    except Exception as error:  # unreadable header, truncated file, ...
        raise EngineLoadError(f"cannot read the checkpoint {path}: {error}") from error
    if model_type not in SINGLE_FILE_MODEL_TYPES:
        kind = f"a {model_type!r} checkpoint" if model_type else "not an original-format (LDM) UNet checkpoint"
        raise EngineLoadError(f"{path} is {kind}, none of the supported families (SD 1.x/2.x or SDXL, inpainting "
                              "or not)")
    return FAMILY_STRATEGIES[SINGLE_FILE_MODEL_TYPES[model_type]]
