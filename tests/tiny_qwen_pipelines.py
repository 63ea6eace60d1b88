"""Tiny, randomly initialised pipelines of the transformer families whose text encoders are Qwen LLMs, built offline.

FLUX.2 klein (a Qwen3 causal LM), Z-Image (a Qwen3 model) and Qwen-Image (Qwen2.5-VL) all tokenize with a Qwen2
byte-level BPE tokenizer. The components follow diffusers' own fast tests (``get_dummy_components`` in
``tests/pipelines/flux2/test_pipeline_flux2_klein_inpaint.py``, ``z_image/test_z_image_inpaint.py`` and
``qwenimage/test_qwenimage_inpaint.py``) with these changes:

- every autoencoder has a single level (no downsampling: ``vae_scale_factor`` 1), so the pipelines' hard-coded
  ``default_sample_size`` 128 (FLUX.2 klein, Qwen-Image; Z-Image's 1024-pixel default is the same 128 latents) is a
  128-pixel native size, as 1024 is with the real 8× autoencoders;
- FLUX.2 klein's text encoder has 27 layers (diffusers' test passes ``text_encoder_out_layers=(1,)``; the daemon calls
  the pipeline with its default ``(9, 18, 27)``, the layers of Qwen3-4B it stacks), and its transformer's
  ``joint_attention_dim`` is the three stacked layers' width;
- Z-Image's rotary position table covers the 64 latent patches a side of a 128-pixel image (``axes_lens``);
- the tokenizer is built here (:func:`qwen_tokenizer`) instead of downloading
  ``hf-internal-testing/tiny-random-Qwen2VLForConditionalGeneration``, so nothing touches the network;
- each is saved as the text-to-image pipeline its hub repo's ``model_index.json`` names (``Flux2KleinPipeline``,
  ``ZImagePipeline``, ``QwenImagePipeline``), which the daemon loads as the family's inpainting pipeline.

A 3-step 128-pixel run takes about a second on 2 CPU cores (the first step, with the prompt's encoding, the longest).
Everything is deterministic: ``torch.manual_seed(0)`` before each component, as diffusers' tests do.

Tests get the folders from the session fixtures below (registered in ``tests/conftest.py``; each is built the first
time a test asks for it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tiny_pipelines import build_once

if TYPE_CHECKING:
    from transformers import Qwen2Tokenizer, Qwen3Config

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|vision_start|>",
                       "<|vision_end|>", "<|image_pad|>")
"""The special tokens of Qwen2/Qwen3/Qwen2.5-VL's vocabulary that the pipelines' prompts and the text encoders'
configs use: ``<|endoftext|>`` (padding), the chat turns' ``<|im_start|>``/``<|im_end|>``, Qwen3's empty thinking
block ``<think>``/``</think>``, Qwen2.5-VL's vision markers (its config's ``vision_*_token_id``)."""

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
"""Qwen3's chat template for what the FLUX.2 klein and Z-Image pipelines ask of it (one user message,
``add_generation_prompt=True``, ``enable_thinking`` False or True): the ChatML turns, then the empty thinking block
when thinking is off, as Qwen3's own template writes them."""

VOCAB_SIZE = 256 + len(QWEN_SPECIAL_TOKENS)
"""The tiny vocabulary: the 256 byte-level symbols, then :data:`QWEN_SPECIAL_TOKENS`."""

TEXT_WIDTH = 16
"""Hidden size of every tiny text encoder (diffusers' tests)."""

KLEIN_TEXT_LAYERS = (9, 18, 27)
"""``Flux2KleinInpaintPipeline``'s default ``text_encoder_out_layers``: the hidden states it stacks as the prompt's
embedding (so the text encoder needs 27 layers and the transformer's context is 3 × :data:`TEXT_WIDTH` wide)."""

NATIVE_SIZE = 128
"""Native side of every tiny pipeline (pixels): ``default_sample_size`` 128 × ``vae_scale_factor`` 1."""


def _token_id(token: str) -> int:
    """The id of a :data:`QWEN_SPECIAL_TOKENS` token in the tiny vocabulary."""
    return 256 + QWEN_SPECIAL_TOKENS.index(token)


def qwen_tokenizer(folder: Path) -> Qwen2Tokenizer:
    """A byte-level Qwen2 tokenizer without merges (every byte its own token) and :data:`QWEN_SPECIAL_TOKENS`, its
    ``vocab.json`` and ``merges.txt`` written into ``folder``, with :data:`QWEN3_CHAT_TEMPLATE`; padding
    ``<|endoftext|>``, end of turn ``<|im_end|>``, no unknown or start token (Qwen's own settings)."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    tokens = [*sorted(pre_tokenizers.ByteLevel.alphabet()), *QWEN_SPECIAL_TOKENS]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = Qwen2Tokenizer.from_pretrained(folder, unk_token=None, eos_token="<|im_end|>",
                                               pad_token="<|endoftext|>",
                                               additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]))
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def _qwen3_config(**overrides: Any) -> Qwen3Config:
    """The tiny Qwen3 config of diffusers' tests (hidden size 16, 2 layers, 2 heads of 8) on the tiny vocabulary."""
    from transformers import Qwen3Config

    return Qwen3Config(**{
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": 512,
        "bos_token_id": None,
        "eos_token_id": _token_id("<|im_end|>"),
        "pad_token_id": _token_id("<|endoftext|>"),
        **overrides,
    })


