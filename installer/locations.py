"""Which GIMP 3.x versions a user has, where each keeps its user configuration, and where the plug-in goes.

Sources: GIMP's ``gimp_directory()`` (``$GIMP3_DIRECTORY`` if set, else the XDG config folder on
Linux, ``%APPDATA%`` on Windows, ``~/Library/Application Support`` on macOS, each + ``GIMP/3.N`` for
GIMP 3.N), its default ``plug-in-path`` (``${gimp_dir}/plug-ins`` first), and the Flatpak's per-app
config folder ``~/.var/app/org.gimp.GIMP/config``; GIMP 3.2 (March 2026) uses ``GIMP/3.2`` and on its
first start copies ``GIMP/3.0`` (plug-ins and ``shortcutsrc`` included), after which the two are
independent (checked against GIMP 3.2.6 and 3.0.4: /work/shared/recipes/gimp32-notes.md).

Installed GIMPs are recognised by what is cheap to look at: ``gimp-3.N`` / ``gimp-console-3.N`` on
``PATH`` (``.exe`` on Windows, also under ``Program Files\\GIMP 3*\\bin``), the Flatpak's app folder
(``org.gimp.GIMP`` under the user's or the system's ``flatpak/app``), and the ``CFBundleShortVersionString``
of ``GIMP*.app/Contents/Info.plist`` in ``/Applications`` or ``~/Applications`` on macOS.

Every function takes ``environ``, ``platform`` (``sys.platform``), ``home`` and, for system folders,
``root`` (``/``), so that tests can simulate each platform in a temporary folder.
"""

from __future__ import annotations

import os
import plistlib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_VERSION = "3.2"
"""Assumed when no GIMP 3 configuration or installation is found: the newest stable series (March 2026)."""

KNOWN_VERSIONS = ("3.0", "3.2")
"""The stable GIMP 3 series that ``--gimp-version`` accepts (odd minors are development series)."""

FLATPAK_APP = "org.gimp.GIMP"
"""The GIMP Flatpak's application id."""

FLATPAK_CONFIG = Path(".var", "app", FLATPAK_APP, "config")
"""The GIMP Flatpak's configuration folder, relative to the home folder."""

PLUGIN_NAME = "gimp-inpaint"
"""Folder and entry-file name of the plug-in inside a plug-ins folder."""

VERSION_FOLDER = re.compile(r"3\.(\d+)")
"""A per-version folder name inside ``GIMP/``: ``3.0``, ``3.2``, …"""

BINARY = re.compile(r"gimp(?:-console)?-(3\.\d+)(?:\.exe)?", re.IGNORECASE)
"""The versioned GIMP 3 executables (``gimp-3.2``, ``gimp-console-3.0.exe``)."""


@dataclass(frozen=True)
class GimpConfig:
    """One GIMP 3.x user configuration folder.

    Attributes:
        version: the GIMP series, e.g. ``"3.2"``.
        config_dir: the folder (``Gimp.directory()``), holding ``shortcutsrc`` and ``plug-ins/``.
        flatpak: whether it belongs to the Flatpak (``~/.var/app/org.gimp.GIMP``).
    """

    version: str
    config_dir: Path
    flatpak: bool

    @property
    def plugin_dir(self) -> Path:
        """The user plug-ins folder GIMP searches first (``<config_dir>/plug-ins``)."""
        return self.config_dir / "plug-ins"

    @property
    def shortcut_file(self) -> Path:
        """GIMP's ``shortcutsrc`` in this configuration."""
        return self.config_dir / "shortcutsrc"

    def describe(self) -> str:
        """``"GIMP 3.2 (Flatpak)"`` / ``"GIMP 3.0 (native)"``."""
        return f"GIMP {self.version} ({'Flatpak' if self.flatpak else 'native'})"


@dataclass(frozen=True)
class InstalledGimp:
    """A GIMP 3 installation found on the machine.

    Attributes:
        version: its series (``"3.2"``), or None when the installation does not tell (a Flatpak without
            a versioned binary in its active deployment).
        flatpak: whether it is the Flatpak.
        evidence: what it was recognised by (a path), for the installer's message.
    """

    version: str | None
    flatpak: bool
    evidence: Path


def _version_key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def _defaults(environ: Mapping[str, str] | None, platform: str | None,
              home: Path | None) -> tuple[Mapping[str, str], str, Path]:
    return (os.environ if environ is None else environ, sys.platform if platform is None else platform,
            Path.home() if home is None else home)


