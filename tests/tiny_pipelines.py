"""Tiny, randomly initialised diffusers pipelines of every model family the daemon supports, built offline for tests.

The components follow diffusers' own fast tests (``get_dummy_components`` in ``tests/pipelines/...``:
``stable_diffusion/test_stable_diffusion_inpaint.py``, ``stable_diffusion_xl/test_stable_diffusion_xl_inpaint.py``,
``kandinsky2_2/test_kandinsky_inpaint.py`` + ``test_kandinsky_prior.py``, ``controlnet/test_controlnet_inpaint.py``
and ``tests/lora/utils.py``) with two changes:

- every autoencoder has 4 blocks, so it downsamples by 8 like the real ones (diffusers' 2-block test VAEs
  downsample by 2, which makes a 512-pixel run take ~40 s per step on 2 CPU cores);
- every CLIP tokenizer is built from a vocab.json + merges.txt written here (the byte-level alphabet of
  :class:`tokenizers.pre_tokenizers.ByteLevel`, no merges) instead of downloading
  ``hf-internal-testing/tiny-random-clip``, so nothing touches the network.

Each saved model loads exactly as a real one does (``AutoPipelineForInpainting.from_pretrained(folder)``,
``from_single_file``, ``ControlNetModel.from_pretrained``, ``load_lora_weights``, ``load_textual_inversion``). The
native resolution of every pipeline is ``8 × sample_size`` = 128 pixels, so a 4-step run takes well under a second
on a CPU. Everything is deterministic: ``torch.manual_seed(0)`` before each component, as diffusers' tests do.

Tests get the artefacts from the session fixtures below (registered in ``tests/conftest.py``; each is built the
first time a test asks for it); other programs (the GIMP integration test) from the command line::

    python tests/tiny_pipelines.py OUTDIR [--family NAME] [--sample-size N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

TOKENIZER_MAX_LENGTH = 77
"""CLIP's context length (tokens); the text encoders' ``max_position_embeddings``."""

DEFAULT_SAMPLE_SIZE = 16
"""UNet latent side; × the autoencoders' factor 8 gives every pipeline's native size, 128 pixels."""

VAE_SCALE_FACTOR = 8
"""Downsampling of every tiny autoencoder: ``2 ** (4 blocks - 1)``, as in the real SD, SDXL and MoVQ ones."""

EMBEDDING_TOKEN = "<tiny-token>"
"""The token the tiny textual-inversion embedding (:func:`build_tiny_sd_embedding`) is saved under."""

UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""UNet attention projections the tiny LoRAs adapt (diffusers' ``tests/lora/utils.py`` ``denoiser_target_modules``)."""

CLIP_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
"""CLIP attention projections the tiny SD LoRA adapts (``tests/lora/utils.py`` ``text_encoder_target_modules``)."""

SDXL_TIME_EMBED_DIM = 8
"""The tiny SDXL UNets' ``addition_time_embed_dim`` (one Fourier embedding per SDXL micro-conditioning number)."""


# --------------------------------------------------------------------------------------------- shared components


def _write_tokenizer_files(folder: Path) -> None:
    """Write a byte-level CLIP vocabulary without merges: every character becomes its own token.

    Tokens: the 256 byte-level symbols, each again with CLIP's end-of-word suffix ``</w>``, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (514 in all, below the text encoder's vocab_size).
    """
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, *(symbol + "</w>" for symbol in alphabet), "<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _tokenizer(folder: Path) -> CLIPTokenizer:
    """The tiny CLIP tokenizer, its files written into ``folder`` (the pipeline's tokenizer subfolder)."""
    from transformers import CLIPTokenizer

    _write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(folder, model_max_length=TOKENIZER_MAX_LENGTH)


def _clip_text_config(**overrides: Any) -> CLIPTextConfig:
    """The tiny CLIP text encoder config of diffusers' tests (hidden size 32, 2 layers), with ``overrides``."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_size": 32,
        "intermediate_size": 37,
        "layer_norm_eps": 1e-05,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "pad_token_id": 1,
        "vocab_size": 1000,
        "max_position_embeddings": TOKENIZER_MAX_LENGTH,
        **overrides,
    })


def _vae(sample_size: int, **overrides: Any) -> AutoencoderKL:
    """A 4-block ``AutoencoderKL`` (downsamples by :data:`VAE_SCALE_FACTOR`) of ``sample_size`` latents (4 latent
    channels unless ``overrides`` say otherwise), seeded."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=VAE_SCALE_FACTOR * sample_size,
        **{"latent_channels": 4, **overrides},
    )


