"""The interface every inpainting engine implements; the daemon knows engines only through it.

An engine receives the crop at its own size, already grown; it returns generated RGB pixels of
the same size. Scaling to the model's resolution is the engine's business; compositing (blend
mask, exact unmasked pixels) is not: :mod:`daemon.compositing` does it for every engine alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from gimp_inpaint.protocol import EngineInfo, ErrorCode, ProtocolError

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(step, total)`` from the worker thread, ``0 ≤ step ≤ total``."""

LoadProgress = Callable[[str, int, int], None]
"""Called as ``progress(stage, step, total)`` while a model loads: stage ``"download"`` counts bytes
(``0 ≤ step ≤ total``), stage ``"load"`` is reported once as ``(0, 0)`` when loading from disk starts
(:data:`protocol.messages.PROGRESS_STAGES`)."""

CancelCheck = Callable[[], bool]
"""Returns True once the job has been cancelled; engines poll it between steps."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for :class:`MemoryError` and for torch's ``OutOfMemoryError`` (recognised by class name,
    so torch need not be imported: ``torch.OutOfMemoryError``, ``torch.cuda.OutOfMemoryError``)."""
    return isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__)


def incompatible(message: str) -> ProtocolError:
    """A :class:`protocol.ProtocolError` with code INCOMPATIBLE: the request's options do not fit the model."""
    return ProtocolError(ErrorCode.INCOMPATIBLE, message)


class JobCancelled(Exception):
    """Raised by an engine that saw :data:`CancelCheck` return True; the job ends without a result."""


class EngineLoadError(Exception):
    """The engine's model could not be loaded; the message tells the user what to do."""


@dataclass(frozen=True)
class EngineJob:
    """One variant of an inpaint request as an engine sees it.

    Attributes:
        image: H×W×3 uint8 RGB crop (alpha is not inpainted).
        mask: H×W uint8, 255 = repaint, 0 = keep (already grown, not feathered).
        prompt, negative_prompt, strength, guidance_scale, num_inference_steps, scheduler, loras,
            refiner_strength, controlnet_conditioning_scale: as in :class:`protocol.InpaintRequest` (diffusers
            names and meanings).
        seed: 0…:data:`protocol.messages.SEED_MAX`, the seed of this variant.
    """

    image: np.ndarray
    mask: np.ndarray
    prompt: str
    negative_prompt: str
    strength: float
    guidance_scale: float
    num_inference_steps: int
    seed: int
    scheduler: str = "default"
    loras: Mapping[str, float] = field(default_factory=dict)
    refiner_strength: float = 0.0
    controlnet_conditioning_scale: float = 1.0


class Engine(ABC):
    """An inpainting backend. Instances are created once and live as long as the daemon.

    Methods other than :meth:`info` are called from the daemon's single worker thread only, so an
    engine needs no locking; :meth:`info` is called from the event loop and must not block.
    """

    name: str

    @abstractmethod
    def info(self) -> EngineInfo:
        """What the handshake reports about this engine (never loads anything)."""

    def load(self, progress: LoadProgress | None = None) -> None:  # noqa: B027 - engines without weights need none
        """Load weights if not yet loaded (idempotent), reporting downloads and loading to ``progress``.

        Raises:
            EngineLoadError: the model cannot be loaded (the message says what to do).
        """

    def check(self, job: EngineJob) -> None:  # noqa: B027 - engines without options accept every job
        """Refuse a job whose options this engine cannot honour, before anything runs (called after :meth:`load`).

        Raises:
            ProtocolError: INCOMPATIBLE (a LoRA of another family, a refiner or ControlNet scale the model lacks, …)
                or INVALID_REQUEST (values that cannot work, e.g. no denoising step).
        """

    def steps_for(self, job: EngineJob) -> int:
        """Progress units :meth:`inpaint` reports for ``job`` (1 for engines without steps)."""
        return 1

    @abstractmethod
    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Fill ``job.mask``'s area of ``job.image``.

        Returns:
            H×W×3 uint8 RGB, the same size as ``job.image``; pixels outside the mask may differ
            from the input (the compositing step restores them).

        Raises:
            JobCancelled: ``cancelled()`` became True.
            EngineLoadError: the model cannot be loaded.
        """
