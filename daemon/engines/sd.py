"""Stable Diffusion 1.x/2.x: ``sd-inpaint`` (a 9-channel inpainting UNet, e.g. stable-diffusion-inpainting) and
``sd`` (a plain 4-channel text-to-image checkpoint, inpainted by blending the known latents back after each step),
both run by ``StableDiffusionInpaintPipeline`` at ~512².

The generic :class:`daemon.engines.family.FamilyStrategy` is what these do. A refining pass without a separate
refiner is a second inpainting pass (9 channels) or an image-to-image pass (4 channels).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gimp_inpaint.protocol import Family
from PIL import Image

from .base import EngineJob
from .family import FamilyStrategy


class StableDiffusionStrategy(FamilyStrategy):
    """SD 1.x/2.x families: the generic behaviour plus SD's own options (``eta``). The ControlNet family, built on
    SD pipelines, inherits them."""

    def used_options(self) -> set[str]:
        """The generic options and ``eta``."""
        return {*super().used_options(), "eta"}

    def call_kwargs(self, job: EngineJob, image: Image.Image | np.ndarray, mask: Image.Image) -> dict[str, Any]:
        """The generic arguments and diffusers' ``eta`` (η of the DDIM paper, Song et al. 2020: the share of fresh
        noise each DDIM step adds; ``StableDiffusionInpaintPipeline`` hands it to schedulers whose ``step`` takes
        it, DDIM's, and other schedulers ignore it)."""
        return {**super().call_kwargs(job, image, mask), "eta": job.options.eta}


INDEX_CLASSES = ("StableDiffusionPipeline", "StableDiffusionInpaintPipeline")
"""``model_index.json`` classes of SD 1.x/2.x repos (text-to-image or inpainting) that
``AutoPipelineForInpainting`` loads as ``StableDiffusionInpaintPipeline``."""

SD_INPAINT = StableDiffusionStrategy(
    Family.SD_INPAINT, "SD 1.x/2.x", "StableDiffusionInpaintPipeline", architecture="sd", base="sd",
    inpaint_unet=True, index_classes=INDEX_CLASSES, single_file_types=("inpainting", "inpainting_v2"))
"""``sd-inpaint``: a 9-channel SD 1.x/2.x inpainting UNet."""

SD = StableDiffusionStrategy(
    Family.SD, "SD 1.x/2.x", "StableDiffusionInpaintPipeline", architecture="sd", base="sd",
    inpaint_unet=False, index_classes=INDEX_CLASSES, single_file_types=("v1", "v2"))
"""``sd``: a 4-channel SD 1.x/2.x text-to-image UNet used for inpainting."""
