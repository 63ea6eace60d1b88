"""The daemon's WebSocket server: authentication, request validation, the job queue and replies.

One asyncio event loop talks to every client (``websockets.asyncio.server``); jobs run strictly
one at a time on the single worker thread of :class:`daemon.worker.Worker`, tokens taking turns (every connection
of one token shares its owner's turn: :class:`daemon.tokens.TokenBook`) and each connection's jobs in the order it
sent them (:class:`daemon.jobs.JobQueue`).
Progress events come back from that thread through ``loop.call_soon_threadsafe`` into the
client's outbox, a queue that one writer task drains, so a client receives Accepted, Progress…, Variant…
and Result in order. Each variant is encoded on the worker thread (a big frame never stalls the event loop
while it is packed), and the worker waits until the writer has sent it before it starts the next one. Previews
(:class:`protocol.Preview`, when a request asks for them) are encoded there too, but never waited for: a
connection holds at most one unsent preview, a later one is dropped meanwhile, and a preview of a job cancelled
before it was written is not sent.

Preload (``daemon.toml``'s ``preload``): once it listens, the server loads that engine on the worker thread
before the first job, so the first request finds it warm; meanwhile the handshake lists it as
:attr:`protocol.EngineInfo.warming_up`, the tray says "warming up", and requests wait in order behind the load.
A failed load is logged and shown as an error; the daemon serves on, the engine's load retried by its requests.

The tray's control panel (:mod:`daemon.control`) uses a few thread-safe methods: :meth:`DaemonServer.set_paused`
(a paused daemon refuses new requests with ``PAUSED``; the running and queued jobs finish),
:meth:`DaemonServer.call_on_worker` (a model's load or unload, between jobs, never beside one) and
:attr:`DaemonServer.activity` (the running job, the queue's length, the job that just ended), which the
``on_activity`` listener is also given whenever it changes.

Security: the server binds to ``127.0.0.1`` by default and serves plain ``ws://`` there; on any other address it
serves ``wss://`` only (TLS through websockets and :mod:`ssl`, the certificate from :mod:`daemon.tls`, whose
fingerprint clients pin), and plain ``ws://`` beyond loopback is refused at start
(:func:`daemon.config.transport_problem`). It refuses every handshake that carries an ``Origin`` header (browsers
always send one, so a web page cannot reach it: HTTP 403), and closes any connection whose first message is larger
than :data:`HELLO_MAX_BYTES` or is not a :class:`protocol.Hello` with a token of this daemon: the local one or a
named one (:mod:`daemon.tokens`), whose owner the log and the :class:`protocol.Welcome` name.

Limits (``docs/limits.md``): frames of :data:`HELLO_MAX_BYTES` until the Hello succeeds, then
:data:`FRAME_MARGIN` × :func:`protocol.max_frame_bytes`; at most ``max_handshakes`` connections not yet
authenticated and ``max_connections`` open ones (:func:`default_max_connections`), more refused ``BUSY``;
at most ``max_queued_jobs`` jobs waiting per connection, its unread results included, more refused ``BUSY``;
decoding bounded by :func:`protocol.decode`'s object, depth and length limits.

Errors: protocol errors are answered with their :class:`protocol.ErrorCode` and the connection
stays open; an unexpected exception in the server's own handling of a message (a bug) is logged
with its traceback and answered with ``INTERNAL``, and the connection stays open too (except
during the handshake: without a Welcome there is nothing to continue, so it is closed, code 1011).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any, cast

from gimp_inpaint.protocol import (
    PROTOCOL_VERSION,
    Accepted,
    Cancel,
    EngineInfo,
    Error,
    ErrorCode,
    Hello,
    InpaintRequest,
    Message,
    Preview,
    Progress,
    ProtocolError,
    Result,
    Stage,
    Variant,
    Welcome,
    decode,
    encode,
    max_frame_bytes,
    peek_job_id,
    quote,
)
from gimp_inpaint.protocol.codec import encode_fragments
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from .config import TOKEN_FILE, ConfigError, Settings, transport_problem
from .engines.base import Engine, EngineLoadError, JobCancelled, ModelState
from .jobs import CancelOutcome, DuplicateJob, Job, JobQueue, QueueFull
from .memory import release_free_memory
from .tls import ServerTLS, server_tls
from .tokens import TokenBook
from .worker import JobRunner, PreviewOutlet, Worker, check_request

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
"""Seconds a new connection has to send its :class:`Hello` before it is closed."""

HELLO_MAX_BYTES = 64 * 1024
"""Largest first frame (bytes) of a connection; a valid :class:`Hello` is a few hundred bytes
(its client name is capped at :data:`protocol.messages.MAX_CLIENT_NAME_CHARS` characters). It is the
connection's WebSocket ``max_size`` until its Hello succeeds, so a larger first frame is refused as its header
arrives (close code 1009, message too big), before its payload is read."""

MAX_HANDSHAKES = 16
"""Most connections at once that are open but not yet authenticated (in the HTTP upgrade or before their Hello);
another one is refused BUSY at once. At most as many refusals are in progress at once; beyond those, a new
connection is closed as soon as it is accepted, without a message (its file descriptor is all it costs)."""

MAX_CONNECTIONS = 256
"""Upper end of the default cap on open connections (:func:`default_max_connections`)."""

MAX_QUEUED_JOBS = 8
"""Most jobs one connection may have waiting, results it has not read included; another request is refused BUSY."""

SEND_POLL = 0.1
"""Seconds between the worker's checks for cancellation while it waits for a variant to be sent."""

FRAME_QUEUE = 2
"""Frames websockets reads ahead of the handler on one connection before it stops reading the socket (its
``max_queue``): what a connection buffers is at most this many frames plus the one being read."""

