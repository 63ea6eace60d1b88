"""daemon.toml's ``preload`` (issue 10): the daemon listens first, then loads that model on its worker thread before
any job; meanwhile the handshake marks the engine ``warming_up`` (``gimp-inpaint status``: STATE ``warming up``)
and the tray says "warming up: loading NAME"; a request that comes meanwhile waits behind the load and then finds
the model warm; a load that fails is logged and shown as an error, and the daemon serves on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.client.connection import InpaintClient
from gimp_inpaint.daemon.config import Settings, ensure_token
from gimp_inpaint.daemon.engines.base import LoadProgress
from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.pool import ModelPool
from gimp_inpaint.daemon.registry import ModelSpec, Registry
from gimp_inpaint.daemon.server import WARMING_UP_DETAIL, DaemonServer
from gimp_inpaint.protocol import EngineInfo, FillOptions, InpaintRequest, Plane, Stage, Variant
from running_daemon import WAIT, MissingEngine, StepEngine, daemon_process, serving

pytestmark = pytest.mark.timeout(300)


class GatedEngine(StepEngine):
    """A :class:`StepEngine` whose first :meth:`load` waits until :attr:`gate` is set; later ones find it warm.

    Attributes:
        loading: set once a load has started.
        loads: loads that did the work (a warm engine's load does none).
    """

    def __init__(self) -> None:
        super().__init__("gated", steps=2)
        self.gate = threading.Event()
        self.loading = threading.Event()
        self.loads = 0
        self._warm = False

    def load(self, progress: LoadProgress | None = None) -> None:
        if self._warm:
            return
        self.loading.set()
        assert self.gate.wait(WAIT)
        self.loads += 1
        self._warm = True


def request(engine: str, job_id: str = "j1", **fields: Any) -> InpaintRequest:
    """A 32×32 opaque grey crop at (2, 3) whose centre 16×16 is masked, one variant, no growth."""
    image = Plane(32, 32, 4, bytes([90, 90, 90, 255]) * 1024)
    mask = Plane(32, 32, 1, b"".join(bytes([0] * 8 + [255] * 16 + [0] * 8) if 8 <= row < 24 else bytes(32)
                                     for row in range(32)))
    return InpaintRequest(job_id, 2, 3, image, mask, FillOptions(engine=engine, seed=1, grow=0, feather=2, **fields))


def preloading_server(config_dir: Path, engines: list[Any], preload: str,
                      statuses: list[tuple[str, str]]) -> tuple[DaemonServer, str]:
    """A daemon on a free port with ``preload`` set, recording its tray statuses; returns it and its token."""
    token = ensure_token(config_dir)
    settings = Settings(config_dir=config_dir, log_file=config_dir / "daemon.log", port=0, tray=False,
                        preload=preload)
    server = DaemonServer(settings, engines, token, on_status=lambda state, text: statuses.append((state, text)))
    return server, token


def engines_of(url: str, token: str) -> dict[str, EngineInfo]:
    """The engines a fresh handshake lists, by name."""
    with InpaintClient.connect(url, token, "test") as client:
        return {engine.name: engine for engine in client.welcome.engines}


def status_rows(url: str, token: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``gimp-inpaint status``'s table rows by engine name."""
    assert cli.main(["status", "--url", url, "--token", token]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line for line in lines[2:]}


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (at most :data:`WAIT` seconds)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_engine_table_says_warming_up() -> None:
    lines = cli.engine_table([
        EngineInfo("sd15", "diffusers", "a/b", True, True, WARMING_UP_DETAIL, family="sd-inpaint", warming_up=True),
        EngineInfo("xl", "diffusers", "c/d", False, True, "no such folder", warming_up=True),
        EngineInfo("opencv", "opencv", "telea", True, False),
    ])
    assert [line.split("  ")[-1].strip() for line in lines] == ["STATE", "warming up", "unavailable: no such folder",
                                                         "available"]


def test_the_daemon_listens_first_and_a_request_waits_for_the_preload_then_finds_it_warm(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    engine = GatedEngine()
    statuses: list[tuple[str, str]] = []
    server, token = preloading_server(tmp_path, [engine, OpenCVEngine()], "gated", statuses)
    with serving(server):
        url = server.url
        assert url is not None
        assert engine.loading.wait(WAIT)  # listening, and loading in the background
        engines = engines_of(url, token)
        assert engines["gated"].warming_up and engines["gated"].available
        assert engines["gated"].detail == WARMING_UP_DETAIL
        assert not engines["opencv"].warming_up
        rows = status_rows(url, token, capsys)
        assert rows["gated"].endswith("  warming up") and rows["opencv"].endswith("available; " +
                                                                                  engines["opencv"].detail)
        assert statuses == [("busy", "warming up: loading gated")]

        stages: list[Stage] = []
        done: list[list[Variant]] = []
        with InpaintClient.connect(url, token, "test") as client:
            worker = threading.Thread(target=lambda: done.append(client.inpaint(
                request("gated"), on_progress=lambda step, total, stage: stages.append(stage))))
            worker.start()
            worker.join(0.5)
            assert worker.is_alive() and not done  # queued behind the load
            engine.gate.set()
            worker.join(WAIT)
        [[variant]] = done
        assert variant.index == 0
        assert engine.loads == 1 and engine.seen == [("", 1)]  # loaded once, by the preload
        assert stages and Stage.LOAD not in stages and Stage.DOWNLOAD not in stages
        assert not engines_of(url, token)["gated"].warming_up
    assert statuses == [("busy", "warming up: loading gated"), ("idle", ""), ("busy", "gated: job j1"),
                        ("idle", "")]


def test_a_failed_preload_is_logged_and_shown_and_the_daemon_serves_on(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    statuses: list[tuple[str, str]] = []
    server, token = preloading_server(tmp_path, [MissingEngine("missing"), OpenCVEngine()], "missing", statuses)
    with caplog.at_level(logging.INFO, logger="gimp_inpaint.daemon.server"), serving(server):
        assert server.url is not None
        wait_for(lambda: len(statuses) > 1)
        assert statuses == [("busy", "warming up: loading missing"),
                            ("error", "warming up missing failed: pip install something")]
        assert "warming up missing failed: pip install something" in caplog.text
        engines = engines_of(server.url, token)
        assert not engines["missing"].warming_up and not engines["missing"].available
        with InpaintClient.connect(server.url, token, "test") as client:
            [variant] = client.inpaint(request("opencv"))
        assert variant.index == 0 and variant.image.channels == 4


def test_a_preload_of_no_engine_is_logged_and_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The configuration lets ``preload`` name the default model, which the daemon offers only with diffusers."""
    statuses: list[tuple[str, str]] = []
    server, token = preloading_server(tmp_path, [OpenCVEngine()], "sd15-inpaint", statuses)
    with caplog.at_level(logging.INFO, logger="gimp_inpaint.daemon.server"), serving(server):
        assert server.url is not None and not engines_of(server.url, token)["opencv"].warming_up
    assert statuses == [("error", "cannot preload sd15-inpaint: no such engine")]
    assert "cannot preload sd15-inpaint: this daemon has no engine of that name (its engines: opencv)" in caplog.text


@pytest.mark.diffusers
def test_a_preloaded_model_loads_once_and_the_first_request_loads_nothing(
        tmp_path: Path, tiny_inpaint_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The real diffusers engine on the tiny pipeline: its load (``from_pretrained``) held until the handshake and
    ``gimp-inpaint status`` have seen it warming up, counted as test_diffusers_engine's ``count_loads`` does."""
    diffusers = pytest.importorskip("diffusers")
    original = diffusers.AutoPipelineForInpainting.from_pretrained
    gate, loading, loads = threading.Event(), threading.Event(), []

    def gated(model: str, **kwargs: object) -> object:
        loading.set()
        assert gate.wait(WAIT)
        loads.append(model)
        return original(model, **kwargs)

    monkeypatch.setattr(diffusers.AutoPipelineForInpainting, "from_pretrained", gated)
    engine = DiffusersEngine(ModelSpec("tiny", str(tiny_inpaint_model)), Registry(), ModelPool(100 * 10**9),
                             device="cpu")
    statuses: list[tuple[str, str]] = []
    server, token = preloading_server(tmp_path, [engine, OpenCVEngine()], "tiny", statuses)
    with serving(server):
        url = server.url
        assert url is not None
        assert loading.wait(WAIT)
        assert engines_of(url, token)["tiny"].warming_up
        assert status_rows(url, token, capsys)["tiny"].endswith("  warming up")
        gate.set()
        wait_for(lambda: statuses[-1] == ("idle", ""))
        assert loads == [str(tiny_inpaint_model)]
        info = engines_of(url, token)["tiny"]
        assert not info.warming_up and info.available and info.detail.startswith("loaded on cpu")
        stages: list[Stage] = []
        with InpaintClient.connect(url, token, "test", timeout=60) as client:
            [variant] = client.inpaint(request("tiny", num_inference_steps=2),
                                       on_progress=lambda step, total, stage: stages.append(stage))
        assert loads == [str(tiny_inpaint_model)]  # the request loaded nothing
        assert Stage.LOAD not in stages and Stage.INFERENCE in stages and variant.index == 0
    assert statuses[:2] == [("busy", "warming up: loading tiny"), ("idle", "")]


@pytest.mark.diffusers
def test_the_daemon_process_preloads_daemon_toml_s_model_and_explains_a_failure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m gimp_inpaint.daemon`` with ``preload`` naming a model whose folder is missing: it listens, logs
    why the load failed, ``status`` says so for that engine, and opencv fills."""
    config = tmp_path / "config"
    config.mkdir()
    missing = tmp_path / "no-such-model"
    (config / "daemon.toml").write_text(f'preload = "broken"\n[models.broken]\nmodel = "{missing}"\n')
    token = ensure_token(config)
    log_file = config / "daemon.log"
    with daemon_process(config) as (url, _process):
        wait_for(lambda: "warming up broken failed" in log_file.read_text())
        log = log_file.read_text()
        assert log.index("listening on") < log.index("warming up: loading broken") < log.index("failed")
        assert f"model folder {missing} does not exist" in log
        row = status_rows(url, token, capsys)["broken"]
        assert f"unavailable: model folder {missing} does not exist" in row and "warming up" not in row
        with InpaintClient.connect(url, token, "test") as client:
            [variant] = client.inpaint(request("opencv"))
        assert variant.index == 0 and variant.image.channels == 4
