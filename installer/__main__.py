"""``python -m gimp_inpaint.installer install|uninstall`` (console script ``gimp-inpaint-install``).

::

    python -m gimp_inpaint.installer install [--plugin-dir DIR] [--config-dir DIR] [--url URL]
                                [--shortcut ACCEL | --no-shortcut] [--gimp-config-dir DIR]
    python -m gimp_inpaint.installer uninstall [--plugin-dir DIR]

``--url`` defaults to the host and port that the daemon's ``daemon.toml`` (in ``--config-dir``) sets,
else ``ws://127.0.0.1:7869``.

Exit status: 0 done, 1 failed (the message says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import platformdirs
from gimp_inpaint.client.connection import DEFAULT_URL
from gimp_inpaint.client.local_daemon import configured_url
from gimp_inpaint.daemon.config import APP_NAME, ConfigError

from .bundle import DEFAULT_SHORTCUT, InstallError, install, uninstall
from .locations import gimp_config_dir, plugin_dir
from .shortcuts import check_accelerator


def _accelerator(text: str) -> str:
    try:
        return check_accelerator(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The installer's argument parser."""
    gimp_dir = gimp_config_dir()
    parser = argparse.ArgumentParser(prog="gimp-inpaint-install",
                                     description="Install the gimp-inpaint plug-in into GIMP 3.",
                                     epilog="Exit status: 0 done, 1 failed, 2 bad arguments.")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("install", help="install or update the plug-in")
    add.add_argument("--plugin-dir", type=Path, default=plugin_dir(gimp_dir),
                     help="GIMP plug-ins folder (default: %(default)s; $GIMP3_DIRECTORY is honoured)")
    add.add_argument("--config-dir", type=Path, default=Path(platformdirs.user_config_dir(APP_NAME)),
                     help="the daemon's configuration folder holding its token and daemon.toml (default: %(default)s)")
    add.add_argument("--url", help="the daemon's WebSocket URL (default: host and port of <config-dir>/daemon.toml, "
                                   f"else {DEFAULT_URL})")
    keys = add.add_mutually_exclusive_group()
    keys.add_argument("--shortcut", type=_accelerator, default=DEFAULT_SHORTCUT,
                      help="GTK accelerator for Generative Fill (default: %(default)s = Ctrl+Alt+I)")
    keys.add_argument("--no-shortcut", dest="shortcut", action="store_const", const=None,
                      help="do not touch GIMP's shortcutsrc")
    add.add_argument("--gimp-config-dir", type=Path, default=gimp_dir,
                     help="GIMP's configuration folder holding shortcutsrc (default: %(default)s)")
    remove = commands.add_parser("uninstall", help="remove the plug-in and the shortcut it added")
    remove.add_argument("--plugin-dir", type=Path, default=plugin_dir(gimp_dir),
                        help="GIMP plug-ins folder (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the installer; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "install":
            url = args.url or configured_url(args.config_dir)
            report = install(args.plugin_dir, args.config_dir, url, args.shortcut, args.gimp_config_dir)
            versions = ", ".join(f"{name} {version}" if version != "source" else name
                                 for name, version in report.vendored.items())
            print(f"Installed the GIMP plug-in into {report.plugin_folder}")
            print(f"  vendored: {versions}")
            print(f"  connection: {report.connection_file} → {report.url} (token from {report.token_file})")
            print(f"  shortcut: {report.shortcut_detail}")
            print("Restart GIMP to load it (install while GIMP is closed: GIMP rewrites shortcutsrc when it quits), "
                  "start the daemon with `gimp-inpaint-daemon`, then use Filters ▸ Generative ▸ Generative Fill….")
        else:
            removed = uninstall(args.plugin_dir)
            if removed.removed:
                print(f"Removed {removed.plugin_folder}")
            else:
                print(f"No plug-in at {removed.plugin_folder}; nothing removed")
            print(f"  shortcut: {removed.shortcut_detail}")
    except (InstallError, ConfigError, OSError) as exc:
        print(f"gimp-inpaint-install: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
