"""Start the daemon at login: a systemd user unit (Linux), a LaunchAgent (macOS), a Startup-folder script
(Windows); and :func:`daemon_command`, the command line that starts this environment's daemon, shared by
the autostart entry and ``connection.json`` (which the plug-in runs when no daemon answers).

The file contents are built by pure functions (:func:`systemd_unit`, :func:`launch_agent`,
:func:`startup_script`); :func:`enable` / :func:`disable` write or remove them under ``home`` and tell the
service manager through an injectable :data:`Runner`.

Sources: systemd.service(5) and systemd.syntax(7) (``ExecStart`` quoting, ``%`` specifiers, ``$`` expansion),
systemd.unit(5) (``~/.config/systemd/user``, ``WantedBy=default.target`` for user units); launchd.plist(5)
(``Label``, ``ProgramArguments``, ``RunAtLoad``, ``KeepAlive``) and launchctl(1) (``bootstrap`` /
``bootout gui/<uid>``); Windows runs what the per-user Startup folder
(``%APPDATA%\\Microsoft\\Windows\\Start Menu\\Programs\\Startup``) holds at login.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "gimp-inpaint-daemon.service"
"""The systemd user unit's file name."""

AGENT_LABEL = "org.gimp-inpaint.daemon"
"""The LaunchAgent's label (its file is ``<label>.plist``)."""

STARTUP_SCRIPT = "gimp-inpaint-daemon.cmd"
"""The Windows Startup-folder script's file name."""

MARKER = "written by gimp-inpaint-install; `gimp-inpaint-install uninstall` removes it"
"""Put in every autostart file, so that a reader knows where it came from."""


def daemon_command(config_dir: Path, default_config_dir: Path, python: str | None = None) -> list[str]:
    """The command line that starts this environment's daemon.

    Args:
        config_dir: the daemon's configuration folder the installer was given.
        default_config_dir: the daemon's default one; ``--config-dir`` (absolute) is added only when
            ``config_dir`` differs from it.
        python: the interpreter; default ``sys.executable`` (the environment the installer runs in).
    """
    command = [python or sys.executable, "-m", "gimp_inpaint.daemon"]
    if config_dir.resolve() != default_config_dir.resolve():
        command += ["--config-dir", str(config_dir.resolve())]
    return command


def _systemd_word(word: str) -> str:
    """One ``ExecStart`` word: ``%`` and ``$`` doubled (specifiers, variables); quoted when it has spaces,
    quotes or backslashes."""
    word = word.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\]', word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def systemd_unit(command: Sequence[str]) -> str:
    """The user unit running ``command`` from login on, restarted 5 s after a crash."""
    return (f"# {MARKER}\n"
            "[Unit]\n"
            "Description=gimp-inpaint daemon (generative fill for GIMP 3)\n\n"
            "[Service]\n"
            f"ExecStart={' '.join(_systemd_word(word) for word in command)}\n"
            "Restart=on-failure\n"
            "RestartSec=5\n\n"
            "[Install]\n"
            "WantedBy=default.target\n")


def launch_agent(command: Sequence[str]) -> bytes:
    """The LaunchAgent plist (XML) running ``command`` at login, restarted if it exits with an error."""
    return plistlib.dumps({"Label": AGENT_LABEL, "Comment": MARKER, "ProgramArguments": list(command),
                           "RunAtLoad": True, "KeepAlive": {"SuccessfulExit": False}, "ProcessType": "Interactive"})


def _cmd_word(word: str) -> str:
    """One word of a ``.cmd`` line: ``%`` doubled (batch variables), quoted when it has spaces or ``&|<>^``."""
    word = word.replace("%", "%%")
    return f'"{word}"' if re.search(r"[\s&|<>^]", word) else word


def startup_script(command: Sequence[str]) -> str:
    """The Startup-folder ``.cmd`` starting ``command`` detached (``start ""``), with Windows line ends."""
    return "\r\n".join(["@echo off", f"rem {MARKER}",
                        f'start "" {" ".join(_cmd_word(word) for word in command)}', ""])


def windowless(python: str) -> str:
    """``pythonw.exe`` beside a Windows ``python.exe`` (no console window), else ``python`` unchanged."""
    path = Path(python)
    return str(path.with_name("pythonw.exe")) if path.name.lower() == "python.exe" else python


def autostart_file(platform: str, home: Path, environ: Mapping[str, str]) -> Path:
    """Where the autostart entry lives for ``platform`` (``sys.platform``)."""
    if platform == "win32":
        roaming = Path(environ.get("APPDATA") or home / "AppData" / "Roaming")
        return roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup" / STARTUP_SCRIPT
    if platform == "darwin":
        return home / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
    return Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "systemd" / "user" / UNIT_NAME


Runner = Callable[[Sequence[str]], tuple[int, str]]
"""Runs a command; returns (exit status, its output). Injected in tests."""


