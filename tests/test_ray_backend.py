"""The Ray backend (:mod:`daemon.ray_backend`) on a real local Ray (4 logical CPUs of this machine) with 2 CPU
replicas: results bit-identical to the local backend's, jobs spread over both replicas, progress, cancel, a replica
that dies mid-job, the retry of one that died before its steps, and the multiplexed pool's LRU eviction."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from gimp_inpaint.client.connection import InpaintClient  # noqa: E402
from gimp_inpaint.daemon.config import ConfigError, Settings, ensure_token, load_settings  # noqa: E402
from gimp_inpaint.daemon.control import Controller  # noqa: E402
from gimp_inpaint.daemon.engines.base import (  # noqa: E402 - after the importorskip
    CancelCheck,
    Engine,
    EngineJob,
    LoadProgress,
    ModelState,
    ProgressCallback,
)
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine  # noqa: E402
from gimp_inpaint.daemon.ray_backend import RayBackend, RaySettings, app, ray_settings  # noqa: E402
from gimp_inpaint.daemon.server import DaemonServer  # noqa: E402
from gimp_inpaint.daemon.worker import PreviewOutlet, run_job  # noqa: E402
from gimp_inpaint.protocol import (  # noqa: E402  # noqa: E402
    PROTOCOL_VERSION,
    Error,
    ErrorCode,
    FillOptions,
    Hello,
    InpaintRequest,
    Message,
    Plane,
    Preview,
    Result,
    Stage,
    Variant,
    Welcome,
    decode,
    encode,
)
from running_daemon import WAIT, StepEngine, daemon_process, serving  # noqa: E402
from test_daemon_control import WarmableEngine  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

TESTS = Path(__file__).parent
MARKER = "GIMP_INPAINT_RAY_TEST_MARKER"
"""The environment variable naming the file whose absence makes :class:`DiesLoading` die (a fresh one per run)."""


class DiesStepping(StepEngine):
    """Reports its first step, then ends its replica's process (``os._exit``) once that step has had time to stream
    out: a replica lost mid-job."""

    def __init__(self) -> None:
        super().__init__("dies-stepping", steps=4)

    def inpaint(self, job: EngineJob, progress: ProgressCallback, cancelled: CancelCheck) -> np.ndarray:
        progress(1, self.steps)
        time.sleep(1.0)
        os._exit(1)


class DiesLoading(StepEngine):
    """Ends its replica's process while loading unless the file named by :data:`MARKER` exists (which it makes
    first): the first try dies before any step, the retry runs."""

    def __init__(self) -> None:
        super().__init__("dies-loading", steps=2)

    def load(self, progress: LoadProgress | None = None) -> None:
        marker = Path(os.environ[MARKER])
        if not marker.exists():
            marker.touch()
            os._exit(1)


def replica_engines() -> list[Engine]:
    """Every replica's engines (imported by the replicas from this module: ``PYTHONPATH`` is the tests folder)."""
    return [OpenCVEngine(), StepEngine("steps", steps=6, delay=0.05), StepEngine("a"), StepEngine("b"),
            DiesStepping(), DiesLoading()]


def tiny_engines(model: str) -> list[Engine]:
    """A replica's engines for the tiny-diffusers test: the tiny SD inpainting model on the CPU, 1 torch thread (as
    the local reference: another thread count may sum its floats in another order)."""
    from gimp_inpaint.daemon.engines.diffusers_engine import DiffusersEngine
    from gimp_inpaint.daemon.pool import ModelPool
    from gimp_inpaint.daemon.registry import ModelSpec, Registry

    return [DiffusersEngine(ModelSpec("tiny", model), Registry(), ModelPool(10**10), device="cpu", torch_threads=1),
            OpenCVEngine()]


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayBackend]:
    """A local Ray (4 logical CPUs) with the Serve application of 2 CPU replicas; shut down after the module."""
    marker = tmp_path_factory.mktemp("ray") / "died-once"
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), MARKER: str(marker)}
    backend = RayBackend(replica_engines, RaySettings(min_replicas=2, max_replicas=2, cpus_per_replica=0.5),
                         local_cpus=4, runtime_env={"env_vars": env})
    try:
        yield backend
    finally:
        backend.shutdown()
        ray.shutdown()


