"""Synchronous WebSocket client of the gimp-inpaint daemon, shared by the GIMP plug-in and the command line.

Vendored into the GIMP plug-in, so it imports only the standard library, :mod:`protocol` (and through it
``msgpack``) and ``websockets`` (its threading client, ``websockets.sync.client.connect``; no asyncio).

Typical use::

    with InpaintClient.connect(DEFAULT_URL, token, "my-tool/1.0") as client:
        engine = pick_engine(client.welcome, "")
        variants = client.inpaint(InpaintRequest(job_id="1", x=0, y=0, image=..., mask=...,
                                                 options=FillOptions(engine=engine, prompt="a cat")),
                                  on_progress=lambda step, total, stage: print(stage, step, total))
"""

from __future__ import annotations

import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import NamedTuple
from urllib.parse import urlsplit

from gimp_inpaint.protocol import (
    DEFAULT_MAX_PIXELS,
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
    max_frame_bytes,
)
from gimp_inpaint.protocol.codec import encode_fragments
from gimp_inpaint.protocol.fingerprint import certificate_fingerprint, normalize_fingerprint
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

DEFAULT_URL = "ws://127.0.0.1:7869"
"""Where ``gimp-inpaint-daemon`` listens unless configured otherwise."""


DAEMON_COMMAND = "gimp-inpaint-daemon"
"""The console script that starts the daemon, named in every "cannot reach the daemon" message."""

ProgressCallback = Callable[[int, int, Stage], None]
"""``on_progress(step, total, stage)``: ``step`` of ``total`` units of ``stage`` done, one call per
:class:`protocol.Progress`: :attr:`protocol.Stage.DOWNLOAD` counts bytes of model files, ``LOAD`` comes once as
``(0, 0)`` when a model starts loading, ``INFERENCE`` counts denoising steps × variants."""

PreviewCallback = Callable[[Preview], None]
"""``on_preview(preview)``: one call per :class:`protocol.Preview` of the job (checked: the size
:meth:`protocol.InpaintRequest.preview_dimensions` gives, a step of the job), in the order they came; none after a
cancel. The daemon sends them only when the request's ``preview_every`` asks, and drops some rather than queue them
while the client reads slowly, so a callback that takes long gets fewer, never stale ones."""

# CancelCheck also exists in daemon.engines.base for the engines; this module is vendored into the
# plug-in, which has no daemon package, so it cannot import it from there.

CancelCheck = Callable[[], bool]
"""``should_cancel()``: polled every ``poll_interval`` seconds while a job runs; True cancels it."""


class ClientError(Exception):
    """Base of the client's expected failures; :attr:`message` is meant for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonUnavailable(ClientError):
    """The daemon cannot be reached, did not answer in time, or dropped the connection.

    The message names the URL tried and tells the user to start ``gimp-inpaint-daemon``.
    """


class DaemonNotRunning(DaemonUnavailable):
    """Nothing listens at the daemon's address (the connection was refused): the daemon is not running, so
    :func:`connect_or_start` may start it."""


class DaemonError(ClientError):
    """The daemon answered with an :class:`protocol.Error` (or sent something this client cannot use).

    Attributes:
        code: the :class:`protocol.ErrorCode` (``UNAUTHORIZED``, ``CANCELLED``, ``OUT_OF_MEMORY``, …).
        message: the daemon's explanation, meant for the user.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class ConnectionConfigError(ClientError):
    """The client's connection settings (``connection.json``, the URL) are missing or malformed.

    Not to be confused with :class:`daemon.config.ConfigError`, the daemon's error for its own
    ``daemon.toml``: this module is vendored into the plug-in without the daemon package, so its
    errors derive from :class:`ClientError` only.
    """


class CertificateChanged(ClientError):
    """The daemon at a ``wss://`` URL presented a certificate other than the one pinned for it; nothing was sent.

    Attributes:
        seen: the SHA-256 fingerprint of the certificate it presented.
        pinned: the fingerprint pinned for it (``connection.json``, ``--fingerprint``).
    """

    def __init__(self, url: str, seen: str, pinned: str) -> None:
        super().__init__(
            f"The daemon at {url} presented a TLS certificate with the SHA-256 fingerprint {seen}, not the pinned "
            f"{pinned}; nothing was sent to it. Either the daemon has a new certificate (its tls-certificate.pem "
            f"was deleted or its tls_certificate changed: it prints its fingerprint when it starts, `listening on "
            f"wss://… (certificate SHA-256 …)`), or something else answers at that address. Only when the "
            f"daemon's own fingerprint is {seen}, pin it anew with `gimp-inpaint connect {url} --token TOKEN "
            f"--reset-fingerprint`.")
        self.seen = seen
        self.pinned = pinned


