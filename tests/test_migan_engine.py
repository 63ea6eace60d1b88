"""The MI-GAN engine through the real daemon, on the tiny ONNX stand-in of tests/tiny_onnx.py loaded by the engine's
own loading code from a Hugging Face cache in ``tmp_path``: the result, the download with byte progress, the fall-back
to OpenCV without weights (said once), the retry, and the engine without onnxruntime.

The Hub is never reached: its address is a loopback port nothing listens on (a real connection error); where a
download must succeed, huggingface_hub's real ``snapshot_download`` runs with only its per-file ``hf_hub_download``
replaced by one that writes the tiny graph into the cache through the progress bar it is handed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from gimp_inpaint.client.connection import DaemonError, InpaintClient
from gimp_inpaint.daemon.__main__ import build_engines
from gimp_inpaint.daemon.compositing import repaint_mask
from gimp_inpaint.daemon.config import Settings
from gimp_inpaint.daemon.engines import migan
from gimp_inpaint.daemon.engines.base import EngineJob, EngineLoadError
from gimp_inpaint.daemon.engines.migan import BLEND_REACH, FILENAME, INSTALL_HINT, REPO_ID, REVISION, MiGanEngine
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.protocol import ErrorCode, FillOptions, InpaintRequest, Plane, ProtocolError, Stage, Variant
from running_daemon import assert_box_loses_nothing, crop_arrays, free_port, running_daemon
from skimage import data
from tiny_onnx import cache_tiny_migan, expected_fill, tiny_migan_bytes

pytest.importorskip("onnx")

LOGGER = "gimp_inpaint.daemon.engines.migan"


def photo_request(job_id: str = "job", engine: str = "migan", **fields: Any) -> InpaintRequest:
    """A 120×160 crop of skimage's coffee photo (opaque RGBA) with an ellipse over the cup's rim to remove,
    grow 2, feather 4 and no colour match (the engine's own pixels) unless ``fields`` say otherwise."""
    rgb = np.ascontiguousarray(data.coffee()[140:260, 200:360])
    height, width = rgb.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (80, 60), (30, 18), 20, 0, 360, 255, -1)
    rgba = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    options = FillOptions(**{"engine": engine, "grow": 2, "feather": 4, "seed": 3, "color_match": False,
                             **fields})  # type: ignore[arg-type]
    return InpaintRequest(job_id=job_id, x=200, y=140, image=Plane(width, height, 4, rgba.tobytes()),
                          mask=Plane(width, height, 1, mask.tobytes()), options=options)


def engine_input(request: InpaintRequest) -> tuple[np.ndarray, np.ndarray]:
    """The RGB crop (H×W×3) and the mask (H×W, 255 = repaint) the worker hands the engine for ``request``."""
    image, blend = crop_arrays(request)
    return np.ascontiguousarray(image[..., :3]), repaint_mask(blend, image[..., 3])


def tiny_migan_output(request: InpaintRequest) -> np.ndarray:
    """What the engine returns for ``request`` with the tiny graph: the engine's mask dilated by
    :data:`BLEND_REACH` (MI-GAN's hole) painted with the known pixels' mean colour, every other pixel the input's."""
    rgb, mask = engine_input(request)
    hole = cv2.dilate(mask, np.ones((2 * BLEND_REACH + 1,) * 2, np.uint8)) > 0
    generated = rgb.copy()
    generated[hole] = expected_fill(rgb, hole)
    return generated


def telea_output(request: InpaintRequest) -> np.ndarray:
    """What OpenCV's engine (Telea, radius 3) returns for ``request``."""
    rgb, mask = engine_input(request)
    return cv2.inpaint(rgb, mask, 3, cv2.INPAINT_TELEA)


@dataclass
class Run:
    """One request through a fresh client connection: its variants, progress reports and the handshake's engines."""

    variants: list[Variant]
    progress: list[tuple[int, int, Stage]] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)  # engine → detail, in the handshake after the job


def run(daemon: tuple[str, str], request: InpaintRequest) -> Run:
    """Send ``request``; then, on a new connection, read the handshake the job left behind."""
    url, token = daemon
    reports: list[tuple[int, int, Stage]] = []
    with InpaintClient.connect(url, token, "pytest", timeout=30) as client:
        variants = client.inpaint(request, lambda step, total, stage: reports.append((step, total, stage)))
    with InpaintClient.connect(url, token, "pytest", timeout=30) as client:
        details = {engine.name: engine.detail for engine in client.welcome.engines}
    return Run(variants, reports, details)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache (returned), online mode, and a Hub address where nothing listens."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    return cache


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[tuple[str, str], MiGanEngine]]:
    """The real daemon serving a fresh ``migan`` engine and ``opencv``: ``((url, token), the engine)``."""
    engine = MiGanEngine()
    with running_daemon(tmp_path / "config", [engine, OpenCVEngine()]) as served:
        yield served, engine