FRAME_MARGIN = 2
"""The WebSocket ``max_size`` is this × :func:`protocol.max_frame_bytes` of the pixel limit.

Every valid request fits in ``max_frame_bytes(max_pixels)``; reading frames up to twice that lets
:func:`protocol.decode` answer a request somewhat over the pixel limit with ``TOO_LARGE`` and keep
the connection, rather than websockets closing it with code 1009 (message too big)."""

DECODE_IN_THREAD_BYTES = 1 << 20
"""Frames of at least this many bytes (a request of about 460² pixels or more) are decoded on a thread
(``asyncio.to_thread``) rather than on the event loop, so that other clients' handshakes, progress and variants
flow meanwhile; the connection's next frame waits (its messages are handled in the order it sent them)."""

WRONG_TOKEN_MESSAGE = ("wrong token: the daemon's token is in the token file of its configuration folder, or is one "
                       "that `gimp-inpaint-daemon token add NAME` printed and that is not revoked; "
                       "`gimp-inpaint doctor` checks it.")
"""The UNAUTHORIZED message for a wrong token. Any local program may connect, so it does not name the file's path
(the user's home folder): the daemon's log does, with the refusal."""

StatusListener = Callable[[str, str], None]
"""Called as ``listener(state, text)`` on the event loop's thread; ``state``: ``"idle"``, ``"busy"`` (a job, or the
preload: ``text`` then starts with ``"warming up: "``) or ``"error"``."""

WARMING_UP_DETAIL = "warming up: loading at daemon start; a request waits until it is loaded"
"""The :attr:`protocol.EngineInfo.detail` of the engine being preloaded (:attr:`~protocol.EngineInfo.warming_up`)."""

REPLICAS_DETAIL = "the Ray replicas load it, each on its first job"
"""The end of an engine's :attr:`protocol.EngineInfo.detail` with the Ray backend, where its state is not known here."""

PAUSED_MESSAGE = ("the daemon is paused (Pause in its tray menu) and takes no new jobs; the jobs it had already "
                  "accepted still run")
"""The PAUSED error's message (:meth:`DaemonServer.set_paused`); the client adds what to do (``client.fill``)."""


@dataclass(frozen=True)
class RunningJob:
    """A job as :class:`Activity` names it: its engine and id."""

    engine: str
    job_id: str


@dataclass(frozen=True)
class JobEnd:
    """A job that has just ended (:attr:`Activity.ended`).

    Attributes:
        job: its engine and id.
        seconds: from its acceptance to its end, waiting in the queue included (``time.perf_counter``).
        error: None when it delivered its result, else the :class:`protocol.Error` that ended it (``CANCELLED``
            for a cancelled one).
    """

    job: RunningJob
    seconds: float
    error: Error | None = None


@dataclass(frozen=True)
class Activity:
    """What the daemon is doing (:attr:`DaemonServer.activity`): a snapshot made on the event loop's thread and
    replaced whole, so any thread may read it.

    Attributes:
        running: the job on the worker, or None.
        waiting: jobs queued behind it, all connections together.
        paused: new requests are refused (:meth:`DaemonServer.set_paused`).
        ended: the job whose end made this snapshot; None in every other one.
    """

    running: RunningJob | None = None
    waiting: int = 0
    paused: bool = False
    ended: JobEnd | None = None


ActivityListener = Callable[[Activity], None]
"""Called with the new :class:`Activity` on the event loop's thread each time a job is queued, starts, ends or is
cancelled while waiting, a connection's waiting jobs are dropped, or the daemon is paused or resumed."""


def default_max_connections() -> int:
    """The default cap on open connections: half the process's file-descriptor limit (``RLIMIT_NOFILE``, soft)
    less :data:`MAX_HANDSHAKES` refusals in progress, at most :data:`MAX_CONNECTIONS`, at least 1.

    The other half stays for model files, the log and libraries. Where ``resource`` does not exist (Windows) or
    the limit is unlimited, :data:`MAX_CONNECTIONS`.
    """
    try:
        import resource
    except ImportError:  # Windows
        return MAX_CONNECTIONS
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft // 2 - MAX_HANDSHAKES))


class RepeatLimiter:
    """Logs the first ``burst`` messages of each kind per ``window`` seconds, then only counts them; the next
    message of that kind after the window logs the count first (one line), so a flood of failing connections
    cannot flood the log.

    Args:
        logger: where the messages go.
        burst: messages of one kind logged per window.
        window: seconds (``time.monotonic``).
    """

    def __init__(self, logger: logging.Logger, burst: int = 5, window: float = 60.0) -> None:
        self.logger = logger
        self.burst = burst
        self.window = window
        self._kinds: dict[str, tuple[float, int, int]] = {}  # kind → (window start, logged, not logged)

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        """Log ``message % args`` at ``level`` unless ``burst`` messages of ``kind`` were logged in this window."""
        now = time.monotonic()
        start, logged, dropped = self._kinds.get(kind, (now, 0, 0))
        if now - start >= self.window:
            if dropped:
                self.logger.log(level, "%d more %s in %.0f s were not logged", dropped, kind, now - start)
            start, logged, dropped = now, 0, 0
        if logged < self.burst:
            self.logger.log(level, message, *args)
            logged += 1
        else:
            dropped += 1
        self._kinds[kind] = (start, logged, dropped)


class _Stage(enum.Enum):
    """Where an open connection is, for :class:`_Admission`."""

    HANDSHAKE = "handshake"
    """Accepted; no successful Hello yet."""
    AUTHENTICATED = "authenticated"
    """Its Hello succeeded."""
    REFUSED = "refused"
    """Over a cap: it is told BUSY and closed, without a frame read."""


