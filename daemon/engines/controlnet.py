"""``sd-controlnet-inpaint``: an SD 1.x checkpoint plus an inpainting ControlNet (``spec.controlnet``, e.g.
``lllyasviel/control_v11p_sd15_inpaint``) in ``StableDiffusionControlNetInpaintPipeline``, made with ``from_pipe``
from the plain SD inpainting pipeline of the same checkpoint, whose modules (and pool entry) it shares.

Its control image is the crop with the masked pixels set to −1 (:func:`make_inpaint_condition`), its extra option
``controlnet_conditioning_scale``; a refining pass is a second inpainting pass with the same control image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from gimp_inpaint.protocol import Family

from .base import EngineJob, EngineLoadError
from .sd import StableDiffusionStrategy

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..registry import ModelSpec
    from .loading import LoadContext


def make_inpaint_condition(image: Image.Image | np.ndarray, mask: Image.Image) -> torch.Tensor:
    """The control image of an inpainting ControlNet: 1×3×H×W float32 RGB in [0, 1], masked pixels set to −1.

    ``image``: RGB (PIL, or H×W×3 float32 in 0…1: a 16-bit crop's
    :meth:`daemon.engines.family.FamilyStrategy.float_image`), ``mask``: L of the same size (≥ 128 = repaint). From
    diffusers' "ControlNet" guide (``make_inpaint_condition``, for ``lllyasviel/control_v11p_sd15_inpaint``).
    """
    import torch

    if isinstance(image, np.ndarray):
        pixels = np.asarray(image, dtype=np.float32)
    else:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    masked = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0 > 0.5
    pixels = pixels.copy()
    pixels[masked] = -1.0
    return torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy())


class ControlNetStrategy(StableDiffusionStrategy):
    """An SD pipeline with an inpainting ControlNet attached: what SD does, plus the ControlNet."""

    def used_options(self) -> set[str]:
        """SD's options plus ``controlnet_conditioning_scale``."""
        return {*super().used_options(), "controlnet_conditioning_scale"}

    def detects(self, class_name: str, in_channels: int) -> bool:
        """Never: a loaded model is never found to be of this family, it is declared (it needs ``controlnet``)."""
        return False

    def derive(self, base: Any, spec: ModelSpec, context: LoadContext) -> Any:
        """``StableDiffusionControlNetInpaintPipeline.from_pipe(base, controlnet=...)`` with the ControlNet of
        ``spec.controlnet``, in ``base``'s dtype (``base``: an SD 1.x/2.x inpainting pipeline, checked by
        :func:`daemon.engines.families.resolve_family`). ``from_pipe`` casts the new pipeline, shared modules
        included, to its ``torch_dtype`` (float32 when none is given), so the base's dtype must be passed or the
        base's float16 modules would become float32.

        Raises:
            EngineLoadError: the ControlNet cannot be downloaded or loaded.
        """
        import diffusers

        source, hint = context.fetch(spec.controlnet, pipeline=False)
        context.progress("load", 0, 0)
        try:
            controlnet = diffusers.ControlNetModel.from_pretrained(source, torch_dtype=context.torch_dtype,
                                                                   variant=context.variant or None)
        except Exception as error:  # any failure here (OSError, ValueError) means "cannot load"
            raise EngineLoadError(f"could not load the ControlNet {spec.controlnet!r}: {error} ({hint})") from error
        return getattr(diffusers, self.pipeline_class).from_pipe(base, controlnet=controlnet, torch_dtype=base.dtype)

    def call_kwargs(self, job: EngineJob, image: Image.Image | np.ndarray, mask: Image.Image) -> dict[str, Any]:
        """SD's (``strength``), ``control_image`` (:func:`make_inpaint_condition`) and
        ``controlnet_conditioning_scale``."""
        return {**super().call_kwargs(job, image, mask), "control_image": make_inpaint_condition(image, mask),
                "controlnet_conditioning_scale": job.options.controlnet_conditioning_scale}

    def second_pass_inpaints(self) -> bool:
        """True: the ControlNet pipeline itself makes the second pass, with the same control image."""
        return True


SD_CONTROLNET_INPAINT = ControlNetStrategy(
    Family.SD_CONTROLNET_INPAINT, "SD 1.x/2.x with ControlNet", "StableDiffusionControlNetInpaintPipeline",
    architecture="sd", base="sd", inpaint_unet=False, loads_as=Family.SD, key_suffix="controlnet")
"""``sd-controlnet-inpaint``."""
