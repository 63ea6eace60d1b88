"""The daemon's settings (``daemon.toml`` merged with command-line overrides) and its auth token.

Light on purpose: the installer imports :func:`ensure_token` from here, so this module imports
only the standard library, :mod:`platformdirs` and :mod:`protocol`.

``daemon.toml`` (in the config directory) is optional; every key is optional::

    host = "127.0.0.1"
    port = 7869
    device = "auto"          # auto | cpu | cuda | cuda:N | mps
    threads = 0              # CPU threads of torch and onnxruntime (migan), 0 = their default
    max_pixels = 16777216    # largest width × height of a request's image
    memory_budget_gb = 0     # memory the warm models may fill (GB); 0 = measured from the device
    preload = ""             # a model name: loaded in the background once the daemon listens ("" = on first use)
    tls = true               # wss:// (TLS); unset: on for a host other than loopback or with a certificate given
    tls_certificate = ""     # your own certificate (PEM, the chain after it); "" = one the daemon makes
    tls_key = ""             # its private key (PEM, unencrypted); a relative path is in the config folder
    backend = "local"        # local | ray: jobs run on a Ray Serve deployment (daemon/ray_backend.py, docs/scaling.md)
    ray_address = ""         # the Ray cluster to join ("auto", "ray://head:10001"); "" = a local Ray
    ray_min_replicas = 1     # Serve's autoscaling bounds: replicas, one GPU each on GPU hosts
    ray_max_replicas = 1
    ray_gpus_per_replica = -1  # -1 = 1 when the cluster has GPUs, else 0 (CPU replicas)
    ray_models_per_replica = 2 # engines each replica keeps warm (@serve.multiplexed, least recently used out)
    ray_deploy = true        # false: use the application `serve deploy docs/ray/serve-config.yaml` deployed

    [models.sd15-inpaint]
    model = "stable-diffusion-v1-5/stable-diffusion-inpainting"   # hub id, local folder or .safetensors file

plus ``[loras.NAME]`` and ``[embeddings.NAME]`` tables; :mod:`daemon.registry` documents every model key.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import platformdirs
from gimp_inpaint.protocol import DEFAULT_MAX_PIXELS, Family

from .registry import EmbeddingSpec, LoraSpec, ModelSpec, Registry, RegistryError, model_spec, parse_registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomllib backport
    import tomli as tomllib

APP_NAME = "gimp-inpaint"
"""Directory name used with :mod:`platformdirs` for the config and log folders."""

DEFAULT_PORT = 7869
"""TCP port of the daemon when neither ``daemon.toml`` nor ``--port`` sets one."""

TOKEN_FILE = "token"
"""Name of the auth-token file in the config folder (:func:`ensure_token`)."""

CONFIG_FILE = "daemon.toml"
"""Name of the optional settings file in the config folder."""

LOG_FILE = "daemon.log"
"""Name of the daemon's log file."""

DEVICES = ("auto", "cpu", "cuda", "mps")
"""Device kinds of ``device`` (``auto`` picks CUDA, then MPS, then the CPU); ``cuda:N`` names the N-th GPU
(:func:`is_device_name`)."""

_DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(?::\d+)?")
"""``device`` values: a kind of :data:`DEVICES`, or ``cuda:N`` with a GPU index N ≥ 0 (torch's device syntax)."""

BACKENDS = ("local", "ray")
"""Values of ``backend``: where jobs run (:mod:`daemon.worker`'s thread, or :mod:`daemon.ray_backend`)."""

LOG_LEVELS = ("debug", "info", "warning", "error")
"""Accepted values of ``log_level``, from the most to the least verbose."""

DEFAULT_MODELS = (ModelSpec("sd15-inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting",
                            family=Family.SD_INPAINT),)
"""Offered when no model is configured and diffusers is installed (downloaded and loaded on first use)."""


def is_device_name(text: str) -> bool:
    """True for ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (N a decimal GPU index) and ``mps``.

    Whether that device exists is checked when a model loads (:func:`daemon.device.resolve_device`).
    """
    return _DEVICE_NAME.fullmatch(text) is not None


class ConfigError(ValueError):
    """``daemon.toml`` or a command-line value is unusable; the message names the file or option and the key."""