def _not_a_websocket_url(url: str, reason: str) -> ConnectionConfigError:
    return ConnectionConfigError(f"“{url}” is not a WebSocket URL such as {DEFAULT_URL}: {reason}.")


def check_url(url: str) -> str:
    """Check that ``url`` is a WebSocket URL a client can connect to: scheme ``ws`` or ``wss``, a host, a port
    from 1 to 65535 when it gives one (without one: 80 for ``ws``, 443 for ``wss``), and whatever else websockets
    requires (``websockets.uri.parse_uri``: no ``#fragment``, a password with a user name, an IDNA host name).

    Returns:
        ``url``, unchanged.

    Raises:
        ConnectionConfigError: it is not; the message quotes ``url`` and says what is wrong, on one line.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL": an unclosed or misplaced bracket
        raise _not_a_websocket_url(url, "the host is malformed") from None
    if parts.scheme not in ("ws", "wss"):
        raise _not_a_websocket_url(url, "the scheme must be ws:// or wss://")
    if not parts.hostname:
        raise _not_a_websocket_url(url, "it names no host")
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        port = 0
    if port == 0:
        raise _not_a_websocket_url(url, "the port must be a whole number from 1 to 65535")
    try:
        parse_uri(url)
    except InvalidURI as exc:
        raise _not_a_websocket_url(url, exc.msg) from None
    except UnicodeError:  # from the IDNA encoding of a non-ASCII host name
        raise _not_a_websocket_url(url, "the host is not a valid domain name") from None
    return url


def _unreachable(url: str, reason: str, kind: type[DaemonUnavailable] = DaemonUnavailable) -> DaemonUnavailable:
    return kind(
        f"Cannot reach the gimp-inpaint daemon at {url} ({reason}). "
        f"Start it with `{DAEMON_COMMAND}` and try again."
    )


def pinning_context() -> ssl.SSLContext:
    """The client's TLS context for a ``wss://`` daemon: TLS 1.2 or later, and no CA or host-name check, because
    the daemon's certificate is checked by its pinned SHA-256 fingerprint instead (:meth:`InpaintClient.connect`
    compares it before anything is sent): a self-signed certificate, as SSH checks a host key. Never use it
    without that check."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_fingerprint(websocket: ClientConnection) -> str | None:
    """The SHA-256 fingerprint (:func:`protocol.fingerprint.certificate_fingerprint`) of the certificate the peer
    of an open ``wss://`` connection presented (its DER bytes, ``SSLSocket.getpeercert(binary_form=True)``), or
    None on a plain connection or when it presented none."""
    sock = websocket.socket
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    return None if der is None else certificate_fingerprint(der)