def _sd_unet(sample_size: int, in_channels: int) -> UNet2DConditionModel:
    """The tiny SD 1.x UNet: 4 (text-to-image) or 9 (inpainting: latents + mask + masked latents) input channels."""
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )


def _sd_models(sample_size: int, in_channels: int) -> dict[str, torch.nn.Module]:
    """The weighted SD components ``unet``, ``vae``, ``text_encoder`` (deterministic, not saved)."""
    import torch
    from transformers import CLIPTextModel

    unet = _sd_unet(sample_size, in_channels)
    vae = _vae(sample_size)
    torch.manual_seed(0)
    return {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(_clip_text_config())}


def _build_sd(path: Path, sample_size: int, in_channels: int) -> Path:
    """Save an SD pipeline with a UNet of ``in_channels`` (9: ``StableDiffusionInpaintPipeline``, else the
    text-to-image ``StableDiffusionPipeline``) into ``path``; returns ``path``."""
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    pipeline_class = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    pipeline = pipeline_class(
        **_sd_models(sample_size, in_channels),
        tokenizer=_tokenizer(path / "tokenizer"),
        # stable-diffusion-inpainting's (and stable-diffusion-v1-5's) scheduler_config.json
        scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def _sdxl_unet(sample_size: int, *, in_channels: int, cross_attention_dim: int, time_ids: int) -> UNet2DConditionModel:
    """A tiny SDXL UNet (``addition_embed_type="text_time"``), diffusers' SDXL inpaint test config.

    ``cross_attention_dim`` is the width of the concatenated text encoder hidden states (64 for the base with two
    32-wide encoders, 32 for the refiner with only ``text_encoder_2``). ``time_ids``: the number of SDXL
    micro-conditioning numbers, 6 (original size, crop, target size) or 5 with ``requires_aesthetics_score``
    (original size, crop, aesthetic score); each gets :data:`SDXL_TIME_EMBED_DIM` features, plus the 32 of the pooled
    ``text_encoder_2`` projection.
    """
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_EMBED_DIM,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=time_ids * SDXL_TIME_EMBED_DIM + 32,
        cross_attention_dim=cross_attention_dim,
    )


def _sdxl_shared(path: Path, sample_size: int) -> dict[str, Any]:
    """The components an SDXL base shares with its refiner (the SDXL guide passes them to the refiner):
    ``vae``, ``text_encoder_2`` (``CLIPTextModelWithProjection``), ``tokenizer_2``, ``scheduler``."""
    import torch
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTextModelWithProjection

    vae = _vae(sample_size, scaling_factor=0.13025)  # the SDXL VAE's scaling factor
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(hidden_act="gelu", projection_dim=32))
    return {
        "vae": vae,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": _tokenizer(path / "tokenizer_2"),
        # stable-diffusion-xl-base-1.0's scheduler_config.json
        "scheduler": EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                            steps_offset=1, timestep_spacing="leading"),
    }


def _lora_config(targets: tuple[str, ...]) -> Any:
    """A rank-4 peft ``LoraConfig`` with random, non-zero A and B (``init_lora_weights=False``, as diffusers' LoRA
    tests), so that a loaded LoRA changes the output."""
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=4, target_modules=list(targets), init_lora_weights=False)


def _save_lora(path: Path, pipeline_class: Any, **modules: torch.nn.Module) -> Path:
    """Add a seeded :func:`_lora_config` adapter to each of ``modules`` (keyword = the pipeline's component name,
    ``unet`` or ``text_encoder``) and save them with ``pipeline_class.save_lora_weights`` into ``path``.

    Returns:
        the ``pytorch_lora_weights.safetensors`` file (diffusers' LoRA layout, ``unet.*``/``text_encoder.*`` keys).
    """
    import torch
    from peft.utils import get_peft_model_state_dict

    layers = {}
    for name, module in modules.items():
        torch.manual_seed(0)
        module.add_adapter(_lora_config(UNET_LORA_TARGETS if name == "unet" else CLIP_LORA_TARGETS))
        layers[f"{name}_lora_layers"] = get_peft_model_state_dict(module)
    pipeline_class.save_lora_weights(path, safe_serialization=True, **layers)
    return path / "pytorch_lora_weights.safetensors"