@dataclass(frozen=True)
class Settings:
    """Everything the daemon needs to start.

    Attributes:
        host: interface to bind (``127.0.0.1``: only this machine can connect).
        port: TCP port; 0 lets the OS pick a free one.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:func:`is_device_name`), passed to the
            diffusers engines.
        threads: CPU threads of the diffusers engines (torch) and of migan (onnxruntime); 0 = the library's default.
        max_pixels: largest ``width × height`` of a request's image (pixels).
        memory_budget_gb: memory (GB, 10⁹ bytes) the pool of warm models may fill; 0 = measured from the device
            when the first model loads (:func:`daemon.device.memory_budget_bytes`).
        models: engine name → :class:`ModelSpec`, in order (``[models.NAME]`` tables, then ``--model``).
        loras, embeddings: the ``[loras.NAME]`` and ``[embeddings.NAME]`` tables, in order.
        config_dir: folder holding ``token`` and ``daemon.toml``.
        log_file: the daemon's log file.
        log_level: one of :data:`LOG_LEVELS`.
        tray: whether to show the system-tray icon.
        preload: the name of a model (of :attr:`models`, or of :data:`DEFAULT_MODELS` when there is none) that the
            daemon loads in the background once it listens, so that the first request finds it warm; ``""``: none
            (every model loads on its first request).
        tls: serve ``wss://`` (True) or plain ``ws://`` (False); None (the default): TLS on a host other than
            loopback (:func:`is_loopback_host`) or with :attr:`tls_certificate` given, else plain. Plain ``ws://``
            is for loopback only (:func:`transport_problem`). :attr:`serves_tls` is the answer.
        tls_certificate, tls_key: the user's own certificate (PEM; intermediate certificates after it) and its
            unencrypted private key (PEM), both or neither, relative to :attr:`config_dir` unless absolute; ``""``:
            the daemon's own self-signed one, made on first start (:mod:`daemon.tls`).
        backend: ``"local"`` (jobs on this process's worker thread) or ``"ray"`` (on a Ray Serve deployment:
            :mod:`daemon.ray_backend`, configured by the ``ray_*`` keys: :meth:`ray_settings`).
        ray_address, ray_min_replicas, ray_max_replicas, ray_gpus_per_replica, ray_models_per_replica, ray_deploy:
            the Ray backend's :class:`daemon.ray_backend.RaySettings` (``ray_gpus_per_replica`` −1: 1 when the
            cluster has GPUs, else 0).
    """

    config_dir: Path
    log_file: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    device: str = "auto"
    threads: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    memory_budget_gb: float = 0.0
    models: dict[str, ModelSpec] = field(default_factory=dict)
    loras: tuple[LoraSpec, ...] = ()
    embeddings: tuple[EmbeddingSpec, ...] = ()
    log_level: str = "info"
    tray: bool = True
    preload: str = ""
    tls: bool | None = None
    tls_certificate: str = ""
    tls_key: str = ""
    backend: str = "local"
    ray_address: str = ""
    ray_min_replicas: int = 1
    ray_max_replicas: int = 1
    ray_gpus_per_replica: float = -1.0
    ray_models_per_replica: int = 2
    ray_deploy: bool = True

    @property
    def registry(self) -> Registry:
        """The models, LoRAs and embeddings as one :class:`Registry`."""
        return Registry(tuple(self.models.values()), self.loras, self.embeddings)

    @property
    def serves_tls(self) -> bool:
        """Whether the daemon serves ``wss://``: :attr:`tls` when set, else a host other than loopback or a
        certificate of the user's."""
        if self.tls is not None:
            return self.tls
        return not is_loopback_host(self.host) or bool(self.tls_certificate)


