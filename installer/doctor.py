"""``gimp-inpaint doctor``: check every link from GIMP to the GPU and say what to fix, one line per check.

Each ``check_*`` function is pure: it judges facts passed in (versions, paths, a token, a connect function, a
cache listing) and returns one :class:`Check`, so that each is tested on a broken setup made in a temporary
folder. :func:`run_checks` gathers the real facts (importing torch only inside the torch probe, and only when it
is installed) and yields the checks in order; :func:`doctor` prints them and returns the exit status.

The links, in order: Python, the virtual environment, torch against the hardware
(:func:`installer.torch_select.detect_hardware` / :func:`~installer.torch_select.choose_torch`), VRAM, the GIMP
configurations (:func:`installer.locations.find_gimp_configs`), per configuration the plug-in folder and its
``connection.json`` against the daemon's token and ``daemon.toml``, the daemon's handshake, its engines, the
models in the Hugging Face cache, and the free disk space there.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import TextIO

import platformdirs
from gimp_inpaint.client.connection import (
    DAEMON_COMMAND,
    ClientError,
    ConnectionConfig,
    DaemonNotRunning,
    InpaintClient,
    read_connection_config,
)
from gimp_inpaint.daemon.config import APP_NAME, TOKEN_FILE, ConfigError, load_settings
from gimp_inpaint.protocol import Welcome

from .bundle import CONNECTION_FILE, MANIFEST, THIRD_PARTY, VENDOR
from .locations import PLUGIN_NAME, GimpConfig, InstalledGimp, find_gimp_configs, find_installed_gimps
from .torch_select import Hardware, TorchChoice, TorchChoiceError, choose_torch, detect_hardware

MIN_PYTHON = (3, 10)
"""The oldest Python gimp-inpaint supports (``requires-python`` in pyproject.toml)."""

MIN_FREE_DISK = 10 * 10**9
"""Bytes free in the Hugging Face cache below which :func:`check_disk` warns (an SDXL model takes about 7 GB)."""

MIN_VRAM = 4 * 10**9
"""GPU memory (bytes) below which :func:`check_vram` warns: SD 1.5 in fp16 needs about that, SDXL about 8 GB."""

INSTALL = "gimp-inpaint-install"
"""The installer's command, named in most fixes."""

CLIENT_NAME = "gimp-inpaint-doctor/0.1"
"""How the doctor introduces itself in the Hello."""

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
"""A Hugging Face Hub repository id, ``owner/name``."""


class Level(Enum):
    """How a check came out; any :attr:`BROKEN` makes :func:`doctor` exit with status 1."""

    OK = "ok"
    WARNING = "warning"
    BROKEN = "broken"


