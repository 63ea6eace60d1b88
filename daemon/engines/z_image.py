"""Z-Image: ``z-image-inpaint``, ``ZImageInpaintPipeline`` (diffusers 0.42).

Tongyi-MAI/Z-Image-Turbo (Apache 2.0, the model card) is a 6B single-stream ``ZImageTransformer2DModel`` on the FLUX.1
autoencoder's 16 latent channels, prompted through Qwen3-4B (``Qwen3Model``, its second-to-last hidden states), and
distilled (Decoupled-DMD) to 8 steps without classifier-free guidance. Its ``model_index.json`` names
``ZImagePipeline``; :meth:`FlowStrategy.load <daemon.engines.flow.FlowStrategy.load>` loads it as the inpainting
pipeline (white = repaint, binarised; the known latents blended back after each step).

From the pipeline's source:

- ``guidance_scale`` is classifier-free guidance against ``negative_prompt`` (``pos + g · (pos − neg)``), off at
  0 (``do_classifier_free_guidance`` is ``guidance_scale > 0``), which is how the Turbo model runs;
- no ``default_sample_size``: ``ZImagePipeline`` draws 1024² by default, 128 latents a side of its 8× autoencoder
  (:meth:`ZImageStrategy.native_size`); sides multiples of 16 (``check_inputs``: ``vae_scale_factor × 2``);
- the step callback's ``latents`` are N×16×h×w, not packed (the 2×2 patches are made inside the transformer): as the
  transformer sees them, scaled and shifted as FLUX.1's, which a FLUX.1 tiny autoencoder (madebyollin/taef1 as
  ``previews``) decodes;
- LoRAs through ``ZImageLoraLoaderMixin``; it honours ``_interrupt``.

Importing this module is cheap: nothing of torch or diffusers is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gimp_inpaint.protocol import Family

from .flow import FlowStrategy

Z_IMAGE_LATENT_SIDE = 128
"""Latent side of ``ZImagePipeline``'s default image (``height = height or 1024`` in its ``__call__``, over the 8×
autoencoder of Tongyi-MAI/Z-Image-Turbo)."""


@dataclass(frozen=True)
class ZImageStrategy(FlowStrategy):
    """Z-Image's inpainting pipeline: the flow-matching behaviour with the native size of ``ZImagePipeline``."""

    def native_size(self, pipeline: Any) -> int:
        """:data:`Z_IMAGE_LATENT_SIDE` × ``vae_scale_factor``: 1024 pixels with the real 8× autoencoder (the
        pipeline has no ``default_sample_size``)."""
        return int(Z_IMAGE_LATENT_SIDE * pipeline.vae_scale_factor)


Z_IMAGE_INPAINT = ZImageStrategy(
    Family.Z_IMAGE_INPAINT, "Z-Image", "ZImageInpaintPipeline", architecture="z-image", base="z-image",
    index_classes=("ZImagePipeline", "ZImageInpaintPipeline"), steps=8, guidance=0.0)
"""``z-image-inpaint``; 8 steps at guidance 0, as the model card of Tongyi-MAI/Z-Image-Turbo runs it (8 function
evaluations, "guidance should be 0 for the Turbo models") and ``ZImageInpaintPipeline``'s example does."""