class _Admission:
    """Counts the open connections by :class:`_Stage` and admits or refuses each one when it is accepted (TCP),
    before anything is read from it.

    Args:
        max_connections: most open connections (handshaking and authenticated).
        max_handshakes: most handshaking connections, and most refusals in progress.
        repeats: logs the refusals, rate-limited.
    """

    def __init__(self, max_connections: int, max_handshakes: int, repeats: RepeatLimiter) -> None:
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.counts: Counter[_Stage] = Counter()
        self._repeats = repeats

    def admit(self, connection: _CountedConnection) -> None:
        """Set the new connection's stage (and its BUSY message when refused), or abort it at once."""
        open_now = self.counts[_Stage.HANDSHAKE] + self.counts[_Stage.AUTHENTICATED]
        if open_now >= self.max_connections:
            connection.refusal = (f"the daemon has {open_now} connections open, its limit; close a client you no "
                                  "longer use (another GIMP window, a CLI run) or wait, then try again")
        elif self.counts[_Stage.HANDSHAKE] >= self.max_handshakes:
            connection.refusal = (f"{self.counts[_Stage.HANDSHAKE]} other connections are still starting, the "
                                  "daemon's limit; try again in a few seconds")
        else:
            connection.stage = _Stage.HANDSHAKE
        if connection.refusal and self.counts[_Stage.REFUSED] < self.max_handshakes:
            connection.stage = _Stage.REFUSED
        if connection.stage is None:
            self._repeats.log(logging.WARNING, "connections closed unanswered", "closed a connection at once: "
                              "%d refusals are already in progress (%s)", self.counts[_Stage.REFUSED],
                              connection.refusal)
            connection.transport.abort()
            return
        self.counts[connection.stage] += 1

    def authenticate(self, connection: _CountedConnection) -> None:
        """Move a handshaking connection to :attr:`_Stage.AUTHENTICATED` (its Hello succeeded)."""
        self.counts[_Stage.HANDSHAKE] -= 1
        self.counts[_Stage.AUTHENTICATED] += 1
        connection.stage = _Stage.AUTHENTICATED

    def release(self, connection: _CountedConnection) -> None:
        """Stop counting a connection that closed."""
        if connection.stage is not None:
            self.counts[connection.stage] -= 1
            connection.stage = None


