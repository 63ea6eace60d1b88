"""Tiny, randomly initialised SD 3, FLUX.1 Fill, FLUX.1 Kontext and Chroma pipelines, built offline for tests.

The components are those of diffusers' fast tests (``get_dummy_components`` of
``tests/pipelines/stable_diffusion_3/test_pipeline_stable_diffusion_3_inpaint.py``, ``flux/test_pipeline_flux_fill.py``,
``flux/test_pipeline_flux_kontext_inpaint.py``, ``chroma/test_pipeline_chroma_inpainting.py``: one double and one
single transformer block, 2 heads of 16 or 4 of 8), with three changes, so that each runs through the daemon as a
real model does, at a native size of 128 px and well under a second a step on a CPU:

- the autoencoder has the real ones' 4 blocks (downsampling by 8) and 16 latent channels, and its ``sample_size``
  is 128 (the FLUX.1 pipelines read the native size from it: :mod:`daemon.engines.flux`); the SD 3 transformer's
  ``sample_size`` is 16 latents (128 px). The image is then 8×8 tokens of 2×2 patches, the FLUX.1 Fill transformer
  takes the real 384 input channels (64 of the noisy latents, 64 of the masked image's, 256 of the 8×8 mask);
- the CLIP tokenizers are :mod:`tiny_pipelines`' byte-level ones written from local files, and the T5 tokenizer is a
  character-level Unigram vocabulary (``T5TokenizerFast(vocab=...)``, 94 printable characters, T5's ``<pad>``,
  ``</s>``, ``<unk>`` and ``▁``), instead of ``hf-internal-testing/tiny-random-t5`` from the Hub;
- each is saved as its hub repo's ``model_index.json`` class says (``StableDiffusion3Pipeline``,
  ``FluxFillPipeline``, ``FluxKontextPipeline``, ``ChromaPipeline``), with the scheduler config of that repo.

Deterministic: ``torch.manual_seed(0)`` before each weighted component. Session fixtures below (registered in
``tests/conftest.py``).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tiny_pipelines import UNET_LORA_TARGETS, VAE_SCALE_FACTOR, _clip_text_config, _lora_config, _tokenizer, build_once
from tiny_pipelines import _vae as tiny_vae

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import T5EncoderModel, T5TokenizerFast

SAMPLE_SIZE = 128
"""Native side of every tiny pipeline (pixels): the autoencoder's ``sample_size``, 8 × the SD 3 transformer's."""

LATENT_CHANNELS = 16
"""The autoencoders' latent channels, as in SD 3 and FLUX.1."""

T5_WIDTH = 32
"""``d_model`` of the tiny T5 encoders (the transformers' ``joint_attention_dim``)."""

CLIP_WIDTH = 32
"""Hidden size and projection of the tiny CLIP encoders (:func:`tiny_pipelines._clip_text_config`)."""

FLUX_TRANSFORMER = {"patch_size": 1, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 16,
                    "num_attention_heads": 2, "joint_attention_dim": T5_WIDTH, "axes_dims_rope": (4, 4, 8)}
"""The tiny FLUX.1 and Chroma transformer config of diffusers' fast tests (rope axes summing to the head's 16)."""


# --------------------------------------------------------------------------------------------- shared components


def _vae(scaling_factor: float, shift_factor: float) -> AutoencoderKL:
    """tests/tiny_pipelines.py's 4-block autoencoder with 16 latent channels and no quant convolutions (SD 3's and
    FLUX.1's layout), ``sample_size`` :data:`SAMPLE_SIZE`, seeded."""
    return tiny_vae(SAMPLE_SIZE // VAE_SCALE_FACTOR, latent_channels=LATENT_CHANNELS, scaling_factor=scaling_factor,
                    shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False)


def _t5_tokenizer() -> T5TokenizerFast:
    """A character-level T5 tokenizer (see the module docstring), no sentinel tokens; ``pipeline.save_pretrained``
    writes it as ``tokenizer.json``, which ``from_pretrained`` reads back to the same ids."""
    from transformers import T5TokenizerFast

    characters = [character for character in string.printable if not character.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0), *((c, -3.0) for c in characters)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512)