# --------------------------------------------------------------------------------------------- builders


def build_tiny_inpaint_pipeline(path: Path, sample_size: int = DEFAULT_SAMPLE_SIZE) -> Path:
    """Build a random-weight ``StableDiffusionInpaintPipeline`` (9-channel UNet) and save it (safetensors) into
    ``path``.

    Deterministic: the same arguments give the same weights (``torch.manual_seed(0)`` before each
    component, as diffusers' tests do).

    Args:
        path: folder to create (parents too); it ends up holding ``model_index.json`` and one
            subfolder per component.
        sample_size: the UNet's latent side; the native image side is ``8 × sample_size`` pixels.

    Returns:
        ``path``, ready for ``AutoPipelineForInpainting.from_pretrained``. About 5 MB on disk.
    """
    return _build_sd(path, sample_size, in_channels=9)


def build_tiny_sd(path: Path) -> Path:
    """Build a plain text-to-image ``StableDiffusionPipeline`` (4-channel UNet, otherwise the components of
    :func:`build_tiny_inpaint_pipeline`) into ``path``.

    ``AutoPipelineForInpainting.from_pretrained(path)`` turns it into a ``StableDiffusionInpaintPipeline`` with a
    4-channel UNet (diffusers then repaints by blending noised original latents outside the mask at each step).
    Native size 128 px. Returns ``path``.
    """
    return _build_sd(path, DEFAULT_SAMPLE_SIZE, in_channels=4)