@dataclass
class FakeHub:
    """The tiny graph served as :data:`FILENAME` at :data:`REVISION`: the repo's file listing is cached (as
    ``snapshot_download`` leaves it), and each file download writes ``chunk`` bytes at a time into the cache
    through the per-file progress bar ``snapshot_download`` hands it, as the real one does."""

    cache: Path
    content: bytes
    chunk: int = 256
    downloads: list[str] = field(default_factory=list)

    def __call__(self, repo_id: str, filename: str, *, tqdm_class: Any, revision: str, **kwargs: Any) -> str:
        assert (repo_id, filename, revision) == (REPO_ID, FILENAME, REVISION)
        self.downloads.append(filename)
        path = cache_tiny_migan(self.cache, b"")
        with tqdm_class(total=len(self.content), initial=0) as bar, path.open("wb") as file:
            for start in range(0, len(self.content), self.chunk):
                piece = self.content[start:start + self.chunk]
                file.write(piece)
                bar.update(len(piece))
        return str(path)


def serve_tiny_migan(cache: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """Let the Hub answer: the repo's ``model_info`` at :data:`REVISION`, and ``snapshot_download`` reaches the tiny
    graph (:class:`FakeHub`); returns the fake to count downloads."""
    from huggingface_hub import HfApi, _snapshot_download
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    from huggingface_hub.file_download import repo_folder_name

    fake = FakeHub(cache, tiny_migan_bytes())
    write_tree_cache(str(cache / repo_folder_name(repo_id=REPO_ID, repo_type="model")), REVISION,
                     {FILENAME: TreeCacheEntry(size=len(fake.content), blob_id="tiny")})
    monkeypatch.setattr(_snapshot_download, "hf_hub_download", fake)
    monkeypatch.setattr(HfApi, "model_info", lambda self, repo_id, *, revision, **kwargs: SimpleNamespace(
        id=repo_id, sha=revision))
    return fake


# --- MI-GAN itself ---------------------------------------------------------------------------------------------------

def test_the_tiny_graph_has_the_upstream_signature() -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(tiny_migan_bytes(), providers=["CPUExecutionProvider"])
    assert [(t.name, t.type, t.shape) for t in session.get_inputs()] == [
        ("image", "tensor(uint8)", ["batch_size", 3, "height", "width"]),
        ("mask", "tensor(uint8)", ["batch_size", 1, "height", "width"])]
    assert [(t.name, t.type) for t in session.get_outputs()] == [("result", "tensor(uint8)")]


def test_migan_through_the_daemon_fills_the_hole_and_keeps_every_unmasked_pixel(
        hub: Path, daemon: tuple[tuple[str, str], MiGanEngine]) -> None:
    cache_tiny_migan(hub)
    served, engine = daemon
    request = photo_request(num_variants=2)
    done = run(served, request)
    generated = tiny_migan_output(request)
    assert len(done.variants) == 2
    for variant in done.variants:  # the box of the whole-crop result, every unmasked pixel exact, the hole filled
        assert_box_loses_nothing(variant, request, generated)
    assert engine.info().available and done.details["migan"].startswith(f"loaded: {FILENAME} on the CPU")
    assert [stage for _, _, stage in done.progress] == [Stage.LOAD, *[Stage.INFERENCE] * 3]  # cached: no download
    assert done.progress[-1] == (2, 2, Stage.INFERENCE)  # one unit per variant
    again = run(served, photo_request("again"))
    assert [stage for _, _, stage in again.progress] == [Stage.INFERENCE] * 2  # warm: nothing loads again


def test_the_hole_migan_gets_is_ours_dilated_by_its_blend_reach(hub: Path) -> None:
    """Straight through the engine, on a picture of odd size: the known pixels' mean fills exactly the mask grown by
    3 pixels (a square), every other pixel is the input's."""
    cache_tiny_migan(hub)
    image = np.ascontiguousarray(data.astronaut()[100:197, 150:281])  # 97×131
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[40:50, 60:64] = 255
    engine = MiGanEngine()
    engine.load()
    out = engine.inpaint(EngineJob(image, mask, FillOptions(engine="migan"), 0), lambda step, total: None,
                         lambda: False)
    hole = np.zeros(mask.shape, bool)
    hole[37:53, 57:67] = True
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~hole], image[~hole])
    assert np.all(out[hole] == out[45, 62]) and np.abs(out[45, 62].astype(int) - expected_fill(image, hole)).max() <= 1