class InpaintClient:
    """One authenticated connection to the daemon; create it with :meth:`connect`.

    Not thread-safe: one job at a time per client. Use it as a context manager or call :meth:`close`.

    Attributes:
        url: the daemon's WebSocket URL.
        client_name: how this client introduced itself in its Hello (recorded with each result it fetched).
        welcome: the daemon's :class:`protocol.Welcome` (version, device, engines, pixel limit, token owner).
        fingerprint: the SHA-256 fingerprint of the ``wss://`` daemon's certificate, checked against the pin (or
            seen on first use); None for ``ws://``.
    """

    def __init__(self, websocket: ClientConnection, stack: ExitStack, url: str, timeout: float, token: str,
                 client_name: str, fingerprint: str | None) -> None:
        """Internal: use :meth:`connect`, which opens ``websocket`` (closed by ``stack``), checks its certificate
        and closes it if this handshake (Hello → Welcome) fails."""
        self._ws = websocket
        self._stack = stack
        self._timeout = timeout
        self.url = url
        self.client_name = client_name
        self.fingerprint = fingerprint
        self.welcome: Welcome = self._handshake(token, client_name)

    @classmethod
    def connect(cls, url: str, token: str, client_name: str, timeout: float = 5.0, fingerprint: str | None = None,
                trust_on_first_use: bool = False) -> InpaintClient:
        """Open a connection to the daemon at ``url`` and authenticate with ``token`` (Hello → Welcome).

        Args:
            url: ``ws://host:port`` of a daemon on this machine (:data:`DEFAULT_URL` by default in callers), or
                ``wss://host:port`` of one on any machine.
            token: the daemon's token (its ``token`` file, or ``connection.json`` for the plug-in).
            client_name: free text the daemon logs, e.g. ``"gimp-plugin/0.1 GIMP 3.0.4"``.
            timeout: seconds allowed for the TCP + TLS + WebSocket handshake and for the Welcome.
            fingerprint: for ``wss://``, the SHA-256 fingerprint pinned for the daemon's certificate
                (``connection.json``'s, in any spelling :func:`protocol.fingerprint.normalize_fingerprint` reads):
                the certificate it presents must have it, checked before the Hello (the token) is sent.
            trust_on_first_use: for ``wss://`` without ``fingerprint``, take whichever certificate the daemon
                presents (its fingerprint is then :attr:`fingerprint`, for the caller to pin): only where the user
                asked to pin it now (``gimp-inpaint connect``). Without either, a ``wss://`` URL is refused.

        The WebSocket limit (``max_size``) is the largest valid variant frame under the protocol's
        default pixel limit: :func:`protocol.max_frame_bytes` of ``DEFAULT_MAX_PIXELS``.
        Compression is off (the payload is raw pixels) and no HTTP proxy is used. TLS is the standard library's
        (:func:`pinning_context`).

        Raises:
            ConnectionConfigError: ``url`` is not a valid ``ws://`` or ``wss://`` URL (:func:`check_url`), is a
                ``ws://`` URL of another machine (plain WebSocket is for loopback only: the token would cross the
                network unencrypted), or a ``wss://`` one with neither ``fingerprint`` nor ``trust_on_first_use``;
                ``fingerprint`` is malformed or given for ``ws://``; all checked before connecting.
            CertificateChanged: the daemon's certificate is not the pinned one (the connection is closed before
                anything is sent on it).
            DaemonNotRunning: nothing listens there (a :class:`DaemonUnavailable`).
            DaemonUnavailable: the handshake timed out, the host cannot be reached, the TLS handshake failed, or
                the peer is not a gimp-inpaint daemon.
            DaemonError: the daemon refused the Hello (``UNAUTHORIZED``; ``VERSION_MISMATCH``, whose message
                tells the user to restart the daemon after updating: :func:`version_mismatch_message`).
        """
        check_url(url)
        secure = urlsplit(url).scheme == "wss"
        if not secure and not is_loopback_url(url):
            raise ConnectionConfigError(f"{url} is a plain ws:// URL of another machine, which would carry the token "
                                        f"unencrypted: a daemon beyond this machine serves wss:// (its listening "
                                        f"line says so); use wss://{url[len('ws://'):]}.")
        if fingerprint is not None:
            if not secure:
                raise ConnectionConfigError(f"A certificate fingerprint pins a wss:// daemon; {url} is plain ws://.")
            try:
                fingerprint = normalize_fingerprint(fingerprint)
            except ValueError as exc:
                raise ConnectionConfigError(str(exc)) from None
        elif secure and not trust_on_first_use:
            raise ConnectionConfigError(f"No certificate fingerprint is pinned for {url}: run `gimp-inpaint connect "
                                        f"{url} --token TOKEN` once to pin it (or give the fingerprint the daemon "
                                        f"printed at start).")
        stack = ExitStack()
        try:
            websocket = stack.enter_context(connect(
                url, compression=None, proxy=None, open_timeout=timeout,
                max_size=max_frame_bytes(DEFAULT_MAX_PIXELS), ssl=pinning_context() if secure else None,
            ))
        except TimeoutError:
            raise _unreachable(url, f"no answer within {timeout:g} s") from None
        except InvalidHandshake as exc:
            raise DaemonUnavailable(f"{url} answered, but not as a gimp-inpaint daemon ({exc}). "
                                    f"Check the URL, and start the daemon with `{DAEMON_COMMAND}`.") from None
        except ConnectionRefusedError as exc:
            raise _unreachable(url, exc.strerror or str(exc), DaemonNotRunning) from None
        except ssl.SSLError as exc:
            raise DaemonUnavailable(f"The TLS handshake with {url} failed ({exc.reason or exc}): is a gimp-inpaint "
                                    f"daemon serving wss:// there? Its listening line says ws:// or wss://.") from None
        except OSError as exc:
            raise _unreachable(url, exc.strerror or str(exc)) from None
        try:
            seen = peer_fingerprint(websocket)
            if secure and seen is None:
                raise DaemonUnavailable(f"The daemon at {url} presented no TLS certificate; nothing was sent to it.")
            if fingerprint is not None and seen != fingerprint:
                raise CertificateChanged(url, str(seen), fingerprint)
            return cls(websocket, stack, url, timeout, token, client_name, seen)
        except BaseException:
            stack.close()
            raise

    def _handshake(self, token: str, client_name: str) -> Welcome:
        self._send(Hello(protocol_version=PROTOCOL_VERSION, client=client_name, token=token))
        reply = self._receive(self._timeout, DEFAULT_MAX_PIXELS)
        if reply is None:
            raise DaemonUnavailable(f"The daemon at {self.url} did not answer the handshake within "
                                    f"{self._timeout:g} s. Restart it with `{DAEMON_COMMAND}`.")
        if isinstance(reply, Error) and reply.code is ErrorCode.VERSION_MISMATCH:
            raise DaemonError(ErrorCode.VERSION_MISMATCH, version_mismatch_message(self.url, reply.message))
        if isinstance(reply, Error):
            raise DaemonError(reply.code, reply.message)
        if not isinstance(reply, Welcome):
            raise DaemonError(ErrorCode.BAD_MESSAGE, f"the daemon answered the hello with “{reply.type}”")
        return reply

    def _send(self, message: Message) -> None:
        """Send ``message``; a request larger than :data:`protocol.codec.FRAGMENT_BYTES` goes as fragments of that
        size (:func:`protocol.codec.encode_fragments`: no copy of its planes here, and the daemon's event loop reads
        it a fragment per turn instead of stalling its other clients for the whole frame)."""
        fragments = encode_fragments(message)
        try:
            self._ws.send(fragments if len(fragments) > 1 else fragments[0])
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    def _closed(self, exc: ConnectionClosed) -> ClientError:
        """The client error for a closed connection: ``DaemonError(TOO_LARGE)`` when either side closed it
        with code 1009 (a frame over the other's ``max_size``), else :class:`DaemonUnavailable`."""
        frame = exc.rcvd or exc.sent
        why = f"code {frame.code}{': ' + frame.reason if frame.reason else ''}" if frame else "no close frame"
        if any(f is not None and f.code == CloseCode.MESSAGE_TOO_BIG for f in (exc.rcvd, exc.sent)):
            return DaemonError(ErrorCode.TOO_LARGE, f"A message to or from the daemon at {self.url} was too large "
                                                    f"for the connection ({why}).")
        return DaemonUnavailable(f"The gimp-inpaint daemon at {self.url} closed the connection ({why}). "
                                 f"Is `{DAEMON_COMMAND}` still running?")

    def _receive(self, timeout: float | None, max_pixels: int) -> Message | None:
        """Next message, or None when ``timeout`` seconds pass first. Raises the client's errors."""
        try:
            frame = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        try:
            return decode(frame, max_pixels=max_pixels)
        except ProtocolError as exc:
            raise DaemonError(exc.code, f"the daemon sent an invalid message: {exc.message}") from None

    def inpaint(self, request: InpaintRequest, on_progress: ProgressCallback | None = None,
                should_cancel: CancelCheck | None = None, poll_interval: float = 0.1,
                on_preview: PreviewCallback | None = None) -> list[Variant]:
        """Send one job and collect its :class:`protocol.Variant` messages until its :class:`protocol.Result`.

        Args:
            request: the job; its ``job_id`` identifies the replies (others are ignored).
            on_progress: called with ``(step, total, stage)`` for every :class:`protocol.Progress`
                (:data:`ProgressCallback`).
            on_preview: called with every :class:`protocol.Preview` of the job until it is cancelled
                (:data:`PreviewCallback`); the request's ``preview_every`` asks the daemon for them (without it the
                daemon sends none). Previews are ignored without a callback.
            should_cancel: polled every ``poll_interval`` seconds; once it returns True a
                :class:`protocol.Cancel` is sent and the call ends with ``DaemonError(CANCELLED)``,
                after the daemon confirms or after the connect timeout, even if a result arrives.
            poll_interval: seconds between ``should_cancel`` polls.

        Returns:
            The variants in index order, one per requested variant, each inside the request's crop.

        Raises:
            DaemonError: the daemon answered with an error (its code: ``INVALID_REQUEST``,
                ``UNKNOWN_ENGINE``, ``OUT_OF_MEMORY``, ``CANCELLED``, …) or sent an invalid frame
                (``BAD_MESSAGE``: a variant out of order or outside the crop, a result whose count differs from the
                variants received, a preview not asked for or not of the size asked); ``TOO_LARGE`` when a side
                closed the connection because a frame exceeded its size limit (WebSocket close code 1009).
            DaemonUnavailable: the connection dropped.
        """
        self._send(request)
        cancelled_at: float | None = None
        variants: list[Variant] = []
        while True:
            if cancelled_at is None and should_cancel is not None and should_cancel():
                self._send(Cancel(job_id=request.job_id))
                cancelled_at = time.monotonic()
            if cancelled_at is not None and time.monotonic() - cancelled_at > self._timeout:
                raise DaemonError(ErrorCode.CANCELLED, "Cancelled (the daemon did not confirm in time).")
            message = self._receive(None if should_cancel is None else poll_interval, self.welcome.max_pixels)
            if message is None or getattr(message, "job_id", None) not in (request.job_id, None):
                continue  # poll again, or a late reply to an earlier job of this connection
            if isinstance(message, Error):
                raise DaemonError(message.code, message.message)
            if cancelled_at is not None and isinstance(message, Result):
                raise DaemonError(ErrorCode.CANCELLED, "Cancelled.")
            if cancelled_at is not None and isinstance(message, Variant | Preview):
                continue  # the job is cancelled: its variants and previews are dropped as they come
            if isinstance(message, Variant):
                variants.append(_check_variant(message, request, len(variants)))
            elif isinstance(message, Result):
                if not message.num_variants == len(variants) == request.options.num_variants:
                    raise DaemonError(ErrorCode.BAD_MESSAGE, f"the daemon ended the job with a result of "
                                                             f"{message.num_variants} variants after sending "
                                                             f"{len(variants)} of the "
                                                             f"{request.options.num_variants} requested")
                return variants
            elif isinstance(message, Progress):
                if on_progress is not None:
                    on_progress(message.step, message.total, message.stage)
            elif isinstance(message, Preview):
                _check_preview(message, request)
                if on_preview is not None:
                    on_preview(message)
            elif not isinstance(message, Accepted):
                raise DaemonError(ErrorCode.BAD_MESSAGE, f"unexpected “{message.type}” message during a job")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._stack.close()

    def __enter__(self) -> InpaintClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _check_variant(variant: Variant, request: InpaintRequest, index: int) -> Variant:
    """``variant`` if it is the job's next one (``index``, below the number requested) and lies inside the
    request's crop.

    Raises:
        DaemonError(BAD_MESSAGE): it does not.
    """
    inside = (request.x <= variant.x and request.y <= variant.y
              and variant.x + variant.image.width <= request.x + request.image.width
              and variant.y + variant.image.height <= request.y + request.image.height)
    if index >= request.options.num_variants:
        raise DaemonError(ErrorCode.BAD_MESSAGE, f"the daemon sent variant {variant.index} after the "
                                                 f"{request.options.num_variants} requested")
    if variant.index != index or not inside:
        raise DaemonError(ErrorCode.BAD_MESSAGE, f"the daemon sent variant {variant.index} "
                                                 f"({variant.image.width}×{variant.image.height} at ({variant.x}, "
                                                 f"{variant.y})) where variant {index} inside the "
                                                 f"{request.image.width}×{request.image.height} crop at "
                                                 f"({request.x}, {request.y}) was due")
    return variant