def build_tiny_sdxl_inpaint(path: Path) -> Path:
    """Build a ``StableDiffusionXLInpaintPipeline`` shaped like ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``
    into ``path``: 9-channel UNet, ``CLIPTextModel`` + ``CLIPTextModelWithProjection``, two tokenizers,
    ``requires_aesthetics_score=False`` (6 time ids), ``force_zeros_for_empty_prompt=True``.

    Native size ``unet.config.sample_size × 8`` = 128 px. Returns ``path``.
    """
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_clip_text_config(hidden_act="gelu", projection_dim=32))
    pipeline = StableDiffusionXLInpaintPipeline(
        unet=_sdxl_unet(DEFAULT_SAMPLE_SIZE, in_channels=9, cross_attention_dim=64, time_ids=6),
        text_encoder=text_encoder,
        tokenizer=_tokenizer(path / "tokenizer"),
        **_sdxl_shared(path, DEFAULT_SAMPLE_SIZE),
        requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sdxl_refiner(path: Path) -> Path:
    """Build a ``StableDiffusionXLImg2ImgPipeline`` shaped like ``stabilityai/stable-diffusion-xl-refiner-1.0`` into
    ``path``: no ``text_encoder``/``tokenizer``, a 4-channel UNet conditioned on ``text_encoder_2`` only
    (cross-attention 32) with ``requires_aesthetics_score=True`` (5 time ids), ``force_zeros_for_empty_prompt=False``.

    Its ``vae`` and ``text_encoder_2`` have the same configs (and weights) as :func:`build_tiny_sdxl_inpaint`'s, so
    it loads sharing them: ``StableDiffusionXLInpaintPipeline.from_pretrained(path, text_encoder_2=base.text_encoder_2,
    vae=base.vae)`` (diffusers' SDXL guide, "Refine image quality"). Returns ``path``.
    """
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipeline = StableDiffusionXLImg2ImgPipeline(
        unet=_sdxl_unet(DEFAULT_SAMPLE_SIZE, in_channels=4, cross_attention_dim=32, time_ids=5),
        text_encoder=None,
        tokenizer=None,
        **_sdxl_shared(path, DEFAULT_SAMPLE_SIZE),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_kandinsky22_inpaint(path: Path) -> Path:
    """Build a ``KandinskyV22InpaintCombinedPipeline`` (prior + inpainting decoder) and save it as one folder.

    Components: diffusers' ``kandinsky2_2`` test dummies (``PriorTransformer``, CLIP text/vision encoders of width 32,
    a 9-channel decoder UNet with ``addition_embed_type="image"``), but a 4-block MoVQ (``VQModel``), so the decoder
    downsamples by 8 and ``height``/``width`` round up to multiples of 64 (``downscale_height_and_width``).

    The saved ``model_index.json`` names ``KandinskyV22InpaintCombinedPipeline`` with ``prior_*`` components, so
    ``AutoPipelineForInpainting.from_pretrained(path)`` loads it offline without ``_load_connected_pipes`` (which
    only runs for a folder with a README.md naming the prior repo, as the hub's decoder repo has).
    Native size 128 px (``unet.config.sample_size × 8``). Returns ``path``.
    """
    import torch
    from diffusers import (
        DDIMScheduler,
        KandinskyV22InpaintCombinedPipeline,
        PriorTransformer,
        UnCLIPScheduler,
        UNet2DConditionModel,
        VQModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextModelWithProjection,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=12, embedding_dim=32, num_layers=1)
    # test_kandinsky_prior.py: clip_std starts at 0, which would make every image embedding 0
    prior.clip_std = torch.nn.Parameter(torch.ones(prior.clip_std.shape))
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, image_size=224, projection_dim=32, intermediate_size=37, num_attention_heads=4,
        num_channels=3, num_hidden_layers=2, patch_size=14,
    ))
    torch.manual_seed(0)
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(projection_dim=32))
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=DEFAULT_SAMPLE_SIZE,
        in_channels=9,
        out_channels=8,  # predicts mean and variance
        addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(32, 64),
        layers_per_block=1,
        encoder_hid_dim=32,
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
    )
    torch.manual_seed(0)
    movq = VQModel(
        block_out_channels=(32, 32, 64, 64),  # SpatialNorm's GroupNorm has 32 groups
        down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        num_vq_embeddings=12,
        vq_embed_dim=4,
        sample_size=VAE_SCALE_FACTOR * DEFAULT_SAMPLE_SIZE,
    )
    pipeline = KandinskyV22InpaintCombinedPipeline(
        unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                                thresholding=False),
        movq=movq,
        prior_prior=prior,
        prior_image_encoder=image_encoder,
        prior_text_encoder=text_encoder,
        prior_tokenizer=_tokenizer(path / "prior_tokenizer"),
        prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                        num_train_timesteps=1000, clip_sample=True, clip_sample_range=10.0),
        prior_image_processor=CLIPImageProcessor(
            crop_size=224, do_center_crop=True, do_normalize=True, do_resize=True,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
            resample=3, size=224,
        ),
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_controlnet(path: Path) -> Path:
    """Build a ``ControlNetModel`` matching :func:`build_tiny_sd`'s UNet (4 input channels, cross-attention 32) and
    save it into ``path``.

    Its conditioning embedding downsamples by 8 (4 ``conditioning_embedding_out_channels``), so the control image
    has the pipeline's pixel size. ControlNet zero-initialises its output convolutions (``zero_module``), so a fresh
    one would change nothing; they are re-drawn here from N(0, 0.1²) (diffusers' ControlNet tests re-initialise
    ``controlnet_down_blocks`` for the same reason) so that ``controlnet_conditioning_scale`` and the control image
    change the output. Returns ``path``, for ``ControlNetModel.from_pretrained``.
    """
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    controlnet = ControlNetModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        in_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        cross_attention_dim=32,
        conditioning_embedding_out_channels=(16, 16, 32, 32),
    )
    zero_initialised = [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks,
                        controlnet.controlnet_mid_block]
    for module in zero_initialised:
        torch.nn.init.normal_(module.weight, std=0.1)
    controlnet.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sd_single_file(path: Path) -> Path:
    """Save :func:`build_tiny_sd`'s weights as one ``.safetensors`` checkpoint in the original LDM/CompVis layout.

    Keys: ``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE), ``cond_stage_model.transformer.*``
    (CLIP text encoder), see :func:`diffusers_to_ldm`. It loads offline with
    ``StableDiffusionPipeline.from_single_file(file, config=<build_tiny_sd folder>)`` (or the inpainting class).

    Returns:
        ``path / "tiny-sd.safetensors"``.
    """
    from safetensors.torch import save_file

    models = _sd_models(DEFAULT_SAMPLE_SIZE, in_channels=4)
    state_dict = diffusers_to_ldm(models["unet"], models["vae"], models["text_encoder"])
    path.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state_dict.items()}, path / "tiny-sd.safetensors")
    return path / "tiny-sd.safetensors"