def _scheduler() -> Any:
    """``FlowMatchEulerDiscreteScheduler`` with diffusers' defaults (as the fast tests)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler()


def _save(path: Path, pipeline: Any) -> Path:
    """Save ``pipeline`` (safetensors) into ``path``; returns ``path``."""
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_flux2_klein(path: Path) -> Path:
    """Save a tiny step-distilled FLUX.2 klein (``Flux2KleinPipeline``, ``is_distilled`` as FLUX.2-klein-4B's
    ``model_index.json``) into ``path``: a 1+1-block ``Flux2Transformer2DModel``, a 27-layer ``Qwen3ForCausalLM``,
    a one-level ``AutoencoderKLFlux2`` with one latent channel (4 after the 2×2 patches). Returns ``path``."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=len(KLEIN_TEXT_LAYERS) * TEXT_WIDTH, timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4], guidance_embeds=False)
    torch.manual_seed(0)
    text_encoder = Qwen3ForCausalLM(_qwen3_config(num_hidden_layers=max(KLEIN_TEXT_LAYERS)))
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(
        sample_size=NATIVE_SIZE, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1, latent_channels=1,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False)
    return _save(path, Flux2KleinPipeline(scheduler=_scheduler(), vae=vae, text_encoder=text_encoder,
                                          tokenizer=qwen_tokenizer(path / "tokenizer"), transformer=transformer,
                                          is_distilled=True))


def build_tiny_z_image(path: Path) -> Path:
    """Save a tiny Z-Image (``ZImagePipeline``) into ``path``: a 2-layer ``ZImageTransformer2DModel`` (its pad tokens,
    ``torch.empty`` in diffusers, set to ones as in diffusers' test), a 2-layer ``Qwen3Model``, a one-level
    ``AutoencoderKL`` with 16 latent channels and Z-Image's scaling and shift factors. Returns ``path``."""
    import torch
    from diffusers import AutoencoderKL, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1, n_heads=2,
        n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=TEXT_WIDTH, rope_theta=256.0, t_scale=1000.0,
        axes_dims=[8, 4, 4], axes_lens=[1024, NATIVE_SIZE // 2, NATIVE_SIZE // 2])
    with torch.no_grad():
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(16,), layers_per_block=1, latent_channels=16, norm_num_groups=16,
        sample_size=NATIVE_SIZE, scaling_factor=0.3611, shift_factor=0.1159)
    torch.manual_seed(0)
    text_encoder = Qwen3Model(_qwen3_config())
    return _save(path, ZImagePipeline(scheduler=_scheduler(), vae=vae, text_encoder=text_encoder,
                                      tokenizer=qwen_tokenizer(path / "tokenizer"), transformer=transformer))


def build_tiny_qwen_image(path: Path) -> Path:
    """Save a tiny Qwen-Image (``QwenImagePipeline``) into ``path``: a 2-layer ``QwenImageTransformer2DModel``, a
    ``Qwen2_5_VLForConditionalGeneration`` with a 2-layer language model and a 2-block vision tower (as diffusers'
    test), a one-level ``AutoencoderKLQwenImage`` with 4 latent channels. Returns ``path``."""
    import torch
    from diffusers import AutoencoderKLQwenImage, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=TEXT_WIDTH, guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1], num_res_blocks=1, temperal_downsample=[],
                                 latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config={"hidden_size": TEXT_WIDTH, "intermediate_size": 16, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": VOCAB_SIZE,
                     "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                     "rope_theta": 1000000.0, "eos_token_id": _token_id("<|im_end|>"),
                     "pad_token_id": _token_id("<|endoftext|>"), "bos_token_id": None},
        vision_config={"depth": 2, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=TEXT_WIDTH, vocab_size=VOCAB_SIZE, vision_start_token_id=_token_id("<|vision_start|>"),
        vision_end_token_id=_token_id("<|vision_end|>"), vision_token_id=_token_id("<|image_pad|>"),
        image_token_id=_token_id("<|image_pad|>"))
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    return _save(path, QwenImagePipeline(scheduler=_scheduler(), vae=vae, text_encoder=text_encoder,
                                         tokenizer=qwen_tokenizer(path / "tokenizer"), transformer=transformer))


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_flux2_klein_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_flux2_klein` (``Flux2KleinPipeline``, 128 px)."""
    return build_once(tmp_path_factory, "flux2-klein", build_tiny_flux2_klein, "transformers")


@pytest.fixture(scope="session")
def tiny_z_image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_z_image` (``ZImagePipeline``, 128 px)."""
    return build_once(tmp_path_factory, "z-image", build_tiny_z_image, "transformers")


@pytest.fixture(scope="session")
def tiny_qwen_image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of :func:`build_tiny_qwen_image` (``QwenImagePipeline``, 128 px)."""
    return build_once(tmp_path_factory, "qwen-image", build_tiny_qwen_image, "transformers")
