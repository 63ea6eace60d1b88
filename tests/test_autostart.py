"""installer.autostart: the daemon's command line, and the login entries (systemd unit, LaunchAgent, Startup
script) written into and removed from temporary homes, with the service manager's calls recorded."""

from __future__ import annotations

import os
import plistlib
from pathlib import Path

import pytest
from gimp_inpaint.installer import autostart
from gimp_inpaint.installer.autostart import daemon_command, disable, enable, startup_script, systemd_unit


class Recorder:
    """A :data:`autostart.Runner` that records each command and answers ``status``."""

    def __init__(self, status: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.status = status

    def __call__(self, command):
        self.calls.append(list(command))
        return self.status, "" if self.status == 0 else "Failed to connect to bus"


def which(name: str) -> str:
    return f"/usr/bin/{name}"


def test_daemon_command_adds_only_a_non_default_config_dir(tmp_path):
    assert daemon_command(tmp_path / "default", tmp_path / "default", "/venv/bin/python") == [
        "/venv/bin/python", "-m", "gimp_inpaint.daemon"]
    assert daemon_command(tmp_path / "mine", tmp_path / "default", "/venv/bin/python") == [
        "/venv/bin/python", "-m", "gimp_inpaint.daemon", "--config-dir", str(tmp_path / "mine")]


def test_systemd_unit_quotes_execstart():
    unit = systemd_unit(["/home/a b/venv/bin/python", "-m", "gimp_inpaint.daemon", "--config-dir", "/x/50%$HOME"])
    assert 'ExecStart="/home/a b/venv/bin/python" -m gimp_inpaint.daemon --config-dir /x/50%%$$HOME\n' in unit
    assert "[Install]\nWantedBy=default.target\n" in unit and "Restart=on-failure\n" in unit


def test_startup_script_runs_detached_with_windows_line_ends():
    script = startup_script([r"C:\Users\Ann Lee\AppData\Local\gimp-inpaint\venv\Scripts\pythonw.exe", "-m",
                             "gimp_inpaint.daemon", "--config-dir", r"C:\cfg\100%"])
    assert script.split("\r\n") == [
        "@echo off", f"rem {autostart.MARKER}",
        r'start "" "C:\Users\Ann Lee\AppData\Local\gimp-inpaint\venv\Scripts\pythonw.exe" -m gimp_inpaint.daemon '
        r"--config-dir C:\cfg\100%%", ""]


def test_linux_unit_is_enabled_and_removed(tmp_path):
    run = Recorder()
    command = ["/venv/bin/python", "-m", "gimp_inpaint.daemon"]
    report = enable(command, "linux", tmp_path, {}, run, which)
    unit = tmp_path / ".config" / "systemd" / "user" / "gimp-inpaint-daemon.service"
    assert report.path == unit
    assert "ExecStart=/venv/bin/python -m gimp_inpaint.daemon --no-tray\n" in unit.read_text()
    assert run.calls == [["/usr/bin/systemctl", "--user", "daemon-reload"],
                         ["/usr/bin/systemctl", "--user", "enable", "--now", "gimp-inpaint-daemon.service"]]
    assert "enable --now" in report.detail
    run.calls.clear()
    removed = disable("linux", tmp_path, {}, run, which)
    assert not unit.exists() and removed.detail.startswith("removed")
    assert run.calls == [["/usr/bin/systemctl", "--user", "disable", "--now", "gimp-inpaint-daemon.service"],
                         ["/usr/bin/systemctl", "--user", "daemon-reload"]]
    assert disable("linux", tmp_path, {}, run, which).detail == "none registered"


def test_linux_without_systemctl_or_with_it_failing_says_so(tmp_path):
    run = Recorder()
    report = enable(["/py"], "linux", tmp_path, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, run, lambda name: None)
    assert report.path == tmp_path / "xdg" / "systemd" / "user" / "gimp-inpaint-daemon.service"
    assert report.path.exists() and run.calls == [] and "systemctl was not found" in report.detail
    failing = enable(["/py"], "linux", tmp_path, {}, Recorder(1), which)
    assert failing.detail == "`/usr/bin/systemctl --user daemon-reload` failed (1): Failed to connect to bus"


def test_macos_launch_agent(tmp_path):
    run = Recorder()
    report = enable(["/venv/bin/python", "-m", "gimp_inpaint.daemon"], "darwin", tmp_path, {}, run, which)
    agent = tmp_path / "Library" / "LaunchAgents" / "org.gimp-inpaint.daemon.plist"
    assert report.path == agent
    plist = plistlib.loads(agent.read_bytes())
    assert plist["Label"] == "org.gimp-inpaint.daemon" and plist["RunAtLoad"] is True
    assert plist["ProgramArguments"] == ["/venv/bin/python", "-m", "gimp_inpaint.daemon", "--no-tray"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    domain = f"gui/{os.getuid()}"
    assert run.calls == [["/usr/bin/launchctl", "bootout", f"{domain}/org.gimp-inpaint.daemon"],
                         ["/usr/bin/launchctl", "bootstrap", domain, str(agent)]]
    run.calls.clear()
    disable("darwin", tmp_path, {}, run, which)
    assert not agent.exists()
    assert run.calls == [["/usr/bin/launchctl", "bootout", f"{domain}/org.gimp-inpaint.daemon"]]


@pytest.mark.parametrize("appdata", [True, False])
def test_windows_startup_script_uses_pythonw(tmp_path, appdata):
    environ = {"APPDATA": str(tmp_path / "Roaming")} if appdata else {}
    run = Recorder()
    python = str(Path("C:/venv/Scripts/python.exe"))
    report = enable([python, "-m", "gimp_inpaint.daemon"], "win32", tmp_path, environ, run, which)
    roaming = tmp_path / "Roaming" if appdata else tmp_path / "AppData" / "Roaming"
    script = roaming / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup" / "gimp-inpaint-daemon.cmd"
    assert report.path == script
    assert script.read_bytes().split(b"\r\n")[2] == \
        f'start "" {Path("C:/venv/Scripts/pythonw.exe")} -m gimp_inpaint.daemon'.encode()
    assert run.calls == []
    assert disable("win32", tmp_path, environ, run, which).detail == "removed" and not script.exists()