def _check_preview(preview: Preview, request: InpaintRequest) -> None:
    """Refuse a preview that ``request`` did not ask for (``preview_every`` 0) or whose image is not of
    :meth:`protocol.InpaintRequest.preview_dimensions`.

    Raises:
        DaemonError(BAD_MESSAGE): it is one.
    """
    if not request.preview_every:
        raise DaemonError(ErrorCode.BAD_MESSAGE, "the daemon sent a preview that was not asked for")
    expected = request.preview_dimensions()
    if (preview.image.width, preview.image.height) != expected:
        raise DaemonError(ErrorCode.BAD_MESSAGE, f"the daemon sent a {preview.image.width}×{preview.image.height} "
                                                 f"preview where {expected[0]}×{expected[1]} was asked for")


def version_mismatch_message(url: str, reason: str) -> str:
    """The user's message when the daemon at ``url`` refused this client's :data:`protocol.PROTOCOL_VERSION`.

    The usual cause is a daemon started before gimp-inpaint was updated (it keeps running the old code), so the
    message says to restart it; ``reason`` is the daemon's own explanation (which versions each side speaks).
    """
    return (f"The gimp-inpaint daemon at {url} speaks another protocol version than this client (protocol "
            f"{PROTOCOL_VERSION}): {reason}. If you updated gimp-inpaint, restart the daemon after updating (quit "
            f"it, then start `{DAEMON_COMMAND}` again); otherwise install the same gimp-inpaint version for the "
            f"daemon and the plug-in.")


