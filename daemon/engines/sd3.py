"""Stable Diffusion 3 and 3.5: ``sd3-inpaint``, run by ``StableDiffusion3InpaintPipeline`` (diffusers 0.42).

The MMDiT transformer of SD 3 medium, SD 3.5 medium and SD 3.5 large (and large turbo) with three text encoders
(CLIP-L, OpenCLIP-G, T5-XXL); the repos are text-to-image (``model_index.json``: ``StableDiffusion3Pipeline``), and
the inpainting pipeline takes the same components: it starts from the noised crop at ``strength`` and blends the
known latents back after each step (a 16-channel transformer), or feeds mask and masked latents to a 33-channel one.
Its mask is white = repaint, like ours (``masked_image = init_image * (mask_condition < 0.5)``). ``guidance_scale``
is classifier-free guidance against the negative prompt. The step callback's ``latents`` are N×16×h×w (not packed).
Native size: the transformer's ``sample_size`` 128 × ``vae_scale_factor`` 8 = 1024 px; sides multiples of
``vae_scale_factor × patch_size`` = 16 (``check_inputs``). LoRAs: ``SD3LoraLoaderMixin`` (base ``sd3``).

Licence of stabilityai/stable-diffusion-3.5-medium and -large: the Stability AI Community License (free for
research, non-commercial use and organisations under USD 1M annual revenue; an enterprise licence above that).
"""

from __future__ import annotations

from gimp_inpaint.protocol import Family

from .flow import FlowStrategy

SD3_INPAINT = FlowStrategy(
    Family.SD3_INPAINT, "SD 3/3.5", "StableDiffusion3InpaintPipeline", architecture="sd3", base="sd3",
    index_classes=("StableDiffusion3Pipeline", "StableDiffusion3InpaintPipeline"), steps=40, guidance=4.5)
"""``sd3-inpaint``; 40 steps at guidance 4.5, as the model card of stabilityai/stable-diffusion-3.5-medium (the
default model: 2.5B parameters, the size that fits consumer GPUs) runs it; SD 3.5 large's card uses 28 at 3.5, the
pipeline's ``__call__`` defaults are 50 at 7.0."""
