"""FLUX.1 and its relatives: ``flux-fill`` (``FluxFillPipeline``), ``flux-kontext-inpaint``
(``FluxKontextInpaintPipeline``) and ``chroma-inpaint`` (``ChromaInpaintPipeline``), diffusers 0.42.

All three run a FLUX.1-style transformer on the FLUX.1 autoencoder's 16-channel latents, packed into 2×2 patches: a
step callback's ``latents`` are N×(h/2 · w/2)×64 tokens, unpacked for previews (:meth:`FluxStrategy.preview_latents`).
Their pipelines hard-code ``default_sample_size = 128`` (1024 px with the 8× autoencoder) whatever the model; the
native size is read from the autoencoder's config instead (``vae/config.json`` ``sample_size``: 1024 for FLUX.1 and
Chroma), which is the same for the real models and tells a small test model apart. Mask: white = repaint, like ours.

- ``flux-fill``: black-forest-labs/FLUX.1-Fill-dev, a transformer that takes the masked image's latents and the mask
  as extra channels (384 in all); ``guidance_scale`` is FLUX.1 [dev]'s distilled guidance, an input of the
  transformer, not classifier-free guidance, and the pipeline has no negative prompt (refused).
- ``flux-kontext-inpaint``: black-forest-labs/FLUX.1-Kontext-dev (``model_index.json``: ``FluxKontextPipeline``), the
  image editing model, the crop's latents given as context; the prompt is an edit instruction ("replace the cup with
  a red balloon"). Its pipeline takes a negative prompt only with ``true_cfg_scale`` > 1 (real classifier-free
  guidance: two transformer passes a step, at a scale no request option carries), so a negative prompt is refused,
  as for Fill, rather than silently dropped.
- ``chroma-inpaint``: lodestones/Chroma1-HD (``ChromaPipeline``), an 8.9B de-distilled FLUX.1 [schnell] with one T5
  encoder; ``guidance_scale`` is real classifier-free guidance against the negative prompt.

Licences (model cards): FLUX.1 Fill [dev] and FLUX.1 Kontext [dev] are under the FLUX.1 [dev] Non-Commercial
License; Chroma1-HD under Apache 2.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from gimp_inpaint.protocol import Family

from .base import EngineLoadError
from .flow import FlowStrategy

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .base import EngineJob


@dataclass(frozen=True)
class FluxStrategy(FlowStrategy):
    """A FLUX.1-style family: packed latents, the native size of the autoencoder's config."""

    def native_size(self, pipeline: Any) -> int:
        """The autoencoder's ``sample_size`` (1024 for FLUX.1 and Chroma; see the module docstring)."""
        return int(pipeline.vae.config.sample_size)

    def preview_latents(self, pipeline: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The packed N×(h/2 · w/2)×4C ``latents`` of a ``width × height`` image as N×C×h×w, by the pipeline's own
        ``_unpack_latents`` (the transformer's latents, before the autoencoder's scale and shift are undone: what
        a FLUX.1 tiny autoencoder, madebyollin/taef1, decodes)."""
        return pipeline._unpack_latents(latents, height, width, pipeline.vae_scale_factor)

    def refusal(self, name: str, value: Any) -> str:
        if name == "negative_prompt":
            return (f"{self.label} models take no negative prompt: FLUX.1 [dev]'s guidance is distilled into the "
                    "model (guidance_scale is an input of the transformer, not guidance away from a negative "
                    "prompt); leave it empty")
        return super().refusal(name, value)


def fill_channels(latent_channels: int, vae_scale_factor: int) -> int:
    """Input channels of a FLUX.1 Fill transformer on an autoencoder of ``latent_channels`` and
    ``vae_scale_factor``: the noisy and the masked image's latents and the mask (``vae_scale_factor``² channels, one
    a pixel of a latent's cell), each packed in 2×2 patches (×4), as ``FluxFillPipeline.prepare_mask_latents``
    builds them: 4 × (16 + 16 + 64) = 384 for FLUX.1-Fill-dev, where plain FLUX.1 [dev] takes 4 × 16 = 64."""
    return 4 * (2 * latent_channels + vae_scale_factor ** 2)


@dataclass(frozen=True)
class FluxFillStrategy(FluxStrategy):
    """FLUX.1 Fill: a transformer made for the masked image and the mask as extra channels."""

    def check_components(self, pipeline: Any) -> None:
        """The transformer takes :func:`fill_channels` inputs: ``FluxFillPipeline`` loads a plain FLUX.1 [dev] (or
        schnell, or a fine-tune of them) folder as well, whose 64-channel transformer would fail at the first step
        with a matrix-shape error.

        Raises:
            EngineLoadError: it takes another number (the message names the model to use instead).
        """
        wanted = fill_channels(pipeline.vae.config.latent_channels, pipeline.vae_scale_factor)
        found = pipeline.transformer.config.in_channels
        if found != wanted:
            raise EngineLoadError(
                f"this is not a FLUX.1 Fill model: its transformer takes {found} input channels, where flux-fill "
                f"needs {wanted} (the masked image and the mask beside the latents); a plain FLUX.1 [dev] or "
                "[schnell] model cannot fill. Use black-forest-labs/FLUX.1-Fill-dev (or a fine-tune of it), or its "
                "GGUF transformer (gguf = ...)")


@dataclass(frozen=True)
class FluxKontextStrategy(FluxStrategy):
    """FLUX.1 Kontext's inpainting pipeline: the crop at the engine's size, as one image of a batch."""

    def call_kwargs(self, job: EngineJob, image: Image.Image | np.ndarray, mask: Image.Image) -> dict[str, Any]:
        """``strength``, ``_auto_resize=False`` and ``max_area`` = the image's: the pipeline would otherwise resize
        the image to the nearest of its ``PREFERRED_KONTEXT_RESOLUTIONS`` (about 1 megapixel, the training buckets)
        and return that size, and warn that it scaled ``height``/``width`` to ``max_area`` (1024², overridden by the
        image's size right after); the engine already sends it with its long side at the native 1024 px, on
        multiples of 16."""
        return {**super().call_kwargs(job, image, mask), "_auto_resize": False, "max_area": mask.width * mask.height}

    def float_image(self, pixels: np.ndarray) -> np.ndarray:
        """The generic float image (H×W×3 float32 in 0…1) as a batch of one, 1×H×W×3: the pipeline reads a NumPy
        image's size as ``shape[1], shape[2]`` (``VaeImageProcessor.get_default_height_width``, made for batches)."""
        return super().float_image(pixels)[None]


@dataclass(frozen=True)
class ChromaStrategy(FluxStrategy):
    """Chroma's inpainting pipeline, loaded so that diffusers 0.42's ``ChromaInpaintPipeline`` runs it."""

    def load(self, source: str, *, single_file: bool, config: str, torch_dtype: torch.dtype, variant: str,
             quantization: Mapping[str, Any] | None = None) -> Any:
        """:meth:`FamilyStrategy.load`, then ``guidance_embeds = False`` in the transformer's config when it does
        not say: ``ChromaInpaintPipeline.__call__`` reads ``transformer.config.guidance_embeds``, which
        ``ChromaTransformer2DModel`` has no argument for (Chroma has no distilled guidance embedding: its guidance is
        real classifier-free guidance), so a config without that key fails with an AttributeError.

        Raises:
            Exception: whatever diffusers raises (the engine turns it into :class:`EngineLoadError`).
        """
        pipeline = super().load(source, single_file=single_file, config=config, torch_dtype=torch_dtype,
                                variant=variant, quantization=quantization)
        if "guidance_embeds" not in pipeline.transformer.config:
            pipeline.transformer.register_to_config(guidance_embeds=False)
        return pipeline


FLUX_FILL = FluxFillStrategy(
    Family.FLUX_FILL, "FLUX.1 Fill", "FluxFillPipeline", architecture="flux-fill", base="flux",
    index_classes=("FluxFillPipeline",), takes_negative_prompt=False, steps=50, guidance=30.0)
"""``flux-fill``; 50 steps at guidance 30, as the model card of black-forest-labs/FLUX.1-Fill-dev runs it (also
``FluxFillPipeline.__call__``'s defaults). Strength is honoured (the pipeline's default is 1)."""

FLUX_KONTEXT_INPAINT = FluxKontextStrategy(
    Family.FLUX_KONTEXT_INPAINT, "FLUX.1 Kontext", "FluxKontextInpaintPipeline", architecture="flux-kontext",
    base="flux", index_classes=("FluxKontextPipeline", "FluxKontextInpaintPipeline"), takes_negative_prompt=False,
    steps=28, guidance=2.5)
"""``flux-kontext-inpaint``; guidance 2.5 as the model card of black-forest-labs/FLUX.1-Kontext-dev runs it, 28
steps: ``FluxKontextInpaintPipeline.__call__``'s default (the card leaves the steps at the pipeline's)."""

CHROMA_INPAINT = ChromaStrategy(
    Family.CHROMA_INPAINT, "Chroma", "ChromaInpaintPipeline", architecture="chroma", base="chroma",
    index_classes=("ChromaPipeline", "ChromaInpaintPipeline"), steps=40, guidance=3.0)
"""``chroma-inpaint``; 40 steps at guidance 3, as the model card of lodestones/Chroma1-HD runs it
(``ChromaInpaintPipeline.__call__``'s defaults are 28 at 7.0)."""
