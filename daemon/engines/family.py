"""What a model family is to the engine: :class:`FamilyStrategy`, the behaviour every family starts from.

A family is one instance of this class, or of a subclass that overrides what differs, in a module of its own
(:mod:`daemon.engines.sd`, :mod:`daemon.engines.sdxl`, :mod:`daemon.engines.kandinsky`,
:mod:`daemon.engines.controlnet`), plus one entry in :data:`daemon.engines.families.FAMILY_STRATEGIES`. The generic
:class:`daemon.engines.diffusers_engine.DiffusersEngine` asks the strategy instead of branching on names: how to load
the pipeline, its native size, which request options it uses and refuses, the family's own call arguments, and how a
refining pass runs (:mod:`daemon.engines.refining`).

The defaults here are what diffusers' inpainting pipelines of Stable Diffusion 1.x/2.x do. Importing this module is
cheap: diffusers and torch are imported inside the methods.

Sources: diffusers' "Inpainting" guide (pipelines, the SDXL refiner, Kandinsky's mask convention, ControlNet) and
"Load pipelines" (``AutoPipelineForInpainting``, ``from_pipe``, ``from_single_file``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gimp_inpaint.protocol import FILL_OPTIONS, Family

from .base import WORKER_OPTIONS, EngineJob, EngineLoadError, incompatible
from .refining import ImageToImagePass, NoRefinement, Refinement, RefinerHandover, SecondInpaintPass

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..registry import ModelSpec
    from .loading import LoadContext

GENERIC_OPTIONS = WORKER_OPTIONS | {"prompt", "negative_prompt", "scheduler", "strength", "num_inference_steps",
                                    "guidance_scale"}
""":data:`protocol.FILL_OPTIONS` rows every diffusion family uses (the worker's,
:data:`daemon.engines.base.WORKER_OPTIONS`; the pipeline call the others). A family adds ``loras`` when it has a
:attr:`FamilyStrategy.base`, ``refiner_strength`` when it is :attr:`FamilyStrategy.refinable`, and its own
(:meth:`FamilyStrategy.used_options`)."""


@dataclass(frozen=True)
class FamilyStrategy:
    """One model family: how its pipeline is loaded, sized, checked, called and refined.

    Attributes:
        family: the :class:`protocol.Family` it runs.
        label: its name in messages (``"Kandinsky 2.2"``).
        pipeline_class: the diffusers class that runs it (``from_single_file`` loads it; a loaded pipeline of this
            class is of this family, :meth:`detects`).
        architecture: the model architecture (``"sd"``, ``"sdxl"``, ``"kandinsky22"``): a declared family must be
            of the loaded model's (:func:`daemon.engines.families.resolve_family`).
        base: the base its LoRAs, embeddings and Compel prompt weighting are made for (:data:`daemon.registry.BASES`);
            None when the family takes none.
        inpaint_unet: True for a 9-channel inpainting UNet (noisy latents, mask, masked-image latents), False for a
            4-channel one (inpainted by blending the known latents back after each step), None when the UNet's
            channels do not tell the family apart.
        index_classes: the ``model_index.json`` ``_class_name`` values that ``AutoPipelineForInpainting`` loads as
            :attr:`pipeline_class` (read before loading, :func:`daemon.engines.families.family_from_index`).
        single_file_types: the model types diffusers' ``infer_diffusers_model_type`` reads from an original-format
            (LDM) checkpoint of this family.
        size_multiple: width and height sent to the pipeline are multiples of this (pixels).
        refinable: a refining pass (``refiner_strength`` > 0) is possible.
        interruptible: the pipeline honours ``_interrupt`` (diffusers' documented early stop); otherwise the step
            callback raises to stop it.
        scales_model_input: the pipeline calls ``scheduler.scale_model_input`` each step, which the sigma-space
            schedulers need (:func:`daemon.engines.options.build_scheduler`).
        loads_as: for a family made from another family's pipeline (ControlNet from SD): that family, whose
            pipeline is loaded first (and shared, under the model source's pool key); None otherwise.
        key_suffix: the pool key of the pipeline :meth:`derive` makes is ``ENGINE:key_suffix`` (derived families).
        steps, guidance: the ``num_inference_steps`` and ``guidance_scale`` the family works best with, which the
            handshake reports (:meth:`defaults`): the table's unless the family's model card or pipeline says
            otherwise.
        takes_negative_prompt: the pipeline has a ``negative_prompt`` argument that a request's negative prompt can
            go to (False: FLUX.1 Fill; a non-empty one is refused, and the call passes none).
        prompt_weighting: Compel prompt weighting works on its text encoders (:attr:`compel_base`): SD's and SDXL's
            CLIP encoders; False for families with a base (LoRAs) whose encoders Compel does not handle (T5, LLMs).
        guidance_argument: the pipeline argument the request's ``guidance_scale`` goes to: ``"guidance_scale"``
            (classifier-free guidance, or FLUX.1's distilled guidance embedding), or ``"true_cfg_scale"`` for a
            pipeline whose ``guidance_scale`` is something else.
        cuda_dtype: the weights' dtype on CUDA with ``dtype = "auto"`` (:func:`daemon.device.torch_dtype_for`):
            ``"float16"``, or ``"bfloat16"`` for models published and run in it.
    """

    family: Family
    label: str
    pipeline_class: str
    architecture: str
    base: str | None
    inpaint_unet: bool | None
    index_classes: tuple[str, ...] = ()
    single_file_types: tuple[str, ...] = ()
    size_multiple: int = 8
    refinable: bool = True
    interruptible: bool = True
    scales_model_input: bool = True
    loads_as: Family | None = None
    key_suffix: str = ""
    steps: int = FILL_OPTIONS["num_inference_steps"].default
    guidance: float = FILL_OPTIONS["guidance_scale"].default
    takes_negative_prompt: bool = True
    prompt_weighting: bool = True
    guidance_argument: str = "guidance_scale"
    cuda_dtype: str = "float16"

    @property
    def derived(self) -> bool:
        """True for a family made from another family's pipeline (:attr:`loads_as`)."""
        return self.loads_as is not None

    @property
    def compel_base(self) -> str | None:
        """The base Compel weights prompts for (:func:`daemon.engines.options.make_compel`): :attr:`base` when
        :attr:`prompt_weighting`, else None (weighting syntax is then refused,
        :func:`daemon.engines.options.check_weighting`)."""
        return self.base if self.prompt_weighting else None

    # --- what the handshake shows and what a request may ask ---

    def used_options(self) -> set[str]:
        """Names of the :data:`protocol.FILL_OPTIONS` rows this family uses: :data:`GENERIC_OPTIONS` (less
        ``negative_prompt`` unless :attr:`takes_negative_prompt`), ``loras`` with a :attr:`base`,
        ``refiner_strength`` when :attr:`refinable`."""
        generic = GENERIC_OPTIONS if self.takes_negative_prompt else GENERIC_OPTIONS - {"negative_prompt"}
        return {*generic, *(["loras"] if self.base else []), *(["refiner_strength"] if self.refinable else [])}

    def options(self) -> list[str]:
        """:meth:`used_options` in the table's order (:attr:`protocol.EngineInfo.options`)."""
        used = self.used_options()
        return [name for name in FILL_OPTIONS if name in used]

    def defaults(self) -> dict[str, float]:
        """:attr:`protocol.EngineInfo.defaults`: :attr:`steps` and :attr:`guidance` by their rows' names."""
        return {"num_inference_steps": self.steps, "guidance_scale": self.guidance}

    def check(self, job: EngineJob) -> None:
        """Refuse a value other than the default of any option this family does not use (:meth:`used_options`).

        Raises:
            ProtocolError(INCOMPATIBLE): with :meth:`refusal`'s message.
        """
        used = self.used_options()
        for name, spec in FILL_OPTIONS.items():
            value = getattr(job.options, name)
            if name not in used and value != spec.default:
                raise incompatible(self.refusal(name, value))

    def refusal(self, name: str, value: Any) -> str:
        """Why option ``name`` cannot be ``value`` on this family (the INCOMPATIBLE message of :meth:`check`)."""
        if name == "controlnet_conditioning_scale":
            return (f"controlnet_conditioning_scale={value} needs a ControlNet model; this model's family is "
                    f"{self.family}")
        if name == "loras":
            return f"{self.label} models take no LoRA"
        if name == "refiner_strength":
            return f"{self.label} models have no refining pass: use refiner_strength 0"
        if name == "negative_prompt":
            return f"{self.label} models take no negative prompt ({self.pipeline_class} has none): leave it empty"
        return f"{name}={value!r} is not an option of {self.label} models ({self.family}); leave it at its default"

    # --- loading ---

    def detects(self, class_name: str, in_channels: int) -> bool:
        """True when a pipeline of class ``class_name`` (loaded, or named by ``model_index.json``) whose UNet takes
        ``in_channels`` input channels is of this family."""
        if class_name not in (self.pipeline_class, *self.index_classes):
            return False
        return self.inpaint_unet is None or self.inpaint_unet == (in_channels == 9)

    def load(self, source: str, *, single_file: bool, config: str, torch_dtype: torch.dtype, variant: str,
             quantization: Mapping[str, Any] | None = None) -> Any:
        """The pipeline from a local folder, a hub snapshot folder or a single file, on the CPU.

        Folders load with ``AutoPipelineForInpainting.from_pretrained``, which maps every family's
        ``model_index.json`` class to its inpainting pipeline (a plain SD or SDXL text-to-image repo included).
        A single file loads with ``<pipeline_class>.from_single_file(source, config=config, ...)``. A local
        diffusers folder as ``config`` is all it takes to stay offline: diffusers then reads ``model_index.json``,
        the components' configs, the tokenizer and the scheduler from that folder (``loaders/single_file.py``,
        the ``os.path.isdir(config)`` branch) and converts the checkpoint's weights; no ``local_files_only``
        needed. Without ``config`` diffusers fetches the default config of the detected model type from the Hub.
        ``quantization``: more keyword arguments of the loading call that quantize the weights
        (:func:`daemon.engines.loading.quantization_kwargs`: ``quantization_config``, or a GGUF-loaded denoiser).

        Raises:
            Exception: whatever diffusers raises (the engine turns it into :class:`EngineLoadError`).
        """
        import diffusers

        quantized = dict(quantization or {})
        if single_file:
            return getattr(diffusers, self.pipeline_class).from_single_file(
                source, config=os.path.expanduser(config) if config else None, torch_dtype=torch_dtype, **quantized)
        return self.folder_loader().from_pretrained(source, torch_dtype=torch_dtype, variant=variant or None,
                                                    **quantized)

    def for_model(self, config: Mapping[str, Any]) -> FamilyStrategy:
        """This family for one model of it, given the pipeline's config (its ``model_index.json`` before loading,
        ``pipeline.config`` after): the same strategy, unless a family's models differ in what they take or how
        they run best (FLUX.2 klein's base variants against its step-distilled ones). Changes nothing."""
        return self

    def check_components(self, pipeline: Any) -> None:
        """Check that a loaded ``pipeline`` of this family has the components it runs with (the class alone can
        load another model's folder: ``FluxFillPipeline`` takes plain FLUX.1 [dev]'s). Changes nothing; the
        generic families need nothing more than their class and UNet (:meth:`detects`).

        Raises:
            EngineLoadError: it does not, saying which model the family needs.
        """

    def folder_loader(self) -> Any:
        """The diffusers class whose ``from_pretrained`` :meth:`load` loads a folder with:
        ``AutoPipelineForInpainting``, which maps the UNet families' ``model_index.json`` classes to their
        inpainting pipelines (a transformer family names its :attr:`pipeline_class`,
        :class:`daemon.engines.flow.FlowStrategy`)."""
        import diffusers

        return diffusers.AutoPipelineForInpainting

    def derive(self, base: Any, spec: ModelSpec, context: LoadContext) -> Any:
        """The pipeline of a derived family (:attr:`loads_as`) made from ``base``, the loaded pipeline of that
        family, and what ``spec`` adds (ControlNet: ``spec.controlnet``); sharing ``base``'s modules.

        Raises:
            EngineLoadError: the extra model cannot be loaded; or this family is not derived.
        """
        raise EngineLoadError(f"{self.label} models are loaded directly, not made from another pipeline")

    def load_refiner(self, base: Any, spec: ModelSpec, context: LoadContext) -> Any:
        """The separate refiner of ``spec.refiner`` for ``base`` (SDXL only).

        Raises:
            EngineLoadError: the family has no separate refiner (every one but SDXL), or it cannot be loaded.
        """
        raise EngineLoadError(f"a refiner is for SDXL models; {spec.model!r} is {self.family}")

    # --- running ---

    def native_size(self, pipeline: Any) -> int:
        """The side (pixels) the model was trained at: ``unet.config.sample_size × vae_scale_factor``
        (512 for SD 1.5, 1024 for SDXL)."""
        return int(pipeline.unet.config.sample_size * pipeline.vae_scale_factor)

    def preview_latents(self, pipeline: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The ``latents`` a step callback hands over (``callback_on_step_end``'s ``"latents"``) as the N×C×h×w
        tensor a previewer decodes (:mod:`daemon.engines.previews`), for an image of ``width × height`` pixels: as
        they are (the UNet families' latents are that already)."""
        return latents

    def call_kwargs(self, job: EngineJob, image: Image.Image | np.ndarray, mask: Image.Image) -> dict[str, Any]:
        """The family's own arguments of the first pass (beyond prompt, image, mask, size, steps, guidance, seed and
        the step callback): ``strength``. ``image`` (RGB: PIL, or a 16-bit crop's :meth:`float_image`) and ``mask``
        (L, 255 = repaint) are at the model's size."""
        return {"strength": job.options.strength}

    def float_image(self, pixels: np.ndarray) -> np.ndarray:
        """The first pass's ``image`` of a 16-bit crop, without rounding it to 8 bits: ``pixels`` (H×W×3 uint16 RGB
        at the model's size) as H×W×3 float32 in 0…1, the NumPy input of diffusers' ``VaeImageProcessor.preprocess``
        ("expected range [0,1]", normalised to [−1, 1] there), which the SD and SDXL pipelines use."""
        return np.multiply(pixels, np.float32(1 / 65535), dtype=np.float32)

    def second_pass_inpaints(self) -> bool:
        """True when a refining pass without a separate refiner inpaints again over the first pass's pixels (a
        9-channel UNet cannot run image-to-image: it needs the mask and masked-image channels); False when it is an
        image-to-image pass over the first pass's latents."""
        return self.inpaint_unet is True

    def refinement(self, refiner_strength: float, has_refiner: bool) -> Refinement:
        """How a job's refining pass runs: none at ``refiner_strength`` 0; the separate refiner's handover when the
        engine has one (:meth:`load_refiner`); else a second pass of the same model (:meth:`second_pass_inpaints`).
        """
        if refiner_strength == 0:
            return NoRefinement()
        if has_refiner:
            return RefinerHandover()
        return SecondInpaintPass() if self.second_pass_inpaints() else ImageToImagePass()
