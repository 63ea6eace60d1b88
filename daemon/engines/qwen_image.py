"""Qwen-Image: ``qwen-image-inpaint``, ``QwenImageInpaintPipeline`` (diffusers 0.42).

Qwen/Qwen-Image (Apache 2.0, the model card) is a 20B MMDiT, ``QwenImageTransformer2DModel``, on
``AutoencoderKLQwenImage``'s 16 latent channels (Wan 2.1's autoencoder), prompted through Qwen2.5-VL-7B
(``Qwen2_5_VLForConditionalGeneration``'s last hidden states, past its fixed system prompt). Its ``model_index.json``
names ``QwenImagePipeline``; :meth:`FlowStrategy.load <daemon.engines.flow.FlowStrategy.load>` loads it as the
inpainting pipeline (white = repaint, binarised; the known latents blended back after each step).

From the pipeline's source:

- real classifier-free guidance is ``true_cfg_scale`` (> 1, with a ``negative_prompt``, even an empty one: two
  transformer passes a step, the result rescaled to the conditional prediction's norm); its ``guidance_scale`` is for
  guidance-distilled transformers only, which Qwen-Image is not. The request's ``guidance_scale`` therefore goes to
  ``true_cfg_scale`` (:attr:`~daemon.engines.family.FamilyStrategy.guidance_argument`), and its negative prompt with
  it (``""`` when empty, as the model card's ``" "``);
- ``default_sample_size`` 128 × the autoencoder's 8: 1024 pixels native (the model card's 1:1 size is 1328²);
  sides multiples of 16;
- the step callback's ``latents`` are packed, N×(h/2 · w/2)×4C (:meth:`QwenImageStrategy.preview_latents`);
- LoRAs through ``QwenImageLoraLoaderMixin``; it honours ``_interrupt``.

Importing this module is cheap: torch is imported by the pipeline only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gimp_inpaint.protocol import Family

from .flow import FlowStrategy

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class QwenImageStrategy(FlowStrategy):
    """Qwen-Image's inpainting pipeline: the flow-matching behaviour plus the unpacking of its latents."""

    def preview_latents(self, pipeline: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The packed N×(h/2 · w/2)×4C ``latents`` of a ``width × height`` image as N×C×h×w, by the pipeline's own
        ``_unpack_latents`` (which gives the autoencoder's N×C×1×h×w, one frame), still normalised by the
        autoencoder's ``latents_mean`` and ``latents_std`` as the transformer sees them."""
        unpacked: torch.Tensor = pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)
        return unpacked[:, :, 0]


QWEN_IMAGE_INPAINT = QwenImageStrategy(
    Family.QWEN_IMAGE_INPAINT, "Qwen-Image", "QwenImageInpaintPipeline", architecture="qwen-image",
    base="qwen-image", index_classes=("QwenImagePipeline", "QwenImageInpaintPipeline"),
    guidance_argument="true_cfg_scale", steps=50, guidance=4.0)
"""``qwen-image-inpaint``; 50 steps at ``true_cfg_scale`` 4, as the model card of Qwen/Qwen-Image runs it (also
``QwenImageInpaintPipeline.__call__``'s ``true_cfg_scale`` default; its ``num_inference_steps`` default is 50)."""
