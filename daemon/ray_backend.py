"""The Ray backend (``gimp-inpaint-daemon --backend ray``): the WebSocket front end (:mod:`daemon.server`: auth,
protocol, validation, the queue per connection) hands each job to a Ray Serve deployment, whose replicas run the
same engines and the same :func:`daemon.worker.run_job` as the local backend, one replica per GPU.

Ray is imported here only, and only when this backend is chosen (:class:`RayBackend`'s constructor): the local
daemon never imports it.

The deployment (:func:`deployment`):

- one replica per GPU (``ray_actor_options={"num_gpus": gpus_per_replica}``; CPU replicas with ``num_gpus`` 0), a
  small ``num_cpus``, ``max_ongoing_requests=1`` (engines never run concurrently on one device), autoscaling between
  :attr:`RaySettings.min_replicas` and :attr:`RaySettings.max_replicas` on the requests waiting per replica;
- the warm-model pool per replica is Ray Serve's model multiplexing (``@serve.multiplexed``, an LRU cache of at most
  :attr:`RaySettings.models_per_replica` engines per replica, keyed by engine name; an evicted engine is unloaded),
  and each request carries its engine's name as its ``multiplexed_model_id``, so Serve routes it to a replica where
  that engine is warm while one is free;
- :meth:`InpaintReplica.run` is a streaming method (an async generator): it yields each
  :class:`protocol.Progress`, :class:`protocol.Preview` and :class:`protocol.Variant` as :func:`daemon.worker.run_job`
  makes them, then the :class:`protocol.Result` or :class:`protocol.Error`. The front end reads it through
  ``handle.options(stream=True)``; a Cancel reaches the replica through the response's ``cancel()``, which cancels
  the generator, and the job's cancel flag stops the engine at its next step.

Pixels travel as NumPy arrays through Ray's object store (:func:`portable`: the planes' data as 1-D ``uint8`` arrays,
which Ray's pickle-5 serialization moves out of band), never re-encoded to msgpack; the front end encodes a variant
for its client once, as the local backend does. Each variant's timings carry ``replica``: the replica's rank (0, 1,
…, Ray Serve's ``ReplicaContext.rank``) as a number, which clients ignore.

A replica that dies mid-job (its process or node lost) ends that job ``JOB_FAILED``, saying so; a job whose replica
died before it had reported an inference step is sent once more (Serve routes it to a live replica). The front end
serves on either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from gimp_inpaint.protocol import (
    Error,
    ErrorCode,
    InpaintRequest,
    Message,
    Plane,
    Preview,
    Progress,
    Result,
    Stage,
    Variant,
    quote,
)

from .config import Settings
from .engines.base import Engine
from .worker import PreviewOutlet, StageProgress, VariantSink, run_job

if TYPE_CHECKING:  # Ray is imported at run time only where this backend is chosen
    from ray.serve.handle import DeploymentResponseGenerator

log = logging.getLogger(__name__)

APP_NAME = "gimp-inpaint"
"""The Ray Serve application the daemon deploys (and a serve config file names: ``docs/ray/serve-config.yaml``)."""

CANCEL_POLL = 0.1
"""Seconds between the front end's checks of a running job's cancel flag (then ``response.cancel()``)."""

EnginesFactory = Callable[[], Sequence[Engine]]
"""Makes a replica's engines (picklable: Ray sends it to every replica; the daemon's is
``functools.partial(daemon.__main__.build_engines, settings)``). Nothing may load in it."""


@dataclass(frozen=True)
class RaySettings:
    """The Ray backend's part of ``daemon.toml``.

    Attributes:
        address: the Ray cluster to join (``ray.init(address=…)``: ``"auto"``, ``ray://host:10001``); ``""`` starts a
            local Ray on this machine.
        min_replicas, max_replicas: Serve's autoscaling bounds (replicas, each one GPU or a CPU worker).
        gpus_per_replica: GPUs each replica holds (``ray_actor_options["num_gpus"]``): 1 on GPU hosts, 0 for CPU
            replicas; None: 1 when the cluster has a GPU, else 0 (:class:`RayBackend` asks Ray).
        cpus_per_replica: logical CPUs each replica reserves (``num_cpus``); small, the GPU does the work.
        models_per_replica: engines a replica keeps warm (``@serve.multiplexed(max_num_models_per_replica=…)``),
            least recently used evicted first.
        deploy: the front end deploys the application itself (``serve.run``); False: it uses the one already
            running in the cluster under that name, which ``serve deploy docs/ray/serve-config.yaml`` (:func:`app`)
            or a KubeRay ``RayService`` deployed.
    """

    address: str = ""
    min_replicas: int = 1
    max_replicas: int = 1
    gpus_per_replica: float | None = None
    cpus_per_replica: float = 0.5
    models_per_replica: int = 2
    deploy: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"replica bounds must be 0 ≤ min ≤ max, max ≥ 1; got {self.min_replicas}, "
                             f"{self.max_replicas}")
        if self.models_per_replica < 1 or (self.gpus_per_replica or 0) < 0 or self.cpus_per_replica < 0:
            raise ValueError("models_per_replica must be ≥ 1 and the resources per replica ≥ 0")


def ray_settings(settings: Settings) -> RaySettings:
    """The :class:`RaySettings` of ``daemon.toml``'s ``ray_*`` keys (:class:`daemon.config.Settings`; its −1 GPUs
    per replica is None, automatic)."""
    return RaySettings(address=settings.ray_address, min_replicas=settings.ray_min_replicas,
                       max_replicas=settings.ray_max_replicas,
                       gpus_per_replica=None if settings.ray_gpus_per_replica < 0 else settings.ray_gpus_per_replica,
                       models_per_replica=settings.ray_models_per_replica, deploy=settings.ray_deploy)


def portable(plane: Plane) -> Plane:
    """``plane`` with its data as a 1-D ``uint8`` NumPy array (a view, no copy) for Ray's object store, which pickles
    such arrays out of band; :func:`local` turns it back. Only in transit is a Plane's data an array (it has the
    buffer protocol and the byte length a Plane checks)."""
    return dataclasses.replace(plane, data=cast(memoryview, np.frombuffer(plane.data, np.uint8)))


def local(plane: Plane) -> Plane:
    """``plane`` from Ray (:func:`portable`) with its data as a read-only ``memoryview`` again (no copy)."""
    return dataclasses.replace(plane, data=memoryview(plane.data).cast("B").toreadonly())


@dataclass(frozen=True)
class RayJob:
    """What the front end sends a replica for one job.

    Attributes:
        request: the validated request, its planes :func:`portable`.
        engine: the engine's name (also the request's ``multiplexed_model_id``).
        remover: the remove mode's pre-fill engine (:meth:`daemon.server.DaemonServer.remover`), or ``""``.
        queued_seconds: how long it waited in the front end's queue.
        previews: whether the front end takes previews (:func:`daemon.worker.run_job`'s ``previews``).
    """

    request: InpaintRequest
    engine: str
    remover: str
    queued_seconds: float
    previews: bool


@dataclass
class _Warm:
    """One engine in a replica's multiplexed pool; Serve calls :meth:`__del__` when it evicts it (least recently
    used), which unloads the engine's model on the replica's worker thread, after the job running there (a
    cancelled job may still be ending when the next one's eviction comes)."""

    engine: Engine
    worker: ThreadPoolExecutor

    def __del__(self) -> None:
        with contextlib.suppress(RuntimeError):  # the replica is shutting down: its process takes the model along
            self.worker.submit(self.engine.unload)


class InpaintReplica:
    """One replica of the deployment: a device's engines, one job at a time (a single worker thread, as
    :class:`daemon.worker.Worker`), its warm engines multiplexed (:meth:`warm`).

    Args:
        engines: makes its engines (:data:`EnginesFactory`), once.
    """

    def __init__(self, engines: EnginesFactory) -> None:
        self.engines = {engine.name: engine for engine in engines()}
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gimp-inpaint-replica")
        self.loads: list[str] = []
        """Engine names in the order :meth:`warm` took them into the pool (its misses), for the tests."""

    async def warm(self, name: str) -> _Warm:
        """The engine called ``name``, held in the replica's pool. Wrapped by ``@serve.multiplexed`` in
        :func:`deployment`: called only for an engine not in the pool, after evicting the least recently used one
        when it is full. Its model loads in :func:`daemon.worker.run_job` (with progress), not here.

        Raises:
            KeyError: no engine of that name (the front end checked it).
        """
        self.loads.append(name)
        return _Warm(self.engines[name], self.worker)

    def pool_loads(self) -> list[str]:
        """:attr:`loads` (for the tests: which engines entered the pool, in order)."""
        return list(self.loads)

    async def run(self, job: RayJob) -> AsyncIterator[Message]:
        """Run ``job`` with :func:`daemon.worker.run_job` on the replica's worker thread, yielding its messages as
        they come: Progress, Preview (planes :func:`portable`), Variant (planes :func:`portable`, timings plus
        ``replica``, this replica's rank), and last its Result or Error.

        Cancelling the generator (the front end's ``response.cancel()``) sets the job's cancel flag: the engine
        stops at its next step, and the worker thread takes the next job only after that.
        """
        from ray import serve

        replica = float(serve.get_replica_context().rank.rank)
        warm = await self.warm(job.engine)  # multiplexed in the deployment
        loop = asyncio.get_running_loop()
        messages: asyncio.Queue[Message | None] = asyncio.Queue()
        cancel = threading.Event()
        preview_queued = threading.Event()

        def put(message: Message | None) -> None:  # worker thread
            loop.call_soon_threadsafe(messages.put_nowait, message)

        def progress(step: int, total: int, stage: Stage) -> None:
            put(Progress(job.request.job_id, step, total, stage))

        def deliver(variant: Variant) -> None:
            put(dataclasses.replace(variant, image=portable(variant.image), mask=portable(variant.mask),
                                    timings={**variant.timings, "replica": replica}))

        def send_preview(preview: Preview) -> None:
            preview_queued.set()
            put(dataclasses.replace(preview, image=portable(preview.image)))

        outlet = PreviewOutlet(lambda: not preview_queued.is_set(), send_preview) if job.previews else None
        remover = self.engines.get(job.remover) if job.remover else None
        future = loop.run_in_executor(self.worker, run_job, job.request, warm.engine, progress, cancel.is_set,
                                      deliver, job.queued_seconds, remover, outlet)
        future.add_done_callback(lambda _: messages.put_nowait(None))
        try:
            while (message := await messages.get()) is not None:
                if isinstance(message, Preview):
                    preview_queued.clear()
                yield message
            yield await future
        finally:
            cancel.set()  # cancelled (or the caller went): the engine stops at its next step


def deployment(engines: EnginesFactory, settings: RaySettings) -> Any:
    """The Ray Serve application of :class:`InpaintReplica` (``serve.run`` it): one replica per
    ``settings.gpus_per_replica`` GPUs, autoscaled between the settings' bounds, ``max_ongoing_requests`` 1, its
    pool ``@serve.multiplexed(max_num_models_per_replica=settings.models_per_replica)``.

    Imports Ray.
    """
    from ray import serve

    class Replica(InpaintReplica):
        # under the function's own name: Serve finds a method's self by it (serve._private.utils)
        warm = serve.multiplexed(max_num_models_per_replica=settings.models_per_replica)(InpaintReplica.warm)

    Replica.__name__ = Replica.__qualname__ = "InpaintReplica"
    resources: dict[str, float] = {"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica or 0.0}
    scaling: dict[str, Any] = ({"num_replicas": settings.max_replicas} if settings.min_replicas == settings.max_replicas
                               else {"autoscaling_config": {"min_replicas": settings.min_replicas,
                                                            "max_replicas": settings.max_replicas,
                                                            "target_ongoing_requests": 1}})
    return serve.deployment(name="InpaintReplica", ray_actor_options=resources, max_ongoing_requests=1,
                            **scaling)(Replica).bind(engines)


def app(args: dict[str, str]) -> Any:
    """The application builder of a serve config file (``import_path: gimp_inpaint.daemon.ray_backend:app``,
    ``docs/ray/serve-config.yaml``): :func:`deployment` of the engines and ``ray_*`` keys of the ``daemon.toml`` in
    ``args["config_dir"]`` (absent: the user's configuration folder), as on every node of the cluster; the serve
    config's ``deployments`` entry ``InpaintReplica`` may override its replicas and resources.

    Raises:
        daemon.config.ConfigError: that ``daemon.toml`` is unusable.
    """
    from pathlib import Path

    from .__main__ import build_engines
    from .config import load_settings

    folder = args.get("config_dir")
    settings = load_settings(Path(folder) if folder else None)
    return deployment(functools.partial(build_engines, settings), ray_settings(settings))


class ReplicaDied(Exception):
    """The replica running a job died (its actor, process or node is gone)."""


class RayBackend:
    """The server's worker for ``--backend ray`` (:class:`daemon.worker.Worker`'s interface): each job is a streaming
    request to the deployment (:func:`deployment`), read on one of :attr:`slots` front-end threads.

    Args:
        engines: every replica's engines (:data:`EnginesFactory`).
        settings: the cluster and the deployment's bounds.
        local_cpus: CPUs of a local Ray started here (``settings.address`` ``""``); None: Ray's count.
        app: the Serve application's name (:data:`APP_NAME`; another name deploys a second one beside it).
        runtime_env: a local Ray's ``runtime_env`` (e.g. ``{"env_vars": {"PYTHONPATH": …}}`` for the replicas to
            import an engines factory from outside the package); None: none.

    Attributes:
        slots: jobs the front end may have running at once: ``settings.max_replicas`` (one per replica).
    """

    def __init__(self, engines: EnginesFactory, settings: RaySettings, local_cpus: int | None = None,
                 app: str = APP_NAME, runtime_env: dict[str, Any] | None = None) -> None:
        import ray
        from ray import serve

        if not ray.is_initialized():
            ray.init(address=settings.address or None, num_cpus=None if settings.address else local_cpus,
                     include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
        if settings.gpus_per_replica is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU") else 0.0
            settings = dataclasses.replace(settings, gpus_per_replica=gpus)
        serve.start(proxy_location="Disabled")  # the front end is the daemon's WebSocket server: no HTTP proxy
        self.app = app
        self._deployed = settings.deploy
        self.handle = serve.run(deployment(engines, settings), name=app, route_prefix=None) if settings.deploy \
            else serve.get_app_handle(app)
        self.slots = settings.max_replicas
        self._threads = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="gimp-inpaint-ray")
        log.info("Ray Serve application %s: %d–%d replicas, %g GPU and %g CPU each, %d warm engines each",
                 APP_NAME, settings.min_replicas, settings.max_replicas, settings.gpus_per_replica,
                 settings.cpus_per_replica, settings.models_per_replica)

    def submit(self, request: InpaintRequest, engine: Engine, progress: StageProgress,
               cancelled: Callable[[], bool], deliver: VariantSink, queued_seconds: float, *,
               remover: Engine | None = None, previews: PreviewOutlet | None = None) -> Future[Result | Error]:
        """Run ``request`` on a replica (:meth:`run`) from a front-end thread; the future's result is never an
        exception (as :meth:`daemon.worker.Worker.submit`)."""
        job = RayJob(dataclasses.replace(request, image=portable(request.image), mask=portable(request.mask)),
                     engine.name, "" if remover is None else remover.name, queued_seconds, previews is not None)
        return self._threads.submit(self.run, job, progress, cancelled, deliver, previews)

    def run(self, job: RayJob, progress: StageProgress, cancelled: Callable[[], bool], deliver: VariantSink,
            previews: PreviewOutlet | None) -> Result | Error:
        """Stream ``job`` from a replica into the server's sinks, sending it again once if its replica died before
        it reported an inference step.

        Returns:
            The replica's Result or Error; CANCELLED once ``cancelled()`` was seen; JOB_FAILED "the Ray replica …
            died" when its replica died after its steps began (or on the second try); JOB_FAILED for another
            failure of Ray's.
        """
        job_id = quote(job.request.job_id)
        for attempt in (1, 2):
            started = [False]
            try:
                return self._stream(job, progress, cancelled, deliver, previews, started)
            except ReplicaDied as exc:
                if started[0] or attempt == 2:
                    log.warning("job %s: its Ray replica died: %s", job_id, exc)
                    return Error(ErrorCode.JOB_FAILED, f"the Ray replica running job {job_id} died ({exc}); the "
                                                       "daemon serves on: send the job again", job.request.job_id)
                log.warning("job %s: its Ray replica died before its steps began (%s); sending it again", job_id, exc)
            except Exception as exc:
                log.exception("job %s failed in Ray", job_id)
                return Error(ErrorCode.JOB_FAILED, f"Ray failed to run job {job_id}: {type(exc).__name__}: {exc}",
                             job.request.job_id)
        raise AssertionError("unreachable")  # the loop returns on its second attempt

    def _stream(self, job: RayJob, progress: StageProgress, cancelled: Callable[[], bool], deliver: VariantSink,
                previews: PreviewOutlet | None, started: list[bool]) -> Result | Error:
        """One try of :meth:`run`; sets ``started[0]`` once an inference step arrived.

        Raises:
            ReplicaDied: the replica's actor died or became unreachable.
        """
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
        from ray.serve.exceptions import RequestCancelledError

        response = cast("DeploymentResponseGenerator[Message]",
                        self.handle.options(stream=True, multiplexed_model_id=job.engine).run.remote(job))
        done = threading.Event()

        def watch() -> None:  # a Cancel (or a client gone) reaches the replica through the response
            while not done.wait(CANCEL_POLL):
                if cancelled():
                    response.cancel()
                    return

        watcher = threading.Thread(target=watch, name="gimp-inpaint-ray-cancel", daemon=True)
        watcher.start()
        try:
            for message in response:
                if isinstance(message, Progress):
                    started[0] = started[0] or message.stage is Stage.INFERENCE
                    progress(message.step, message.total, message.stage)
                elif isinstance(message, Variant):
                    deliver(dataclasses.replace(message, image=local(message.image), mask=local(message.mask)))
                elif isinstance(message, Preview):
                    if previews is not None and previews.ready():
                        previews.send(dataclasses.replace(message, image=local(message.image)))
                else:
                    return cast(Result | Error, message)
            raise RuntimeError("the replica's stream ended without a result")
        except (RequestCancelledError, asyncio.CancelledError, concurrent.futures.CancelledError):
            return Error(ErrorCode.CANCELLED, f"job {quote(job.request.job_id)} was cancelled", job.request.job_id)
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            if cancelled():
                return Error(ErrorCode.CANCELLED, f"job {quote(job.request.job_id)} was cancelled",
                             job.request.job_id)
            raise ReplicaDied(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        finally:
            done.set()
            watcher.join()

    models_here = False
    """The models load on the replicas, each into its multiplexed pool on its first job (:class:`JobRunner`)."""

    def call(self, function: Callable[[], None]) -> Future[None]:
        """Not for this backend: the front end's engines are descriptions, the models load on the replicas (the
        tray's load and unload, and ``preload``, do not apply). The future fails with RuntimeError."""
        future: Future[None] = Future()
        future.set_exception(RuntimeError("with the Ray backend the models load on the Ray replicas, on their "
                                          "first job (the multiplexed pool of each replica)"))
        return future

    def shutdown(self) -> None:
        """Stop taking jobs, wait for the running ones (cancelled first by the server) and delete the Serve
        application if this front end deployed it (the Ray cluster itself stays: a local one ends with this
        process)."""
        from ray import serve

        self._threads.shutdown(wait=True, cancel_futures=True)
        if self._deployed:  # not waiting for it: a local Ray that a Ctrl+C of the terminal also ended never answers
            serve.delete(self.app, _blocking=False)
