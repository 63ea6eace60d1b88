"""MI-GAN, a learned object remover that runs on the CPU: its ONNX pipeline through onnxruntime, no torch.

MI-GAN (A. Sargsyan, S. Navasardyan, X. Xu, H. Shi, "MI-GAN: A Simple Baseline for Image Inpainting on Mobile
Devices", ICCV 2023) is a small GAN generator (512×512, trained on Places2) with no prompt. Its authors publish the
whole pipeline (pre- and post-processing included) as one ONNX graph. What this module relies on, and where it was
read (GitHub ``Picsart-AI-Research/MI-GAN``, Hugging Face ``andraniksargsyan/migan``):

- **The file.** ``migan_pipeline_v2.onnx`` in the Hub repo ``andraniksargsyan/migan``, commit
  ``1538c135034b8cfe7a8472f34d09c8a5a45b17a7`` ("Upload MI-GAN ONNX Pipeline v2", 2023-11-25, the newest of the
  three commits of ``main`` in the Hub's commit history when this was written), 28.1 MB in the Hub's file
  listing. The repo also holds ``migan.onnx`` (29.5 MB), the bare generator without the pipeline, unused here, and
  no model card. The GitHub README's "For Developers" section links
  ``…/andraniksargsyan/migan/resolve/main/migan_pipeline_v2.onnx`` as the "pre-converted ONNX file for
  MI-GAN-512-Places2 Pipeline". The Hub's scanner marks that file "suspicious" in the file listing; an ONNX graph is
  data that onnxruntime interprets with its own operators (no custom-op library is registered here), not code.
- **The licence.** MIT: the GitHub repo's ``LICENSE`` (2024-01-23, "Copyright (c) 2024 Picsart AI Research (PAIR)")
  covers the code and its ``LICENSE-WEIGHTS`` (the same MIT text) the weights.
- **The signature.** ``scripts/create_onnx_pipeline.py`` (commit e8919fd, "Update MI-GAN ONNX Pipeline", 2023-11-26:
  the v2 pipeline) exports with ``input_names=["image", "mask"]``, ``output_names=["result"]``, opset 17, dynamic
  batch, height and width: ``image`` is ``(1, 3, H, W)`` uint8 RGB, ``mask`` ``(1, 1, H, W)`` uint8, and the output
  the ``(1, 3, H, W)`` uint8 image. The README: "255 denotes known region values, 0 denotes masked region", the mask
  "must be binary", and the pipeline "supports arbitrary resolution inputs". The graph squeezes the batch axis, so
  it runs one picture at a time.
- **What the graph does** (``MIGAN_Pipeline.forward``): it crops a square around the hole's bounding box (side
  ``max(box side + 2·128, 512)`` pixels, clipped to the picture), resizes it to 512×512 (bilinear image, nearest
  mask), runs the generator on ``[mask − 0.5, image · mask]``, resizes the output back, and blends it with the
  crop through the known-region mask max-pooled 3×3 and Gaussian-blurred 5×5 (σ 1); outside the square the image
  is returned unchanged.

How the engine uses it:

- **Mask.** Ours is H×W uint8, 255 = repaint; MI-GAN's hole is 0. The blend above gives a pixel of the hole up to
  3 pixels from its edge (1 of the max-pool, 2 of the blur's radius) some of the input's own pixel there, the
  object being removed; so the hole handed to MI-GAN is ours dilated by :data:`BLEND_REACH` pixels (a square
  kernel: both the pool and the blur reach in Chebyshev distance), and every pixel of our mask is the
  generator's alone. The 3-pixel ring beyond it is a blend of generated and original pixels.
- **No crop of ours.** The engine hands the whole crop to the graph: the graph crops itself, and a crop of ours
  would give the same pixels only if it reproduced that square's rounding exactly; the rest of the graph's work
  on the whole picture is cheap per-pixel steps.
- **Weights.** Downloaded on first use into the Hugging Face cache with huggingface_hub's ``snapshot_download`` at
  the pinned commit, its bytes reported as ``("download", done, total)`` (:func:`daemon.engines.loading.
  byte_progress_class`); a copy in the cache is used without touching the network. One ``model_info`` request goes
  first, because it is made once where the file listing of ``snapshot_download`` retries a refused connection five
  times with back-off (about 23 s): a machine without network falls back at once.
- **Without the weights** (``HF_HUB_OFFLINE=1`` and not cached, or the Hub unreachable), the engine stays
  available and fills with OpenCV's Telea (:class:`daemon.engines.opencv_engine.OpenCVEngine`): the log warns once
  and the handshake's ``detail`` says so while it lasts. Each later load looks in the cache again (no network) and
  tries the download again once :data:`RETRY_SECONDS` have passed since the last try, so a daemon started offline
  picks MI-GAN up when the network comes back, without every fill waiting for a network that is not there.
- **Without onnxruntime**, :meth:`MiGanEngine.info` says unavailable with :data:`INSTALL_HINT` and a load raises
  :class:`EngineLoadError`; onnxruntime is imported only when the engine loads. The session stays warm for the
  daemon's life (about 28 MB; it is not in :class:`daemon.pool.ModelPool`, which budgets the diffusers models).
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from gimp_inpaint.protocol import FILL_OPTIONS, EngineInfo

from .base import (
    WORKER_OPTIONS,
    CancelCheck,
    Engine,
    EngineJob,
    EngineLoadError,
    JobCancelled,
    LoadProgress,
    ModelState,
    ProgressCallback,
)
from .loading import byte_progress_class
from .opencv_engine import OpenCVEngine

log = logging.getLogger(__name__)

REPO_ID = "andraniksargsyan/migan"
"""The Hugging Face Hub repo of the MI-GAN ONNX files (a paper author's; linked from the GitHub README)."""

FILENAME = "migan_pipeline_v2.onnx"
"""The pipeline graph in :data:`REPO_ID` (uint8 image and mask of any size in, uint8 image out)."""

REVISION = "1538c135034b8cfe7a8472f34d09c8a5a45b17a7"
"""The commit of :data:`REPO_ID` that uploaded :data:`FILENAME` (pinned: the file cannot change under us)."""

LICENCE = "MIT"
"""The licence of MI-GAN's code and weights (GitHub ``LICENSE`` and ``LICENSE-WEIGHTS``)."""

DOWNLOAD_MB = 28.1
""":data:`FILENAME`'s size in MB in the Hub's file listing (for messages only)."""

INPUTS = {"image": 3, "mask": 1}
"""The graph's uint8 inputs and their channels: ``image`` (1, 3, H, W) RGB, ``mask`` (1, 1, H, W) 255 = known."""

OUTPUT = "result"
"""The graph's output: the (1, 3, H, W) uint8 RGB picture."""

BLEND_REACH = 3
"""Pixels the graph's blend reaches into the hole (3×3 max-pool, then a 5×5 blur): the hole MI-GAN gets is ours
dilated by this much, so none of the pixels under our mask keeps any of the original."""

RETRY_SECONDS = 600.0
"""Seconds after a failed download before a load tries the network again (the cache is looked at every load)."""

INSTALL_HINT = "pip install onnxruntime"
"""How to get onnxruntime (in the default install, ``pyproject.toml``)."""


def onnxruntime_available() -> bool:
    """True when onnxruntime is installed (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class MiGanEngine(Engine):
    """MI-GAN's ONNX pipeline on onnxruntime's CPU provider; OpenCV's Telea while its weights cannot be had.

    Deterministic and prompt-less: its options are the worker's alone, its variants identical, one progress unit
    per variant. See the module's docstring for the upstream facts and the choices made on them.

    Args:
        name: the engine name offered in the handshake.
        threads: onnxruntime's intra-op threads (``SessionOptions.intra_op_num_threads``); 0 keeps onnxruntime's
            default (one per physical core).
        retry_seconds: seconds after a failed download before a load tries the network again.

    Raises:
        ValueError: ``threads`` or ``retry_seconds`` is negative.
    """

    def __init__(self, name: str = "migan", threads: int = 0, retry_seconds: float = RETRY_SECONDS) -> None:
        if threads < 0:
            raise ValueError(f"threads must be ≥ 0, got {threads}")
        if retry_seconds < 0:
            raise ValueError(f"retry_seconds must be ≥ 0, got {retry_seconds}")
        self.name = name
        self.threads = threads
        self.retry_seconds = retry_seconds
        self.fallback = OpenCVEngine(name=name)
        self._session: Any = None  # onnxruntime.InferenceSession once loaded
        self._runtime = ""  # "onnxruntime X.Y.Z" once loaded
        self._missing = ""  # why the weights could not be had, while Telea stands in
        self._last_try: float | None = None  # time.monotonic() of the last failed download

    @property
    def using_fallback(self) -> bool:
        """True while the weights could not be had and :attr:`fallback` (Telea) fills instead."""
        return self._session is None and bool(self._missing)

    def info(self) -> EngineInfo:
        """Unavailable without onnxruntime (with :data:`INSTALL_HINT`); otherwise available, its ``detail`` saying
        whether MI-GAN is loaded, loads on first use, or is stood in for by OpenCV because its weights are not
        downloaded. Never loads, never blocks."""
        if not onnxruntime_available():
            available, detail = False, f"onnxruntime is not installed: {INSTALL_HINT}"
        elif self._session is not None:
            available, detail = True, f"loaded: {FILENAME} on the CPU ({self._runtime})"
        elif self._missing:
            available, detail = True, (f"using OpenCV (Telea) because the MI-GAN weights are not downloaded "
                                       f"({self._missing})")
        else:
            available, detail = True, (f"loads on first use ({FILENAME}, {DOWNLOAD_MB} MB from the Hugging Face Hub "
                                       "unless cached)")
        return EngineInfo(name=self.name, kind="onnx", model=f"{REPO_ID}/{FILENAME}", available=available,
                          uses_prompt=False, detail=detail, licence=LICENCE,
                          options=[option for option in FILL_OPTIONS if option in WORKER_OPTIONS])

    def model_state(self) -> ModelState:
        """UNAVAILABLE without onnxruntime, LOADED while the session is warm, ON_DISK when :data:`FILENAME` of
        :data:`REVISION` is in the Hugging Face cache (no network), else NOT_DOWNLOADED (OpenCV fills until a load
        gets it). Never loads, never blocks."""
        if not onnxruntime_available():
            return ModelState.UNAVAILABLE
        if self._session is not None:
            return ModelState.LOADED
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(REPO_ID, FILENAME, revision=REVISION)
        return ModelState.ON_DISK if isinstance(cached, str) else ModelState.NOT_DOWNLOADED

    def unload(self) -> None:
        """Drop the onnxruntime session (about 28 MB); the next fill makes it again from the cached file."""
        self._session = None

    def load(self, progress: LoadProgress | None = None) -> None:
        """Make the onnxruntime session of MI-GAN's pipeline unless it is warm (idempotent; worker thread only).

        Reports ``("download", bytes done, bytes total)`` while the weights download and ``("load", 0, 0)`` when
        the session is made. Weights that cannot be had (offline and not cached, the Hub unreachable) are not an
        error: :attr:`fallback` stands in, the log warns once, and :meth:`info` says so (see the module's
        docstring for when the download is tried again).

        Raises:
            EngineLoadError: onnxruntime is not installed, or the file cannot be read as MI-GAN's pipeline (a
                damaged download: the message names the file to delete).
        """
        if self._session is not None:
            return
        try:
            import onnxruntime
        except ImportError as error:
            raise EngineLoadError(f"onnxruntime is not installed: {INSTALL_HINT}") from error
        path = self._weights(progress or (lambda stage, step, total: None))
        if path is None:
            return
        if progress is not None:
            progress("load", 0, 0)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3  # errors only: onnxruntime's graph warnings are not the user's business
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, …: not an ONNX graph it can run
            raise EngineLoadError(f"{path} cannot be loaded by onnxruntime ({error}): delete it so that it "
                                  "downloads again") from error
        check_signature(session, path)
        self._session, self._runtime = session, f"onnxruntime {onnxruntime.__version__}"
        if self._missing:
            log.info("%s: the MI-GAN weights are there now; MI-GAN replaces OpenCV", self.name)
        self._missing, self._last_try = "", None
        log.info("%s: %s loaded on the CPU (%s, %s threads)", self.name, path, self._runtime,
                 self.threads or "default")

    def _weights(self, progress: LoadProgress) -> Path | None:
        """The local path of :data:`FILENAME`: from the Hugging Face cache, else downloaded (at most once every
        :attr:`retry_seconds`); None, with :attr:`fallback` standing in, when it cannot be had."""
        from huggingface_hub import HfApi, constants, snapshot_download, try_to_load_from_cache

        cached = try_to_load_from_cache(REPO_ID, FILENAME, revision=REVISION)
        if isinstance(cached, str):
            return Path(cached)
        if constants.HF_HUB_OFFLINE:
            self._stand_in("offline mode is on (HF_HUB_OFFLINE=1); start the daemon once without it, with network "
                           f"access, to download {FILENAME}")
            return None
        if self._last_try is not None and time.monotonic() - self._last_try < self.retry_seconds:
            return None  # tried not long ago: Telea again, no second wait for the network
        try:
            # made once, not retried as snapshot_download's file listing is (see the module's docstring); HfApi()
            # here, not huggingface_hub.model_info: its endpoint is the constants' HF_ENDPOINT at this call
            HfApi().model_info(REPO_ID, revision=REVISION, timeout=constants.HF_HUB_ETAG_TIMEOUT)
            folder = snapshot_download(REPO_ID, revision=REVISION, allow_patterns=[FILENAME],
                                       tqdm_class=byte_progress_class(progress))
        except Exception as error:  # no network, the Hub down, a proxy: huggingface_hub's and httpx's errors
            self._last_try = time.monotonic()
            self._stand_in(f"the Hugging Face Hub could not be reached: {type(error).__name__}: {error}; it is "
                           f"tried again on a fill after {self.retry_seconds:g} s")
            return None
        path = Path(folder) / FILENAME
        if not path.is_file():
            raise EngineLoadError(f"the Hub repo {REPO_ID} has no {FILENAME} at commit {REVISION}")
        return path

    def _stand_in(self, reason: str) -> None:
        """Let :attr:`fallback` fill for want of the weights, warning in the log the first time only."""
        if not self._missing:
            log.warning("%s: using OpenCV (Telea) because the MI-GAN weights are not downloaded: %s", self.name,
                        reason)
        else:
            log.debug("%s: still no MI-GAN weights: %s", self.name, reason)
        self._missing = reason

    def check(self, job: EngineJob) -> None:
        """Refuse a mask that leaves no pixel unmasked (after growing), as :meth:`OpenCVEngine.check` does: MI-GAN
        too fills the hole from the pixels around it.

        Raises:
            ProtocolError: INVALID_REQUEST, saying to leave some of the picture unmasked.
        """
        self.fallback.check(job)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Fill the non-zero pixels of ``job.mask`` (H×W uint8) in ``job.image`` (H×W×3 uint8 RGB) with MI-GAN, or
        with :attr:`fallback` while its weights cannot be had (:meth:`load` first when not loaded).

        Returns:
            H×W×3 uint8 RGB; pixels farther than :data:`BLEND_REACH` from the mask are the input's.

        Raises:
            JobCancelled: the job was cancelled before it started (the graph runs in one call).
            EngineLoadError: as :meth:`load`.
        """
        if self._session is None:
            self.load()
        if self._session is None:
            return self.fallback.inpaint(job, progress, cancelled)
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        progress(0, 1)
        result = run_pipeline(self._session, job.image, job.mask)
        progress(1, 1)
        return result