def build_tiny_sd_lora(path: Path) -> Path:
    """Save a rank-4 LoRA for :func:`build_tiny_sd`'s UNet (``to_q/to_k/to_v/to_out.0``) and text encoder
    (``q_proj/k_proj/v_proj/out_proj``) with ``StableDiffusionPipeline.save_lora_weights`` into ``path``.

    The UNet attention modules of the 4- and 9-channel SD UNets are the same, so it fits both tiny SD pipelines.

    Returns:
        the ``pytorch_lora_weights.safetensors`` file, for ``pipe.load_lora_weights(file, adapter_name=...)``.
    """
    from diffusers import StableDiffusionPipeline

    models = _sd_models(DEFAULT_SAMPLE_SIZE, in_channels=4)
    return _save_lora(path, StableDiffusionPipeline, unet=models["unet"], text_encoder=models["text_encoder"])


def build_tiny_sdxl_lora(path: Path) -> Path:
    """Save a rank-4 LoRA for :func:`build_tiny_sdxl_inpaint`'s UNet with
    ``StableDiffusionXLPipeline.save_lora_weights`` into ``path``; returns the ``.safetensors`` file."""
    from diffusers import StableDiffusionXLPipeline

    unet = _sdxl_unet(DEFAULT_SAMPLE_SIZE, in_channels=9, cross_attention_dim=64, time_ids=6)
    return _save_lora(path, StableDiffusionXLPipeline, unet=unet)


def build_tiny_sd_embedding(path: Path) -> Path:
    """Save a textual-inversion embedding for the tiny SD text encoder: one N(0, 1) vector of width 32 in diffusers'
    layout (``{EMBEDDING_TOKEN: tensor[1, 32]}``, as ``train_textual_inversion.py`` saves ``learned_embeds``).

    Returns:
        ``path / "tiny-token.safetensors"``, for ``pipe.load_textual_inversion(file, token=EMBEDDING_TOKEN)``.
    """
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    save_file({EMBEDDING_TOKEN: torch.randn(1, 32)}, path / "tiny-token.safetensors")
    return path / "tiny-token.safetensors"


# --------------------------------------------------------------------------------------------- LDM layout


_LDM_UNET_FIXED = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
                   "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
"""diffusers → LDM UNet names outside the blocks (``scripts/convert_diffusers_to_original_stable_diffusion.py``)."""

_LDM_UNET_RESNET = {"norm1.": "in_layers.0.", "conv1.": "in_layers.2.", "norm2.": "out_layers.0.",
                    "conv2.": "out_layers.3.", "time_emb_proj.": "emb_layers.1.", "conv_shortcut.": "skip_connection."}
"""diffusers → LDM names inside a UNet ResBlock (same script, ``unet_conversion_map_resnet``)."""

_LDM_VAE_ATTENTION = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
"""diffusers → LDM names inside the VAE's mid-block attention (same script, ``vae_conversion_map_attn``)."""


def _rename_start(name: str, table: dict[str, str]) -> str:
    """``name`` with the first ``table`` key it starts with replaced by that key's value."""
    for old, new in table.items():
        if name.startswith(old):
            return new + name[len(old):]
    return name