def is_loopback_host(host: str) -> bool:
    """True when ``host`` (an address or host name to bind) is reachable from this machine only.

    ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``) are; every other address,
    ``0.0.0.0``/``::``/``""`` (all interfaces) and every other host name are not.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        return False


def transport_problem(settings: Settings) -> str | None:
    """Why ``settings`` cannot serve as they are, or None: plain ``ws://`` on a host other than loopback (the token
    and the pictures would cross the network unencrypted), half a certificate (:attr:`Settings.tls_certificate`
    without :attr:`Settings.tls_key` or the other way round), or a certificate with ``tls`` off. The message says
    what to change."""
    if not settings.serves_tls and not is_loopback_host(settings.host):
        return (f"host={settings.host!r} is not a loopback address, and plain ws:// (tls = false, --no-tls) would "
                "carry the token and the pictures unencrypted: drop tls = false / --no-tls to serve wss:// (with "
                "tls_certificate and tls_key of your own, or a self-signed certificate the daemon makes), or bind "
                "host=127.0.0.1")
    if bool(settings.tls_certificate) != bool(settings.tls_key):
        return "tls_certificate and tls_key go together: give both (PEM files) or neither"
    if settings.tls_certificate and not settings.serves_tls:
        return "tls_certificate is given but tls = false: drop one of them"
    return None


_TOML_TYPES: dict[str, type | tuple[type, ...]] = {"host": str, "port": int, "device": str, "threads": int,
                                                   "max_pixels": int, "memory_budget_gb": (int, float),
                                                   "preload": str, "tls": bool, "tls_certificate": str,
                                                   "tls_key": str, "backend": str, "ray_address": str,
                                                   "ray_min_replicas": int, "ray_max_replicas": int,
                                                   "ray_gpus_per_replica": (int, float), "ray_models_per_replica": int,
                                                   "ray_deploy": bool}
_REGISTRY_TABLES = ("models", "loras", "embeddings")


def _check(settings: Settings, source: str) -> Settings:
    """Validate value ranges; raise :class:`ConfigError` naming ``source``."""
    problems = []
    if not 0 <= settings.port <= 65535:
        problems.append(f"port={settings.port} is outside 0…65535")
    if not is_device_name(settings.device):
        problems.append(f"device={settings.device!r} is not one of {', '.join(DEVICES)} or cuda:N")
    if settings.threads < 0:
        problems.append(f"threads={settings.threads} must be ≥ 0")
    if settings.max_pixels < 1:
        problems.append(f"max_pixels={settings.max_pixels} must be ≥ 1")
    if not settings.memory_budget_gb >= 0:
        problems.append(f"memory_budget_gb={settings.memory_budget_gb} must be ≥ 0")
    if settings.log_level not in LOG_LEVELS:
        problems.append(f"log level {settings.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if settings.backend not in BACKENDS:
        problems.append(f"backend={settings.backend!r} is not one of {', '.join(BACKENDS)}")
    if not 0 <= settings.ray_min_replicas <= settings.ray_max_replicas or settings.ray_max_replicas < 1:
        problems.append(f"ray_min_replicas={settings.ray_min_replicas} and ray_max_replicas="
                        f"{settings.ray_max_replicas} need 0 ≤ min ≤ max and max ≥ 1")
    if settings.ray_models_per_replica < 1 or not (settings.ray_gpus_per_replica >= 0
                                                   or settings.ray_gpus_per_replica == -1):
        problems.append("ray_models_per_replica must be ≥ 1 and ray_gpus_per_replica ≥ 0 (or −1: automatic)")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    """The keys of ``daemon.toml`` as :class:`Settings` field values (the registry tables parsed by
    :func:`daemon.registry.parse_registry`)."""
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _TOML_TYPES:
            expected = _TOML_TYPES[key]
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
                names = " or ".join(t.__name__ for t in (expected if isinstance(expected, tuple) else (expected,)))
                raise ConfigError(f"{path}: {key} must be of type {names}")
            values[key] = value
        elif key not in _REGISTRY_TABLES:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join([*_TOML_TYPES, *_REGISTRY_TABLES])})")
    try:
        registry = parse_registry(str(path), *(data.get(table) for table in _REGISTRY_TABLES))
    except RegistryError as exc:
        raise ConfigError(str(exc)) from None
    values.update(models={spec.name: spec for spec in registry.models}, loras=registry.loras,
                  embeddings=registry.embeddings)
    return values


def config_folder(config_dir: Path | None = None) -> Path:
    """``config_dir``, or when None the user's configuration folder of :data:`APP_NAME`
    (``platformdirs.user_config_dir``): where the token files, ``daemon.toml`` and the TLS certificate are."""
    return Path(platformdirs.user_config_dir(APP_NAME)) if config_dir is None else config_dir


def load_settings(config_dir: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Build the settings: defaults, then ``<config_dir>/daemon.toml``, then ``overrides``.

    Args:
        config_dir: the config folder; None means ``platformdirs.user_config_dir("gimp-inpaint")``,
            and the log then goes to ``platformdirs.user_log_dir("gimp-inpaint")``; an explicit folder
            also holds the log.
        overrides: :class:`Settings` field values from the command line; None values are ignored.
            ``models`` is a name → hub id, folder or file dict (``--model NAME=…``); its entries are added to
            (or replace same-named) models of the file, with the family read from the model when it loads.

    Raises:
        ConfigError: unreadable TOML, unknown keys, wrong types, values out of range, a ``preload`` that names
            no model, or a transport that cannot serve (:func:`transport_problem`: plain ``ws://`` beyond
            loopback, half a certificate).
    """
    if config_dir is None:
        config_dir = config_folder()
        log_file = Path(platformdirs.user_log_dir(APP_NAME)) / LOG_FILE
    else:
        log_file = config_dir / LOG_FILE
    settings = Settings(config_dir=config_dir, log_file=log_file)
    toml_path = config_dir / CONFIG_FILE
    if toml_path.is_file():
        settings = _check(replace(settings, **_read_toml(toml_path)), str(toml_path))
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = set(given) - {f.name for f in fields(Settings)}
    if unknown:
        raise ConfigError(f"unknown settings {sorted(unknown)}")
    if "models" in given:
        try:
            added = {name: model_spec("command line", name, {"model": model})
                     for name, model in given["models"].items()}
        except RegistryError as exc:
            raise ConfigError(str(exc)) from None
        given["models"] = {**settings.models, **added}
    settings = _check(replace(settings, **given), "command line")
    _check_preload(settings, "command line" if "preload" in given else str(toml_path))
    if (transport := transport_problem(settings)) is not None:  # the merged settings: host and tls may come apart
        source = "command line" if given.keys() & {"host", "tls", "tls_certificate", "tls_key"} else str(toml_path)
        raise ConfigError(f"{source}: {transport}")
    return settings