def _t5_encoder() -> T5EncoderModel:
    """A 2-layer T5 encoder of width :data:`T5_WIDTH` (vocabulary 128, above the tokenizer's 98), seeded."""
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=128, d_model=T5_WIDTH, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def _clip(with_projection: bool) -> Any:
    """A tiny CLIP text encoder (``CLIPTextModelWithProjection`` for SD 3, ``CLIPTextModel`` for FLUX.1), seeded."""
    import torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    config = _clip_text_config(hidden_act="gelu", projection_dim=CLIP_WIDTH)
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """black-forest-labs/FLUX.1-dev's ``scheduler_config.json`` (the shift grows with the image's token count)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096,
                                           max_shift=1.15, shift=3.0, use_dynamic_shifting=True)


def _flux_transformer(in_channels: int, out_channels: int) -> FluxTransformer2DModel:
    """The tiny FLUX.1 transformer (:data:`FLUX_TRANSFORMER`) with the distilled guidance embedding, seeded."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(in_channels=in_channels, out_channels=out_channels, guidance_embeds=True,
                                  pooled_projection_dim=CLIP_WIDTH, **FLUX_TRANSFORMER)


def _flux_components(path: Path, transformer: FluxTransformer2DModel) -> dict[str, Any]:
    """The components of a FLUX.1 pipeline around ``transformer`` (CLIP-L and T5 tokenizers and encoders, the
    FLUX.1 autoencoder's scale and shift, its scheduler)."""
    return {"transformer": transformer, "vae": _vae(0.3611, 0.1159), "scheduler": _flux_scheduler(),
            "text_encoder": _clip(with_projection=False), "tokenizer": _tokenizer(path / "tokenizer"),
            "text_encoder_2": _t5_encoder(), "tokenizer_2": _t5_tokenizer()}


def _packed(channels: int) -> int:
    """Channels of ``channels``-deep latents packed into 2×2 patches (the FLUX.1 transformers' tokens)."""
    return 4 * channels


# --------------------------------------------------------------------------------------------- builders


