"""Kandinsky 2.2: ``kandinsky22-inpaint``, ``KandinskyV22InpaintCombinedPipeline`` (prior + decoder + MoVQ).

Since diffusers 0.19 its mask is white = repaint, like ours. Width and height are rounded up to multiples of 64 by
the decoder (``downscale_height_and_width``: ``movq_scale_factor²``), so they are sent as such. It takes no
``strength`` (it always starts from noise), no LoRA, embeddings, prompt weighting, refiner or ControlNet scale; its
decoder never calls ``scheduler.scale_model_input`` (no sigma-space scheduler) and, like the prior, does not honour
``_interrupt``. Progress comes from the decoder's ``callback_on_step_end`` (``num_inference_steps`` steps); the prior
runs ``prior_num_inference_steps`` (diffusers' default, 25) unreported steps first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from gimp_inpaint.protocol import Family

from .family import FamilyStrategy

if TYPE_CHECKING:
    from PIL import Image

    from .base import EngineJob


class KandinskyStrategy(FamilyStrategy):
    """Kandinsky 2.2's combined inpainting pipeline."""

    def used_options(self) -> set[str]:
        """The generic options but ``strength`` (and, having no base and no refining pass, no ``loras`` and no
        ``refiner_strength``)."""
        return super().used_options() - {"strength"}

    def refusal(self, name: str, value: Any) -> str:
        if name == "strength":
            return (f"strength={value}: Kandinsky 2.2 inpainting always repaints from noise (its pipeline has no "
                    "strength argument); use strength 1")
        return super().refusal(name, value)

    def detects(self, class_name: str, in_channels: int) -> bool:
        """Any of its classes, whatever the decoder UNet's channels."""
        return class_name in (self.pipeline_class, *self.index_classes)

    def native_size(self, pipeline: Any) -> int:
        """``unet.config.sample_size × movq_scale_factor`` of the decoder."""
        return int(pipeline.unet.config.sample_size * pipeline.decoder_pipe.movq_scale_factor)

    def call_kwargs(self, job: EngineJob, image: Image.Image | np.ndarray, mask: Image.Image) -> dict[str, Any]:
        """No family-specific arguments (no ``strength``; the prior keeps diffusers' defaults)."""
        return {}

    def float_image(self, pixels: np.ndarray) -> np.ndarray:
        """H×W×3 float32 in 0…255 (``pixels / 257``): the Kandinsky 2.2 inpainting pipeline reads a NumPy image as
        8-bit values (``prepare_mask_and_masked_image`` divides it by 127.5 and subtracts 1), fractions included."""
        return np.multiply(pixels, np.float32(1 / 257), dtype=np.float32)


KANDINSKY22_INPAINT = KandinskyStrategy(
    Family.KANDINSKY22_INPAINT, "Kandinsky 2.2", "KandinskyV22InpaintCombinedPipeline", architecture="kandinsky22",
    base=None, inpaint_unet=None,
    index_classes=("KandinskyV22Pipeline", "KandinskyV22InpaintPipeline", "KandinskyV22InpaintCombinedPipeline"),
    size_multiple=64, refinable=False, interruptible=False, scales_model_input=False, steps=100, guidance=4.0)
"""``kandinsky22-inpaint``; 100 decoder steps at guidance 4, the defaults of diffusers'
``KandinskyV22InpaintCombinedPipeline.__call__``."""