def describe_engine(engine: EngineInfo) -> str:
    """``name`` with its model family and, when unavailable, the reason, e.g.
    ``"sd15-inpaint (sd-inpaint, unavailable: pip install torch)"``; just ``"opencv"`` for an available engine
    without a family."""
    notes = ([engine.family] if engine.family else []) + \
        ([] if engine.available else [f"unavailable: {engine.detail or 'no detail'}"])
    return f"{engine.name} ({', '.join(notes)})" if notes else engine.name


def pick_engine(welcome: Welcome, requested: str) -> str:
    """The engine name to put in a request.

    Args:
        welcome: the daemon's handshake reply, listing its engines in order of preference.
        requested: an engine name, or ``""`` for the first available one.

    A named engine that the welcome lists as unavailable is still returned: the daemon retries
    loading it for each job (a model downloaded meanwhile then works) and answers ENGINE_UNAVAILABLE,
    with the reason, if it still cannot.

    Raises:
        DaemonError: ``UNKNOWN_ENGINE`` when ``requested`` is not offered; ``ENGINE_UNAVAILABLE`` for
            ``""`` when no engine is available. The message lists the daemon's engines with their families
            (:func:`describe_engine`) and names ``gimp-inpaint status``.
    """
    if any(engine.name == requested for engine in welcome.engines):
        return requested
    listing = ", ".join(describe_engine(e) for e in welcome.engines) or "none"
    if requested:
        raise DaemonError(ErrorCode.UNKNOWN_ENGINE, f"The daemon has no engine “{requested}”. Engines: {listing} "
                                                    f"(`gimp-inpaint status` shows their LoRAs and options).")
    for engine in welcome.engines:
        if engine.available:
            return engine.name
    raise DaemonError(ErrorCode.ENGINE_UNAVAILABLE, f"The daemon has no usable engine. Engines: {listing}.")