def _ldm_unet_key(key: str, layers_per_block: int, up_block_types: tuple[str, ...]) -> str:
    """The LDM (``ldm.modules.diffusionmodules.openaimodel.UNetModel``) name of diffusers UNet parameter ``key``.

    The inverse of diffusers' ``convert_ldm_unet_checkpoint`` (``loaders/single_file_utils.py``) for any
    ``layers_per_block`` L: down block b, layer l is ``input_blocks.{b(L+1)+l+1}`` (``.0`` ResBlock, ``.1``
    transformer), its downsampler ``input_blocks.{(b+1)(L+1)}.0.op``; up block b (L+1 layers), layer l is
    ``output_blocks.{b(L+1)+l}``, its upsampler ``output_blocks.{b(L+1)+L}.{2 after a transformer, else 1}.conv``;
    the mid block is ``middle_block.{0: ResBlock, 1: transformer, 2: ResBlock}``.
    """
    group = layers_per_block + 1
    if match := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        side, block, kind, layer, rest = match[1], int(match[2]), match[3], int(match[4]), match[5]
        index = block * group + layer + 1 if side == "down" else block * group + layer
        prefix = f"{'input' if side == 'down' else 'output'}_blocks.{index}"
        if kind == "attentions":
            return f"{prefix}.1.{rest}"
        return f"{prefix}.0.{_rename_start(rest, _LDM_UNET_RESNET)}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(match[1]) + 1) * group}.0.op.{match[2]}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        block = int(match[1])
        position = 2 if "CrossAttn" in up_block_types[block] else 1
        return f"output_blocks.{block * group + layers_per_block}.{position}.{match[2]}"
    if match := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(match[1])}.{_rename_start(match[2], _LDM_UNET_RESNET)}"
    if match := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{match[1]}"
    return _rename_start(key, _LDM_UNET_FIXED)


def _ldm_vae_key(key: str, num_blocks: int) -> str:
    """The LDM (``ldm.models.autoencoder.AutoencoderKL``) name of diffusers VAE parameter ``key``: the inverse of
    diffusers' ``convert_ldm_vae_checkpoint``; the decoder's up blocks are numbered from the deepest in LDM."""
    if match := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(resnets\.|downsamplers\.0\.)(.+)", key):
        part = "block." if match[2] == "resnets." else "downsample."
        return f"encoder.down.{match[1]}.{part}{match[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if match := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets\.|upsamplers\.0\.)(.+)", key):
        part = "block." if match[2] == "resnets." else "upsample."
        block = num_blocks - 1 - int(match[1])
        return f"decoder.up.{block}.{part}{match[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if match := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{match[1]}.mid.attn_1.{_rename_start(match[2], _LDM_VAE_ATTENTION)}"
    return key.replace("conv_norm_out.", "norm_out.")


def diffusers_to_ldm(unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel
                     ) -> dict[str, torch.Tensor]:
    """The original LDM/CompVis ``state_dict`` of an SD 1.x pipeline's weighted components.

    The inverse of what diffusers' ``from_single_file`` converts (``loaders/single_file_utils.py``:
    ``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``), written for
    any block and layer count (diffusers' ``scripts/convert_diffusers_to_original_stable_diffusion.py`` hard-codes
    SD 1.x's 4 blocks of 2 layers). Keys: ``model.diffusion_model.*``, ``first_stage_model.*`` (the VAE attention's
    linear weights as LDM's 1×1 convolutions, ``[out, in, 1, 1]``) and ``cond_stage_model.transformer.text_model.*``
    (transformers 4's ``CLIPTextModel`` names, which diffusers detects the CLIP model by). Values: the modules'
    tensors, not copied.
    """
    state_dict = {}
    for key, value in unet.state_dict().items():
        ldm_key = _ldm_unet_key(key, unet.config.layers_per_block, tuple(unet.config.up_block_types))
        state_dict[f"model.diffusion_model.{ldm_key}"] = value
    for key, value in vae.state_dict().items():
        ldm_key = _ldm_vae_key(key, len(vae.config.down_block_types))
        is_attention_matrix = ".mid.attn_1." in ldm_key and ldm_key.endswith(".weight") and value.ndim == 2
        state_dict[f"first_stage_model.{ldm_key}"] = value[:, :, None, None] if is_attention_matrix else value
    for key, value in text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel (no ``text_model.`` level); LDM keeps transformers 4's names
        state_dict[f"cond_stage_model.transformer.text_model.{key.removeprefix('text_model.')}"] = value
    return state_dict


# --------------------------------------------------------------------------------------------- fixtures and CLI


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "inpaint": build_tiny_inpaint_pipeline,
    "sd": build_tiny_sd,
    "sdxl-inpaint": build_tiny_sdxl_inpaint,
    "sdxl-refiner": build_tiny_sdxl_refiner,
    "kandinsky22-inpaint": build_tiny_kandinsky22_inpaint,
    "controlnet": build_tiny_controlnet,
    "sd-single-file": build_tiny_sd_single_file,
    "sd-lora": build_tiny_sd_lora,
    "sdxl-lora": build_tiny_sdxl_lora,
    "sd-embedding": build_tiny_sd_embedding,
}
"""Command-line family name → builder (``path`` → the folder or file built)."""


