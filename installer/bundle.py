"""Copy the plug-in and its pure-Python dependencies into GIMP's plug-ins folder, and remove them again.

Layout written by :func:`install` (GIMP 3 registers ``<plug-ins>/<name>/<name>.py`` only, and only
when it is executable)::

    <plugin_dir>/gimp-inpaint/
        gimp-inpaint.py      the entry file, mode 0755
        connection.json      {"url", "token", "daemon_command"}, mode 0600
        install.json         what this install did (versions, the shortcuts it added), for uninstall
        vendor/              put first on sys.path by the entry file
            gimp_inpaint/        the same layout as the installed package, only what the plug-in imports:
                protocol/  client/{__init__,connection,document,expand,fill,metadata}.py
                plugin_gimp/{__init__,arguments,dialog,dialog_model,gimp_document}.py
            msgpack/  websockets/   only their .py files: msgpack falls back to msgpack.fallback without
                                    its C extension, websockets to pure Python without its speedups
            licenses/            the license files of msgpack and websockets

GIMP's own Python (3.10+ in GIMP 3 builds) runs the plug-in; it needs no msgpack or websockets.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TypedDict, cast

from gimp_inpaint.client.connection import write_connection_config
from gimp_inpaint.daemon.config import TOKEN_FILE, ensure_token

from .locations import PLUGIN_NAME
from .shortcuts import add_shortcut, remove_shortcut

PROCEDURE = "python-fu-gimp-inpaint"
"""Generative Fill, a procedure the entry file registers (its ``PROCEDURE``); also its shortcut action name."""

EXPAND_PROCEDURE = "python-fu-gimp-inpaint-expand"
"""Generative Expand, the entry file's other procedure (its ``EXPAND_PROCEDURE``); also its shortcut action name."""

DEFAULT_SHORTCUT = "<Primary><Alt>i"
"""Ctrl+Alt+I (unused by GIMP 3.0's default shortcuts)."""

DEFAULT_EXPAND_SHORTCUT = "<Primary><Alt>e"
"""Ctrl+Alt+E for Generative Expand: unused by GIMP 3.0's and 3.2's default shortcuts (the ``shortcutsrc`` that GIMP
3.0.4 and 3.2.6 write, every action with its default, binds Ctrl+Alt only to V, F and O)."""

MANIFEST = "install.json"
"""File in the plug-in folder recording what the install did (:class:`Manifest`), for reinstall and uninstall."""

CONNECTION_FILE = "connection.json"
"""File in the plug-in folder with the daemon's URL and token (mode 0600), read by the plug-in at each run."""

VENDOR = "vendor"
"""Subfolder of the plug-in folder holding the vendored packages; the entry file puts it first on ``sys.path``."""

THIRD_PARTY = ("msgpack", "websockets")
"""Pure-Python copies of these distributions (import name = distribution name) go into ``vendor/``."""

OWN_PACKAGES = {
    "gimp_inpaint.protocol": None,  # the whole package
    "gimp_inpaint.client": ("__init__.py", "connection.py", "document.py", "expand.py", "fill.py", "metadata.py"),
    "gimp_inpaint.plugin_gimp": ("__init__.py", "arguments.py", "dialog.py", "dialog_model.py", "gimp_document.py"),
}
"""This project's code the plug-in imports; ``None`` = every module of the package."""


class InstallError(Exception):
    """The install or uninstall cannot proceed; the message says why and what to do."""


class Manifest(TypedDict, total=False):
    """Contents of :data:`MANIFEST` (JSON); a missing or malformed file reads as the empty manifest.

    Attributes:
        versions: ``{package: version}`` of the vendored packages (``"source"`` for this project's own).
        shortcut: the GTK accelerator this install added to ``shortcutsrc`` for :data:`PROCEDURE`, or None if it
            added none.
        expand_shortcut: the same for :data:`EXPAND_PROCEDURE` (absent in installs made before it existed).
        shortcut_file: the ``shortcutsrc`` they were added to, or None.
    """

    versions: dict[str, str]
    shortcut: str | None
    expand_shortcut: str | None
    shortcut_file: str | None


