"""Which quantization and offload a model loads with: pure decisions from sizes and capabilities, no torch.

A model's ``quantization`` in ``daemon.toml`` (:data:`daemon.registry.QUANTIZATIONS`) is ``auto`` unless the user
says otherwise. :func:`choose_quantization` turns it into a :class:`QuantizationChoice` from the model's size read
before its weights load (:func:`model_sizes`: the safetensors headers of the pipeline folder, a few kilobytes per
file), the pool's memory budget (:func:`daemon.device.memory_budget_bytes`, or ``memory_budget_gb``) and what this
machine can run (:class:`Capabilities`). :func:`refusal` says what a quantization needs that is missing. The
diffusers side (the quantization configs, the GGUF transformer, group offload) is
:mod:`daemon.engines.loading`'s.

The decision of ``auto``, in order (the first row that holds wins; "fits" is ≤ the budget):

====================================================================  ==================  ==============
condition                                                             quantization        offload
====================================================================  ==================  ==============
sizes unknown (no safetensors headers), or the device is not CUDA     none                by measured size
the whole model at its dtype fits                                     none                by measured size
bitsandbytes on CUDA, the NF4 denoiser with the rest at dtype fits    nf4                 by measured size
bitsandbytes on CUDA, the NF4 denoiser with the VAE etc. fits and     nf4                 model CPU offload
each text encoder fits alone
bitsandbytes on CUDA, the NF4 denoiser and NF4 text encoders with     nf4 (text encoders  by measured size
the VAE etc. fit (FLUX.2 klein's 8 GB Qwen3 on an 8 GB GPU)           too)
the largest component fits alone                                      none                model CPU offload
otherwise (CUDA)                                                      none                group offload
====================================================================  ==================  ==============

"By measured size" is :func:`daemon.engines.loading.place`'s rule (model CPU offload on CUDA when the loaded bytes
do not fit). Offload and bitsandbytes are CUDA-only, so on the CPU and Apple's MPS a model loads at full precision
and the pool evicts the others to make room. An explicit quantization is used as asked (refused when
:func:`refusal` says so), its offload by measured size; ``auto`` never picks ``int8``, ``fp8`` (quality and speed
depend on the GPU and torchao's version, so they are the user's choice) or ``gguf`` (it needs a file).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NF4_BYTES_PER_PARAMETER = 0.5 + 4 / 64
"""Bytes an NF4-quantized weight takes: 4 bits, plus one float32 absmax per block of 64 weights (bitsandbytes'
4-bit blocksize, ``bitsandbytes.functional.quantize_4bit``; diffusers' ``BitsAndBytesConfig`` leaves double
quantization off). The layers bitsandbytes leaves alone (norms, embeddings, biases) make the estimate a few per
cent low for a transformer."""

FP8_MIN_CAPABILITY = (8, 9)
"""The CUDA compute capability float8 matrix kernels need (Ada Lovelace and Hopper, torchao's ``Float8*Config``)."""

DENOISERS = ("transformer", "unet", "prior")
"""Component names of ``model_index.json`` that hold the denoiser (what ``nf4`` and ``gguf`` replace)."""

SAFETENSORS_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                     "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}
"""Bytes per element of the safetensors dtypes (the format's specification, github.com/huggingface/safetensors)."""


@dataclass(frozen=True)
class ModelSizes:
    """A pipeline's weights by role, in parameters (elements of every tensor), read before loading.

    Attributes:
        denoiser: the transformer's or UNet's parameters (:data:`DENOISERS`).
        text_encoders: each text encoder's parameters (components named ``text_encoder*``).
        other: everything else (VAE, image encoders, ControlNets).
    """

    denoiser: int
    text_encoders: tuple[int, ...] = ()
    other: int = 0

    @property
    def total(self) -> int:
        """Every parameter of the pipeline."""
        return self.denoiser + sum(self.text_encoders) + self.other


@dataclass(frozen=True)
class Capabilities:
    """What this machine can quantize and offload with.

    Attributes:
        device: the torch device type the model runs on (``"cuda"``, ``"mps"``, ``"cpu"``).
        cuda_capability: ``torch.cuda.get_device_capability`` of that GPU, None off CUDA.
        bitsandbytes, torchao, gguf: the package is installed.
    """

    device: str
    cuda_capability: tuple[int, int] | None = None
    bitsandbytes: bool = False
    torchao: bool = False
    gguf: bool = False


@dataclass(frozen=True)
class QuantizationChoice:
    """How a model loads: the quantization, the offload and why.

    Attributes:
        quantization: ``"none"``, ``"nf4"``, ``"int8"``, ``"fp8"`` or ``"gguf"``.
        offload: ``""`` (decided by the loaded size, :func:`daemon.engines.loading.place`), ``"model"``
            (``enable_model_cpu_offload``) or ``"group"`` (``enable_group_offload``).
        text_encoders: the text encoders are quantized too (``nf4``, ``int8``, ``fp8`` as asked; ``auto``'s NF4
            leaves them at full precision and offloads them).
        reason: one line for the log.
    """

    quantization: str
    offload: str = ""
    text_encoders: bool = True
    reason: str = ""


def refusal(quantization: str, capabilities: Capabilities) -> str:
    """Why ``quantization`` cannot run here, with what to install; ``""`` when it can (``auto``, ``none``)."""
    caps = capabilities
    if quantization == "nf4" and not (caps.bitsandbytes and caps.device == "cuda"):
        return (f"nf4 needs bitsandbytes and a CUDA GPU: pip install bitsandbytes (here: bitsandbytes "
                f"{'installed' if caps.bitsandbytes else 'not installed'}, device {caps.device})")
    if quantization in ("int8", "fp8") and not caps.torchao:
        return f"{quantization} needs torchao: pip install torchao"
    if quantization == "fp8" and (caps.cuda_capability or (0, 0)) < FP8_MIN_CAPABILITY:
        have = "no CUDA GPU" if caps.cuda_capability is None else "compute capability {}.{}".format(
            *caps.cuda_capability)
        return (f"fp8 needs a CUDA GPU of compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} or newer "
                f"(Ada, Hopper; here: {have}): use int8 or nf4")
    if quantization == "gguf" and not caps.gguf:
        return "gguf needs the gguf package: pip install gguf"
    return ""


def choose_quantization(requested: str, sizes: ModelSizes | None, budget: int, capabilities: Capabilities, *,
                        element_bytes: int) -> QuantizationChoice:
    """The quantization and offload of a model asked to load with ``requested`` (the module docstring's table).

    Args:
        requested: :data:`daemon.registry.QUANTIZATIONS`.
        sizes: the model's parameters by role (:func:`model_sizes`), None when unknown.
        budget: the pool's memory budget, bytes.
        capabilities: this machine's (:class:`Capabilities`).
        element_bytes: bytes per parameter at the weights' dtype (2 for float16 and bfloat16, 4 for float32).

    Returns:
        The choice; an explicit ``requested`` comes back as it is (check :func:`refusal` first).
    """
    if requested != "auto":
        return QuantizationChoice(requested, reason="asked for in daemon.toml")
    if sizes is None:
        return QuantizationChoice("none", reason="the model's size is unknown before loading (no safetensors)")
    gb = 1e9
    full = sizes.total * element_bytes
    if capabilities.device != "cuda":
        return QuantizationChoice("none", reason=f"{full / gb:.2f} GB at full precision: quantized kernels and "
                                                 f"offload need CUDA, not {capabilities.device}")
    if full <= budget:
        return QuantizationChoice("none", reason=f"{full / gb:.2f} GB fit the {budget / gb:.2f} GB budget")
    nf4 = int(sizes.denoiser * NF4_BYTES_PER_PARAMETER)
    text = sum(sizes.text_encoders) * element_bytes
    rest = sizes.other * element_bytes
    if capabilities.bitsandbytes and sizes.denoiser:
        if nf4 + text + rest <= budget:
            return QuantizationChoice("nf4", text_encoders=False, reason=(
                f"{full / gb:.2f} GB do not fit the {budget / gb:.2f} GB budget; with an NF4 denoiser "
                f"{(nf4 + text + rest) / gb:.2f} GB do"))
        if nf4 + rest <= budget and max(sizes.text_encoders, default=0) * element_bytes <= budget:
            return QuantizationChoice("nf4", offload="model", text_encoders=False, reason=(
                f"{full / gb:.2f} GB do not fit the {budget / gb:.2f} GB budget; the NF4 denoiser with the VAE "
                f"({(nf4 + rest) / gb:.2f} GB) does, the text encoders take turns (model CPU offload)"))
        all_nf4 = int((sizes.denoiser + sum(sizes.text_encoders)) * NF4_BYTES_PER_PARAMETER) + rest
        if all_nf4 <= budget:
            return QuantizationChoice("nf4", text_encoders=True, reason=(
                f"{full / gb:.2f} GB do not fit the {budget / gb:.2f} GB budget, nor does a text encoder alone; the "
                f"NF4 denoiser and text encoders ({all_nf4 / gb:.2f} GB) do"))
    largest = max((sizes.denoiser, *sizes.text_encoders, sizes.other)) * element_bytes
    if largest <= budget:
        return QuantizationChoice("none", offload="model", reason=(
            f"{full / gb:.2f} GB do not fit the {budget / gb:.2f} GB budget, its largest model "
            f"({largest / gb:.2f} GB) does: model CPU offload"
            + ("" if capabilities.bitsandbytes else " (pip install bitsandbytes for NF4)")))
    return QuantizationChoice("none", offload="group", reason=(
        f"its largest model ({largest / gb:.2f} GB) does not fit the {budget / gb:.2f} GB budget"
        + (" even as NF4" if capabilities.bitsandbytes else "") + ": group offload (layers stream from RAM)"))


def label(quantization: str, offloaded: bool) -> str:
    """:attr:`protocol.EngineInfo.quantization` of a loaded model: ``quantization``, with ``+offload`` when its
    pipeline runs offloaded (model CPU or group offload)."""
    return quantization + ("+offload" if offloaded else "")


def safetensors_elements(path: Path) -> int:
    """The number of elements of every tensor in the safetensors file ``path``, read from its header only.

    The format (github.com/huggingface/safetensors): 8 bytes, the header's length as a little-endian u64, then that
    many bytes of JSON, ``{name: {"dtype", "shape", "data_offsets"}}`` plus ``__metadata__``.

    Raises:
        OSError: the file cannot be read.
        ValueError: the header is not valid JSON.
    """
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header: dict[str, Any] = json.loads(file.read(length))
    total = 0
    for name, entry in header.items():
        if name != "__metadata__":
            count = 1
            for side in entry["shape"]:
                count *= int(side)
            total += count
    return total


def _weight_files(folder: Path, variant: str) -> list[Path]:
    """The safetensors files of a component ``folder`` that diffusers loads: those of ``variant``
    (``NAME.VARIANT.safetensors``, sharded ``NAME-00001-of-00002.VARIANT.safetensors``) when there are any, else the
    default ones (``NAME.safetensors``)."""
    files = sorted(folder.glob("*.safetensors"))
    of_variant = [path for path in files if variant and path.name.endswith(f".{variant}.safetensors")]
    return of_variant or [path for path in files if path.name.count(".") == 1]


def model_sizes(folder: Path, variant: str = "") -> ModelSizes | None:
    """The parameters of the diffusers pipeline ``folder`` by role (:class:`ModelSizes`), from its
    ``model_index.json`` and its components' safetensors headers (:func:`safetensors_elements`); no weight is read.

    A hub model is read from its downloaded snapshot, so this runs between the download and the load. None when
    the folder has no ``model_index.json``, a weight component has no safetensors file (``.bin`` weights) or a
    header is unreadable.
    """
    try:
        index: Mapping[str, Any] = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    denoiser, text_encoders, other = 0, [], 0
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or value[0] is None:
            continue  # the class name, diffusers' version, a component the pipeline goes without
        weights: Iterable[Path] = _weight_files(folder / name, variant)
        try:
            count = sum(safetensors_elements(path) for path in weights)
        except (OSError, ValueError, KeyError, struct.error):
            return None
        if count == 0:
            if (folder / name / "config.json").is_file():  # a model whose weights are not safetensors
                return None
            continue  # a tokenizer, a scheduler, a feature extractor: no config.json, no weights
        if name in DENOISERS:
            denoiser += count
        elif name.startswith("text_encoder"):
            text_encoders.append(count)
        else:
            other += count
    return ModelSizes(denoiser, tuple(text_encoders), other)
