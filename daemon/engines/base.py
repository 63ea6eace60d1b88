"""The interface every inpainting engine implements; the daemon knows engines only through it.

An engine receives the crop at its own size, already grown; it returns generated RGB pixels of
the same size. Scaling to the model's resolution is the engine's business; compositing (blend
mask, exact unmasked pixels) is not: :mod:`daemon.compositing` does it for every engine alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gimp_inpaint.protocol import EngineInfo, ErrorCode, FillOptions, ProtocolError

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(step, total)`` from the worker thread, ``0 ≤ step ≤ total``."""

LoadProgress = Callable[[str, int, int], None]
"""Called as ``progress(stage, step, total)`` while a model loads: stage ``"download"`` counts bytes
(``0 ≤ step ≤ total``), stage ``"load"`` is reported once as ``(0, 0)`` when loading from disk starts
(:class:`protocol.Stage`)."""

WORKER_OPTIONS = frozenset({"engine", "seed", "num_variants", "grow", "feather", "fill_mode", "color_match"})
"""The :data:`protocol.FILL_OPTIONS` rows that the worker itself uses for every engine (:mod:`daemon.worker`: the
engine's name, the variants' seeds, the mask's growth, the blend mask's fade, the hole's pre-fill and the colour
match); an engine lists them with its own in :attr:`protocol.EngineInfo.options`."""

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
        options: the request's :class:`protocol.FillOptions`, unchanged (diffusers' names and meanings).
        seed: 0…:data:`protocol.SEED_MAX`, the seed of this variant (``options.seed`` is the request's).
    """

    image: np.ndarray
    mask: np.ndarray
    options: FillOptions
    seed: int


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
        """Refuse a job whose options this engine cannot honour, before anything runs (called after :meth:`load`,
        once per request, with its first variant: the variants differ only in their seeds). Changes nothing.

        Raises:
            ProtocolError: INCOMPATIBLE (a LoRA of another family, a refiner or ControlNet scale the model lacks, …)
                or INVALID_REQUEST (values that cannot work, e.g. no denoising step).
        """

    def prepare(self, job: EngineJob) -> int:
        """Apply the request's options to the loaded model, once per request, after :meth:`check` (the
        scheduler, LoRAs, embeddings: whatever every variant shares); return the progress units :meth:`inpaint`
        reports per variant (1 for engines without steps).

        Raises:
            EngineLoadError: a LoRA or embedding file cannot be loaded.
        """
        return 1

    @abstractmethod
    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Fill ``job.mask``'s area of ``job.image``, with the options :meth:`prepare` applied for this request.

        Returns:
            H×W×3 uint8 RGB, the same size as ``job.image``; pixels outside the mask may differ
            from the input (the compositing step restores them).

        Raises:
            JobCancelled: ``cancelled()`` became True.
            EngineLoadError: the model cannot be loaded.
        """
