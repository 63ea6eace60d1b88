"""Classical inpainting with OpenCV (Telea's fast marching method): no weights, no prompt, always available."""

from __future__ import annotations

import cv2
import numpy as np
from gimp_inpaint.protocol import FILL_OPTIONS, EngineInfo, ErrorCode, ProtocolError

from ..compositing import mask_box
from ..licences import OPENCV_LICENCE
from .base import WORKER_OPTIONS, CancelCheck, Engine, EngineJob, JobCancelled, ProgressCallback


class OpenCVEngine(Engine):
    """``cv2.inpaint`` with ``cv2.INPAINT_TELEA`` (A. Telea, "An Image Inpainting Technique Based on the
    Fast Marching Method", 2004).

    Good for removing small objects and scratches; it smears texture over large holes. It ignores
    the prompt and every diffusion setting; it reports one progress unit per variant.

    Args:
        name: the engine name offered in the handshake.
        radius: ``inpaintRadius`` of ``cv2.inpaint``, in pixels: the neighbourhood each filled
            pixel is estimated from (OpenCV's sample uses 3).
    """

    def __init__(self, name: str = "opencv", radius: int = 3) -> None:
        if radius < 1:
            raise ValueError(f"radius must be ≥ 1 pixel, got {radius}")
        self.name = name
        self.radius = radius

    def info(self) -> EngineInfo:
        """Always available; ``uses_prompt`` is False; its options are the worker's alone
        (:data:`daemon.engines.base.WORKER_OPTIONS`): Telea is deterministic and has no prompt or steps, so its
        variants are identical (each still reports its seed)."""
        return EngineInfo(name=self.name, kind="opencv", model="telea", available=True, uses_prompt=False,
                          detail=f"cv2.inpaint (Telea), radius {self.radius} px", licence=OPENCV_LICENCE.name,
                          options=[name for name in FILL_OPTIONS if name in WORKER_OPTIONS])

    def check(self, job: EngineJob) -> None:
        """Refuse a mask that leaves no pixel unmasked (after growing): Telea fills the hole from the pixels around
        it, so without any it would return the picture unchanged, a silent no-op.

        Raises:
            ProtocolError: INVALID_REQUEST, saying to leave some of the picture unmasked.
        """
        if not (job.mask == 0).any():
            raise ProtocolError(ErrorCode.INVALID_REQUEST,
                                f"the {self.name} engine fills the mask from the pixels around it, and this mask "
                                "(grown by its grow setting) leaves none unmasked: leave some of the picture "
                                "unmasked, or use an engine that generates from a prompt")

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        """Fill the non-zero pixels of ``job.mask`` (H×W uint8) in ``job.image`` (H×W×3 uint8 RGB).

        Returns:
            H×W×3 uint8 RGB; pixels where the mask is 0 are the input's.

        Raises:
            JobCancelled: the job was cancelled before it started (Telea runs in one call).
        """
        if cancelled():
            raise JobCancelled(f"{self.name}: cancelled")
        progress(0, 1)
        rows, columns = self.reach(job.mask)
        result = job.image.copy()
        result[rows, columns] = cv2.inpaint(np.ascontiguousarray(job.image[rows, columns]),
                                            np.ascontiguousarray(job.mask[rows, columns]), self.radius,
                                            cv2.INPAINT_TELEA)
        progress(1, 1)
        return result

    def reach(self, mask: np.ndarray) -> tuple[slice, slice]:
        """``(rows, columns)`` of the part of the crop Telea reads for ``mask`` (H×W uint8, some pixel non-zero): the
        mask's bounding box (:func:`daemon.compositing.mask_box`) grown by ``radius + 2`` pixels, inside the crop.

        Telea's method fills each hole pixel from the known pixels within ``inpaintRadius`` of it, marching inward
        from the hole's edge (Telea 2004, section 2), so nothing farther out is read: ``cv2.inpaint`` on this part
        gives the pixels of a call on the whole crop bit for bit (``tests/test_opencv_engine.py`` compares them on
        real photos), in a fraction of the time and memory when the hole is small beside its context.
        """
        rows, columns = mask_box(mask)
        margin = self.radius + 2
        return (slice(max(0, rows.start - margin), min(mask.shape[0], rows.stop + margin)),
                slice(max(0, columns.start - margin), min(mask.shape[1], columns.stop + margin)))