@dataclass(frozen=True)
class Check:
    """One check's outcome.

    Attributes:
        name: the link checked, e.g. ``"torch"``, ``"plug-in (GIMP 3.2 (native))"``.
        level: :class:`Level`.
        detail: what was found.
        fix: what to do about it (empty when nothing needs doing).
    """

    name: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``"broken   torch: <detail> → fix: <fix>"``, the level padded to one width."""
        return f"{self.level.value:<8} {self.name}: {self.detail}" + (f" → fix: {self.fix}" if self.fix else "")


def check_python(version: Sequence[int]) -> Check:
    """Python ``version`` (``sys.version_info[:3]``) against :data:`MIN_PYTHON`."""
    text = ".".join(str(part) for part in version[:3])
    if tuple(version[:2]) < MIN_PYTHON:
        return Check("python", Level.BROKEN, f"Python {text} is older than {MIN_PYTHON[0]}.{MIN_PYTHON[1]}",
                     f"install Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer and re-run install.sh")
    return Check("python", Level.OK, f"Python {text}")


def check_venv(prefix: str, base_prefix: str, package_dir: Path | None, version: str | None) -> Check:
    """The environment running gimp-inpaint: a virtual environment (``sys.prefix != sys.base_prefix``) from
    which ``gimp_inpaint`` (found in ``package_dir``, distribution ``version``) is importable."""
    if package_dir is None or version is None:
        return Check("environment", Level.BROKEN, f"gimp_inpaint is not installed in {prefix}",
                     "run install.sh, or `pip install gimp-inpaint` in the environment that runs the daemon")
    found = f"gimp-inpaint {version} from {package_dir}"
    if prefix == base_prefix:
        return Check("environment", Level.WARNING, f"{found}, installed outside a virtual environment ({prefix})",
                     "install.sh puts it in its own .venv, which keeps torch's packages apart from the system's")
    return Check("environment", Level.OK, f"{found} in the virtual environment {prefix}")


@dataclass(frozen=True)
class TorchFacts:
    """What the installed torch says about itself (:func:`torch_facts`).

    Attributes:
        version: ``torch.__version__``, e.g. ``"2.13.0+cu128"``.
        cuda: ``torch.version.cuda`` (``"12.8"``), None for a build without CUDA.
        hip: ``torch.version.hip``, None for a build without ROCm.
        gpu_available: ``torch.cuda.is_available()`` (CUDA and ROCm alike).
        mps_available: ``torch.backends.mps.is_available()``.
        gpu_name: ``torch.cuda.get_device_name(0)`` when a GPU is available.
        vram_free, vram_total: bytes, from ``torch.cuda.mem_get_info(0)`` when a GPU is available.
    """

    version: str
    cuda: str | None = None
    hip: str | None = None
    gpu_available: bool = False
    mps_available: bool = False
    gpu_name: str | None = None
    vram_free: int | None = None
    vram_total: int | None = None

    @property
    def build(self) -> str:
        """``"CUDA 12.8"``, ``"ROCm 7.1"`` or ``"no CUDA or ROCm"``."""
        return f"CUDA {self.cuda}" if self.cuda else f"ROCm {self.hip}" if self.hip else "no CUDA or ROCm"


def torch_facts() -> TorchFacts | None:
    """Import torch (several seconds) and read :class:`TorchFacts`; None when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    gpu = torch.cuda.is_available()
    free, total = torch.cuda.mem_get_info(0) if gpu else (None, None)
    return TorchFacts(version=torch.__version__, cuda=torch.version.cuda, hip=getattr(torch.version, "hip", None),
                      gpu_available=gpu, mps_available=torch.backends.mps.is_available(),
                      gpu_name=torch.cuda.get_device_name(0) if gpu else None, vram_free=free, vram_total=total)


def _pip_fix(choice: TorchChoice, python: str) -> str:
    return (f"{INSTALL} env --with-diffusers --torch {_override(choice)}, or "
            f"`{python} -m pip install {' '.join(choice.pip_args())}`")


def _override(choice: TorchChoice) -> str:
    """The ``--torch`` value that selects ``choice``'s backend."""
    if choice.backend.startswith("cu"):
        return "cuda"
    return "rocm" if choice.backend.startswith("rocm") else choice.backend


def check_torch(torch: TorchFacts | None, choice: TorchChoice | None, choice_problem: str = "",
                python: str = sys.executable) -> Check:
    """torch's build against the hardware: whether it is installed, and whether it uses the GPU that
    :func:`installer.torch_select.choose_torch` (``choice``; None with ``choice_problem`` when no build fits)
    says it should.

    Broken: a CUDA/ROCm build that cannot use the GPU found (``torch.cuda.is_available()`` False), or an MPS
    machine whose torch cannot use MPS. Warning: no torch (only the opencv engine works), a build without GPU
    support on a machine with a usable GPU, or no build for this machine.
    """
    if torch is None:
        fix = _pip_fix(choice, python) if choice else f"none for this machine ({choice_problem})"
        return Check("torch", Level.WARNING, "not installed: only the opencv engine works (no diffusion models)",
                     fix)
    found = f"torch {torch.version} ({torch.build})"
    if choice is None:
        return Check("torch", Level.WARNING, f"{found}; no torch build fits this machine: {choice_problem}")
    if torch.gpu_available:
        return Check("torch", Level.OK, f"{found} uses {torch.gpu_name or 'the GPU'}")
    if choice.backend == "mps":
        if torch.mps_available:
            return Check("torch", Level.OK, f"{found} uses the Apple GPU through MPS")
        return Check("torch", Level.BROKEN, f"{found} cannot use MPS (torch.backends.mps.is_available() is False)",
                     _pip_fix(choice, python) + "; MPS needs macOS 12.3 or newer")
    if choice.backend == "cpu":
        return Check("torch", Level.OK, f"{found} on the CPU, as expected here: {choice.reason}")
    if torch.cuda is None and torch.hip is None:
        return Check("torch", Level.WARNING, f"{found} cannot use the GPU of this machine ({choice.reason}): the "
                                             f"diffusion engines run on the CPU, minutes per image",
                     _pip_fix(choice, python))
    return Check("torch", Level.BROKEN, f"{found} cannot use the GPU (torch.cuda.is_available() is False) although "
                                        f"{choice.reason}",
                 f"{_pip_fix(choice, python)}; if that does not help, update the GPU driver")