class _CountedConnection(ServerConnection):
    """A websockets :class:`ServerConnection` that its :class:`_Admission` counts from TCP accept to close."""

    def __init__(self, admission: _Admission, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admission = admission
        self.stage: _Stage | None = None
        self.refusal = ""
        """The BUSY message of a connection over a cap (empty when admitted)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.admission.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.admission.release(self)
        super().connection_lost(exc)


@functools.cache
def daemon_version() -> str:
    """The installed gimp-inpaint version (package metadata, read once), or ``"unknown"`` when running from a bare
    checkout."""
    try:
        return metadata.version("gimp-inpaint")
    except metadata.PackageNotFoundError:
        return "unknown"


async def _one_per_turn(fragments: list[bytes | memoryview]) -> AsyncIterator[bytes | memoryview]:
    """``fragments`` for websockets' ``send``, one event-loop turn apart: websockets awaits the socket's drain after
    each fragment, which yields to the loop only while the socket's buffer is full, so on a socket that keeps up
    (loopback) it would frame and write the whole message in one turn (8–11 ms of the loop's CPU time at 4096²)."""
    for fragment in fragments:
        yield fragment
        await asyncio.sleep(0)


async def _read_message(websocket: ServerConnection) -> str | bytes | memoryview:
    """The next message of ``websocket``, read fragment by fragment (websockets' ``recv_streaming``; the daemon's
    client sends :data:`protocol.codec.FRAGMENT_BYTES` at a time), so that no event-loop turn handles more than a
    fragment.

    A binary message of one fragment is that ``bytes``. One of several grows a single ``bytearray``, each fragment
    appended as it arrives and dropped at once, and comes back as a read-only ``memoryview`` of it (which
    :func:`protocol.decode` with ``views`` reads without copying): the message then takes its own size in memory
    (plus ``bytearray``'s growth margin, at most an eighth; above :data:`daemon.memory.MMAP_THRESHOLD` glibc's
    ``realloc`` grows the mapping with ``mremap``, without a copy), where the fragments held until the end and then
    joined took twice its size at the join (issue 10's memory pair: 18.4 bytes a pixel at 4096² before). A text
    message (which the decoder refuses) comes back as its ``str``.

    Raises:
        ConnectionClosed: the connection ended.
    """
    fragments = websocket.recv_streaming()
    first = await anext(fragments)
    if isinstance(first, str):
        return first + "".join([cast(str, fragment) async for fragment in fragments])
    buffer: bytearray | None = None
    async for fragment in fragments:
        if buffer is None:
            buffer, first = bytearray(first), b""
        buffer += cast(bytes, fragment)
    return first if buffer is None else memoryview(buffer).toreadonly()


@dataclass(frozen=True)
class _Frame:
    """An encoded message for the outbox (a :class:`protocol.Variant` packed on the worker thread, as the fragments
    of :func:`protocol.codec.encode_fragments`), and the future the writer completes once the message is on the
    socket (or the connection is gone)."""

    data: list[bytes | memoryview]
    sent: concurrent.futures.Future[None]


@dataclass(frozen=True)
class _Preview:
    """An encoded :class:`protocol.Preview` for the outbox (packed on the worker thread), written unless its job's
    ``cancelled()`` is True by then."""

    data: bytes
    cancelled: Callable[[], bool]


@dataclass
class _Client:
    """One authenticated connection and its outgoing messages, in order."""

    id: int
    name: str
    owner: str
    """The owner of its token (:meth:`daemon.tokens.TokenBook.owner`): whose turn its jobs take."""
    websocket: ServerConnection
    outbox: asyncio.Queue[Message | _Frame | _Preview] = field(default_factory=asyncio.Queue)
    unread_results: int = 0
    """Results in :attr:`outbox` not yet written to the socket; they take places of the connection's job cap."""
    preview_unsent: bool = False
    """True from the moment a preview is queued until the writer has written it: meanwhile another is dropped."""


@dataclass(frozen=True)
class _Pending:
    """What a queued job carries: the request, its engine and when it was accepted (``time.perf_counter``)."""

    request: InpaintRequest
    engine: Engine
    accepted_at: float


class DaemonServer:
    """Serves ``engines`` over WebSocket until :meth:`stop`.

    Args:
        settings: host, port (0 = any free port), max_pixels and preload (an engine name, or ``""``) are used here.
        engines: the engines to offer, in the order the handshake lists them; names must be unique.
        token: the local token (:func:`daemon.config.ensure_token`), owner ``local``; a client's :class:`Hello`
            must carry it or a named token of ``settings.config_dir`` (:class:`daemon.tokens.TokenBook`).
        device: what :class:`protocol.Welcome` reports as the device (e.g. ``"cuda:0 (NVIDIA H100)"``).
        on_status: optional listener for the tray icon (:data:`StatusListener`).
        on_activity: optional listener for the tray's menu (:data:`ActivityListener`).
        max_connections: most open connections (None: :func:`default_max_connections`); more are refused BUSY.
        max_handshakes: most connections not yet authenticated (:data:`MAX_HANDSHAKES`); more are refused BUSY.
        max_queued_jobs: most jobs waiting per connection, unread results included (:data:`MAX_QUEUED_JOBS`);
            more are refused BUSY.
        backend: where jobs run: None, this machine's :class:`daemon.worker.Worker` (one at a time, made by
            :meth:`serve`); or a :class:`daemon.worker.JobRunner` such as :class:`daemon.ray_backend.RayBackend`,
            which runs up to its ``slots`` jobs at once (the queue still takes turns; :meth:`serve` shuts it down).

    Attributes:
        fingerprint: the SHA-256 fingerprint of the certificate it serves ``wss://`` with
            (:attr:`daemon.config.Settings.serves_tls`), None for plain ``ws://``.

    Raises:
        ValueError: two engines share a name, or there is none; a cap is below 1.
        ConfigError: ``settings`` cannot serve (:func:`daemon.config.transport_problem`: plain ``ws://`` beyond
            loopback), or its TLS certificate cannot be made or loaded (:func:`daemon.tls.server_tls`).
    """

    def __init__(self, settings: Settings, engines: Sequence[Engine], token: str, *, device: str = "cpu",
                 on_status: StatusListener | None = None, on_activity: ActivityListener | None = None,
                 max_connections: int | None = None,
                 max_handshakes: int = MAX_HANDSHAKES, max_queued_jobs: int = MAX_QUEUED_JOBS,
                 backend: JobRunner | None = None) -> None:
        names = [engine.name for engine in engines]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"engines need distinct names, got {names}")
        max_connections = default_max_connections() if max_connections is None else max_connections
        if min(max_connections, max_handshakes) < 1:
            raise ValueError(f"connection caps must be ≥ 1, got {max_connections} and {max_handshakes}")
        if (problem := transport_problem(settings)) is not None:
            raise ConfigError(problem)
        self.settings = settings
        self.engines = {engine.name: engine for engine in engines}
        self.device = device
        self.url: str | None = None
        self._tls: ServerTLS | None = server_tls(settings) if settings.serves_tls else None
        self.fingerprint = None if self._tls is None else self._tls.fingerprint
        self._tokens = TokenBook(settings.config_dir, token)
        self._on_status = on_status or (lambda state, text: None)
        self._on_activity = on_activity or (lambda activity: None)
        self.activity = Activity()
        """The latest :class:`Activity` (read it from any thread)."""
        self._paused = False
        self._backend = backend
        self._worker: JobRunner | None = None
        self._queue: JobQueue[int, _Pending] = JobQueue(max_queued_jobs, 1 if backend is None else backend.slots)
        self._repeats = RepeatLimiter(log)
        self._admission = _Admission(max_connections, max_handshakes, self._repeats)
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._stop_event = asyncio.Event()  # asyncio events bind to the loop that first waits on them
        self._wake = asyncio.Event()
        self._warming = ""
        """The name of the engine being preloaded (``settings.preload``) until its load ends; ``""`` otherwise."""

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def serve(self, on_listening: Callable[[str], None] | None = None) -> None:
        """Listen, serve clients and run jobs until :meth:`stop` is called.

        Args:
            on_listening: called once with the URL (``ws://HOST:PORT``, or ``wss://`` with TLS; the real port when
                0 was asked) as soon as connections are accepted.

        With ``settings.preload``, that engine loads on the worker thread as soon as connections are accepted,
        before any job (the module's docstring says what clients see meanwhile).

        Returns once the running job (cancelled first) has ended; the event loop keeps running
        meanwhile (the worker thread is joined in another thread), so signal handlers still work.

        Raises:
            OSError: the address cannot be bound (e.g. the port is in use).
        """
        self._loop = asyncio.get_running_loop()
        if self._stop_requested:
            self._stop_event.set()
        worker = self._worker = Worker() if self._backend is None else self._backend
        try:
            # websockets types serve() for plain ServerConnections: its create_connection as a class (it documents
            # "a wrapper or a subclass"), its handler as taking any; each connection here is a _CountedConnection
            handler = cast(Callable[[ServerConnection], Awaitable[None]], self._handle)
            create_connection = cast(type[ServerConnection], functools.partial(_CountedConnection, self._admission))
            async with serve(handler, self.settings.host, self.settings.port, compression=None, origins=[None],
                             max_size=HELLO_MAX_BYTES, max_queue=FRAME_QUEUE,
                             ssl=None if self._tls is None else self._tls.context,
                             create_connection=create_connection) as server:
                port = server.sockets[0].getsockname()[1]
                self.url = f"{'ws' if self._tls is None else 'wss'}://{self.settings.host}:{port}"
                log.info("listening on %s with engines %s", self.url, ", ".join(self.engines))
                self._start_warming_up()
                dispatcher = asyncio.create_task(self._dispatch(self._loop, worker))
                if on_listening is not None:
                    on_listening(self.url)
                await self._stop_event.wait()
                log.info("stopping")
                for running in self._queue.running_jobs:
                    running.cancel()
                dispatcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dispatcher
        finally:
            await asyncio.to_thread(worker.shutdown)  # a job's load() cannot be interrupted: wait off the loop

    def stop(self) -> None:
        """Ask :meth:`serve` to return (thread-safe; also before it started, then it returns at once)."""
        self._stop_requested = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: serve() has returned
                self._loop.call_soon_threadsafe(self._stop_event.set)

    @property
    def paused(self) -> bool:
        """True while new requests are refused (:meth:`set_paused`)."""
        return self._paused

    def set_paused(self, paused: bool) -> None:
        """Pause (refuse every new request with ``PAUSED`` and :data:`PAUSED_MESSAGE`; the running job and those
        already queued run on) or resume. Thread-safe: the new :attr:`activity` is published on the event loop
        (at once when it does not run)."""
        if paused == self._paused:
            return
        self._paused = paused
        log.info("paused: new jobs are refused" if paused else "resumed: new jobs are taken again")
        if self._loop is None:
            self._publish()
        else:
            with contextlib.suppress(RuntimeError):  # the loop already closed: nobody is listening
                self._loop.call_soon_threadsafe(self._publish)

    @property
    def models_here(self) -> bool:
        """Whether loading or unloading one of :attr:`engines` changes what the next job finds
        (:attr:`daemon.worker.JobRunner.models_here`): True for this machine's worker, False for the Ray backend."""
        return self._backend is None or self._backend.models_here

    def call_on_worker(self, function: Callable[[], None]) -> concurrent.futures.Future[None]:
        """Run ``function()`` on the worker thread after the job it runs now, never beside one, before the next job
        starts (:meth:`daemon.worker.Worker.call`); thread-safe. Its exception is the future's.

        Raises:
            RuntimeError: the daemon is not serving (not started, or its worker shut down).
        """
        if self._worker is None:
            raise RuntimeError("the daemon is not serving yet")
        return self._worker.call(function)

    def _publish(self, ended: JobEnd | None = None) -> None:
        """Make the new :attr:`activity` from the queue (event loop thread) and hand it to the listener."""
        running = self._queue.running
        self.activity = Activity(None if running is None else RunningJob(running.payload.engine.name, running.job_id),
                                 len(self._queue), self._paused, ended)
        try:
            self._on_activity(self.activity)
        except Exception:
            log.exception("activity listener failed")

    def _start_warming_up(self) -> None:
        """Mark ``settings.preload``'s engine as warming up (the dispatcher loads it before the first job) and set
        the first status: idle, warming up, or an error for a preload that names no engine of this daemon (the
        configuration checks names, but the default model exists only where diffusers is installed)."""
        name = self.settings.preload
        if not name:
            self._status("idle", "")
        elif name not in self.engines:
            log.error("cannot preload %s: this daemon has no engine of that name (its engines: %s)", name,
                      ", ".join(self.engines))
            self._status("error", f"cannot preload {name}: no such engine")
        else:
            self._warming = name
            self._status("busy", f"warming up: loading {name}")

    async def _warm_up(self, loop: asyncio.AbstractEventLoop, worker: JobRunner) -> None:
        """Load the preloaded engine (:meth:`_start_warming_up`) on the worker thread, reporting downloads to the
        status; a failure is logged and shown as an error status, and the daemon serves on (the engine's
        :meth:`~daemon.engines.base.Engine.info` then says why, and each request retries the load)."""
        engine = self.engines[self._warming]
        started = time.perf_counter()
        shown = -1

        def progress(stage: str, step: int, total: int) -> None:  # worker thread
            nonlocal shown
            percent = 100 * step // total if stage == "download" and total > 0 else -1
            if percent != shown:
                shown = percent
                text = f"downloading {engine.name}, {percent} %" if percent >= 0 else f"loading {engine.name}"
                loop.call_soon_threadsafe(self._status, "busy", f"warming up: {text}")

        log.info("warming up: loading %s", engine.name)
        try:
            await asyncio.wrap_future(worker.call(lambda: engine.load(progress)))
        except EngineLoadError as exc:
            log.error("warming up %s failed: %s", engine.name, exc)
            self._status("error", f"warming up {engine.name} failed: {exc}")
        except Exception as exc:
            log.exception("warming up %s failed", engine.name)
            self._status("error", f"warming up {engine.name} failed: {type(exc).__name__}: {exc}")
        else:
            log.info("warmed up %s in %.2f s", engine.name, time.perf_counter() - started)
            self._status("idle", "")
        finally:
            self._warming = ""

    def _engine_info(self, engine: Engine) -> EngineInfo:
        """``engine.info()`` with the engine's :meth:`~daemon.engines.base.Engine.model_state` as its
        :attr:`~protocol.EngineInfo.state`, marked :attr:`~protocol.EngineInfo.warming_up` (and, while available,
        its detail :data:`WARMING_UP_DETAIL`) while it is preloaded. Where the jobs do not run on this process's
        models (:attr:`models_here` false: the Ray backend) a model's state is unknown here (``""``), and its detail
        says that the replicas load it."""
        state = engine.model_state()
        info = replace(engine.info(), state=state.value)
        if not self.models_here and state is not ModelState.BUILT_IN:
            info = replace(info, state="", detail=f"{info.detail.rstrip('.')}; {REPLICAS_DETAIL}" if info.detail
                           else REPLICAS_DETAIL)
        if engine.name != self._warming:
            return info
        return replace(info, warming_up=True, detail=WARMING_UP_DETAIL if info.available else info.detail)

    def _status(self, state: str, text: str) -> None:
        try:
            self._on_status(state, text)
        except Exception:
            log.exception("status listener failed")

    # -- connections -----------------------------------------------------------------------------------------------

    async def _handle(self, websocket: _CountedConnection) -> None:
        """One connection: handshake, then requests until it closes; its jobs are cancelled when it goes.

        A connection over a cap (:class:`_Admission`) is answered BUSY and closed with code 1013 (try again
        later) instead, after its first frame (at most :data:`HELLO_MAX_BYTES`, not decoded), so that a client
        that sends its Hello and then reads gets the message rather than a closed connection.
        """
        if websocket.stage is _Stage.REFUSED:
            self._repeats.log(logging.WARNING, "busy refusals", "refused a connection from %s: %s",
                              websocket.remote_address, websocket.refusal)
            with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
                await asyncio.wait_for(websocket.recv(), HELLO_TIMEOUT)
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(encode(Error(ErrorCode.BUSY, websocket.refusal)))
                await websocket.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.BUSY.value)
            return
        client = await self._handshake(websocket)
        if client is None:
            return
        self._clients[client.id] = client
        writer = asyncio.create_task(self._write(client))
        try:
            while True:
                frame = await _read_message(websocket)
                await self._receive(client, frame)
                del frame  # a request's frame (up to ~84 MB, its planes' memory) goes with its job, not this loop
        except ConnectionClosed:
            pass
        finally:
            del self._clients[client.id]
            dropped = self._queue.drop_owner(client.id)
            if dropped or any(running.owner == client.id for running in self._queue.running_jobs):
                log.info("connection %d (%s) closed; cancelled its jobs", client.id, quote(client.name))
            if dropped:
                self._publish()
            writer.cancel()  # the peer is gone: nothing left in the outbox can be delivered
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer
            while not client.outbox.empty():  # a variant the worker waits on: it is dropped, not sent
                item = client.outbox.get_nowait()
                if isinstance(item, _Frame):
                    item.sent.set_result(None)

    async def _handshake(self, websocket: _CountedConnection) -> _Client | None:
        """Read the Hello; reply Welcome, or Error and close (returns None).

        A first frame over :data:`HELLO_MAX_BYTES` is refused by websockets as its header arrives (close code
        1009). Refused with Error and close code 1008: a first frame that is not a
        :class:`Hello` (UNAUTHORIZED), a malformed one (its :class:`ProtocolError` code), a token that is neither
        the local one nor a named one not revoked (UNAUTHORIZED), another protocol version (VERSION_MISMATCH). A
        failure to build the Welcome (a bug, e.g. an engine's ``info()`` raising) is answered INTERNAL, close code
        1011.
        """
        try:
            frame = await asyncio.wait_for(websocket.recv(), HELLO_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionClosed):
            return None
        try:
            hello = decode(frame, self.settings.max_pixels)
            if not isinstance(hello, Hello):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "the first message must be a hello carrying the token")
            owner = self._tokens.owner(hello.token)
            if owner is None:
                raise ProtocolError(ErrorCode.UNAUTHORIZED, WRONG_TOKEN_MESSAGE)
            if hello.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(ErrorCode.VERSION_MISMATCH,
                                    f"the client speaks protocol {hello.protocol_version}, this daemon "
                                    f"{PROTOCOL_VERSION}; install the same gimp-inpaint version for both")
        except ProtocolError as exc:
            # the token's path (the user's home) goes to the log only, not to whoever connected
            token_file = f"; the daemon's token file is {self.settings.config_dir / TOKEN_FILE}" \
                if exc.code is ErrorCode.UNAUTHORIZED else ""
            self._repeats.log(logging.WARNING, "refused handshakes", "refused a connection from %s: %s%s",
                              websocket.remote_address, exc, token_file)
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(encode(Error(exc.code, exc.message)))
                await websocket.close(1008, exc.code.value)
            return None
        client = _Client(id=next(self._ids), name=hello.client or "client", owner=owner, websocket=websocket)
        try:
            welcome = Welcome(protocol_version=PROTOCOL_VERSION, daemon_version=daemon_version(), device=self.device,
                              engines=[self._engine_info(engine) for engine in self.engines.values()],
                              max_pixels=self.settings.max_pixels, token_owner=owner)
        except Exception as exc:  # a bug (e.g. in an engine's info()): tell the client, keep serving others
            log.exception("connection %d (%s): cannot answer its hello", client.id, quote(client.name))
            with contextlib.suppress(ConnectionClosed):
                await websocket.send(encode(Error(ErrorCode.INTERNAL, self._bug_report("the hello", exc))))
                await websocket.close(1011, ErrorCode.INTERNAL.value)
            return None
        self._admission.authenticate(websocket)
        websocket.protocol.max_message_size = FRAME_MARGIN * max_frame_bytes(self.settings.max_pixels)
        try:
            await websocket.send(encode(welcome))
        except ConnectionClosed:
            return None
        log.info("connection %d: %s, token %s, from %s", client.id, quote(client.name), owner,
                 websocket.remote_address)
        return client

    def _bug_report(self, what: str, exc: Exception) -> str:
        """The INTERNAL error message for an unexpected exception ``exc`` while handling ``what`` (e.g. "the hello")."""
        return (f"the daemon hit a bug while handling {what} ({type(exc).__name__}: {exc}); "
                f"details are in its log, {self.settings.log_file}")

    @staticmethod
    async def _write(client: _Client) -> None:
        """Send the client's outbox in order, until cancelled or the connection closes; a :class:`_Frame`'s future
        is completed once it is sent, or when the connection fails."""
        while True:
            item = await client.outbox.get()
            if isinstance(item, _Frame):
                try:
                    await client.websocket.send(_one_per_turn(item.data))  # waits while the socket is full
                finally:
                    item.sent.set_result(None)
            elif isinstance(item, _Preview):
                try:
                    if not item.cancelled():  # cancelled after it was queued: never sent
                        await client.websocket.send(item.data)
                finally:
                    client.preview_unsent = False
            else:
                await client.websocket.send(encode(item))
                if isinstance(item, Result):
                    client.unread_results -= 1
            del item  # a sent variant's frame is not held while the next one is generated

    def _send(self, owner: int, message: Message | _Frame) -> None:
        """Queue ``message`` for the client ``owner`` (dropped if it has gone, a frame's future completed).
        Event loop thread only."""
        client = self._clients.get(owner)
        if client is None:
            if isinstance(message, _Frame):
                message.sent.set_result(None)
            return
        client.outbox.put_nowait(message)
        if isinstance(message, Result):
            client.unread_results += 1

    def _send_preview(self, owner: int, preview: _Preview) -> None:
        """Queue ``preview`` for the client ``owner`` unless it has gone, its job is cancelled, or it has not yet been
        sent the previous one (then it is dropped, not queued: a slow client never backs the daemon up). Event loop
        thread only."""
        client = self._clients.get(owner)
        if client is None or client.preview_unsent or preview.cancelled():
            return
        client.preview_unsent = True
        client.outbox.put_nowait(preview)

    def remover(self) -> Engine | None:
        """The removal engine that pre-fills a prompt engine's hole in the ``remove`` fill mode
        (:func:`daemon.worker.run_job`): the first engine in handshake order that is available and takes no prompt
        (``migan``, which itself fills with OpenCV while its weights cannot be had, else ``opencv``); None when
        there is none. Asked per job: an engine's availability can change while the daemon runs."""
        return next((engine for engine in self.engines.values()
                     if not (info := engine.info()).uses_prompt and info.available), None)

    # -- requests --------------------------------------------------------------------------------------------------

    async def _receive(self, client: _Client, frame: str | bytes | memoryview) -> None:
        """Handle one message after the handshake (:func:`_read_message`); errors are answered and the connection
        stays open.

        A frame of :data:`DECODE_IN_THREAD_BYTES` or more is decoded on a thread (``asyncio.to_thread``). A
        request's planes are views of its frame (:func:`protocol.decode`'s ``views``): decoding copies nothing, so it
        holds the GIL, and with it the event loop, about a millisecond whatever the request's size (copying a 4096²
        request's planes held it 45–80 ms, a thread or not).

        A :class:`ProtocolError` is answered with its code, and with the job id of a request that did not
        decode whenever :func:`protocol.peek_job_id` can read it; any other exception is a bug in the
        daemon: logged with its traceback and answered INTERNAL (with the job id when known).
        """
        message: Message | None = None
        big = len(frame) >= DECODE_IN_THREAD_BYTES
        try:  # a text frame is BAD_MESSAGE too
            if big:
                message = await asyncio.to_thread(decode, frame, self.settings.max_pixels, views=True)
            else:
                message = decode(frame, self.settings.max_pixels, views=True)
            if isinstance(message, InpaintRequest):
                self._submit(client, message)
            elif isinstance(message, Cancel):
                self._cancel(client, message.job_id)
            else:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, f"a client may not send {message.type!r} here")
        except ProtocolError as exc:
            job_id = peek_job_id(frame) if message is None else None
            log.info("connection %d: %s%s", client.id, "" if job_id is None else f"job {quote(job_id)}: ", exc)
            self._send(client.id, Error(exc.code, exc.message, job_id))
        except Exception as exc:
            what = "a message" if message is None else f"the {message.type!r} message"
            log.exception("connection %d: handling %s failed", client.id, what)
            job_id = message.job_id if isinstance(message, InpaintRequest | Cancel) else None
            self._send(client.id, Error(ErrorCode.INTERNAL, self._bug_report(what, exc), job_id))

    def _submit(self, client: _Client, request: InpaintRequest) -> None:
        """Validate and queue an inpaint request; reply Accepted or Error with the job id.

        An engine whose :meth:`~daemon.engines.base.Engine.info` says unavailable is still queued: its
        load is retried on the worker (a model downloaded meanwhile then works) and a failure comes back
        as ENGINE_UNAVAILABLE from :func:`daemon.worker.run_job`.
        """
        try:
            if self._paused:
                raise ProtocolError(ErrorCode.PAUSED, PAUSED_MESSAGE)
            engine = self.engines.get(request.options.engine)
            if engine is None:
                raise ProtocolError(ErrorCode.UNKNOWN_ENGINE, f"no engine {quote(request.options.engine)}; this "
                                                              f"daemon offers {', '.join(self.engines)}")
            check_request(request)
            try:
                _, position = self._queue.add(client.id, request.job_id,
                                              _Pending(request, engine, time.perf_counter()), client.unread_results,
                                              turn=client.owner)
            except DuplicateJob as exc:
                raise ProtocolError(ErrorCode.INVALID_REQUEST, str(exc)) from None
            except QueueFull as exc:
                raise ProtocolError(ErrorCode.BUSY, f"this connection already has {exc.limit} jobs waiting or "
                                                    "results not yet read, the daemon's limit per connection; "
                                                    "wait for a result (or cancel a job), then send this one "
                                                    "again") from None
        except ProtocolError as exc:
            self._send(client.id, Error(exc.code, exc.message, request.job_id))
            return
        options = request.options
        log.info("connection %d: job %s on %s, %d×%d, %d variant(s), scheduler %s, LoRAs %s, refiner %.2f, "
                 "position %d", client.id, quote(request.job_id), engine.name, request.image.width,
                 request.image.height, options.num_variants, options.scheduler,
                 quote(options.loras) if options.loras else "none", options.refiner_strength, position)
        self._send(client.id, Accepted(request.job_id, position))
        self._publish()
        self._wake.set()

    def _cancel(self, client: _Client, job_id: str) -> None:
        """Cancel a job of this client: a waiting one ends now, a running one at the engine's next step."""
        outcome = self._queue.cancel(client.id, job_id)
        log.info("connection %d: cancel %s → %s", client.id, quote(job_id), outcome.value)
        if outcome is CancelOutcome.REMOVED:
            self._send(client.id, Error(ErrorCode.CANCELLED, f"job {quote(job_id)} was cancelled", job_id))
            self._publish()

    # -- jobs ------------------------------------------------------------------------------------------------------

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, worker: JobRunner) -> None:
        """Warm the preloaded engine up, if any (:meth:`_warm_up`), then run queued jobs one at a time, forever
        (until cancelled by :meth:`serve`); with a backend of several ``slots``, up to that many at once, each in
        its own task."""
        if self._warming:
            await self._warm_up(loop, worker)
        if worker.slots > 1:
            return await self._dispatch_many(loop, worker)
        while True:
            job = self._queue.pop()
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._run(loop, worker, job)
            del job  # the request's planes go now …
            await asyncio.to_thread(release_free_memory)  # … and the allocator hands its free pages back

    async def _dispatch_many(self, loop: asyncio.AbstractEventLoop, worker: JobRunner) -> None:
        """:meth:`_dispatch` for ``worker.slots`` > 1: start a task per job while a slot is free; a task that ends
        wakes this loop for the next job. Cancelled by :meth:`serve`, it cancels the tasks it started."""
        tasks: set[asyncio.Task[None]] = set()

        def ended(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            self._wake.set()

        try:
            while True:
                job = self._queue.pop() if len(self._queue.running_jobs) < worker.slots else None
                if job is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                task = asyncio.create_task(self._run(loop, worker, job))
                tasks.add(task)
                task.add_done_callback(ended)
                del job
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, loop: asyncio.AbstractEventLoop, worker: JobRunner, job: Job[int, _Pending]) -> None:
        """Run one job on the worker thread and send its Result or Error to its owner.

        :func:`daemon.worker.run_job` turns every failure of the job into an Error; should the
        worker itself raise (a bug), the job is answered INTERNAL and the next job still runs.
        """
        pending = job.payload
        owner, job_id = job.owner, job.job_id
        waiting = len(self._queue)
        self._status("busy", f"{pending.engine.name}: job {job_id}" + (f", {waiting} waiting" if waiting else ""))
        self._publish()

        def progress(step: int, total: int, stage: Stage) -> None:  # worker thread
            loop.call_soon_threadsafe(self._send, owner, Progress(job_id, step, total, stage))

        def deliver(variant: Variant) -> None:  # worker thread: pack here, send on the loop, wait until sent
            frame = _Frame(encode_fragments(variant), concurrent.futures.Future())
            loop.call_soon_threadsafe(self._send, owner, frame)
            while True:
                try:
                    return frame.sent.result(SEND_POLL)
                except concurrent.futures.TimeoutError:
                    if job.cancelled():  # the client went or cancelled while its socket was full
                        raise JobCancelled(f"job {quote(job_id)} cancelled while its result was sent") from None

        def preview_ready() -> bool:  # worker thread: reads the loop's flag; a stale answer costs one preview
            client = self._clients.get(owner)
            return client is not None and not client.preview_unsent

        def send_preview(preview: Preview) -> None:  # worker thread: pack here, queue on the loop, never wait
            loop.call_soon_threadsafe(self._send_preview, owner, _Preview(encode(preview), job.cancelled))

        started = time.perf_counter()
        try:
            outcome: Result | Error = await asyncio.wrap_future(worker.submit(
                pending.request, pending.engine, progress, job.cancelled, deliver, started - pending.accepted_at,
                remover=self.remover(), previews=PreviewOutlet(preview_ready, send_preview)))
        except Exception as exc:
            log.exception("job %s: the worker failed", quote(job_id))
            outcome = Error(ErrorCode.INTERNAL, self._bug_report(f"job {quote(job_id)}", exc), job_id)
        finally:
            self._queue.finish(job)
        self._send(owner, outcome)
        self._publish(JobEnd(RunningJob(pending.engine.name, job_id), time.perf_counter() - pending.accepted_at,
                             outcome if isinstance(outcome, Error) else None))
        if isinstance(outcome, Error) and outcome.code is not ErrorCode.CANCELLED:
            log.warning("job %s failed: %s: %s", quote(job_id), outcome.code, outcome.message)
            self._status("error", f"last job failed: {outcome.message}")
        else:
            log.info("job %s: %s in %.2f s", quote(job_id), "cancelled" if isinstance(outcome, Error) else "done",
                     time.perf_counter() - started)
            self._status("idle", "")
