"""Which torch device and dtype the diffusion engines run on.

The module imports nothing heavy: torch is imported inside the functions, which only the diffusers
engine calls, when it loads (``import torch`` takes seconds).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .config import DEVICES

if TYPE_CHECKING:
    import torch


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine, or in this torch build."""


def resolve_device(requested: str = "auto") -> torch.device:
    """The torch device to run on.

    Args:
        requested: one of :data:`daemon.config.DEVICES`: ``"auto"`` picks CUDA if available,
            else Apple's MPS, else the CPU; ``"cpu"``, ``"cuda"`` or ``"mps"`` ask for that device
            (``"cuda:N"`` for the N-th GPU is accepted too).

    Raises:
        ValueError: ``requested`` is none of those.
        DeviceUnavailableError: the requested device is missing (no GPU, or a CPU-only torch build);
            the message says what to do.
    """
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:  # not a device string at all
        device = None
    if device is None or device.type not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "CPU-only torch build" if torch.version.cuda is None else f"torch for CUDA {torch.version.cuda}"
            raise DeviceUnavailableError(
                f"device {requested!r} was requested but CUDA is not available ({build}, no usable NVIDIA GPU): "
                "install the CUDA build of torch (https://pytorch.org/get-started/locally/) or use --device cpu")
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {requested!r} was requested but only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            f"device {requested!r} was requested but Apple's Metal (MPS) backend is not available "
            "(it needs an Apple-silicon Mac with macOS 12.3+): use --device cpu")
    return device


def torch_dtype_for(device: torch.device, dtype: str = "auto", cuda_default: str = "float16") -> torch.dtype:
    """The weights' dtype on ``device`` for a model declared with ``dtype`` (:data:`daemon.registry.DTYPES`).

    An explicit ``"float16"``, ``"bfloat16"`` or ``"float32"`` is used as given. ``"auto"``:

    - CUDA: ``cuda_default``, the model family's (:attr:`daemon.engines.family.FamilyStrategy.cuda_dtype`):
      ``float16`` for SD 1.x/2.x, SDXL (its VAE overflows in float16, but the SDXL pipelines upcast it to float32 for
      decoding because the VAE's config says ``force_upcast``), Kandinsky 2.2 and the SD ControlNets, what diffusers'
      documentation loads each of them with on NVIDIA GPUs and what runs at full speed on every CUDA GPU (``bfloat16``
      is unsupported or emulated before Ampere: T4, V100, GTX/RTX 20xx); ``bfloat16`` for the transformer families
      (SD 3.5, FLUX.1, FLUX.2 klein, Z-Image, Qwen-Image, Chroma), whose model cards and diffusers' pages load them so
      (their activations overflow float16's range).
    - MPS: ``float32``, as in diffusers' "Metal Performance Shaders (MPS)" guide (fp16 on MPS has had
      dtype-mismatch failures, diffusers issue #2521).
    - CPU: ``float32`` (half precision is slow or unsupported in CPU kernels).

    Raises:
        ValueError: ``dtype`` or ``cuda_default`` is not one of ``auto`` (``dtype`` only), ``float16``,
            ``bfloat16``, ``float32``.
    """
    import torch

    for name in (dtype, cuda_default):
        if name not in ("auto", "float16", "bfloat16", "float32") or cuda_default == "auto":
            raise ValueError(f"unknown dtype {name!r}; expected auto, float16, bfloat16 or float32")
    if dtype != "auto":
        return getattr(torch, dtype)
    return getattr(torch, cuda_default) if device.type == "cuda" else torch.float32


CUDA_RESERVE_FRACTION = 0.2
"""Share of a GPU's memory kept out of the model budget for activations (the UNet's attention and the VAE
decode of a 1024² SDXL image need a few GB), the CUDA context and other programs. A chosen margin, not a
measured constant: ``memory_budget_gb`` in daemon.toml overrides the whole budget."""


def memory_budget_bytes(device: torch.device) -> int:
    """Bytes of weights the pool of warm models may keep on ``device``.

    - CUDA: the GPU's total memory (``torch.cuda.mem_get_info``) minus :data:`CUDA_RESERVE_FRACTION` of it.
    - MPS: ``torch.mps.recommended_max_memory()`` (Metal's recommended working set; weights and activations
      share it with the rest of macOS).
    - CPU: half of the physical RAM (``psutil.virtual_memory().total`` when psutil is installed, else
      ``os.sysconf("SC_PAGE_SIZE") × os.sysconf("SC_PHYS_PAGES")``; 16 GB where neither tells).
    """
    import torch

    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        return int(total * (1 - CUDA_RESERVE_FRACTION))
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    return physical_memory_bytes() // 2


def physical_memory_bytes() -> int:
    """This machine's RAM in bytes (psutil if installed, else ``os.sysconf``; 16 GB when neither tells)."""
    try:
        import psutil
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # Windows has no sysconf
            return 16 * 10**9
    return int(psutil.virtual_memory().total)


def set_torch_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch's intra-op parallelism; 0 keeps torch's default (all cores)."""
    if threads < 0:
        raise ValueError(f"threads must be ≥ 0, got {threads}")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def describe_device(device: torch.device) -> str:
    """A one-line description for the handshake and logs.

    Examples: ``"cuda:0 (NVIDIA H100 80GB HBM3)"``, ``"mps (Apple GPU)"``, ``"cpu (2 threads)"``.
    """
    import torch

    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({torch.get_num_threads()} threads)"