def check_vram(torch: TorchFacts | None) -> Check:
    """GPU memory free and in all (from torch), against :data:`MIN_VRAM`."""
    if torch is None or not (torch.gpu_available or torch.mps_available):
        return Check("vram", Level.OK, "no GPU in use: the diffusion engines run on the CPU")
    if torch.vram_total is None or torch.vram_free is None:
        return Check("vram", Level.OK, "Apple MPS shares the system's memory")
    found = f"{torch.vram_free / 1e9:.1f} of {torch.vram_total / 1e9:.1f} GB free on {torch.gpu_name or 'the GPU'}"
    if torch.vram_total < MIN_VRAM:
        return Check("vram", Level.WARNING, f"{found}: under {MIN_VRAM / 1e9:.0f} GB, SD 1.5 may not fit (SDXL "
                                            f"needs about 8 GB)", "use the opencv engine or a machine with more VRAM")
    return Check("vram", Level.OK, found)


def check_gimp(configs: Sequence[GimpConfig], installed: Sequence[InstalledGimp]) -> Check:
    """The GIMP 3 configuration folders (:func:`installer.locations.find_gimp_configs`) and installations
    (:func:`installer.locations.find_installed_gimps`) found."""
    programs = ", ".join(sorted({f"GIMP {gimp.version or '3'}{' (Flatpak)' if gimp.flatpak else ''} "
                                 f"({gimp.evidence})" for gimp in installed}))
    if not configs:
        if not installed:
            return Check("gimp", Level.BROKEN, "no GIMP 3 installation or configuration found",
                         f"install GIMP 3 (gimp.org, Flatpak org.gimp.GIMP or your distribution), start it once, "
                         f"then run {INSTALL}")
        return Check("gimp", Level.WARNING, f"installed: {programs}, but no GIMP 3 configuration folder yet",
                     f"start GIMP once, then run {INSTALL}")
    folders = "; ".join(f"{config.describe()} at {config.config_dir}" for config in configs)
    return Check("gimp", Level.OK, folders + (f"; programs: {programs}" if programs else ""))


