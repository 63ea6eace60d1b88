"""A tiny, randomly initialised Stable Diffusion inpainting pipeline, built offline for tests.

The components follow diffusers' own fast tests (``get_dummy_components`` in
``tests/pipelines/stable_diffusion/test_stable_diffusion_inpaint.py``) with two changes:

- the VAE has 4 blocks, so it downsamples by 8 like the real SD VAE (diffusers' 2-block test VAE
  downsamples by 2, which makes a 512-pixel run take ~40 s per step on 2 CPU cores);
- the CLIP tokenizer is built from a vocab.json + merges.txt written here (the byte-level alphabet
  of :class:`tokenizers.pre_tokenizers.ByteLevel`, no merges) instead of downloading
  ``hf-internal-testing/tiny-random-clip``, so nothing touches the network.

The saved folder loads with ``AutoPipelineForInpainting.from_pretrained(folder)`` exactly as a
real model does. Its native resolution is ``8 × sample_size`` pixels (128 by default), so a run
takes about a second on a CPU.

Tests get the folder from the session fixture :func:`tiny_inpaint_model`; other programs (the
GIMP integration test) from the command line::

    python tests/tiny_pipelines.py OUTDIR [--sample-size N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

TOKENIZER_MAX_LENGTH = 77
"""CLIP's context length (tokens); the text encoder's ``max_position_embeddings``."""

DEFAULT_SAMPLE_SIZE = 16
"""UNet latent side; × the VAE's factor 8 gives the pipeline's native size, 128 pixels."""


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


def build_tiny_inpaint_pipeline(path: Path, sample_size: int = DEFAULT_SAMPLE_SIZE) -> Path:
    """Build a random-weight ``StableDiffusionInpaintPipeline`` and save it (safetensors) into ``path``.

    Deterministic: the same arguments give the same weights (``torch.manual_seed(0)`` before each
    component, as diffusers' tests do).

    Args:
        path: folder to create (parents too); it ends up holding ``model_index.json`` and one
            subfolder per component.
        sample_size: the UNet's latent side; the native image side is ``8 × sample_size`` pixels.

    Returns:
        ``path``, ready for ``AutoPipelineForInpainting.from_pretrained``. About 5 MB on disk.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=9,  # 4 noisy latents + 1 mask + 4 masked-image latents: SD inpainting's UNet
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(16, 16, 32, 32),
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=8 * sample_size,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=1000,
        max_position_embeddings=TOKENIZER_MAX_LENGTH,
    ))
    tokenizer_folder = path / "tokenizer"
    _write_tokenizer_files(tokenizer_folder)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder, model_max_length=TOKENIZER_MAX_LENGTH)
    pipeline = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        # stable-diffusion-inpainting's scheduler_config.json
        scheduler=PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_inpaint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session fixture: the folder of a tiny inpaint pipeline, built once (skips without torch/diffusers)."""
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    return build_tiny_inpaint_pipeline(tmp_path_factory.mktemp("tiny-inpaint") / "model")


def main(argv: list[str] | None = None) -> int:
    """``python tests/tiny_pipelines.py OUTDIR [--sample-size N]``: build the pipeline into OUTDIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="folder to write the pipeline into")
    parser.add_argument("--sample-size", type=int, default=DEFAULT_SAMPLE_SIZE,
                        help="UNet latent side; native image side is 8× this (default %(default)s)")
    args = parser.parse_args(argv)
    print(build_tiny_inpaint_pipeline(args.outdir, args.sample_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