def build_tiny_sd3(path: Path) -> Path:
    """Build a ``StableDiffusion3Pipeline`` shaped like stabilityai/stable-diffusion-3.5-medium (16-channel MMDiT,
    CLIP-L + CLIP-G with projections, T5) into ``path``; ``StableDiffusion3InpaintPipeline.from_pretrained`` loads it.
    Native size ``transformer.config.sample_size`` 16 × 8 = 128 px. Returns ``path``."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=SAMPLE_SIZE // 8, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        num_layers=1, attention_head_dim=8, num_attention_heads=4, joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32, pooled_projection_dim=2 * CLIP_WIDTH, pos_embed_max_size=16)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=_vae(1.5305, 0.0609),  # the SD 3 autoencoder's scale and shift
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # stable-diffusion-3.5-medium's scheduler_config.json
        text_encoder=_clip(with_projection=True), tokenizer=_tokenizer(path / "tokenizer"),
        text_encoder_2=_clip(with_projection=True), tokenizer_2=_tokenizer(path / "tokenizer_2"),
        text_encoder_3=_t5_encoder(), tokenizer_3=_t5_tokenizer(),
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_flux_fill(path: Path) -> Path:
    """Build a ``FluxFillPipeline`` shaped like black-forest-labs/FLUX.1-Fill-dev into ``path``: its transformer takes
    the noisy, the masked image's and the mask's packed channels (64 + 64 + 4 · 8² = 384) and returns 64. Returns
    ``path``."""
    from diffusers import FluxFillPipeline

    latents = _packed(LATENT_CHANNELS)
    transformer = _flux_transformer(in_channels=2 * latents + _packed(8 * 8), out_channels=latents)
    FluxFillPipeline(**_flux_components(path, transformer)).save_pretrained(path, safe_serialization=True)
    return path


def _save_plain_flux(path: Path, class_name: str) -> Path:
    """Save a diffusers pipeline ``class_name`` of the FLUX.1 components around a plain 64-channel transformer (no
    extra input channels) into ``path``. Returns ``path``."""
    import diffusers

    transformer = _flux_transformer(in_channels=_packed(LATENT_CHANNELS), out_channels=_packed(LATENT_CHANNELS))
    pipeline = getattr(diffusers, class_name)(**_flux_components(path, transformer))
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_flux_kontext(path: Path) -> Path:
    """Build a ``FluxKontextPipeline`` shaped like black-forest-labs/FLUX.1-Kontext-dev (a plain 64-channel FLUX.1
    transformer) into ``path``; ``FluxKontextInpaintPipeline.from_pretrained`` loads it. Returns ``path``."""
    return _save_plain_flux(path, "FluxKontextPipeline")


def build_tiny_flux_dev(path: Path) -> Path:
    """Build a ``FluxPipeline`` shaped like black-forest-labs/FLUX.1-dev, the text-to-image model (no family of
    ours: ``FluxFillPipeline`` loads it, but cannot fill with it), into ``path``. Returns ``path``."""
    return _save_plain_flux(path, "FluxPipeline")


def build_tiny_chroma(path: Path) -> Path:
    """Build a ``ChromaPipeline`` shaped like lodestones/Chroma1-HD (one T5 encoder, the FLUX.1 autoencoder, a
    Chroma transformer with its modulation approximator) into ``path``; ``ChromaInpaintPipeline.from_pretrained``
    loads it. Returns ``path``."""
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    torch.manual_seed(0)
    transformer = ChromaTransformer2DModel(in_channels=_packed(LATENT_CHANNELS), approximator_num_channels=8,
                                           approximator_hidden_dim=16, approximator_layers=1, **FLUX_TRANSFORMER)
    pipeline = ChromaPipeline(transformer=transformer, vae=_vae(0.3611, 0.1159), scheduler=_flux_scheduler(),
                              text_encoder=_t5_encoder(), tokenizer=_t5_tokenizer())
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_flux_lora(path: Path) -> Path:
    """Save a rank-4 LoRA for the tiny FLUX.1 transformers' attention projections (``to_q/to_k/to_v/to_out.0``,
    random non-zero A and B) with ``FluxKontextPipeline.save_lora_weights`` into ``path``. The projections of the
    Fill and Kontext transformers have the same shapes (only ``x_embedder`` differs), so it fits both.

    Returns:
        the ``pytorch_lora_weights.safetensors`` file (``transformer.*`` keys).
    """
    import torch
    from diffusers import FluxKontextPipeline
    from peft.utils import get_peft_model_state_dict

    transformer = _flux_transformer(in_channels=_packed(LATENT_CHANNELS), out_channels=_packed(LATENT_CHANNELS))
    torch.manual_seed(0)
    transformer.add_adapter(_lora_config(UNET_LORA_TARGETS))
    FluxKontextPipeline.save_lora_weights(path, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                          safe_serialization=True)
    return path / "pytorch_lora_weights.safetensors"


# --------------------------------------------------------------------------------------------- fixtures and CLI


@pytest.fixture(scope="session")
def tiny_sd3_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_sd3` (``StableDiffusion3Pipeline``, 128 px)."""
    return build_once(tmp_path_factory, "sd3", build_tiny_sd3)


@pytest.fixture(scope="session")
def tiny_flux_fill_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_flux_fill` (``FluxFillPipeline``, 128 px)."""
    return build_once(tmp_path_factory, "flux-fill", build_tiny_flux_fill)


@pytest.fixture(scope="session")
def tiny_flux_kontext_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_flux_kontext` (``FluxKontextPipeline``, 128 px)."""
    return build_once(tmp_path_factory, "flux-kontext", build_tiny_flux_kontext)


@pytest.fixture(scope="session")
def tiny_flux_dev_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_flux_dev` (``FluxPipeline``, 128 px)."""
    return build_once(tmp_path_factory, "flux-dev", build_tiny_flux_dev)


@pytest.fixture(scope="session")
def tiny_chroma_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_chroma` (``ChromaPipeline``, 128 px)."""
    return build_once(tmp_path_factory, "chroma", build_tiny_chroma)


@pytest.fixture(scope="session")
def tiny_flux_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the ``.safetensors`` file of :func:`build_tiny_flux_lora` (skips without ``peft``)."""
    return build_once(tmp_path_factory, "flux-lora", build_tiny_flux_lora, "peft")