class ConnectionConfig(NamedTuple):
    """What ``connection.json`` holds (:func:`read_connection_config`, :func:`write_connection_config`).

    Attributes:
        url: the daemon's WebSocket URL, ``ws://host:port`` (this machine) or ``wss://host:port``.
        token: the daemon's token (its ``token`` file when the installer ran; a named token for another machine's
            daemon, which ``gimp-inpaint connect`` writes).
        daemon_command: the argument vector that starts the daemon (e.g. ``[".../python", "-m",
            "gimp_inpaint.daemon"]``), for :func:`connect_or_start`; None when the installer did not record one.
        fingerprint: the SHA-256 fingerprint pinned for a ``wss://`` daemon's certificate
            (:func:`protocol.fingerprint.certificate_fingerprint`'s spelling), which ``gimp-inpaint connect``
            records on first contact; None for ``ws://``.
    """

    url: str
    token: str
    daemon_command: tuple[str, ...] | None = None
    fingerprint: str | None = None

    def fingerprint_for(self, url: str) -> str | None:
        """The pin to check a connection to ``url`` against: :attr:`fingerprint` when ``url`` is :attr:`url` (a
        pin belongs to its daemon's address), else None."""
        return self.fingerprint if url == self.url else None


def read_connection_config(path: Path) -> ConnectionConfig:
    """Read ``connection.json`` (``{"url": "ws://…", "token": "…", "daemon_command": ["…", …], "fingerprint":
    "AB:…"}``, the last two fields optional), which the installer and ``gimp-inpaint connect`` write.

    Raises:
        ConnectionConfigError: the file is missing, unreadable, not JSON, lacks a string ``url`` or ``token``,
            has a ``daemon_command`` that is not a non-empty list of strings, or a ``fingerprint`` that is not a
            SHA-256 fingerprint.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConnectionConfigError(f"{path} is missing. Install the plug-in with `gimp-inpaint-install` "
                                    f"(python -m gimp_inpaint.installer install).") from None
    except (OSError, ValueError) as exc:
        raise ConnectionConfigError(f"Cannot read {path}: {exc}. Re-run `gimp-inpaint-install`.") from None
    url, token, command, fingerprint = (data.get(key) if isinstance(data, dict) else None
                                        for key in ("url", "token", "daemon_command", "fingerprint"))
    if not isinstance(url, str) or not isinstance(token, str):
        raise ConnectionConfigError(f"{path} needs string fields “url” and “token”. Re-run `gimp-inpaint-install`.")
    if command is not None and not (isinstance(command, list) and command
                                    and all(isinstance(arg, str) for arg in command)):
        raise ConnectionConfigError(f"{path}: “daemon_command” must be a list of strings, the daemon's command "
                                    f"line. Re-run `gimp-inpaint-install`.")
    if fingerprint is not None:
        try:
            fingerprint = normalize_fingerprint(fingerprint if isinstance(fingerprint, str) else "")
        except ValueError:
            raise ConnectionConfigError(f"{path}: “fingerprint” must be the daemon's certificate's SHA-256 "
                                        f"fingerprint. Pin it anew with `gimp-inpaint connect {url} --token TOKEN "
                                        f"--reset-fingerprint`.") from None
    return ConnectionConfig(url, token, None if command is None else tuple(command), fingerprint)


def write_connection_config(path: Path, url: str, token: str, daemon_command: Sequence[str] | None = None,
                            fingerprint: str | None = None) -> None:
    """Write ``connection.json`` for :func:`read_connection_config`, readable by its owner only (mode 0600).

    Args:
        path: the file to (over)write.
        url: the daemon's WebSocket URL.
        token: the daemon's token.
        daemon_command: the daemon's command line (program first), which the plug-in runs when nothing answers
            at a loopback ``url`` (:func:`connect_or_start`); None leaves it out.
        fingerprint: the pinned SHA-256 fingerprint of a ``wss://`` daemon's certificate; None leaves it out.

    Raises:
        OSError: the file cannot be written.
    """
    data: dict[str, object] = {"url": url, "token": token}
    if daemon_command is not None:
        data["daemon_command"] = list(daemon_command)
    if fingerprint is not None:
        data["fingerprint"] = fingerprint
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        if os.name == "posix":  # O_CREAT's mode does not apply to an existing file: tighten it before writing
            os.fchmod(descriptor, 0o600)  # (Windows has no such modes, nor os.fchmod before Python 3.13)
        json.dump(data, file, indent=2)
        file.write("\n")


LOOPBACK_NAMES = ("localhost",)
"""Host names :func:`is_loopback_url` accepts besides loopback addresses (127.0.0.0/8, ::1)."""

START_TIMEOUT = 60.0
"""Seconds :func:`connect_or_start` waits for a daemon it started to answer."""

_POLL_INTERVAL = 0.25
"""Seconds between connection attempts while a started daemon comes up."""

_OUTPUT_TAIL = 2000
"""Characters of a failed daemon's output quoted in the error (the end of it, where the error is)."""