@dataclass(frozen=True)
class InstallReport:
    """What :func:`install` did (paths are absolute)."""

    plugin_folder: Path
    connection_file: Path
    token_file: Path
    url: str
    vendored: dict[str, str]
    shortcut_file: Path | None
    shortcut_detail: str


@dataclass(frozen=True)
class UninstallReport:
    """What :func:`uninstall` did."""

    plugin_folder: Path
    removed: bool
    shortcut_detail: str


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InstallError(f"the Python package {name!r} is not installed here; run the installer from the "
                           f"gimp-inpaint environment (pip install gimp-inpaint)")
    return Path(next(iter(spec.submodule_search_locations)))


def _copy_python_files(source: Path, target: Path) -> None:
    """Copy every ``.py`` file under ``source`` to ``target`` keeping the tree (no C extensions, no caches)."""
    for path in sorted(source.rglob("*.py")):
        relative = path.relative_to(source)
        if "__pycache__" in relative.parts:
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / relative)


def _copy_licenses(distribution: metadata.Distribution, target: Path) -> None:
    for file in distribution.files or []:
        if file.name.upper().startswith(("LICENSE", "COPYING")):
            target.mkdir(parents=True, exist_ok=True)
            # an installed distribution (a PathDistribution) locates its files as Paths; typeshed says SimplePath
            located = cast("os.PathLike[str]", distribution.locate_file(file))
            shutil.copyfile(Path(located), target / f"{distribution.name}-{file.name}")


def vendor_packages(target: Path) -> dict[str, str]:
    """Write the ``vendor/`` folder at ``target``; returns ``{package: version}`` of what was copied.

    Raises:
        InstallError: a package is not installed in this Python.
    """
    versions = {}
    for name, modules in OWN_PACKAGES.items():
        source, folder = _package_dir(name), target.joinpath(*name.split("."))
        if modules is None:
            _copy_python_files(source, folder)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            for module in modules:
                shutil.copyfile(source / module, folder / module)
        versions[name] = "source"
    for name in THIRD_PARTY:
        _copy_python_files(_package_dir(name), target / name)
        distribution = metadata.distribution(name)
        _copy_licenses(distribution, target / "licenses")
        versions[name] = distribution.version
    return versions


def _entry_file() -> Path:
    return _package_dir("gimp_inpaint.plugin_gimp") / PLUGIN_NAME / f"{PLUGIN_NAME}.py"


_SHORTCUT_KEYS = {PROCEDURE: "shortcut", EXPAND_PROCEDURE: "expand_shortcut"}
"""Each procedure's :class:`Manifest` key for the accelerator an install added for it."""


