"""Where GIMP 3 keeps its user configuration and looks for user plug-ins, per platform.

Sources: GIMP's ``gimp_directory()`` (``$GIMP3_DIRECTORY`` if set, else the XDG config folder on
Linux, ``%APPDATA%`` on Windows, ``~/Library/Application Support`` on macOS, each + ``GIMP/3.0``),
its default ``plug-in-path`` (``${gimp_dir}/plug-ins`` first), and the Flatpak's per-app config
folder ``~/.var/app/org.gimp.GIMP/config``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

GIMP_VERSION_DIR = Path("GIMP", "3.0")
"""GIMP 3.x's per-version folder inside the platform's configuration folder."""

FLATPAK_CONFIG = Path(".var", "app", "org.gimp.GIMP", "config")
"""The GIMP Flatpak's configuration folder, relative to the home folder."""


def gimp_config_dir(environ: Mapping[str, str] | None = None, platform: str | None = None,
                    home: Path | None = None) -> Path:
    """GIMP 3's user configuration folder (holding ``shortcutsrc`` and ``plug-ins/``).

    Args:
        environ, platform, home: default to ``os.environ``, ``sys.platform`` and ``Path.home()``
            (parameters for tests).

    Returns:
        ``$GIMP3_DIRECTORY`` when set; on Windows ``%APPDATA%\\GIMP\\3.0``; on macOS
        ``~/Library/Application Support/GIMP/3.0``; on Linux ``$XDG_CONFIG_HOME/GIMP/3.0``
        (``~/.config/GIMP/3.0``), unless only the Flatpak's ``~/.var/app/org.gimp.GIMP/config/GIMP/3.0``
        exists, which is then returned.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path.home() if home is None else home
    if environ.get("GIMP3_DIRECTORY"):
        return Path(environ["GIMP3_DIRECTORY"])
    if platform == "win32":
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / GIMP_VERSION_DIR
    if platform == "darwin":
        return home / "Library" / "Application Support" / GIMP_VERSION_DIR
    native = Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / GIMP_VERSION_DIR
    flatpak = home / FLATPAK_CONFIG / GIMP_VERSION_DIR
    if not native.exists() and flatpak.exists():
        return flatpak
    return native


def plugin_dir(config_dir: Path) -> Path:
    """The user plug-in folder inside GIMP's configuration folder ``config_dir``."""
    return config_dir / "plug-ins"
