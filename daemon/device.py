"""Which torch device and dtype the diffusion engines run on.

The module imports nothing heavy: torch is imported inside the functions, which only the diffusers
engine calls, when it loads (``import torch`` takes seconds).
"""

from __future__ import annotations

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


def torch_dtype_for(device: torch.device) -> torch.dtype:
    """The weights' dtype on ``device``.

    - CUDA: ``float16``, what diffusers' documentation loads SD pipelines with on NVIDIA GPUs. It
      runs at full speed on every CUDA GPU, whereas ``bfloat16`` is unsupported or emulated
      before Ampere (T4, V100, GTX/RTX 20xx); the SD 1.x/2.x VAEs are fp16-safe.
    - MPS: ``float32``, as in diffusers' "Metal Performance Shaders (MPS)" guide (fp16 on MPS has
      had dtype-mismatch failures, diffusers issue #2521).
    - CPU: ``float32`` (half precision is slow or unsupported in CPU kernels).
    """
    import torch

    return torch.float16 if device.type == "cuda" else torch.float32


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