def native_base(environ: Mapping[str, str], platform: str, home: Path) -> Path:
    """The native GIMP's ``GIMP`` folder holding one ``3.N`` folder per series.

    ``%APPDATA%\\GIMP`` on Windows (``~/AppData/Roaming`` without ``APPDATA``), ``~/Library/Application
    Support/GIMP`` on macOS, ``$XDG_CONFIG_HOME/GIMP`` (``~/.config/GIMP``) elsewhere.
    """
    if platform == "win32":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / "GIMP"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "GIMP"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "GIMP"


def config_for(version: str, flatpak: bool, environ: Mapping[str, str], platform: str, home: Path) -> GimpConfig:
    """The configuration folder GIMP ``version`` uses (whether or not it exists yet), ignoring ``$GIMP3_DIRECTORY``."""
    base = home / FLATPAK_CONFIG / "GIMP" if flatpak else native_base(environ, platform, home)
    return GimpConfig(version, base / version, flatpak)


def _configs_under(base: Path, flatpak: bool) -> list[GimpConfig]:
    if not base.is_dir():
        return []
    return [GimpConfig(folder.name, folder, flatpak) for folder in base.iterdir()
            if folder.is_dir() and VERSION_FOLDER.fullmatch(folder.name)]


def _sorted(configs: Iterable[GimpConfig]) -> list[GimpConfig]:
    """Newest version first; native before Flatpak within a version."""
    return sorted(configs, key=lambda config: (_version_key(config.version), not config.flatpak), reverse=True)


def find_gimp_configs(environ: Mapping[str, str] | None = None, platform: str | None = None,
                      home: Path | None = None, root: Path = Path("/")) -> list[GimpConfig]:
    """Every GIMP 3.x user configuration folder present, newest version first (native before Flatpak).

    With ``$GIMP3_DIRECTORY`` set, GIMP uses that folder and nothing else, so it is the only one returned,
    present or not, with the version of the newest installed GIMP (:func:`newest_installed`, else
    :data:`DEFAULT_VERSION`). The Flatpak is looked for on Linux only.

    Args:
        environ, platform, home: default to ``os.environ``, ``sys.platform`` and ``Path.home()``.
        root: the file-system root for system folders (tests pass a temporary folder).
    """
    environ, platform, home = _defaults(environ, platform, home)
    if environ.get("GIMP3_DIRECTORY"):
        installed = newest_installed(environ, platform, home, root)
        version = installed.version if installed and installed.version else DEFAULT_VERSION
        return [GimpConfig(version, Path(environ["GIMP3_DIRECTORY"]), False)]
    configs = _configs_under(native_base(environ, platform, home), False)
    if platform.startswith("linux"):
        configs += _configs_under(home / FLATPAK_CONFIG / "GIMP", True)
    return _sorted(configs)


def _binaries(folders: Iterable[Path], flatpak: bool) -> list[InstalledGimp]:
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = BINARY.fullmatch(path.name)
            if match and path.is_file():
                found.append(InstalledGimp(match.group(1), flatpak, path))
    return found


def _flatpaks(home: Path, root: Path) -> list[InstalledGimp]:
    """The Flatpak in the user's and the system's installation (``<app>/<arch>/<branch>/active/files/bin``)."""
    found = []
    for app in (home / ".local" / "share" / "flatpak" / "app" / FLATPAK_APP,
                root / "var" / "lib" / "flatpak" / "app" / FLATPAK_APP):
        if app.is_dir():
            versioned = _binaries(app.glob("*/*/active/files/bin"), True)
            found += versioned or [InstalledGimp(None, True, app)]
    return found


def _mac_apps(home: Path, root: Path) -> list[InstalledGimp]:
    found = []
    for applications in (root / "Applications", home / "Applications"):
        for info in sorted(applications.glob("GIMP*.app/Contents/Info.plist")):
            try:
                with info.open("rb") as file:
                    short_version = str(plistlib.load(file).get("CFBundleShortVersionString", ""))
            except (OSError, plistlib.InvalidFileException, ValueError):
                continue
            match = re.match(r"(3\.\d+)", short_version)
            if match:
                found.append(InstalledGimp(match.group(1), False, info))
    return found


