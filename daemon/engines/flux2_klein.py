"""FLUX.2 [klein]: ``flux2-klein-inpaint``, ``Flux2KleinInpaintPipeline`` (diffusers 0.42).

black-forest-labs/FLUX.2-klein-4B (Apache 2.0, the model card; the default modern model) and its 9B sibling (FLUX
Non-Commercial License) are a ``Flux2Transformer2DModel`` on ``AutoencoderKLFlux2``'s 32-channel latents, prompted
through a Qwen3 causal LM (Qwen3-4B / Qwen3-8B: the hidden states of its layers 9, 18 and 27 stacked). Their repos'
``model_index.json`` name ``Flux2KleinPipeline`` (with ``is_distilled``: true for the step-distilled 4B and 9B, false
for the "base" variants); :meth:`FlowStrategy.load <daemon.engines.flow.FlowStrategy.load>` loads them as the
inpainting pipeline, which adds the mask (white = repaint, binarised, the known latents blended back after each step)
and the crop's latents as a reference the transformer attends to.

From the pipeline's source:

- no ``negative_prompt`` argument: classifier-free guidance, for a model that is not ``is_distilled`` and at
  ``guidance_scale`` > 1, is against the empty prompt; a request's negative prompt is refused;
- ``guidance_scale`` is that guidance; a step-distilled model ignores it (``do_classifier_free_guidance`` is False
  with ``is_distilled``; the pipeline logs so above 1), so for one the option is not used: a value other than the
  table's default is refused, and the dialog hides it (:attr:`Flux2KleinStrategy.distilled`);
- ``default_sample_size`` 128 × the autoencoder's 8: 1024 pixels native; sides multiples of 16;
- the step callback's ``latents`` are packed: N×(h/2 · w/2)×4C tokens of the 2×2-patchified, batch-normalised
  latents (:meth:`Flux2KleinStrategy.preview_latents`);
- LoRAs through ``Flux2LoraLoaderMixin``; it honours ``_interrupt``.

Importing this module is cheap: torch is imported by the pipeline only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gimp_inpaint.protocol import Family

from .family import FamilyStrategy
from .flow import FlowStrategy

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

    from .base import EngineJob


@dataclass(frozen=True)
class Flux2KleinStrategy(FlowStrategy):
    """FLUX.2 [klein]'s inpainting pipeline: the flow-matching behaviour plus the unpacking of its latents.

    Attributes:
        distilled: a step-distilled model (``is_distilled``), which runs without guidance: ``guidance_scale`` is not
            one of its options, and the pipeline gets :attr:`guidance` (1) whatever the request holds.
    """

    distilled: bool = True

    def used_options(self) -> set[str]:
        """The flow-matching options, less ``guidance_scale`` for a :attr:`distilled` model."""
        used = super().used_options()
        return used - {"guidance_scale"} if self.distilled else used

    def defaults(self) -> dict[str, float]:
        """:attr:`steps` alone for a :attr:`distilled` model (it takes no guidance), else steps and guidance."""
        return {"num_inference_steps": self.steps} if self.distilled else super().defaults()

    def refusal(self, name: str, value: Any) -> str:
        if name == "guidance_scale":
            return (f"guidance_scale={value}: this FLUX.2 klein model is step-distilled (is_distilled in its "
                    "model_index.json) and runs without guidance; leave it at its default, or use a base variant "
                    "(black-forest-labs/FLUX.2-klein-base-4B) to guide")
        return super().refusal(name, value)

    def call_kwargs(self, job: EngineJob, image: Image.Image | np.ndarray, mask: Image.Image) -> dict[str, Any]:
        """The generic arguments, with ``guidance_scale`` :attr:`guidance` (1) for a :attr:`distilled` model: the
        request's is then its table default, unused, which the pipeline would log as ignored at every call."""
        kwargs = super().call_kwargs(job, image, mask)
        return {**kwargs, "guidance_scale": self.guidance} if self.distilled else kwargs

    def for_model(self, config: Mapping[str, Any]) -> FamilyStrategy:
        """:data:`FLUX2_KLEIN_BASE` for a model whose config says ``is_distilled`` false (the base variants), else
        :data:`FLUX2_KLEIN_INPAINT` (the step-distilled 4B and 9B, and a config that does not say)."""
        return FLUX2_KLEIN_BASE if config.get("is_distilled") is False else FLUX2_KLEIN_INPAINT

    def preview_latents(self, pipeline: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The packed N×(h/2 · w/2)×4C ``latents`` of a ``width × height`` image as the N×C×h×w latents its
        autoencoder decodes, as the pipeline's post-processing makes them: the tokens back into their grid (the
        inverse of ``_pack_latents``, row by row as ``_prepare_latent_ids`` numbers them), the autoencoder's batch
        norm undone (``vae.bn`` running mean and variance, ``batch_norm_eps``), the 2×2 patches unfolded
        (``_unpatchify_latents``)."""
        import torch

        patch = pipeline.vae_scale_factor * 2
        batch, _, channels = latents.shape
        grid = latents.permute(0, 2, 1).reshape(batch, channels, height // patch, width // patch)
        bn = pipeline.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(grid.device, grid.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipeline.vae.config.batch_norm_eps).to(grid.device,
                                                                                                     grid.dtype)
        unpatchified: torch.Tensor = pipeline._unpatchify_latents(grid * std + mean)
        return unpatchified


FLUX2_KLEIN_INPAINT = Flux2KleinStrategy(
    Family.FLUX2_KLEIN_INPAINT, "FLUX.2 klein", "Flux2KleinInpaintPipeline", architecture="flux2-klein",
    base="flux2-klein", index_classes=("Flux2KleinPipeline", "Flux2KleinInpaintPipeline"),
    takes_negative_prompt=False, steps=4, guidance=1.0)
"""``flux2-klein-inpaint``; 4 steps at guidance 1, as the model card of black-forest-labs/FLUX.2-klein-4B runs the
step-distilled model (``Flux2KleinInpaintPipeline.__call__``'s own defaults, 50 steps at 8.0, are for the base
variants, whose cards run 50 steps at 4.0)."""

FLUX2_KLEIN_BASE = replace(FLUX2_KLEIN_INPAINT, distilled=False, steps=50, guidance=4.0)
"""A base (not step-distilled) FLUX.2 klein model's ``flux2-klein-inpaint``: 50 steps at guidance 4, as the base
variants' model cards run them (:meth:`Flux2KleinStrategy.for_model`); guidance is then classifier-free guidance
against the empty prompt."""
