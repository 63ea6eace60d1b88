"""``gimp-inpaint-daemon`` / ``python -m gimp_inpaint.daemon``: start the inpainting daemon.

::

    python -m gimp_inpaint.daemon [--host 127.0.0.1] [--port 7869] [--no-tray] [--config-dir DIR]
                     [--model NAME=ID_OR_PATH]... [--device auto|cpu|cuda|cuda:N|mps] [--threads N]
                     [--max-pixels N] [--memory-budget GB] [--preload NAME] [--log-level info] [--tls|--no-tls]
                     [--backend local|ray] [--ray-address ADDR]
    python -m gimp_inpaint.daemon [--config-dir DIR] token add NAME | list | revoke NAME

Prints ``gimp-inpaint daemon listening on ws://HOST:PORT`` once it serves (``wss://HOST:PORT (certificate SHA-256
AB:…)`` with TLS, which a host other than loopback always has: :mod:`daemon.tls`), and runs until
SIGINT/SIGTERM or the tray icon's Quit. With ``preload`` (``daemon.toml`` or ``--preload``) it then loads that
model in the background (:meth:`daemon.server.DaemonServer.serve`).

With ``--backend ray`` (``daemon.toml``'s ``backend``) the jobs run on a Ray Serve deployment of the same engines
(:mod:`daemon.ray_backend`: one replica per GPU, on this machine's Ray or the cluster at ``--ray-address``); this
process stays the WebSocket front end. ``preload`` does not apply there: each replica loads a model on its first job.

``token`` manages the named tokens of other machines (:mod:`daemon.tokens`): ``add NAME`` prints a new one, once;
``list`` names them; ``revoke NAME`` deletes one, refused from the daemon's next handshake on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import logging
import logging.handlers
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

from .config import (
    BACKENDS,
    DEFAULT_MODELS,
    LOG_LEVELS,
    TOKEN_FILE,
    ConfigError,
    Settings,
    config_folder,
    ensure_token,
    is_device_name,
    load_settings,
    make_private_folder,
    open_private,
)
from .control import Controller
from .engines.base import Engine
from .engines.diffusers_engine import DiffusersEngine, diffusers_available
from .engines.migan import MiGanEngine
from .engines.opencv_engine import OpenCVEngine
from .memory import MMAP_THRESHOLD, TRIM_THRESHOLD, limit_mmap_threshold
from .pool import ModelPool
from .server import DaemonServer
from .tokens import LOCAL_OWNER, TokenError, add_token, read_tokens, revoke_token
from .tray import Tray, stop_on_signals

if TYPE_CHECKING:  # Ray is imported only for --backend ray
    from .ray_backend import RayBackend

log = logging.getLogger("gimp_inpaint.daemon")


def _model_option(text: str) -> tuple[str, str]:
    """Parse ``--model NAME=ID_OR_PATH``."""
    name, sep, model = text.partition("=")
    if not sep or not name or not model:
        raise argparse.ArgumentTypeError(f"expected NAME=HUB_ID_OR_FOLDER, got {text!r}")
    return name, model


def _device_option(text: str) -> str:
    """Parse ``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:func:`daemon.config.is_device_name`)."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; options left out are None so that ``daemon.toml`` can set them."""
    parser = argparse.ArgumentParser(prog="gimp-inpaint-daemon",
                                     description="Local inpainting daemon for the gimp-inpaint GIMP plug-in.")
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="TCP port (default 7869; 0 picks a free port)")
    parser.add_argument("--no-tray", action="store_true",
                        help="do not show the system-tray icon and its menu")
    parser.add_argument("--config-dir", type=Path,
                        help="folder of the token, daemon.toml and the log (default: the user's config folder)")
    parser.add_argument("--model", type=_model_option, action="append", metavar="NAME=ID_OR_PATH",
                        help="offer a diffusers inpainting model (hub id or local folder); repeatable")
    parser.add_argument("--device", type=_device_option, metavar="auto|cpu|cuda|cuda:N|mps",
                        help="torch device of the diffusers engines (default auto; cuda:N = the N-th GPU)")
    parser.add_argument("--threads", type=int, help="CPU threads of torch and onnxruntime (default 0: their choice)")
    parser.add_argument("--max-pixels", type=int, help="largest width × height of a request's image")
    parser.add_argument("--memory-budget", type=float, metavar="GB",
                        help="memory the warm models may fill, in GB (default: measured from the device)")
    parser.add_argument("--preload", metavar="NAME",
                        help="load this model in the background once listening, so the first fill finds it warm "
                             "(default: none, each model loads on its first request; \"\" turns daemon.toml's off)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="log verbosity (default info)")
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction,
                        help="serve wss:// (TLS) with daemon.toml's tls_certificate and tls_key, or a self-signed "
                             "certificate made on first start (default: on for a host other than loopback, which "
                             "refuses --no-tls, or with a certificate given; off on loopback)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="where jobs run: local (this process, default) or ray (a Ray Serve deployment, one "
                             "replica per GPU; needs `pip install gimp-inpaint[ray]`)")
    parser.add_argument("--ray-address", metavar="ADDR",
                        help="the Ray cluster of --backend ray (\"auto\", ray://HEAD:10001; default: a local Ray)")
    commands = parser.add_subparsers(dest="command", metavar="token", help="manage the named tokens (`token -h`)")
    token = commands.add_parser("token", help="named tokens of other machines: add, list, revoke",
                                description="Named tokens let other machines use this daemon (over wss://); "
                                            "each is stored as its SHA-256 only and can be revoked alone.")
    folder = argparse.ArgumentParser(add_help=False)  # --config-dir after the action too (before it: the daemon's)
    folder.add_argument("--config-dir", type=Path, default=argparse.SUPPRESS,
                        help="the daemon's configuration folder (default: the user's config folder)")
    actions = token.add_subparsers(dest="action", required=True)
    actions.add_parser("add", parents=[folder], help="make a token for NAME and print it (once)").add_argument("name")
    actions.add_parser("list", parents=[folder], help="list the tokens' names and when each was made")
    actions.add_parser("revoke", parents=[folder],
                       help="delete NAME's token: refused from the next handshake on").add_argument("name")
    return parser.parse_args(argv)


def token_command(args: argparse.Namespace) -> int:
    """``token add NAME | list | revoke NAME`` (:mod:`daemon.tokens`) in ``args.config_dir``, printing to stdout.

    Returns:
        0 done, 2 a name taken, unknown or malformed, or the tokens' file unreadable or unwritable (the message on
        stderr).
    """
    config_dir = config_folder(args.config_dir)
    try:
        if args.action == "add":
            token = add_token(config_dir, args.name)
            print(f"token of {args.name} (shown this once: the daemon keeps only its SHA-256):\n{token}\n"
                  f"on {args.name}'s machine: gimp-inpaint connect wss://THIS-HOST:PORT --token {token}")
        elif args.action == "revoke":
            revoke_token(config_dir, args.name)
            print(f"revoked {args.name}'s token: the daemon refuses it from its next handshake on")
        else:
            rows = [("NAME", "CREATED"), (LOCAL_OWNER, f"(the token file {config_dir / TOKEN_FILE})")]
            rows += [(token.name, token.created) for token in read_tokens(config_dir)]
            width = max(len(name) for name, _ in rows)
            for name, created in rows:
                print(f"{name.ljust(width)}  {created}")
    except (TokenError, ConfigError, OSError) as exc:
        print(f"gimp-inpaint-daemon token: {exc}", file=sys.stderr)
        return 2
    return 0


LOG_MAX_BYTES = 5_000_000
"""Size (bytes) at which ``daemon.log`` is rotated: renamed to ``daemon.log.1`` (older ones shift up)."""

LOG_BACKUPS = 3
"""Rotated logs kept (``daemon.log.1`` … ``.3``, the oldest dropped): the log never takes more than 20 MB."""


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A :class:`~logging.handlers.RotatingFileHandler` that opens every file through
    :func:`daemon.config.open_private`: the log and each new one after a rotation are 0600 (the log holds
    client names, job ids and paths), and a log an older version left readable by others is tightened."""

    def _open(self) -> io.TextIOWrapper:
        # a text mode ("a", which RotatingFileHandler sets), so a TextIOWrapper: mypy cannot tell from a str mode
        return cast(io.TextIOWrapper, open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                                           opener=open_private))


def log_file_handler(path: Path) -> logging.handlers.RotatingFileHandler:
    """The handler of the daemon's log file ``path``, opened for appending.

    Its folder is made private (:func:`daemon.config.make_private_folder`: 0700) and its files are 0600; it
    rotates at :data:`LOG_MAX_BYTES` keeping :data:`LOG_BACKUPS` older files.

    Raises:
        OSError: the folder or the file cannot be created, opened or made private.
    """
    make_private_folder(path.parent)
    return _PrivateRotatingFileHandler(path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")


def configure_logging(settings: Settings) -> None:
    """Log to stderr and to ``settings.log_file`` (:func:`log_file_handler`: private, rotated); a log file that
    cannot be opened is reported and skipped."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    problem = None
    try:
        handlers.append(log_file_handler(settings.log_file))
    except OSError as exc:
        problem = exc
    logging.basicConfig(level=settings.log_level.upper(), handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if problem is not None:
        log.warning("cannot write the log file %s: %s", settings.log_file, problem)


def build_engines(settings: Settings) -> list[Engine]:
    """The engines, in handshake order: every registry model (:mod:`daemon.registry`), then ``migan`` (the learned
    remover, :mod:`daemon.engines.migan`, on ``settings.threads`` onnxruntime threads), then ``opencv``; a client that
    takes the first available engine gets ``migan`` where no diffusers model is.

    With no model configured, :data:`DEFAULT_MODELS` is offered when diffusers is installed.
    Nothing is loaded here; diffusers models load on their first request and stay warm in one shared
    :class:`daemon.pool.ModelPool`, whose budget is ``memory_budget_gb`` or, when that is 0, measured from the
    device when the first model loads (:func:`daemon.device.memory_budget_bytes`).
    """
    registry = settings.registry
    if not registry.models and diffusers_available():
        registry = replace(registry, models=DEFAULT_MODELS)

    def measured_budget() -> int:
        from .device import memory_budget_bytes, resolve_device

        return memory_budget_bytes(resolve_device(settings.device))

    pool = ModelPool(round(settings.memory_budget_gb * 1e9) if settings.memory_budget_gb else measured_budget)
    engines: list[Engine] = [DiffusersEngine(spec, registry, pool, device=settings.device,
                                             torch_threads=settings.threads)
                             for spec in registry.models]
    engines += [MiGanEngine(threads=settings.threads), OpenCVEngine()]
    return engines


def ray_backend(settings: Settings) -> RayBackend:
    """The Ray backend of ``settings`` (:mod:`daemon.ray_backend`): every replica builds its engines with
    :func:`build_engines` from the same settings. Joins or starts Ray and deploys the Serve application.

    Raises:
        ImportError: Ray Serve is not installed.
    """
    from .ray_backend import RayBackend, ray_settings

    return RayBackend(functools.partial(build_engines, settings), ray_settings(settings))


def main(argv: list[str] | None = None) -> int:
    """Run the daemon until SIGINT/SIGTERM or the tray's Quit.

    With a tray icon, the icon's loop takes the main thread and the server's event loop runs in a thread beside it
    (:meth:`daemon.tray.Tray.run`, on every platform: macOS requires it), the signals taken by
    :func:`daemon.tray.stop_on_signals`; without one the event loop runs on the main thread with asyncio's signal
    handlers.

    Returns:
        0 after a clean shutdown, 1 when it cannot listen, 2 for a configuration error.
    """
    args = parse_args(argv)
    if args.command == "token":
        return token_command(args)
    mapped = limit_mmap_threshold()  # before the first big buffer: freed job memory goes back to the system
    overrides = {"host": args.host, "port": args.port, "device": args.device, "threads": args.threads,
                 "max_pixels": args.max_pixels, "memory_budget_gb": args.memory_budget, "log_level": args.log_level,
                 "preload": args.preload, "tls": args.tls, "backend": args.backend, "ray_address": args.ray_address,
                 "models": dict(args.model) if args.model else None, "tray": False if args.no_tray else None}
    try:
        settings = load_settings(args.config_dir, overrides)
        token = ensure_token(settings.config_dir)
    except (ConfigError, OSError) as exc:
        print(f"gimp-inpaint-daemon: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    engines = build_engines(settings)
    has_diffusers = any(isinstance(engine, DiffusersEngine) for engine in engines)
    # torch is imported when a model first loads, not here (6-8 s): until then "auto" is all we know
    device = (f"{settings.device} (torch: resolved when a model loads; see each engine's detail)" if has_diffusers
              else "cpu (onnxruntime and OpenCV)")
    backend = None
    if settings.backend == "ray":
        try:
            backend = ray_backend(settings)
        except ImportError as exc:
            log.error("--backend ray needs Ray Serve: pip install 'gimp-inpaint[ray]' (%s)", exc)
            return 2
        if settings.preload:
            log.info("preload %s does not apply to the Ray backend: each replica loads it on its first job",
                     settings.preload)
            settings = replace(settings, preload="")
        device = f"Ray Serve ({backend.slots} replicas at most; each replica's engines say their device)"
    try:
        server = DaemonServer(settings, engines, token, device=device, backend=backend,
                              on_status=lambda state, text: tray.set_status(state, text),
                              on_activity=lambda activity: tray.set_activity(activity))
    except ConfigError as exc:  # its TLS certificate cannot be made or loaded
        log.error("%s", exc)
        return 2
    tray = Tray(Controller(server, notify=lambda title, message: tray.notify(title, message),
                           on_change=lambda: tray.refresh()))

    def listening(url: str) -> None:
        pin = "" if server.fingerprint is None else f" (certificate SHA-256 {server.fingerprint})"
        # one write of the whole line: print() writes the text and its newline apart when stdout is unbuffered
        # (PYTHONUNBUFFERED), and a process sharing the pipe (a D-Bus session's services) could land in between
        sys.stdout.write(f"gimp-inpaint daemon listening on {url}{pin}\n")
        sys.stdout.flush()
        tray.show_url(url)

    async def run(signals: bool) -> None:
        if signals:  # the event loop holds the main thread
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):  # Windows: Ctrl+C raises KeyboardInterrupt instead
                    loop.add_signal_handler(signum, server.stop)
        await server.serve(listening)

    log.info("config %s, log %s, engines %s", settings.config_dir, settings.log_file,
             ", ".join(engine.name for engine in engines))
    if mapped:
        log.debug("glibc's mmap threshold fixed at %d bytes, its trim threshold at %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    try:
        if settings.tray and tray.create():  # the icon takes the main thread, the event loop runs beside it
            with stop_on_signals(server.stop):
                tray.run(lambda: asyncio.run(run(signals=False)))
        else:
            asyncio.run(run(signals=True))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        tray.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