def make_request(job_id: str, engine: str = "opencv", bits: int = 8, **values: object) -> InpaintRequest:
    """A 64×80 crop (a gradient with a square, alpha 255) with an elliptic hole, at (30, 12)."""
    height, width = 64, 80
    rgb = np.dstack([np.tile(np.linspace(0, 255, width), (height, 1)),
                     np.tile(np.linspace(255, 0, height)[:, None], (1, width)), np.full((height, width), 90.0)])
    rgb[20:40, 25:45] = (250, 10, 120)
    image = np.dstack([rgb, np.full((height, width), 255.0)])
    image = (image * 257 + (np.arange(width) % 7)[:, None]).astype("<u2") if bits == 16 else image.astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (36, 30), (14, 10), 0, 0, 360, 255, -1)
    options = FillOptions(**{"engine": engine, "prompt": "", "grow": 2, "feather": 3, "seed": 5,
                             **values})  # type: ignore[arg-type]
    return InpaintRequest(job_id=job_id, x=30, y=12, image=Plane(width, height, 4, image.tobytes(), bits=bits),
                          mask=Plane(width, height, 1, mask.tobytes()), options=options)


class Sinks:
    """A job's progress and variants as the server's sinks would get them, and a cancel flag."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, int, Stage]] = []
        self.variants: list[Variant] = []
        self.cancel = threading.Event()
        self.stepping = threading.Event()
        """Set at the first inference step after 0."""

    def on_progress(self, step: int, total: int, stage: Stage) -> None:
        self.progress.append((step, total, stage))
        if stage is Stage.INFERENCE and step > 0:
            self.stepping.set()


def submit(backend: RayBackend, request: InpaintRequest, engine: Engine, sinks: Sinks) -> Future[Result | Error]:
    """``request`` through ``backend`` into ``sinks``."""
    return backend.submit(request, engine, sinks.on_progress, sinks.cancel.is_set, sinks.variants.append, 0.0)


def pixels(plane: Plane) -> bytes:
    return bytes(plane.data)


@pytest.mark.parametrize("bits", [8, 16])
def test_opencv_through_ray_is_bit_identical_to_the_local_backend(backend: RayBackend, bits: int) -> None:
    request = make_request(f"same-{bits}", bits=bits, num_variants=2)
    local: list[Variant] = []
    expected = run_job(request, OpenCVEngine(), lambda *_: None, lambda: False, local.append)
    sinks = Sinks()
    outcome = submit(backend, request, OpenCVEngine(), sinks).result(60)
    assert outcome == expected == Result(request.job_id, 2)
    assert [(v.index, v.x, v.y, v.seed, v.image.bits) for v in sinks.variants] == \
        [(v.index, v.x, v.y, v.seed, v.image.bits) for v in local]
    for remote, mine in zip(sinks.variants, local, strict=True):
        assert isinstance(remote.image.data, memoryview)  # back to the protocol's type for the codec
        assert pixels(remote.image) == pixels(mine.image) and pixels(remote.mask) == pixels(mine.mask)
        assert remote.timings["replica"] in (0.0, 1.0)
    assert sinks.progress[-1] == (1 * 2, 2, Stage.INFERENCE)


@pytest.mark.diffusers
def test_a_tiny_diffusers_job_through_ray_is_bit_identical_to_the_local_backend(backend: RayBackend,
                                                                                tiny_inpaint_model: Path) -> None:
    pytest.importorskip("diffusers")
    request = dataclasses.replace(make_request("tiny-sd", engine="tiny", prompt="a red square", num_inference_steps=3,
                                               strength=1.0, num_variants=2), preview_every=1)
    local: list[Variant] = []
    local_progress = Sinks()
    engine = tiny_engines(str(tiny_inpaint_model))[0]
    expected = run_job(request, engine, local_progress.on_progress, lambda: False, local.append)
    engine.unload()
    remote = RayBackend(functools.partial(tiny_engines, str(tiny_inpaint_model)),
                        RaySettings(min_replicas=1, max_replicas=1, cpus_per_replica=0.5), app="tiny-diffusers")
    try:
        sinks = Sinks()
        previews: list[Preview] = []
        outcome = remote.submit(request, engine, sinks.on_progress, sinks.cancel.is_set, sinks.variants.append, 0.0,
                                previews=PreviewOutlet(lambda: True, previews.append)).result(300)
    finally:
        remote.shutdown()
    assert outcome == expected == Result("tiny-sd", 2), outcome
    for mine, theirs in zip(local, sinks.variants, strict=True):
        assert (theirs.seed, theirs.x, theirs.y) == (mine.seed, mine.x, mine.y)
        assert pixels(theirs.image) == pixels(mine.image)
    assert previews and all(isinstance(preview.image.data, memoryview) for preview in previews)
    inference = [report for report in sinks.progress if report[2] is Stage.INFERENCE]
    assert inference == [report for report in local_progress.progress if report[2] is Stage.INFERENCE]
    assert inference[-1][0] == inference[-1][1] > 2  # every step of both variants streamed back


def test_jobs_spread_over_both_replicas(backend: RayBackend) -> None:
    jobs = [(Sinks(), make_request(f"spread-{i}", engine="steps")) for i in range(4)]
    futures = [submit(backend, request, StepEngine("steps"), sinks) for sinks, request in jobs]
    assert [future.result(60) for future in futures] == [Result(request.job_id, 1) for _, request in jobs]
    replicas = {sinks.variants[0].timings["replica"] for sinks, _ in jobs}
    assert replicas == {0.0, 1.0}


def test_progress_streams_and_cancel_reaches_the_replica(backend: RayBackend) -> None:
    sinks = Sinks()
    request = make_request("cancel-me", engine="steps", num_variants=3)
    future = submit(backend, request, StepEngine("steps"), sinks)
    assert sinks.stepping.wait(60)
    sinks.cancel.set()
    outcome = future.result(60)
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.CANCELLED and outcome.job_id == "cancel-me"
    steps = [step for step, total, stage in sinks.progress if stage is Stage.INFERENCE]
    assert steps[0] == 0 and steps == sorted(steps) and {total for _, total, _ in sinks.progress} == {18}
    assert steps[-1] < 18 and len(sinks.variants) < 3  # stopped before the end
    after = Sinks()  # the replica takes the next job
    assert submit(backend, make_request("after-cancel", engine="steps"), StepEngine("steps"),
                  after).result(60) == Result("after-cancel", 1)
    assert [step for step, _, _ in after.progress] == list(range(7))


def test_a_replica_dying_mid_job_fails_that_job_and_the_next_job_runs(backend: RayBackend) -> None:
    sinks = Sinks()
    outcome = submit(backend, make_request("doomed", engine="dies-stepping"), DiesStepping(), sinks).result(120)
    assert isinstance(outcome, Error) and outcome.code is ErrorCode.JOB_FAILED and outcome.job_id == "doomed"
    assert "the Ray replica running job 'doomed' died" in outcome.message, outcome.message
    assert (1, 4, Stage.INFERENCE) in sinks.progress and not sinks.variants
    for index in range(2):  # whichever replica Serve routes to: the survivor, or the one it started again
        assert submit(backend, make_request(f"next-{index}"), OpenCVEngine(), Sinks()).result(120) == \
            Result(f"next-{index}", 1)


def test_a_replica_dying_before_the_steps_is_retried_once(backend: RayBackend) -> None:
    sinks = Sinks()
    outcome = submit(backend, make_request("retried", engine="dies-loading"), DiesLoading(), sinks).result(120)
    assert outcome == Result("retried", 1)
    assert len(sinks.variants) == 1 and sinks.progress[-1] == (2, 2, Stage.INFERENCE)


def test_the_multiplexed_pool_evicts_the_least_recently_used_engine(backend: RayBackend) -> None:
    lru = RayBackend(replica_engines, RaySettings(min_replicas=1, max_replicas=1, cpus_per_replica=0.5,
                                                  models_per_replica=1), app="lru")
    try:
        for index, name in enumerate("abab"):
            request = make_request(f"lru-{index}", engine=name)
            assert submit(lru, request, StepEngine(name), Sinks()).result(60) == Result(request.job_id, 1)
        assert lru.handle.pool_loads.remote().result(timeout_s=60) == list("abab")  # each one evicted the other
    finally:
        lru.shutdown()


def test_the_daemon_serves_its_websocket_clients_through_ray(tmp_path: Path, backend: RayBackend) -> None:
    """The front end (auth, validation, the queue) hands two jobs of one connection to the 2 replicas at once, and
    the client gets the same pixels as from the local backend; the server shuts down its own Serve application."""
    front = RayBackend(replica_engines, RaySettings(min_replicas=2, max_replicas=2, cpus_per_replica=0.5),
                       app="front-end")
    settings = Settings(config_dir=tmp_path, log_file=tmp_path / "daemon.log", port=0, tray=False)
    token = ensure_token(tmp_path)
    requests = [make_request(f"ws-{index}", engine="steps", seed=index) for index in range(4)]
    with serving(DaemonServer(settings, [OpenCVEngine(), StepEngine("steps"), WarmableEngine()], token,
                              backend=front)) as server, connect(str(server.url), max_size=None) as ws:
        # the tray offers no Load or Unload of the front end's engines, which no job runs with
        assert not server.models_here and WarmableEngine().model_state() is ModelState.ON_DISK
        assert [(entry.label, entry.can_load) for entry in Controller(server).models()] == [
            ("opencv — built in", False), ("steps — built in", False), ("model — loads on the Ray replicas", False)]
        ws.send(encode(Hello(PROTOCOL_VERSION, "ray-test", token)))
        welcome = decode(ws.recv(timeout=WAIT))
        assert isinstance(welcome, Welcome)
        # the front end's disk says nothing of the replicas': the handshake gives no state for a model
        assert [(engine.name, engine.state) for engine in welcome.engines] == [
            ("opencv", "built in"), ("steps", "built in"), ("model", "")]
        assert welcome.engines[-1].detail == "the Ray replicas load it, each on its first job"
        for request in requests:
            ws.send(encode(request))
        messages: list[Message] = []
        while sum(isinstance(message, Result | Error) for message in messages) < len(requests):
            messages.append(decode(ws.recv(timeout=WAIT)))
    assert {m.job_id for m in messages if isinstance(m, Result)} == {r.job_id for r in requests}
    variants = {m.job_id: m for m in messages if isinstance(m, Variant)}
    for request in requests:
        local: list[Variant] = []
        run_job(request, StepEngine("steps"), lambda *_: None, lambda: False, local.append)
        assert bytes(variants[request.job_id].image.data) == bytes(local[0].image.data)
    assert {variant.timings["replica"] for variant in variants.values()} == {0.0, 1.0}


def test_daemon_toml_configures_the_ray_backend_and_the_local_one_never_imports_ray(tmp_path: Path) -> None:
    (tmp_path / "daemon.toml").write_text('backend = "ray"\nray_address = "auto"\nray_min_replicas = 1\n'
                                          'ray_max_replicas = 8\nray_models_per_replica = 3\n')
    settings = load_settings(tmp_path, {"ray_address": "ray://head:10001"})
    assert settings.backend == "ray"
    assert ray_settings(settings) == RaySettings(address="ray://head:10001", min_replicas=1, max_replicas=8,
                                                 gpus_per_replica=None, models_per_replica=3)
    (tmp_path / "daemon.toml").write_text('backend = "ray"\nray_min_replicas = 3\nray_max_replicas = 2\n')
    with pytest.raises(ConfigError, match="ray_min_replicas=3"):
        load_settings(tmp_path)
    local = subprocess.run([sys.executable, "-c", "import sys, gimp_inpaint.daemon.__main__, gimp_inpaint.daemon."
                            "ray_backend; print('ray' in sys.modules)"], capture_output=True, text=True, check=True)
    assert local.stdout.strip() == "False"


def test_a_front_end_attaches_to_a_deployed_application_and_leaves_it_running(backend: RayBackend,
                                                                               tmp_path: Path) -> None:
    """``ray_deploy = false`` (the serve config's or a RayService's application): the handle of the running one;
    shutting this front end down leaves the application to the others."""
    attached = RayBackend(replica_engines, RaySettings(min_replicas=2, max_replicas=2, deploy=False))
    assert submit(attached, make_request("attached"), OpenCVEngine(), Sinks()).result(60) == Result("attached", 1)
    attached.shutdown()
    assert submit(backend, make_request("still-there"), OpenCVEngine(), Sinks()).result(60) == \
        Result("still-there", 1)
    (tmp_path / "daemon.toml").write_text("ray_max_replicas = 4\nray_models_per_replica = 1\n")
    application = app({"config_dir": str(tmp_path)})  # serve-config.yaml's import_path
    assert isinstance(application, ray.serve.Application)


def test_the_daemon_process_with_backend_ray_fills_through_its_replica(tmp_path: Path) -> None:
    """``gimp-inpaint-daemon --backend ray``: a local Ray of its own, the replicas' engines built from the same
    daemon.toml (:func:`daemon.__main__.build_engines`), an opencv job's variant from replica 0."""
    with daemon_process(tmp_path, "--backend", "ray") as (url, _), \
            InpaintClient.connect(url, ensure_token(tmp_path), "ray-process", timeout=WAIT) as client:
        (variant,) = client.inpaint(make_request("process"))
    assert variant.timings["replica"] == 0.0 and variant.image.width > 0
