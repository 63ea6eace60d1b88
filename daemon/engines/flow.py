"""The transformer (flow-matching) families' common behaviour: :class:`FlowStrategy`.

Stable Diffusion 3/3.5, FLUX.1 Fill and Kontext, Chroma, FLUX.2 klein, Z-Image and Qwen-Image denoise with a
transformer (no UNet) trained for rectified flow, and each family is run by its own diffusers inpainting pipeline
(``StableDiffusion3InpaintPipeline``, ``FluxFillPipeline``, ...), which ``AutoPipelineForInpainting`` does not map
for several of them: :meth:`FlowStrategy.folder_loader` names the class. What they share, from those pipelines' sources
(diffusers 0.42):

- the scheduler is the model's ``FlowMatchEulerDiscreteScheduler`` (first order, sigma shifted by the image's
  token count for FLUX.1), which the ``scheduler`` option's samplers (noise-prediction schedulers of SD/SDXL) do not
  replace: a non-default ``scheduler`` is refused as ``incompatible``;
- ``strength`` runs ``num_inference_steps − int(num_inference_steps − num_inference_steps × strength)`` steps (their
  ``get_timesteps``: the truncation is of the skipped steps, not of the run ones as in the SD pipelines),
  :class:`FlowMatchingPass`;
- the latents are patchified in 2×2 patches, so width and height are multiples of ``vae_scale_factor × 2`` = 16
  (``check_inputs``);
- no refining pass (no image-to-image companion of the same modules), no Compel prompt weighting (Compel handles SD's
  and SDXL's CLIP encoders, not T5 or an LLM), no textual-inversion embeddings; LoRAs through diffusers' LoRA mixin
  of the family (``SD3LoraLoaderMixin``, ``FluxLoraLoaderMixin``, ...) for the family's :attr:`base`;
- they honour ``_interrupt`` and never call ``scheduler.scale_model_input``.

A family module makes one :class:`FlowStrategy` (or a subclass: FLUX.1's packed latents,
:mod:`daemon.engines.flux`) with its pipeline class, ``model_index.json`` classes, base and model-card defaults.
Importing this module is cheap: diffusers is imported inside :meth:`FlowStrategy.folder_loader`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gimp_inpaint.protocol import FillOptions

from .family import FamilyStrategy
from .refining import NoRefinement, Refinement


def flow_steps(num_inference_steps: int, strength: float) -> int:
    """Denoising steps (``callback_on_step_end`` calls) of a flow-matching inpainting pipeline for
    ``num_inference_steps`` and ``strength``: its ``get_timesteps`` skips ``int(max(steps − steps × strength, 0))``
    of the scheduler's ``steps`` timesteps (``FlowMatchEulerDiscreteScheduler`` is first order: one timestep a step).
    3 steps at strength 0.5 are 2 (the SD pipelines run ``int(3 × 0.5)`` = 1)."""
    skipped = int(max(num_inference_steps - min(num_inference_steps * strength, num_inference_steps), 0))
    return num_inference_steps - skipped


class FlowMatchingPass(NoRefinement):
    """The first pass alone, counted as the flow-matching pipelines run it (:func:`flow_steps`); their scheduler's
    timesteps depend on the image size (FLUX.1's shift ``mu``), which :func:`daemon.engines.refining.count_steps`'
    ``set_timesteps(steps)`` cannot be given, and need not be: the count does not depend on them."""

    def count(self, options: FillOptions, scheduler: Any, refiner_scheduler: Any = None) -> int:
        return flow_steps(options.num_inference_steps, options.strength)


@dataclass(frozen=True)
class FlowStrategy(FamilyStrategy):
    """A transformer flow-matching family (see the module docstring): no UNet (:attr:`inpaint_unet` None: the
    ``model_index.json`` class alone tells the family), :attr:`size_multiple` 16, not :attr:`refinable`, no
    ``scheduler`` option, no prompt weighting, its own pipeline class (:meth:`folder_loader`), ``bfloat16`` weights
    on CUDA (:attr:`cuda_dtype`: these models are trained and published in it, and overflow float16)."""

    inpaint_unet: bool | None = None
    size_multiple: int = 16
    refinable: bool = False
    scales_model_input: bool = False
    prompt_weighting: bool = False
    cuda_dtype: str = "bfloat16"

    def used_options(self) -> set[str]:
        """The generic options but ``scheduler`` (see the module docstring)."""
        return super().used_options() - {"scheduler"}

    def refusal(self, name: str, value: Any) -> str:
        if name == "scheduler":
            return (f"scheduler={value}: {self.label} models run their own flow-matching scheduler "
                    "(FlowMatchEulerDiscreteScheduler), which the samplers of this option (for SD and SDXL) cannot "
                    "replace; use scheduler default")
        return super().refusal(name, value)

    def folder_loader(self) -> Any:
        """:attr:`pipeline_class` itself (``AutoPipelineForInpainting`` does not map several of these families):
        its ``from_pretrained`` loads any of :attr:`index_classes`' repos, whose components are the same (the
        inpainting pipeline only adds the mask)."""
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def native_size(self, pipeline: Any) -> int:
        """``default_sample_size × vae_scale_factor``, the size the pipeline renders without ``height`` and
        ``width`` (SD 3/3.5: the transformer's ``sample_size`` 128 × 8 = 1024)."""
        return int(pipeline.default_sample_size * pipeline.vae_scale_factor)

    def refinement(self, refiner_strength: float, has_refiner: bool) -> Refinement:
        """The first pass alone, :class:`FlowMatchingPass` (``refiner_strength`` > 0 is refused by :meth:`check`)."""
        return FlowMatchingPass()
