"""``python -m gimp_inpaint.installer install|uninstall|env`` (console script ``gimp-inpaint-install``).

::

    python -m gimp_inpaint.installer install [--gimp-version 3.0|3.2] [--plugin-dir DIR] [--gimp-config-dir DIR]
                                [--config-dir DIR] [--url URL] [--shortcut ACCEL | --no-shortcut]
                                [--expand-shortcut ACCEL] [--autostart]
    python -m gimp_inpaint.installer uninstall [--gimp-version 3.0|3.2] [--plugin-dir DIR]
    python -m gimp_inpaint.installer env [--torch auto|cpu|cuda|rocm|mps] [--with-diffusers] [--python PY]
                                [--dry-run]

``install`` goes into every GIMP 3.x configuration present (native and Flatpak; only ``$GIMP3_DIRECTORY``
when set), or, when none exists yet, the one the newest installed GIMP will create
(:func:`installer.locations.install_targets`); ``--gimp-version`` restricts that to one version (other copies
already installed are still updated), ``--plugin-dir`` / ``--gimp-config-dir`` name the folders instead.
``uninstall`` removes every copy and the autostart entry. ``--url`` defaults to the host and port that the
daemon's ``daemon.toml`` (in ``--config-dir``) sets, else ``ws://127.0.0.1:7869``; for such a ``wss://`` daemon
(one bound beyond loopback, or ``tls = true``) ``connection.json`` also pins its certificate (:func:`local_pin`).

``env`` installs this environment's packages from ``installer/requirements/lock.txt``: with ``--with-diffusers`` first
``torch==<the pin in installer/requirements/lock-constraints.in>`` from the index of the backend chosen for this
machine (:mod:`installer.torch_select`), printing what it chose and why.

Exit status: 0 done, 1 failed (the message says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from gimp_inpaint.client.connection import DEFAULT_URL
from gimp_inpaint.client.local_daemon import configured_fingerprint, configured_url
from gimp_inpaint.daemon.config import APP_NAME, ConfigError, load_settings
from gimp_inpaint.daemon.tls import certificate_files, ensure_certificate

from . import autostart
from .bundle import DEFAULT_EXPAND_SHORTCUT, DEFAULT_SHORTCUT, InstallError, install, uninstall
from .locations import KNOWN_VERSIONS, find_gimp_configs, install_targets
from .shortcuts import check_accelerator
from .torch_select import OVERRIDES, TorchChoiceError, choose_torch, detect_hardware, pip_commands

DEFAULT_CONFIG_DIR = Path(platformdirs.user_config_dir(APP_NAME))
"""The daemon's default configuration folder (its token and daemon.toml)."""


@dataclass(frozen=True)
class Target:
    """One place to install into: the plug-ins folder, the GIMP configuration holding ``shortcutsrc``, which
    GIMP that is, in words, and whether it is the Flatpak's (whose sandbox cannot start the daemon)."""

    plugin_dir: Path
    gimp_config_dir: Path
    label: str
    flatpak: bool = False