def check_signature(session: Any, path: Path) -> None:
    """Refuse a session whose graph does not take :data:`INPUTS` and give :data:`OUTPUT` as MI-GAN's pipeline does
    (uint8 tensors of four axes).

    Raises:
        EngineLoadError: names the inputs and outputs found.
    """
    inputs = {tensor.name: tensor for tensor in session.get_inputs()}
    outputs = {tensor.name: tensor for tensor in session.get_outputs()}
    wanted = (set(inputs) == set(INPUTS) and OUTPUT in outputs
              and all(tensor.type == "tensor(uint8)" and len(tensor.shape) == 4
                      for tensor in (*inputs.values(), outputs[OUTPUT])))
    if not wanted:
        found = ", ".join(f"{tensor.name} {tensor.type} {tensor.shape}" for tensor in session.get_inputs())
        raise EngineLoadError(f"{path} is not MI-GAN's pipeline (inputs {found}; outputs {', '.join(outputs)}): "
                              f"delete it so that {FILENAME} downloads again")


def run_pipeline(session: Any, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One run of MI-GAN's pipeline graph on ``image`` (H×W×3 uint8 RGB) with our ``mask`` (H×W uint8, non-zero =
    repaint), its hole dilated by :data:`BLEND_REACH` pixels.

    Returns:
        H×W×3 uint8 RGB.

    Raises:
        RuntimeError: the graph returned another shape or dtype.
    """
    reach = 2 * BLEND_REACH + 1
    hole = cv2.dilate((mask > 0).view(np.uint8), np.ones((reach, reach), np.uint8))
    known = np.where(hole > 0, np.uint8(0), np.uint8(255))
    planar = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
    (result,) = session.run([OUTPUT], {"image": planar, "mask": known[None, None]})
    expected = (1, 3, *mask.shape)
    if result.shape != expected or result.dtype != np.uint8:
        raise RuntimeError(f"MI-GAN's pipeline returned {result.shape} {result.dtype}, expected {expected} uint8")
    return np.ascontiguousarray(result[0].transpose(1, 2, 0))