StatusCallback = Callable[[str], None]
"""``on_status(text)``: a line for the user while :func:`connect_or_start` starts the daemon, e.g.
``"Starting the gimp-inpaint daemon… (3 s)"``."""


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is this machine: ``localhost`` or a loopback address (127.0.0.0/8, ``::1``).

    Only such a daemon is started by :func:`connect_or_start`; a URL without a host, or a malformed one, is False.
    """
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if host is None:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_daemon(command: Sequence[str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``command`` detached from the caller: its output (stdout and stderr) appended to ``log_file``.

    On POSIX it runs in a new session (``setsid``), so a signal to the caller's process group (GIMP SIGKILLs
    the plug-in's group when the user cancels) does not reach it; on Windows it gets its own process group and
    no console (``CREATE_NEW_PROCESS_GROUP | DETACHED_PROCESS``). Its stdin is the null device, no other
    descriptor is inherited, and ``PYTHONHOME`` / ``PYTHONPATH`` are dropped from its environment: they belong to
    the Python running the caller (GIMP's own in its Windows and macOS builds), while the command names the
    daemon's interpreter, which finds its packages in its own virtual environment.

    Raises:
        OSError: the program cannot be run, or ``log_file`` cannot be opened.
    """
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "PYTHONPATH")}
    if sys.platform == "win32":  # the flags exist only there (os.name == "nt")
        creationflags, new_session = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS, False
    else:
        creationflags, new_session = 0, True  # 0 and False: Popen's defaults
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                close_fds=True, env=environment, creationflags=creationflags,
                                start_new_session=new_session)