def test_first_use_downloads_with_byte_progress(hub: Path, monkeypatch: pytest.MonkeyPatch,
                                                daemon: tuple[tuple[str, str], MiGanEngine]) -> None:
    fake = serve_tiny_migan(hub, monkeypatch)
    served, _ = daemon
    request = photo_request()
    done = run(served, request)
    assert_box_loses_nothing(done.variants[0], request, tiny_migan_output(request))
    downloads = [(step, total) for step, total, stage in done.progress if stage is Stage.DOWNLOAD]
    size = len(fake.content)
    assert fake.downloads == [FILENAME] and len(downloads) == -(-size // fake.chunk)  # one report per chunk written
    assert [step for step, _ in downloads] == sorted(step for step, _ in downloads)
    assert downloads[-1] == (size, size) and {total for _, total in downloads} == {size}
    others = [stage for _, _, stage in done.progress if stage is not Stage.DOWNLOAD]
    assert others == [Stage.LOAD, Stage.INFERENCE, Stage.INFERENCE]
    later = MiGanEngine()  # a later daemon finds the file in the cache: no download, no network
    later.load()
    assert fake.downloads == [FILENAME] and later.info().detail.startswith("loaded")


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE", "hub-unreachable"])
def test_without_weights_opencv_fills_and_the_daemon_says_so_once(
        hub: Path, monkeypatch: pytest.MonkeyPatch, daemon: tuple[tuple[str, str], MiGanEngine],
        caplog: pytest.LogCaptureFixture, offline: bool) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    served, engine = daemon
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for job_id in ("first", "second"):
        request = photo_request(job_id)
        done = run(served, request)
        assert_box_loses_nothing(done.variants[0], request, telea_output(request))  # OpenCV's pixels, exactly
        detail = done.details["migan"]
        assert detail.startswith("using OpenCV (Telea) because the MI-GAN weights are not downloaded"), detail
        assert ("HF_HUB_OFFLINE=1" if offline else "could not be reached") in detail
    warnings = [record for record in caplog.records if record.name == LOGGER and record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "using OpenCV (Telea)" in warnings[0].getMessage()
    assert engine.info().available and engine.using_fallback


def test_the_download_is_tried_again_after_the_wait_and_migan_takes_over(hub: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Both engines first find the Hub unreachable; then it answers. One that failed less than ``retry_seconds`` ago
    keeps OpenCV without asking it; one whose wait is over downloads, and MI-GAN replaces OpenCV."""
    patient, eager = MiGanEngine(), MiGanEngine(retry_seconds=0)
    for engine in (patient, eager):
        engine.load()
        assert engine.using_fallback
    fake = serve_tiny_migan(hub, monkeypatch)
    patient.load()
    assert patient.using_fallback and fake.downloads == []
    eager.load()
    assert not eager.using_fallback and fake.downloads == [FILENAME]
    assert eager.info().detail.startswith("loaded")
    patient.load()  # the file is in the cache now: found there without the network, before the wait is over
    assert not patient.using_fallback and fake.downloads == [FILENAME]


# --- what it refuses ------------------------------------------------------------------------------------------------

def test_without_onnxruntime_the_engine_is_unavailable_with_the_install_hint(
        hub: Path, monkeypatch: pytest.MonkeyPatch, daemon: tuple[tuple[str, str], MiGanEngine]) -> None:
    cache_tiny_migan(hub)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, find_spec finds nothing
    served, _ = daemon
    url, token = served
    with InpaintClient.connect(url, token, "pytest", timeout=30) as client:
        info = {engine.name: engine for engine in client.welcome.engines}["migan"]
        assert not info.available and info.detail == f"onnxruntime is not installed: {INSTALL_HINT}"
        with pytest.raises(DaemonError) as refused:
            client.inpaint(photo_request())
    assert refused.value.code is ErrorCode.ENGINE_UNAVAILABLE and INSTALL_HINT in refused.value.message


@pytest.mark.parametrize("content", [b"not an onnx graph", tiny_migan_bytes(output="output")],
                         ids=["not-onnx", "another-signature"])
def test_a_file_that_is_not_migans_pipeline_is_a_load_error_naming_it(hub: Path, content: bytes) -> None:
    path = cache_tiny_migan(hub, content)
    with pytest.raises(EngineLoadError, match="delete it") as refused:
        MiGanEngine().load()
    assert str(path) in str(refused.value)


def test_a_mask_without_unmasked_pixels_is_refused() -> None:
    image = np.ascontiguousarray(data.camera()[:64, :64, None].repeat(3, axis=2))
    job = EngineJob(image, np.full((64, 64), 255, np.uint8), FillOptions(engine="migan"), 0)
    with pytest.raises(ProtocolError, match="leaves none unmasked") as refused:
        MiGanEngine().check(job)
    assert refused.value.code is ErrorCode.INVALID_REQUEST and "migan engine" in refused.value.message


def test_the_daemon_offers_migan_just_before_opencv_with_its_threads(tmp_path: Path) -> None:
    engines = build_engines(Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", threads=3))
    assert [engine.name for engine in engines[-2:]] == ["migan", "opencv"]
    remover = engines[-2]
    assert isinstance(remover, MiGanEngine) and remover.threads == 3
    info = remover.info()
    assert (info.kind, info.uses_prompt, info.model) == ("onnx", False, f"{REPO_ID}/{FILENAME}")
    assert info.options == OpenCVEngine().info().options


def test_onnxruntime_is_imported_only_when_the_engine_loads() -> None:
    import subprocess

    script = ("import sys; from gimp_inpaint.daemon.engines.migan import MiGanEngine; MiGanEngine().info(); "
              "print('onnxruntime' in sys.modules, 'huggingface_hub' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["False", "False"]
    assert migan.onnxruntime_available()
