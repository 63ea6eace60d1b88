"""Engine.model_state and Engine.unload (what the tray's model entries show and do) on the real engines, and the
pool's eviction of several keys at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from gimp_inpaint.daemon.engines.base import ModelState
from gimp_inpaint.daemon.engines.migan import MiGanEngine
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.pool import ModelPool
from test_diffusers_engine import astronaut_job, make_engine, never, no_progress
from test_migan_engine import hub  # noqa: F401 - the fixture: an empty Hugging Face cache, no Hub
from test_pool import pipeline
from tiny_onnx import cache_tiny_migan


def test_evicting_several_keys_releases_memory_once() -> None:
    releases: list[bool] = []
    pool = ModelPool(10_000, release=lambda: releases.append(True))
    for key in ("a", "b", "c"):
        pool.get(key, pipeline)
    pool.evict("a", "c", "not-there")
    assert pool.keys() == ["b"] and releases == [True]
    pool.evict("a")
    assert releases == [True]  # nothing was warm: nothing to release


def test_opencv_is_built_in_and_unload_changes_nothing() -> None:
    engine = OpenCVEngine()
    assert engine.model_state() is ModelState.BUILT_IN
    engine.unload()
    assert engine.model_state() is ModelState.BUILT_IN


def test_diffusers_states_through_load_and_unload(tiny_inpaint_model: Path, hub: Path) -> None:  # noqa: F811
    pytest.importorskip("diffusers")
    engine = make_engine("tiny", str(tiny_inpaint_model), device="cpu")
    assert engine.model_state() is ModelState.ON_DISK
    engine.load()
    assert engine.model_state() is ModelState.LOADED
    engine.unload()
    assert engine.model_state() is ModelState.ON_DISK and engine.pool.keys() == []
    engine.unload()  # idempotent
    job = astronaut_job(num_inference_steps=2)
    engine.check(job)
    engine.prepare(job)
    assert engine.inpaint(job, no_progress, never).shape == job.image.shape  # loads again
    assert engine.model_state() is ModelState.LOADED and engine.pool.load_counts[engine.base_key] == 2

    assert make_engine("hub", "someone/not-in-this-cache").model_state() is ModelState.NOT_DOWNLOADED
    assert make_engine("gone", str(hub / "no-such-folder")).model_state() is ModelState.UNAVAILABLE
    assert make_engine("file", str(hub / "missing.safetensors")).model_state() is ModelState.UNAVAILABLE


def test_diffusers_without_torch_is_unavailable(monkeypatch: pytest.MonkeyPatch, tiny_inpaint_model: Path) -> None:
    monkeypatch.setattr("gimp_inpaint.daemon.engines.diffusers_engine.diffusers_available", lambda: False)
    assert make_engine("tiny", str(tiny_inpaint_model)).model_state() is ModelState.UNAVAILABLE


def test_migan_states_through_download_load_and_unload(hub: Path) -> None:  # noqa: F811
    pytest.importorskip("onnx")
    engine = MiGanEngine()
    assert engine.model_state() is ModelState.NOT_DOWNLOADED
    cache_tiny_migan(hub)
    assert engine.model_state() is ModelState.ON_DISK
    engine.load()
    assert engine.model_state() is ModelState.LOADED
    engine.unload()
    assert engine.model_state() is ModelState.ON_DISK
    engine.load()
    assert engine.model_state() is ModelState.LOADED


def test_migan_without_onnxruntime_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gimp_inpaint.daemon.engines.migan.onnxruntime_available", lambda: False)
    assert MiGanEngine().model_state() is ModelState.UNAVAILABLE
