"""Tiny quantized models for the quantization tests: a denoiser written as a GGUF file with the ``gguf`` package.

:func:`write_gguf` writes a diffusers model's ``state_dict`` with ``gguf.GGUFWriter``: the weights of its
``nn.Linear`` layers whose input side is a multiple of the block (32 for ``Q8_0``) quantized with
``gguf.quants.quantize``, every other tensor (convolutions, norms, biases) as F32. The tensor names are the model's
own (diffusers' layout): diffusers' ``from_single_file`` loads such a file without converting it
(``_should_convert_state_dict_to_diffusers`` is False when the names are the model's), and its GGUF quantizer makes
each quantized ``Linear`` a ``GGUFLinear`` that dequantizes its ``GGUFParameter`` as it runs. (Its FLUX.1 original
-format converter hard-codes the 3072-wide transformer, ``convert_flux_transformer_checkpoint_to_diffusers``' fixed
``inner_dim``, so a tiny model cannot take that layout.)

:func:`build_tiny_gguf_inpaint` is the tiny SD inpainting pipeline of ``tests/tiny_pipelines.py`` with its UNet as
such a file beside it; :func:`build_tiny_flux_transformer` a FLUX.1 Fill-shaped folder holding only a tiny
``FluxTransformer2DModel`` (what the GGUF loader reads: ``model_index.json`` and the transformer's config) and the
transformer as a GGUF file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiny_pipelines import build_tiny_inpaint_pipeline


def write_gguf(model: Any, path: Path, quant_type: str = "Q8_0") -> Path:
    """Write ``model`` (a torch module, float32) to the GGUF file ``path``, its eligible ``Linear`` weights as
    ``quant_type`` (a ``gguf.GGMLQuantizationType`` name) and the rest as F32; returns ``path``.

    The architecture key says ``diffusers`` (diffusers' loader reads tensors only, not the metadata).
    """
    import gguf
    import torch

    kind = gguf.GGMLQuantizationType[quant_type]
    block, _ = gguf.GGML_QUANT_SIZES[kind]
    linear = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    writer = gguf.GGUFWriter(str(path), "diffusers")
    for name, tensor in model.state_dict().items():
        values = tensor.detach().to(torch.float32).contiguous().numpy()
        if name in linear and values.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def build_tiny_gguf_inpaint(path: Path) -> tuple[Path, Path]:
    """The tiny SD inpainting pipeline in ``path / "model"`` and its UNet as ``path / "unet-Q8_0.gguf"``
    (:func:`write_gguf`); returns both paths."""
    from diffusers import UNet2DConditionModel

    folder = build_tiny_inpaint_pipeline(path / "model")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    return folder, write_gguf(unet, path / "unet-Q8_0.gguf")


FLUX_TRANSFORMER = {"patch_size": 1, "in_channels": 64, "out_channels": 16, "num_layers": 1, "num_single_layers": 1,
                    "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 32,
                    "pooled_projection_dim": 32, "guidance_embeds": True, "axes_dims_rope": (4, 6, 6)}
"""A FLUX.1 Fill-like transformer 32 wide: packed 16-channel latents with the masked image and mask channels
(64 in, 16 out), one double and one single block, distilled guidance."""


def build_tiny_flux_transformer(path: Path) -> tuple[Path, Path]:
    """A folder ``path / "model"`` with a ``FluxFillPipeline`` ``model_index.json`` naming only its transformer and a
    random :data:`FLUX_TRANSFORMER` in ``transformer/``, and that transformer as ``path / "transformer-Q8_0.gguf"``;
    returns both paths."""
    import json

    import torch
    from diffusers import FluxTransformer2DModel

    folder = path / "model"
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**FLUX_TRANSFORMER)
    transformer.save_pretrained(folder / "transformer")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxFillPipeline", "_diffusers_version": "0.42.1",
        "transformer": ["diffusers", "FluxTransformer2DModel"]}), encoding="utf-8")
    return folder, write_gguf(transformer, path / "transformer-Q8_0.gguf")
