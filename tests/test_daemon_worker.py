"""daemon.worker.run_job on its own: what it asks of the engine, and when it asks nothing."""

from __future__ import annotations

import cv2
import numpy as np
from running_daemon import StepEngine
from skimage import data

from daemon.engines.base import EngineJob
from daemon.worker import run_job
from protocol import ErrorCode, InpaintRequest, Plane, Result


class CountingEngine(StepEngine):
    """A :class:`StepEngine` that counts its ``load`` and ``steps_for`` calls."""

    def __init__(self) -> None:
        super().__init__("counting", steps=3)
        self.loads = 0
        self.step_queries = 0

    def load(self) -> None:
        self.loads += 1

    def steps_for(self, job: EngineJob) -> int:
        self.step_queries += 1
        return super().steps_for(job)


def astronaut_request(num_variants: int = 1) -> InpaintRequest:
    """A 64×96 RGBA crop of the astronaut photo with an elliptic mask over her face."""
    rgb = np.ascontiguousarray(data.astronaut()[60:124, 180:276])
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    mask = np.zeros(rgb.shape[:2], np.uint8)
    cv2.ellipse(mask, (48, 32), (20, 14), 0, 0, 360, 255, -1)
    return InpaintRequest(job_id="w", engine="counting", x=0, y=0, image=Plane(96, 64, 4, rgba.tobytes()),
                          mask=Plane(96, 64, 1, mask.tobytes()), seed=5, num_variants=num_variants)


def test_a_job_cancelled_before_it_starts_loads_nothing() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int]] = []
    outcome = run_job(astronaut_request(), engine, lambda step, total: reports.append((step, total)), lambda: True)
    assert outcome.code == ErrorCode.CANCELLED.value and outcome.job_id == "w"
    assert (engine.loads, engine.step_queries, engine.seen, reports) == (0, 0, [], [])


def test_load_and_steps_for_once_per_job() -> None:
    engine = CountingEngine()
    reports: list[tuple[int, int]] = []
    outcome = run_job(astronaut_request(num_variants=3), engine, lambda step, total: reports.append((step, total)),
                      lambda: False)
    assert isinstance(outcome, Result) and [variant.seed for variant in outcome.variants] == [5, 6, 7]
    assert (engine.loads, engine.step_queries) == (1, 1)
    assert reports == [(step, 9) for step in range(10)]  # 3 steps × 3 variants