def _windows_folders(environ: Mapping[str, str]) -> list[Path]:
    """``bin`` of ``GIMP 3*`` under Program Files (both) and the per-user ``%LOCALAPPDATA%\\Programs``."""
    bases = [Path(environ[name]) for name in ("ProgramFiles", "ProgramFiles(x86)", "ProgramW6432") if environ.get(name)]
    if environ.get("LOCALAPPDATA"):
        bases.append(Path(environ["LOCALAPPDATA"]) / "Programs")
    return [folder / "bin" for base in bases if base.is_dir() for folder in base.glob("GIMP 3*")]


def find_installed_gimps(environ: Mapping[str, str] | None = None, platform: str | None = None,
                         home: Path | None = None, root: Path = Path("/")) -> list[InstalledGimp]:
    """The GIMP 3 installations recognisable cheaply (see the module docstring), in no particular order."""
    environ, platform, home = _defaults(environ, platform, home)
    path_folders = [Path(folder) for folder in environ.get("PATH", "").split(os.pathsep) if folder]
    if platform == "win32":
        path_folders += _windows_folders(environ)
    found = _binaries(dict.fromkeys(path_folders), False)
    if platform.startswith("linux"):
        found += _flatpaks(home, root)
    if platform == "darwin":
        found += _mac_apps(home, root)
    return found


def newest_installed(environ: Mapping[str, str] | None = None, platform: str | None = None,
                     home: Path | None = None, root: Path = Path("/")) -> InstalledGimp | None:
    """The newest GIMP 3 installed (a version-less Flatpak counts as :data:`DEFAULT_VERSION`; native wins a
    tie), or None when none is recognised."""
    found = find_installed_gimps(environ, platform, home, root)
    if not found:
        return None
    return max(found, key=lambda gimp: (_version_key(gimp.version or DEFAULT_VERSION), not gimp.flatpak))


@dataclass(frozen=True)
class Targets:
    """Where :func:`install_targets` decided to install, and why (a sentence for the user)."""

    configs: tuple[GimpConfig, ...]
    reason: str


def install_targets(version: str | None = None, environ: Mapping[str, str] | None = None,
                    platform: str | None = None, home: Path | None = None, root: Path = Path("/")) -> Targets:
    """The GIMP configurations to install the plug-in into.

    Every configuration present (:func:`find_gimp_configs`), so that a GIMP 3.0 kept beside 3.2 keeps
    working and no stale copy (GIMP 3.2 copies ``GIMP/3.0`` on its first start) outlives an update; with
    ``version``, only those of that version, plus any other one already holding the plug-in (it is updated,
    not left stale). When none is present: the folder that the newest installed GIMP (or ``version``) will
    use, created by the install; with no GIMP recognised either, native :data:`DEFAULT_VERSION`.

    Args:
        version: ``"3.0"``, ``"3.2"``, … from ``--gimp-version``, or None for every version.
        environ, platform, home, root: as for :func:`find_gimp_configs`.
    """
    environ, platform, home = _defaults(environ, platform, home)
    present = find_gimp_configs(environ, platform, home, root)
    if environ.get("GIMP3_DIRECTORY"):
        return Targets(tuple(present), "$GIMP3_DIRECTORY is set: GIMP uses that folder only")
    chosen = [config for config in present if version in (None, config.version)]
    if chosen:
        stale = [config for config in present
                 if config not in chosen and (config.plugin_dir / PLUGIN_NAME).exists()]
        what = "every GIMP 3 configuration found" if version is None else f"the GIMP {version} configurations found"
        return Targets((*chosen, *stale), what + (" and the copies already installed elsewhere" if stale else ""))
    installed = newest_installed(environ, platform, home, root)
    if version is not None:
        flatpak = installed is not None and installed.flatpak and installed.version in (None, version)
        return Targets((config_for(version, flatpak, environ, platform, home),),
                       f"--gimp-version {version}: no configuration of it yet (GIMP creates it on its first start)")
    if installed is None:
        return Targets((config_for(DEFAULT_VERSION, False, environ, platform, home),),
                       f"no GIMP 3 configuration or installation found: assuming GIMP {DEFAULT_VERSION}")
    found_version = installed.version or DEFAULT_VERSION
    return Targets((config_for(found_version, installed.flatpak, environ, platform, home),),
                   f"no GIMP 3 configuration yet: the folder that GIMP {found_version} "
                   f"({installed.evidence}) will use")
