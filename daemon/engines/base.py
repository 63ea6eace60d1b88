"""The interface every inpainting engine implements; the daemon knows engines only through it.

An engine receives the crop at its own size, already grown; it returns generated RGB pixels of
the same size and sample type: ``uint8``, or ``uint16`` for a 16-bit crop given to an engine whose
:attr:`protocol.EngineInfo.bits` is 16 (an 8-bit engine always gets and returns ``uint8``: :mod:`daemon.worker`
converts around it). Scaling to the model's resolution is the engine's business; compositing (blend
mask, exact unmasked pixels) is not: :mod:`daemon.compositing` does it for every engine alike.

An engine that can show its picture forming (the diffusion engines) does so through the job's
:attr:`EngineJob.previews`, when the worker sets it; the others never look at it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

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

PreviewCallback = Callable[[int, np.ndarray], None]
"""Called as ``show(step, rgb)`` from the worker thread: ``rgb`` is the engine's whole picture after its ``step``-th
progress unit (the ``step`` it reports to its :data:`ProgressCallback`), H×W×3 uint8 at any size of about the crop's
aspect ratio (a model's latents decoded, at the latents' resolution or the model's); the worker scales and
composites it. Returns at once (it never waits for the client)."""


@dataclass(frozen=True)
class Previews:
    """What the worker asks of an engine that can show its picture forming (:attr:`EngineJob.previews`).

    After each of its steps such an engine asks ``due(step)`` (cheap) and only when it is True makes the picture and
    hands it to ``show(step, rgb)`` (:data:`PreviewCallback`); an engine without previews never calls either.
    ``due`` says no between the request's preview steps, at the variant's last step, once the job is cancelled and
    while the client has not yet been sent the previous preview, so the engine decodes nothing that would be
    dropped.
    """

    due: Callable[[int], bool]
    show: PreviewCallback


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


class ModelState(Enum):
    """Where an engine's model is (:meth:`Engine.model_state`; the tray's menu shows the value)."""

    BUILT_IN = "built in"
    """Nothing to download or load (OpenCV)."""
    UNAVAILABLE = "unavailable"
    """It cannot load here: a library is missing or its local path does not exist (:meth:`Engine.info` says which)."""
    NOT_DOWNLOADED = "not downloaded"
    """Its weights are not on this machine: the first load downloads them."""
    ON_DISK = "on disk"
    """Its weights are on this machine, not loaded."""
    LOADED = "loaded"
    """Warm: a request runs without loading anything."""


@dataclass(frozen=True)
class EngineJob:
    """One variant of an inpaint request as an engine sees it.

    Attributes:
        image: H×W×3 RGB crop (alpha is not inpainted): uint8, or uint16 (0…65535) for a 16-bit crop when the
            engine's :attr:`protocol.EngineInfo.bits` is 16.
        mask: H×W uint8, 255 = repaint, 0 = keep (already grown, not feathered).
        options: the request's :class:`protocol.FillOptions`, unchanged (diffusers' names and meanings).
        seed: 0…:data:`protocol.SEED_MAX`, the seed of this variant (``options.seed`` is the request's).
        previews: the previews the client asked for (:class:`Previews`), None for none; engines that cannot make
            them ignore it.
    """

    image: np.ndarray
    mask: np.ndarray
    options: FillOptions
    seed: int
    previews: Previews | None = None


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

    def model_state(self) -> ModelState:
        """Where the model is; like :meth:`info`, called from the event loop and the tray's thread, so it never loads
        and never blocks. This default: :attr:`ModelState.BUILT_IN`, for engines without weights."""
        return ModelState.BUILT_IN

    def unload(self) -> None:  # noqa: B027 - engines without weights have nothing to drop
        """Drop the loaded model and the memory it holds (idempotent; worker thread only, between jobs); the next
        :meth:`load` or request loads it again. This default does nothing, for engines without weights."""

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
            H×W×3 RGB of ``job.image``'s size and type (uint8, or uint16 for a 16-bit job); pixels outside the mask
            may differ from the input (the compositing step restores them).

        Raises:
            JobCancelled: ``cancelled()`` became True.
            EngineLoadError: the model cannot be loaded.
        """
