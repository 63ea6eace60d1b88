"""SDXL: ``sdxl-inpaint`` (9-channel, e.g. diffusers/stable-diffusion-xl-1.0-inpainting-0.1) or ``sdxl`` (a 4-channel
base), run by ``StableDiffusionXLInpaintPipeline`` at ~1024², with an optional separate refiner (``spec.refiner``)
that shares the base's ``text_encoder_2`` and ``vae`` (diffusers' SDXL guide; the handover:
:class:`daemon.engines.refining.RefinerHandover`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gimp_inpaint.protocol import Family

from .base import EngineLoadError
from .family import FamilyStrategy

if TYPE_CHECKING:
    from ..registry import ModelSpec
    from .loading import LoadContext


class SDXLStrategy(FamilyStrategy):
    """SDXL families: the generic behaviour plus a separate refiner."""

    def load_refiner(self, base: Any, spec: ModelSpec, context: LoadContext) -> Any:
        """The SDXL refiner ``spec.refiner`` as a ``StableDiffusionXLInpaintPipeline`` sharing ``base``'s
        ``text_encoder_2`` and ``vae`` (the same objects: loaded once, counted once by the pool).

        Raises:
            EngineLoadError: it cannot be downloaded or loaded (the message says what to do).
        """
        import diffusers

        source, hint = context.fetch(spec.refiner)
        context.progress("load", 0, 0)
        try:
            return getattr(diffusers, self.pipeline_class).from_pretrained(
                source, text_encoder_2=base.text_encoder_2, vae=base.vae, torch_dtype=context.torch_dtype,
                variant=context.variant or None)
        except Exception as error:  # any failure here (OSError, ValueError) means "cannot load"
            raise EngineLoadError(f"could not load the refiner {spec.refiner!r}: {error} ({hint})") from error


INDEX_CLASSES = ("StableDiffusionXLPipeline", "StableDiffusionXLInpaintPipeline")
"""``model_index.json`` classes of SDXL repos that ``AutoPipelineForInpainting`` loads as
``StableDiffusionXLInpaintPipeline``."""

SDXL_INPAINT = SDXLStrategy(
    Family.SDXL_INPAINT, "SDXL", "StableDiffusionXLInpaintPipeline", architecture="sdxl", base="sdxl",
    inpaint_unet=True, index_classes=INDEX_CLASSES, single_file_types=("xl_inpaint",), steps=20, guidance=8.0)
"""``sdxl-inpaint``: a 9-channel SDXL inpainting UNet; 20 steps at guidance 8 as the model card of
diffusers/stable-diffusion-xl-1.0-inpainting-0.1 runs it ("steps between 15 and 30 work well")."""

SDXL = SDXLStrategy(
    Family.SDXL, "SDXL", "StableDiffusionXLInpaintPipeline", architecture="sdxl", base="sdxl",
    inpaint_unet=False, index_classes=INDEX_CLASSES, single_file_types=("xl_base",))
"""``sdxl``: a 4-channel SDXL base used for inpainting."""