def _accelerator(text: str) -> str:
    try:
        return check_accelerator(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The installer's argument parser."""
    parser = argparse.ArgumentParser(prog="gimp-inpaint-install",
                                     description="Install the gimp-inpaint plug-in into GIMP 3.",
                                     epilog="Exit status: 0 done, 1 failed, 2 bad arguments.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("install", help="install or update the plug-in")
    remove = commands.add_parser("uninstall", help="remove every copy of the plug-in, its shortcuts and autostart")
    for command in (add, remove):
        command.add_argument("--gimp-version", choices=KNOWN_VERSIONS,
                             help="only this GIMP's configuration (default: every GIMP 3 configuration found; "
                                  "without one, the newest installed GIMP's, else 3.2)")
        command.add_argument("--plugin-dir", type=Path,
                             help="this plug-ins folder instead (default: <GIMP configuration>/plug-ins)")
    add.add_argument("--gimp-config-dir", type=Path,
                     help="this GIMP configuration folder instead (its plug-ins/ and shortcutsrc)")
    add.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR,
                     help="the daemon's configuration folder holding its token and daemon.toml (default: %(default)s)")
    add.add_argument("--url", help="the daemon's WebSocket URL (default: host and port of <config-dir>/daemon.toml, "
                                   f"else {DEFAULT_URL})")
    keys = add.add_mutually_exclusive_group()
    keys.add_argument("--shortcut", type=_accelerator, default=DEFAULT_SHORTCUT,
                      help="GTK accelerator for Generative Fill (default: %(default)s = Ctrl+Alt+I)")
    keys.add_argument("--no-shortcut", dest="shortcut", action="store_const", const=None,
                      help="do not touch GIMP's shortcutsrc (no shortcut for either procedure)")
    add.add_argument("--expand-shortcut", type=_accelerator, default=DEFAULT_EXPAND_SHORTCUT,
                     help="GTK accelerator for Generative Expand (default: %(default)s = Ctrl+Alt+E)")
    add.add_argument("--autostart", action="store_true",
                     help="start the daemon at login (systemd user unit, LaunchAgent or Startup folder)")
    env = commands.add_parser("env", help="install the daemon's packages from the lock (torch for this machine)")
    env.add_argument("--torch", choices=("auto", *OVERRIDES), default="auto",
                     help="torch build (default auto: CUDA by the NVIDIA driver, ROCm, MPS on Apple silicon, else CPU)")
    env.add_argument("--with-diffusers", action="store_true",
                     help="also torch and the diffusers engines (several GB)")
    env.add_argument("--python", default=sys.executable,
                     help="the environment's interpreter to install into (default: %(default)s)")
    env.add_argument("--source", type=Path, default=_checkout(),
                     help="the gimp-inpaint source folder to install (default: this installer's own checkout, "
                          "when it runs from one: %(default)s)")
    env.add_argument("--dry-run", action="store_true", help="print the pip commands without running them")
    return parser


def _targets(args: argparse.Namespace) -> tuple[list[Target], str]:
    """Where to install or uninstall, and why."""
    if args.command == "install" and (args.plugin_dir or args.gimp_config_dir):
        gimp_dir = args.gimp_config_dir or install_targets(args.gimp_version).configs[0].config_dir
        return [Target(args.plugin_dir or gimp_dir / "plug-ins", gimp_dir, "the folders given")], "as given"
    if args.plugin_dir:
        return [Target(args.plugin_dir, args.plugin_dir.parent, "the folder given")], "as given"
    if args.command == "install":
        targets = install_targets(args.gimp_version)
        configs, reason = targets.configs, targets.reason
    else:
        configs = tuple(config for config in find_gimp_configs() if args.gimp_version in (None, config.version))
        reason = "every GIMP 3 configuration found"
    return [Target(config.plugin_dir, config.config_dir, config.describe(), config.flatpak) for config in configs], \
        reason


def local_pin(config_dir: Path) -> str | None:
    """The certificate pin for ``connection.json`` of the daemon configured in ``config_dir``: None when it serves
    plain ``ws://``; for ``wss://`` the SHA-256 fingerprint of its certificate file, read here rather than trusted
    on first use. Its self-signed certificate is made now when it has none yet (:func:`daemon.tls.ensure_certificate`,
    as its first start would), so the plug-in on this machine connects without a ``gimp-inpaint connect``.

    Raises:
        ConfigError: ``daemon.toml`` is invalid, ``cryptography`` is missing, or the user's own certificate
            (``tls_certificate``) cannot be read as PEM.
    """
    settings = load_settings(config_dir)
    if not settings.serves_tls:
        return None
    if not settings.tls_certificate:
        ensure_certificate(settings.config_dir, settings.host)
    pin = configured_fingerprint(config_dir)
    if pin is None:
        raise ConfigError(f"the daemon serves wss:// with the certificate {certificate_files(settings)[0]}, which "
                          f"cannot be read as PEM: check tls_certificate in daemon.toml")
    return pin


def _install(args: argparse.Namespace) -> None:
    url = args.url or configured_url(args.config_dir)
    fingerprint = None if args.url else local_pin(args.config_dir)
    command = autostart.daemon_command(args.config_dir, DEFAULT_CONFIG_DIR)
    targets, reason = _targets(args)
    print(f"GIMP: {reason}")
    for target in targets:
        report = install(target.plugin_dir, args.config_dir, url, args.shortcut, target.gimp_config_dir, command,
                         args.expand_shortcut if args.shortcut else None, fingerprint)
        versions = ", ".join(f"{name} {version}" if version != "source" else name
                             for name, version in report.vendored.items())
        print(f"Installed the GIMP plug-in for {target.label} into {report.plugin_folder}")
        print(f"  vendored: {versions}")
        print(f"  connection: {report.connection_file} → {report.url} (token from {report.token_file}"
              + (f", certificate SHA-256 {fingerprint})" if fingerprint else ")"))
        print(f"  shortcut: {report.shortcut_detail}")
        if target.flatpak and not args.autostart:
            print("  note: GIMP's Flatpak runs plug-ins in a sandbox that cannot start the daemon: install with "
                  "--autostart, or start `gimp-inpaint-daemon` before filling")
    if args.autostart:
        started = autostart.enable(command)
        print(f"Autostart: {started.path}: {started.detail}")
    print("Restart GIMP to load it (install while GIMP is closed: GIMP rewrites shortcutsrc when it quits), "
          "then use Filters ▸ Generative ▸ Generative Fill… or Generative Expand…; the plug-in starts the daemon "
          "when none answers (or start it yourself with `gimp-inpaint-daemon`).")


def _uninstall(args: argparse.Namespace) -> None:
    targets, _ = _targets(args)
    if not targets:
        print("No GIMP 3 configuration found; no plug-in removed")
    for target in targets:
        removed = uninstall(target.plugin_dir)
        if removed.removed:
            print(f"Removed {removed.plugin_folder} ({target.label})")
        else:
            print(f"No plug-in at {removed.plugin_folder}; nothing removed")
        print(f"  shortcut: {removed.shortcut_detail}")
    stopped = autostart.disable()
    print(f"Autostart: {stopped.path}: {stopped.detail}")


def _checkout() -> Path | None:
    """The source checkout this installer runs from (an editable install), or None (installed from a wheel)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def _env(args: argparse.Namespace) -> None:
    if args.source is None:
        raise InstallError("this installer was installed from a wheel: pass --source <the gimp-inpaint folder>")
    choice = None
    if args.with_diffusers:
        choice = choose_torch(detect_hardware(), args.torch)
        print(f"torch {choice.version}, {choice.backend} build: {choice.reason}")
        print(f"  from {choice.index_url or 'PyPI'}")
    for command in pip_commands(args.python, choice, args.source):
        print(f"$ {shlex.join(command)}")
        if not args.dry_run:
            subprocess.run(command, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the installer; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        {"install": _install, "uninstall": _uninstall, "env": _env}[args.command](args)
    except (InstallError, ConfigError, TorchChoiceError, OSError) as exc:
        print(f"gimp-inpaint-install: error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"gimp-inpaint-install: error: pip failed ({exc.returncode}): {' '.join(exc.cmd)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