def run_command(command: Sequence[str]) -> tuple[int, str]:
    """Run ``command`` (30 s at most); (exit status, stdout + stderr), 127 when it cannot be run."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass(frozen=True)
class AutostartReport:
    """What :func:`enable` / :func:`disable` did: the file, and a sentence for the user."""

    path: Path
    detail: str


def _manager(platform: str, which: Callable[[str], str | None]) -> str | None:
    """The service manager's program on PATH (systemctl, launchctl), None on Windows or when missing."""
    name = {"darwin": "launchctl", "win32": None}.get(platform, "systemctl")
    return which(name) if name else None


def _tell(run: Runner, commands: Sequence[Sequence[str]]) -> str:
    """Run ``commands`` in order, stopping at the first failure; what happened, in words."""
    for command in commands:
        status, output = run(command)
        if status != 0:
            return f"`{' '.join(command)}` failed ({status}): {output}"
    return f"ran `{' '.join(commands[-1])}`"


def _defaults(platform: str | None, home: Path | None, environ: Mapping[str, str] | None, run: Runner | None,
              which: Callable[[str], str | None] | None
              ) -> tuple[str, Path, Mapping[str, str], Runner, Callable[[str], str | None]]:
    return (sys.platform if platform is None else platform, Path.home() if home is None else home,
            os.environ if environ is None else environ, run_command if run is None else run,
            shutil.which if which is None else which)


def enable(command: Sequence[str], platform: str | None = None, home: Path | None = None,
           environ: Mapping[str, str] | None = None, run: Runner | None = None,
           which: Callable[[str], str | None] | None = None) -> AutostartReport:
    """Register ``command`` (:func:`daemon_command`) to start at login, replacing an earlier entry.

    Linux: the unit gets ``--no-tray`` (a user service starts outside the graphical session), then
    ``systemctl --user daemon-reload`` and ``enable --now`` (it also starts now). macOS: the agent gets
    ``--no-tray`` (the daemon has no icon there) and is loaded with ``launchctl bootstrap gui/<uid>``.
    Windows: the script runs ``pythonw.exe`` (no console window) and keeps the tray icon.

    Args:
        command: the daemon's command line.
        platform, home, environ: default ``sys.platform``, ``Path.home()``, ``os.environ``.
        run, which: run a command, find a program; default :func:`run_command`, ``shutil.which``.

    Raises:
        OSError: the file cannot be written.
    """
    platform, home, environ, run, which = _defaults(platform, home, environ, run, which)
    path = autostart_file(platform, home, environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    manager = _manager(platform, which)
    if platform == "win32":
        path.write_text(startup_script([windowless(command[0]), *command[1:]]), encoding="utf-8", newline="")
        return AutostartReport(path, "starts at your next login (Startup folder)")
    if platform == "darwin":
        path.write_bytes(launch_agent([*command, "--no-tray"]))
        if manager is None:
            return AutostartReport(path, "starts at your next login (launchctl not found to load it now)")
        domain = f"gui/{os.getuid()}"
        run([manager, "bootout", f"{domain}/{AGENT_LABEL}"])  # an earlier version of the agent, if loaded
        return AutostartReport(path, _tell(run, [[manager, "bootstrap", domain, str(path)]]))
    path.write_text(systemd_unit([*command, "--no-tray"]), encoding="utf-8")
    if manager is None:
        return AutostartReport(path, "systemctl was not found: the unit is written but not enabled; start the "
                                     "daemon with your session instead (e.g. your desktop's autostart settings)")
    return AutostartReport(path, _tell(run, [[manager, "--user", "daemon-reload"],
                                             [manager, "--user", "enable", "--now", UNIT_NAME]]))


def disable(platform: str | None = None, home: Path | None = None, environ: Mapping[str, str] | None = None,
            run: Runner | None = None, which: Callable[[str], str | None] | None = None) -> AutostartReport:
    """Remove the autostart entry (stopping the service it started, on Linux and macOS), if there is one.

    Args: as for :func:`enable`.

    Raises:
        OSError: the file cannot be removed.
    """
    platform, home, environ, run, which = _defaults(platform, home, environ, run, which)
    path = autostart_file(platform, home, environ)
    if not path.exists():
        return AutostartReport(path, "none registered")
    manager = _manager(platform, which)
    detail = "removed"
    if manager is not None and platform == "darwin":
        detail += "; " + _tell(run, [[manager, "bootout", f"gui/{os.getuid()}/{AGENT_LABEL}"]])
    elif manager is not None:
        detail += "; " + _tell(run, [[manager, "--user", "disable", "--now", UNIT_NAME]])
    path.unlink()
    if manager is not None and platform not in ("darwin", "win32"):
        run([manager, "--user", "daemon-reload"])
    return AutostartReport(path, detail)