def build_once(factory: pytest.TempPathFactory, name: str, builder: Callable[[Path], Path], *modules: str) -> Path:
    """``builder`` into ``model`` in a fresh session temp folder named after ``name``, skipping the test when
    ``torch``, ``diffusers`` or one of ``modules`` is missing (the fixtures of every ``tests/tiny_*.py``)."""
    for module in ("torch", "diffusers", *modules):
        pytest.importorskip(module)
    return builder(factory.mktemp(f"tiny-{name}") / "model")


def _build_once(factory: pytest.TempPathFactory, family: str, *modules: str) -> Path:
    """:func:`build_once` of ``BUILDERS[family]``."""
    return build_once(factory, family, BUILDERS[family], *modules)


@pytest.fixture(scope="session")
def tiny_inpaint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_inpaint_pipeline` (SD inpainting, 9-channel UNet, 128 px)."""
    return _build_once(tmp_path_factory, "inpaint")


@pytest.fixture(scope="session")
def tiny_sd_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_sd` (text-to-image SD, 4-channel UNet, 128 px)."""
    return _build_once(tmp_path_factory, "sd")


@pytest.fixture(scope="session")
def tiny_sdxl_inpaint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_sdxl_inpaint` (SDXL inpainting, 9-channel UNet, 128 px)."""
    return _build_once(tmp_path_factory, "sdxl-inpaint")


@pytest.fixture(scope="session")
def tiny_sdxl_refiner_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_sdxl_refiner` (SDXL refiner sharing the inpaint model's VAE
    and ``text_encoder_2``)."""
    return _build_once(tmp_path_factory, "sdxl-refiner")


@pytest.fixture(scope="session")
def tiny_kandinsky22_inpaint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_kandinsky22_inpaint` (combined prior + decoder, 128 px)."""
    return _build_once(tmp_path_factory, "kandinsky22-inpaint")


@pytest.fixture(scope="session")
def tiny_controlnet_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_controlnet` (a ControlNet for ``tiny_sd_model``)."""
    return _build_once(tmp_path_factory, "controlnet")


@pytest.fixture(scope="session")
def tiny_sd_single_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the LDM-layout ``.safetensors`` file of :func:`build_tiny_sd_single_file` (load it with
    ``from_single_file(file, config=tiny_sd_model)``)."""
    return _build_once(tmp_path_factory, "sd-single-file")


@pytest.fixture(scope="session")
def tiny_sd_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the ``.safetensors`` file of :func:`build_tiny_sd_lora` (skips without ``peft``)."""
    return _build_once(tmp_path_factory, "sd-lora", "peft")


@pytest.fixture(scope="session")
def tiny_sdxl_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the ``.safetensors`` file of :func:`build_tiny_sdxl_lora` (skips without ``peft``)."""
    return _build_once(tmp_path_factory, "sdxl-lora", "peft")


@pytest.fixture(scope="session")
def tiny_sd_embedding(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Session fixture: ``(file, token)`` of :func:`build_tiny_sd_embedding`, token :data:`EMBEDDING_TOKEN`."""
    return _build_once(tmp_path_factory, "sd-embedding"), EMBEDDING_TOKEN


def main(argv: list[str] | None = None) -> int:
    """``python tests/tiny_pipelines.py OUTDIR [--family NAME] [--sample-size N]``: build into OUTDIR, print the
    folder or file built (a LoRA, embedding or single-file checkpoint is a file inside OUTDIR)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="folder to write the model into")
    parser.add_argument("--family", choices=sorted(BUILDERS), default="inpaint",
                        help="what to build (default %(default)s: the SD inpainting pipeline)")
    parser.add_argument("--sample-size", type=int,
                        help=f"inpaint family only: UNet latent side, native image side 8× this "
                             f"(default {DEFAULT_SAMPLE_SIZE})")
    args = parser.parse_args(argv)
    if args.sample_size is None:
        print(BUILDERS[args.family](args.outdir))
    elif args.family == "inpaint":
        print(build_tiny_inpaint_pipeline(args.outdir, args.sample_size))
    else:
        parser.error("--sample-size applies to the inpaint family only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