def _owned_shortcuts(folder: Path) -> tuple[dict[str, str], str | None]:
    """The shortcuts the install in ``folder`` added, ``{procedure: accelerator}``, and the ``shortcutsrc`` it added
    them to, from its :class:`Manifest` (only well-typed entries; a missing or malformed file owns none)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, None
    if not isinstance(data, dict) or not isinstance(data.get("shortcut_file"), str):
        return {}, None
    return {procedure: data[key] for procedure, key in _SHORTCUT_KEYS.items() if isinstance(data.get(key), str)}, \
        data["shortcut_file"]


def _update_shortcut(shortcut_file: Path, procedure: str, accelerator: str, owned: str | None) -> tuple[str | None,
                                                                                                      str]:
    """Add ``procedure``'s shortcut line; ``owned`` is the accelerator an earlier install into this ``shortcutsrc``
    added for it. Returns (the accelerator this install owns, or None; what happened)."""
    text = shortcut_file.read_text(encoding="utf-8") if shortcut_file.exists() else ""
    change = add_shortcut(text, procedure, accelerator)
    if change.changed:
        shortcut_file.parent.mkdir(parents=True, exist_ok=True)
        shortcut_file.write_text(change.text, encoding="utf-8")
        return accelerator, f"{change.detail} in {shortcut_file}"
    if owned and remove_shortcut(text, procedure, owned).changed:
        return owned, f"{owned} (added by an earlier install) is still in {shortcut_file}"
    return None, f"{change.detail} in {shortcut_file}"


def install(plugin_dir: Path, config_dir: Path, url: str, shortcut: str | None,
            gimp_config_dir: Path, daemon_command: Sequence[str] | None = None,
            expand_shortcut: str | None = None, fingerprint: str | None = None) -> InstallReport:
    """Install (or reinstall over) the plug-in into ``plugin_dir/gimp-inpaint``.

    Args:
        plugin_dir: a GIMP plug-ins folder (created if missing).
        config_dir: the daemon's config folder; its token is created if missing
            (:func:`daemon.config.ensure_token`) and copied into ``connection.json``.
        url: the daemon's WebSocket URL for ``connection.json``.
        shortcut: GTK accelerator to bind to Generative Fill (:data:`PROCEDURE`) in ``gimp_config_dir/shortcutsrc``,
            or None.
        gimp_config_dir: GIMP's configuration folder (for ``shortcutsrc``).
        daemon_command: the command line starting the daemon (:func:`installer.autostart.daemon_command`),
            written into ``connection.json`` for the plug-in to start the daemon itself; None leaves it out.
        expand_shortcut: GTK accelerator to bind to Generative Expand (:data:`EXPAND_PROCEDURE`), or None.
        fingerprint: the SHA-256 fingerprint of a ``wss://`` daemon's certificate, pinned in ``connection.json``;
            None leaves it out.

    Raises:
        InstallError: a package to vendor is missing.
        OSError: a file cannot be written.
    """
    token = ensure_token(config_dir)
    folder = plugin_dir / PLUGIN_NAME
    previous, previous_file = _owned_shortcuts(folder)
    staging = plugin_dir / f".{PLUGIN_NAME}.new"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        entry = staging / f"{PLUGIN_NAME}.py"
        shutil.copyfile(_entry_file(), entry)
        entry.chmod(0o755)
        vendored = vendor_packages(staging / VENDOR)
        write_connection_config(staging / CONNECTION_FILE, url, token, daemon_command, fingerprint)
        shortcut_file = gimp_config_dir / "shortcutsrc"
        wanted = {procedure: accelerator for procedure, accelerator in
                  ((PROCEDURE, shortcut), (EXPAND_PROCEDURE, expand_shortcut)) if accelerator}
        owned: dict[str, str] = {}
        details = []
        for procedure, accelerator in wanted.items():
            kept, detail = _update_shortcut(shortcut_file, procedure, accelerator,
                                            previous.get(procedure) if previous_file == str(shortcut_file) else None)
            details.append(detail)
            if kept:
                owned[procedure] = kept
        manifest: Manifest = {"versions": vendored, "shortcut": owned.get(PROCEDURE),
                              "expand_shortcut": owned.get(EXPAND_PROCEDURE),
                              "shortcut_file": str(shortcut_file) if owned else None}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return InstallReport(plugin_folder=folder.resolve(), connection_file=(folder / CONNECTION_FILE).resolve(),
                         token_file=(config_dir / TOKEN_FILE).resolve(), url=url, vendored=vendored,
                         shortcut_file=shortcut_file if wanted else None,
                         shortcut_detail="; ".join(details) or "left alone (--no-shortcut)")


def uninstall(plugin_dir: Path) -> UninstallReport:
    """Remove ``plugin_dir/gimp-inpaint`` and the shortcut lines the install added (if still unchanged).

    Raises:
        InstallError: the folder exists but does not look like this plug-in (nothing is removed).
        OSError: a file cannot be removed or rewritten.
    """
    folder = plugin_dir / PLUGIN_NAME
    if not folder.exists():
        return UninstallReport(folder, False, "nothing to do")
    if not (folder / f"{PLUGIN_NAME}.py").exists() and not (folder / MANIFEST).exists():
        raise InstallError(f"{folder} does not look like the gimp-inpaint plug-in; remove it by hand if it is")
    owned, recorded = _owned_shortcuts(folder)
    details = []
    if owned and recorded and Path(recorded).exists():
        shortcut_file = Path(recorded)
        for procedure, accelerator in owned.items():
            change = remove_shortcut(shortcut_file.read_text(encoding="utf-8"), procedure, accelerator)
            if change.changed:
                shortcut_file.write_text(change.text, encoding="utf-8")
            details.append(f"{change.detail} in {shortcut_file}")
    shutil.rmtree(folder)
    return UninstallReport(folder, True, "; ".join(details) or "no shortcut was added by the install")