def _versions(manifest: Path) -> dict[str, str]:
    """``versions`` of the plug-in's ``install.json`` (empty when missing or malformed)."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    versions = data.get("versions") if isinstance(data, dict) else None
    return {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}


def check_plugin(config: GimpConfig, sources: Mapping[str, Path], venv_versions: Mapping[str, str],
                 posix: bool = os.name == "posix") -> Check:
    """The plug-in in ``config``'s plug-ins folder: its entry file present and (on POSIX, where GIMP skips one
    that is not) executable, its vendored ``gimp_inpaint`` present and the same as this installation's code
    (``sources``: subpackage name → folder, e.g. ``{"client": Path(".../client")}``), and the vendored
    third-party versions of ``install.json`` equal to ``venv_versions`` (distribution → version)."""
    name = f"plug-in ({config.describe()})"
    folder = config.plugin_dir / PLUGIN_NAME
    entry = folder / f"{PLUGIN_NAME}.py"
    reinstall = f"run {INSTALL}"
    if not folder.is_dir():
        return Check(name, Level.BROKEN, f"not installed ({folder} is missing)", reinstall)
    if not entry.is_file():
        return Check(name, Level.BROKEN, f"{entry} is missing", reinstall)
    if posix and not entry.stat().st_mode & stat.S_IXUSR:
        return Check(name, Level.BROKEN, f"{entry} is not executable, so GIMP does not load it",
                     f"chmod +x {entry}, or {reinstall}")
    vendored = folder / VENDOR / "gimp_inpaint"
    if not vendored.is_dir():
        return Check(name, Level.BROKEN, f"{vendored} is missing: the plug-in cannot import its client", reinstall)
    stale = sorted(str(path.relative_to(vendored)) for path in vendored.rglob("*.py")
                   if not _same_file(path, sources, path.relative_to(vendored)))
    versions = _versions(folder / MANIFEST)
    different = [f"{package} {versions.get(package, '?')} (here {venv_versions[package]})"
                 for package in venv_versions if versions.get(package) != venv_versions[package]]
    if stale or different:
        return Check(name, Level.WARNING, "an older or other copy: " + "; ".join(
            ([f"vendored code differs from this installation's ({', '.join(stale)})"] if stale else [])
            + ([f"vendored {', '.join(different)}"] if different else [])), reinstall)
    listed = ", ".join(f"{package} {version}" for package, version in versions.items())
    return Check(name, Level.OK, f"{folder}" + (f" ({listed})" if listed else ""))


def _same_file(vendored: Path, sources: Mapping[str, Path], relative: Path) -> bool:
    """Whether ``vendored`` (at ``relative`` inside the vendored ``gimp_inpaint``) equals its source file."""
    source = sources.get(relative.parts[0]) if len(relative.parts) > 1 else None
    if source is None:
        return True  # a file outside this installation's subpackages: nothing to compare with
    try:
        return vendored.read_bytes() == source.joinpath(*relative.parts[1:]).read_bytes()
    except OSError:
        return False


def check_connection(config: GimpConfig, token: str | None, token_file: Path, daemon_url: str | None,
                     url_problem: str = "") -> Check:
    """``connection.json`` of ``config``'s plug-in against the daemon: the same token as ``token_file``'s
    (``token``, None when unreadable), the same URL as ``daemon.toml`` gives (``daemon_url``; None with
    ``url_problem`` when it gives none), and a daemon command whose program exists.

    Broken: unreadable, token mismatch or no token file, a command whose program is missing. Warning: another
    URL (right only when the daemon runs elsewhere), no command (the plug-in cannot start the daemon).
    """
    name = f"connection ({config.describe()})"
    path = config.plugin_dir / PLUGIN_NAME / CONNECTION_FILE
    reinstall = f"run {INSTALL}"
    if not path.parent.is_dir():
        return Check(name, Level.BROKEN, "no plug-in, so no connection.json", reinstall)
    try:
        connection: ConnectionConfig = read_connection_config(path)
    except ClientError as exc:
        return Check(name, Level.BROKEN, exc.message, reinstall)
    if token is None:
        return Check(name, Level.BROKEN, f"the daemon's token file {token_file} is missing or unreadable",
                     f"{reinstall} (it creates the token), or start `{DAEMON_COMMAND}` once")
    if connection.token != token:
        return Check(name, Level.BROKEN, f"{path} holds another token than {token_file}: the daemon refuses "
                                         f"the plug-in (UNAUTHORIZED)", reinstall)
    program = connection.daemon_command[0] if connection.daemon_command else None
    if program is not None and shutil.which(program) is None:
        return Check(name, Level.BROKEN, f"the daemon command's program {program} is missing: the plug-in cannot "
                                         f"start the daemon", reinstall)
    notes = []
    if daemon_url is None:
        notes.append(f"daemon.toml gives no URL to compare with ({url_problem})")
    elif connection.url != daemon_url:
        notes.append(f"the plug-in connects to {connection.url} but daemon.toml has the daemon listen at "
                     f"{daemon_url} (right only if the daemon runs elsewhere)")
    if program is None:
        notes.append(f"no daemon command: the plug-in cannot start the daemon, start `{DAEMON_COMMAND}` yourself")
    if notes:
        return Check(name, Level.WARNING, "; ".join(notes), reinstall)
    return Check(name, Level.OK, f"{connection.url} with the daemon's token; starts the daemon with "
                                 f"`{' '.join(connection.daemon_command or ())}`")


Connect = Callable[[str, str], Welcome]
"""``connect(url, token)``: handshake with the daemon and return its Welcome; raises
:class:`client.connection.ClientError`."""


def connect_daemon(url: str, token: str, timeout: float = 5.0, config_dir: Path | None = None) -> Welcome:
    """A :data:`Connect` over :meth:`client.connection.InpaintClient.connect` (``timeout`` in seconds); a ``wss://``
    daemon is checked against the fingerprint of its own certificate file in ``config_dir`` (None: its default;
    :func:`client.local_daemon.configured_fingerprint`), as the doctor checks this machine's daemon.

    Raises:
        ClientError: as ``InpaintClient.connect``; daemon.config.ConfigError: ``daemon.toml`` is invalid.
    """
    from gimp_inpaint.client.local_daemon import configured_fingerprint

    pin = configured_fingerprint(config_dir) if url.startswith("wss://") else None
    with InpaintClient.connect(url, token, CLIENT_NAME, timeout, pin) as client:
        return client.welcome


def check_daemon(url: str | None, token: str | None, connect: Connect, version: str | None,
                 url_problem: str = "") -> tuple[Check, Welcome | None]:
    """A handshake with the daemon at ``url`` (from ``daemon.toml``) with ``token`` (its token file's), and its
    version against ours (``version``, the installed distribution's). Returns the check and the Welcome (None
    when it did not answer).

    Warning: not running (the plug-in starts it when a fill needs it), another version. Broken: no URL or
    token, or any other failure (refused token, another protocol, not a gimp-inpaint daemon).
    """
    if url is None:
        return Check("daemon", Level.BROKEN, url_problem, "fix daemon.toml"), None
    if token is None:
        return Check("daemon", Level.BROKEN, "no token file to connect with",
                     f"run {INSTALL} (it creates the token)"), None
    try:
        welcome = connect(url, token)
    except DaemonNotRunning:
        return Check("daemon", Level.WARNING, f"not running at {url}",
                     f"start `{DAEMON_COMMAND}` (the plug-in also starts it when a fill needs it)"), None
    except ClientError as exc:
        return Check("daemon", Level.BROKEN, str(exc), f"quit the process listening at {url}, then start "
                                                       f"`{DAEMON_COMMAND}`"), None
    found = f"gimp-inpaint daemon {welcome.daemon_version} at {url} on {welcome.device}"
    if version is not None and welcome.daemon_version != version:
        return Check("daemon", Level.WARNING, f"{found}, but this installation is {version}",
                     f"quit the daemon and start `{DAEMON_COMMAND}` again"), welcome
    return Check("daemon", Level.OK, found), welcome


def check_engines(welcome: Welcome | None) -> Check:
    """The daemon's engines (its Welcome; None when it did not answer): broken when none is available, a
    warning when only engines without a prompt (``migan``, ``opencv``) are: no diffusion model can run."""
    if welcome is None:
        return Check("engines", Level.WARNING, "not checked: no daemon answered")
    available = [engine.name for engine in welcome.engines if engine.available]
    missing = [f"{engine.name} ({engine.detail or 'no detail'})" for engine in welcome.engines if not engine.available]
    found = f"available: {', '.join(available) or 'none'}" + (f"; unavailable: {', '.join(missing)}" if missing else "")
    if not available:
        return Check("engines", Level.BROKEN, found, "see each engine's reason; `gimp-inpaint status` lists them")
    if not any(engine.uses_prompt for engine in welcome.engines if engine.available):
        return Check("engines", Level.WARNING, found, "install torch and diffusers (re-run install.sh) for the "
                                                      "diffusion models")
    return Check("engines", Level.OK, found)


def hf_cache_dir(environ: Mapping[str, str], home: Path) -> Path:
    """The Hugging Face Hub cache folder, as ``huggingface_hub.constants.HF_HUB_CACHE`` resolves it:
    ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return Path(environ[name]).expanduser()
    hf_home = environ.get("HF_HOME") or Path(environ.get("XDG_CACHE_HOME") or home / ".cache") / "huggingface"
    return Path(hf_home).expanduser() / "hub"


def check_models(cached: Mapping[str, int] | None, wanted: Sequence[str], cache: Path, offline: bool = False) -> Check:
    """The models the daemon offers (``wanted``: hub ids and local paths of every model, ControlNet, refiner and
    config) against the Hugging Face cache ``cache`` (``cached``: repository id → bytes on disk; None when
    huggingface_hub is not installed).

    Broken: a local model path that does not exist, or a hub model not downloaded while ``offline``
    (``HF_HUB_OFFLINE`` set). Warning: no huggingface_hub. A hub model not downloaded yet is fine otherwise: the
    first fill downloads it.
    """
    local = [model for model in wanted if not _HUB_ID.fullmatch(model)]
    absent_paths = [model for model in local if not Path(model).expanduser().exists()]
    if absent_paths:
        return Check("models", Level.BROKEN, f"model files or folders missing: {', '.join(absent_paths)}",
                     "fix the paths in daemon.toml")
    if cached is None:
        return Check("models", Level.WARNING, "huggingface_hub is not installed: no diffusion model can be "
                                              "downloaded", "re-run install.sh (the default install brings it)")
    hub = [model for model in wanted if model not in local]
    present = [f"{model} ({cached[model] / 1e9:.1f} GB)" for model in hub if model in cached]
    absent = [model for model in hub if model not in cached]
    total = sum(cached.values()) / 1e9
    found = f"{len(cached)} models in {cache} ({total:.1f} GB)" + (f"; offered: {', '.join(present)}" if present
                                                                      else "")
    if absent and offline:
        return Check("models", Level.BROKEN, f"{found}; not downloaded: {', '.join(absent)}, and HF_HUB_OFFLINE "
                                             f"forbids the download", "unset HF_HUB_OFFLINE for the first fill")
    return Check("models", Level.OK, found + (f"; not downloaded yet (the first fill downloads it): "
                                              f"{', '.join(absent)}" if absent else ""))


def check_disk(folder: Path, free: int) -> Check:
    """``free`` bytes (``shutil.disk_usage``) where ``folder`` (the Hugging Face cache) is, against
    :data:`MIN_FREE_DISK`."""
    found = f"{free / 1e9:.1f} GB free at {folder}"
    if free < MIN_FREE_DISK:
        return Check("disk", Level.WARNING, f"{found}: under {MIN_FREE_DISK / 1e9:.0f} GB, a model download may not "
                                            f"fit (an SDXL model takes about 7 GB)",
                     "free some space, or set HF_HUB_CACHE to a folder on a larger disk")
    return Check("disk", Level.OK, found)


def _existing_parent(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (``shutil.disk_usage`` needs an existing path)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _cached_models(cache: Path) -> dict[str, int] | None:
    """Repository id → bytes on disk of the models in ``cache``; None without huggingface_hub."""
    if importlib.util.find_spec("huggingface_hub") is None:
        return None
    from huggingface_hub import CacheNotFound, scan_cache_dir

    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return {}
    return {repo.repo_id: repo.size_on_disk for repo in info.repos if repo.repo_type == "model"}


def _offered_models(config_dir: Path | None) -> list[str]:
    """Every model, ControlNet, refiner and config the daemon would offer (its :func:`daemon.__main__.build_engines`
    defaults included).

    Raises:
        daemon.config.ConfigError: ``daemon.toml`` is invalid.
    """
    from gimp_inpaint.daemon.__main__ import DEFAULT_MODELS
    from gimp_inpaint.daemon.engines.diffusers_engine import diffusers_available

    specs = list(load_settings(config_dir).models.values()) or (list(DEFAULT_MODELS) if diffusers_available() else [])
    return list(dict.fromkeys(value for spec in specs
                              for value in (spec.model, spec.controlnet, spec.refiner, spec.config) if value))


def _sources() -> dict[str, Path]:
    """Subpackage name → folder of this installation's ``gimp_inpaint`` subpackages that the plug-in vendors."""
    found = {}
    for name in ("protocol", "client", "plugin_gimp"):
        spec = importlib.util.find_spec(f"gimp_inpaint.{name}")
        if spec is not None and spec.submodule_search_locations:
            found[name] = Path(next(iter(spec.submodule_search_locations)))
    return found


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def run_checks(config_dir: Path | None = None, environ: Mapping[str, str] | None = None, home: Path | None = None,
               connect: Connect | None = None, probe_torch: Callable[[], TorchFacts | None] = torch_facts,
               probe_hardware: Callable[[], Hardware] = detect_hardware) -> Iterator[Check]:
    """Gather this machine's facts and yield every check, in the module docstring's order.

    Args:
        config_dir: the daemon's configuration folder (token, daemon.toml); None = its default.
        environ, home: default ``os.environ`` and ``Path.home()`` (GIMP folders, the Hugging Face cache).
        connect: the daemon handshake (:data:`Connect`); None: :func:`connect_daemon` with ``config_dir``.
        probe_torch, probe_hardware: :func:`torch_facts` and :func:`installer.torch_select.detect_hardware`.
    """
    from gimp_inpaint.client.local_daemon import configured_url

    environ = os.environ if environ is None else environ
    home = Path.home() if home is None else home
    yield check_python(sys.version_info[:3])
    package = importlib.util.find_spec("gimp_inpaint.client")
    yield check_venv(sys.prefix, sys.base_prefix, Path(next(iter(package.submodule_search_locations))).parent
                     if package and package.submodule_search_locations else None, _version("gimp-inpaint"))
    torch, hardware = probe_torch(), probe_hardware()
    try:
        choice, problem = choose_torch(hardware, version=torch.version.split("+")[0] if torch else None), ""
    except TorchChoiceError as exc:
        choice, problem = None, str(exc)
    yield check_torch(torch, choice, problem)
    yield check_vram(torch)
    configs = find_gimp_configs(environ, home=home)
    yield check_gimp(configs, find_installed_gimps(environ, home=home))
    folder = config_dir or Path(platformdirs.user_config_dir(APP_NAME))
    token_file = folder / TOKEN_FILE
    try:
        token: str | None = token_file.read_text(encoding="utf-8").strip()
    except OSError:
        token = None
    try:
        url, url_problem = configured_url(config_dir), ""
    except ConfigError as exc:
        url, url_problem = None, str(exc)
    venv_versions = {package: version for package in THIRD_PARTY if (version := _version(package))}
    for config in configs:
        yield check_plugin(config, _sources(), venv_versions)
        yield check_connection(config, token, token_file, url, url_problem)
    handshake = connect or functools.partial(connect_daemon, config_dir=config_dir)
    daemon, welcome = check_daemon(url, token, handshake, _version("gimp-inpaint"), url_problem)
    yield daemon
    yield check_engines(welcome)
    cache = hf_cache_dir(environ, home)
    try:
        yield check_models(_cached_models(cache), _offered_models(config_dir), cache,
                           offline=environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "on", "yes", "true"))
    except ConfigError as exc:
        yield Check("models", Level.BROKEN, str(exc), "fix daemon.toml")
    yield check_disk(_existing_parent(cache), shutil.disk_usage(_existing_parent(cache)).free)


def doctor(checks: Iterator[Check], out: TextIO) -> int:
    """Print each check's :meth:`Check.line` as it comes; return 1 when one is broken, else 0."""
    broken = 0
    for check in checks:
        print(check.line(), file=out, flush=True)
        broken += check.level is Level.BROKEN
    print(f"{broken} broken" if broken else "nothing broken", file=out, flush=True)
    return 1 if broken else 0