def _output_since(log_file: Path, offset: int) -> str:
    """The last :data:`_OUTPUT_TAIL` characters ``log_file`` gained after byte ``offset``, stripped."""
    try:
        with open(log_file, "rb") as file:
            file.seek(offset)
            text = file.read().decode("utf-8", "replace").strip()
    except OSError as exc:
        return f"(cannot read {log_file}: {exc.strerror or exc})"
    return text if len(text) <= _OUTPUT_TAIL else "…" + text[-_OUTPUT_TAIL:]


def connect_or_start(config: ConnectionConfig, client_name: str, log_file: Path, url: str | None = None,
                     timeout: float = 5.0, start_timeout: float = START_TIMEOUT,
                     on_status: StatusCallback | None = None) -> InpaintClient:
    """Connect to the daemon; when nothing listens at a loopback URL, start it with ``config.daemon_command``
    (:func:`start_daemon`) and connect once it answers.

    Args:
        config: ``connection.json`` (:func:`read_connection_config`): URL, token, the daemon's command line and the
            pinned fingerprint (checked for ``config.url`` only: :meth:`ConnectionConfig.fingerprint_for`).
        client_name: sent in the Hello (:meth:`InpaintClient.connect`).
        log_file: where the started daemon's output goes (appended); quoted when it fails to come up.
        url: the daemon's URL when not ``config.url`` (the plug-in's *Server URL* argument).
        timeout: seconds for each connection attempt (:meth:`InpaintClient.connect`).
        start_timeout: seconds to wait for a started daemon to answer, polling every 0.25 s.
        on_status: called with a line to show (:data:`StatusCallback`) before each attempt while the daemon starts.

    Only a daemon on this machine is started (:func:`is_loopback_url`); for any other URL, and for every failure
    other than "nothing listens" (:class:`DaemonNotRunning`), the error of the first attempt is raised. A daemon
    started here keeps running after the caller exits, also when it did not answer in time.

    Raises:
        DaemonUnavailable: as :meth:`InpaintClient.connect`; or nothing listens and ``connection.json`` has no
            command; or the command cannot be run, exited (its exit code and the end of its output in the
            message), or did not answer within ``start_timeout`` seconds.
        DaemonError, ConnectionConfigError, CertificateChanged: as :meth:`InpaintClient.connect`.
    """
    url = url or config.url
    fingerprint = config.fingerprint_for(url)
    try:
        return InpaintClient.connect(url, config.token, client_name, timeout, fingerprint)
    except DaemonNotRunning as exc:
        if not is_loopback_url(url):
            raise
        if config.daemon_command is None:
            raise DaemonUnavailable(f"Nothing answers at {url}, and connection.json names no command to start the "
                                    f"daemon: start it with `{DAEMON_COMMAND}`, or re-run `gimp-inpaint-install` "
                                    f"so that the plug-in can start it.") from None
        refused = exc
    command = " ".join(config.daemon_command)
    try:
        offset = log_file.stat().st_size if log_file.exists() else 0
        process = start_daemon(config.daemon_command, log_file)
    except OSError as exc:
        raise DaemonUnavailable(f"{refused.message} Starting it with `{command}` failed: "
                                f"{exc.strerror or exc}. Re-run `gimp-inpaint-install`.") from None
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if on_status is not None:
            on_status(f"Starting the gimp-inpaint daemon… ({elapsed:.0f} s)")
        exit_code = process.poll()
        try:  # after an exit too: a daemon started at the same time by another caller may be the one listening
            return InpaintClient.connect(url, config.token, client_name, timeout, fingerprint)
        except DaemonNotRunning:
            pass
        if exit_code is not None:
            raise DaemonUnavailable(f"The gimp-inpaint daemon started with `{command}` exited with code {exit_code} "
                                    f"before answering at {url}. Its output ({log_file}):\n"
                                    f"{_output_since(log_file, offset) or '(none)'}")
        if elapsed > start_timeout:
            raise DaemonUnavailable(f"The gimp-inpaint daemon started with `{command}` (process {process.pid}) did "
                                    f"not answer at {url} within {start_timeout:g} s; it may still be starting. "
                                    f"Try again in a moment, or see its output in {log_file}.")
        time.sleep(_POLL_INTERVAL)