def _check_preload(settings: Settings, source: str) -> None:
    """Raise :class:`ConfigError` naming ``source`` unless ``preload`` is empty or names a model: one of
    :attr:`Settings.models`, or of :data:`DEFAULT_MODELS` when none is configured (checked once the command line's
    models are merged, since ``preload`` may name one of them)."""
    names = list(settings.models) or [spec.name for spec in DEFAULT_MODELS]
    if settings.preload and settings.preload not in names:
        raise ConfigError(f"{source}: preload = {settings.preload!r} is not a model of the registry; the models are "
                          f"{', '.join(names)}")


def make_private_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents; ``folder`` itself gets mode 0700 (owner only).

    On POSIX an existing ``folder`` that others may read or enter is tightened to 0700 as well; elsewhere file
    modes mean nothing and are left alone. Used for the token's and the log's folders.

    Raises:
        OSError: a folder cannot be created, or its mode cannot be changed.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix" and folder.stat().st_mode & 0o077:
        folder.chmod(0o700)


def open_private(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open`: a file it creates gets mode 0600 (owner only, from the start: no moment
    in which others could open it), and on POSIX an existing one that others may read is tightened to 0600
    before anything goes through the returned descriptor. Used for the token and the log files.

    Args:
        path, flags: as :func:`os.open` takes them (``open`` passes them).

    Returns:
        The open file descriptor.

    Raises:
        OSError: the file cannot be opened, or its mode cannot be changed.
    """
    fd = os.open(path, flags, 0o600)
    try:
        if os.name == "posix" and os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` as the whole of ``path``, readable by its owner only (0600): into a temporary file in the same
    folder (``tempfile.mkstemp``: mode 0600 from the start), then renamed over ``path`` (``os.replace``), so a reader
    finds the old file or the new one, never part of either. Used for the TLS key and certificate and the named
    tokens' file.

    Raises:
        OSError: the folder cannot be written.
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def ensure_token(config_dir: Path) -> str:
    """Return the auth token stored in ``<config_dir>/token``, creating it first if missing.

    A new token is ``secrets.token_hex(32)`` (64 hex characters). It is written to a temporary file
    in the same folder (``tempfile.mkstemp``: mode 0600) and then hard-linked to ``token``
    (``os.link`` fails if the name exists), so the file appears complete or not at all: a daemon
    and an installer starting at once agree on one token and never read a partial one. The folder
    is made private (:func:`make_private_folder`: 0700), and an existing token file readable by others is
    tightened to 0600 (:func:`open_private`). Shared by the daemon and the installer.

    Raises:
        OSError: the folder or file cannot be created or read (also on a file system without hard links).
        ConfigError: the token file exists but is empty.
    """
    make_private_folder(config_dir)
    path = config_dir / TOKEN_FILE
    if not path.exists():
        token = secrets.token_hex(32)
        fd, temporary = tempfile.mkstemp(prefix=f".{TOKEN_FILE}-", dir=config_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(token + "\n")
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first: read theirs below
        else:
            return token
        finally:
            os.unlink(temporary)
    with open(path, encoding="utf-8", opener=open_private) as file:
        token = file.read().strip()
    if not token:
        raise ConfigError(f"{path} is empty; delete it and restart the daemon to create a new token")
    return token


def token_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison of the daemon's token with a client's (``hmac.compare_digest`` on UTF-8 bytes)."""
    return hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8"))
