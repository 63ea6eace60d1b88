"""installer: layout, file modes, vendored packages usable without site-packages, shortcutsrc edits, uninstall."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from gimp_inpaint.client.imaging import load_rgba
from gimp_inpaint.client.local_daemon import client_host
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.daemon.tls import CERTIFICATE_FILE, KEY_FILE, file_fingerprint
from gimp_inpaint.installer import autostart
from gimp_inpaint.installer.__main__ import main
from gimp_inpaint.installer.bundle import EXPAND_PROCEDURE, PROCEDURE, install, uninstall
from gimp_inpaint.installer.shortcuts import HEADER, add_shortcut, check_accelerator, remove_shortcut
from gimp_inpaint.installer.torch_select import REQUIREMENTS, pinned_torch
from running_daemon import free_port, running_daemon

pytestmark = pytest.mark.timeout(120)

LINE = '(action "python-fu-gimp-inpaint" "<Primary><Alt>i")'
EXPAND_LINE = '(action "python-fu-gimp-inpaint-expand" "<Primary><Alt>e")'


def run_install(tmp_path: Path, *extra: str) -> int:
    return main(["install", "--plugin-dir", str(tmp_path / "plug-ins"), "--config-dir", str(tmp_path / "config"),
                 "--gimp-config-dir", str(tmp_path / "gimp"), *extra])


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch) -> Path:
    """A temporary home, so that nothing reaches the user's GIMP folders or autostart entries."""
    home = tmp_path / "home"
    for name, value in {"HOME": home, "XDG_CONFIG_HOME": home / ".config", "APPDATA": home / "AppData"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("GIMP3_DIRECTORY", raising=False)
    return home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """One install shared by the read-only checks below; returns the tmp root."""
    root = tmp_path_factory.mktemp("install")
    assert run_install(root, "--url", "ws://127.0.0.1:7999") == 0
    return root


def test_layout_and_file_modes(installed, capsys):
    folder = installed / "plug-ins" / "gimp-inpaint"
    assert mode(folder / "gimp-inpaint.py") == 0o755
    assert mode(folder / "connection.json") == 0o600
    assert mode(installed / "config" / "token") == 0o600
    token = (installed / "config" / "token").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    assert json.loads((folder / "connection.json").read_text()) == {
        "url": "ws://127.0.0.1:7999", "token": token,
        "daemon_command": [sys.executable, "-m", "gimp_inpaint.daemon", "--config-dir", str(installed / "config")]}
    vendor = folder / "vendor"
    assert sorted(p.name for p in vendor.iterdir()) == ["gimp_inpaint", "licenses", "msgpack", "websockets"]
    assert sorted(p.name for p in (vendor / "gimp_inpaint").iterdir()) == ["client", "plugin_gimp", "protocol"]
    client = sorted(p.name for p in (vendor / "gimp_inpaint" / "client").iterdir())
    assert client == ["__init__.py", "connection.py", "document.py", "expand.py", "fill.py", "metadata.py"]
    assert not list(vendor.rglob("*.so")) and not list(vendor.rglob("__pycache__"))
    assert (vendor / "msgpack" / "fallback.py").is_file() and (vendor / "websockets" / "sync" / "client.py").is_file()
    assert {p.name for p in (vendor / "licenses").iterdir()} >= {"websockets-LICENSE"}


def test_entry_file_registers_the_procedure_the_installer_binds():
    entry = Path(__file__).parents[1] / "plugin_gimp" / "gimp-inpaint" / "gimp-inpaint.py"
    assert f'PROCEDURE = "{PROCEDURE}"' in entry.read_text()
    assert f'EXPAND_PROCEDURE = "{EXPAND_PROCEDURE}"' in entry.read_text()
    assert entry.read_text().startswith("#!/usr/bin/env python3\n")


ISOLATED = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import msgpack, websockets, gimp_inpaint.client.connection, gimp_inpaint.client.fill, gimp_inpaint.plugin_gimp
    import gimp_inpaint.plugin_gimp.dialog_model
    from gimp_inpaint import protocol
    from websockets.sync.client import connect
    assert msgpack.Packer.__module__ == "msgpack.fallback", msgpack.Packer.__module__
    for name in ("msgpack", "websockets", "gimp_inpaint.protocol", "gimp_inpaint.client", "gimp_inpaint.plugin_gimp"):
        assert sys.modules[name].__file__.startswith(sys.argv[1]), sys.modules[name].__file__
    assert not {"numpy", "PIL", "platformdirs"} & {m.split(".")[0] for m in sys.modules}
    assert "gimp_inpaint.daemon" not in sys.modules
    frame = protocol.encode(protocol.Cancel(job_id="abc"))
    assert protocol.decode(frame) == protocol.Cancel(job_id="abc")
    print("isolated ok")
""")


def test_vendored_packages_import_without_site_packages(installed):
    vendor = installed / "plug-ins" / "gimp-inpaint" / "vendor"
    probe = subprocess.run([sys.executable, "-I", "-S", "-c", "import msgpack"], capture_output=True, text=True)
    assert probe.returncode != 0  # the control: without the vendor folder nothing is importable
    done = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED, str(vendor)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "isolated ok"


ISOLATED_FILL = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    from gimp_inpaint.client.connection import InpaintClient, pick_engine, read_connection_config
    from gimp_inpaint.protocol import FillOptions, InpaintRequest, Plane
    config = read_connection_config(Path(sys.argv[2]))
    url = config.url
    with InpaintClient.connect(sys.argv[3], config.token, "isolated") as client:
        engine = pick_engine(client.welcome, "")
        image = Plane(16, 16, 4, bytes(range(256)) * 4)
        mask = Plane(16, 16, 1, bytes([0] * 128 + [255] * 128))
        options = FillOptions(engine=engine, feather=0, grow=0)
        (variant,) = client.inpaint(InpaintRequest("j1", 3, 4, image, mask, options))
    # only the masked bottom half comes back (the blend mask's box); the unmasked top half stays the user's
    assert (variant.x, variant.y, variant.image.width, variant.image.height) == (3, 12, 16, 8)
    assert variant.mask.data == bytes([255] * 128) and variant.image.data[3::4] == bytes([255] * 128)
    print(engine, url)
""")


def test_vendored_client_talks_to_the_daemon_without_site_packages(installed):
    """The plug-in's client code, msgpack's pure-Python fallback and websockets' pure-Python frames, end to end."""
    folder = installed / "plug-ins" / "gimp-inpaint"
    with running_daemon(installed / "config", [OpenCVEngine()]) as (url, _):
        done = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED_FILL, str(folder / "vendor"),
                               str(folder / "connection.json"), url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["opencv", "ws://127.0.0.1:7999"]


def test_shortcut_is_written_with_a_header_and_removed_on_uninstall(tmp_path, capsys):
    assert run_install(tmp_path) == 0
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    assert shortcuts.read_text() == f"{HEADER}\n{LINE}\n{EXPAND_LINE}\n"
    out = capsys.readouterr().out
    assert str(tmp_path / "plug-ins" / "gimp-inpaint") in out and str(shortcuts) in out
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "plug-ins")]) == 0
    assert not (tmp_path / "plug-ins" / "gimp-inpaint").exists()
    assert shortcuts.read_text() == f"{HEADER}\n"
    out = capsys.readouterr().out
    assert "removed <Primary><Alt>i for python-fu-gimp-inpaint" in out
    assert "removed <Primary><Alt>e for python-fu-gimp-inpaint-expand" in out


def test_reinstall_keeps_ownership_of_the_shortcut(tmp_path):
    assert run_install(tmp_path) == 0
    assert run_install(tmp_path) == 0
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    assert shortcuts.read_text().count(LINE) == 1 and shortcuts.read_text().count(EXPAND_LINE) == 1
    uninstall(tmp_path / "plug-ins")
    assert LINE not in shortcuts.read_text() and EXPAND_LINE not in shortcuts.read_text()


def test_an_install_from_before_generative_expand_keeps_its_shortcut_and_gets_the_new_one(tmp_path):
    """Its install.json records only the fill's shortcut: a reinstall still owns that line and adds Expand's."""
    assert run_install(tmp_path, "--expand-shortcut", "<Shift>F10") == 0
    manifest = tmp_path / "plug-ins" / "gimp-inpaint" / "install.json"
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    shortcuts.write_text(f"{HEADER}\n{LINE}\n")  # as the older install left it
    old = json.loads(manifest.read_text())
    del old["expand_shortcut"]
    manifest.write_text(json.dumps(old))
    assert run_install(tmp_path) == 0
    assert shortcuts.read_text() == f"{HEADER}\n{LINE}\n{EXPAND_LINE}\n"
    assert json.loads(manifest.read_text())["shortcut"] == "<Primary><Alt>i"
    uninstall(tmp_path / "plug-ins")
    assert shortcuts.read_text() == f"{HEADER}\n"


def test_a_users_own_shortcut_for_the_action_is_kept_and_survives_uninstall(tmp_path, capsys):
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    shortcuts.parent.mkdir()
    mine = (f'{HEADER}\n# (action "edit-undo" "<Primary>z")\n(action "python-fu-gimp-inpaint" "F9")\n'
            '(action "python-fu-gimp-inpaint-expand" "<Shift>F9")\n')
    shortcuts.write_text(mine)
    assert run_install(tmp_path) == 0
    out = capsys.readouterr().out
    assert "kept the existing shortcut of python-fu-gimp-inpaint (F9)" in out
    assert "kept the existing shortcut of python-fu-gimp-inpaint-expand (<Shift>F9)" in out
    assert shortcuts.read_text() == mine
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "plug-ins")]) == 0
    assert shortcuts.read_text() == mine


def test_an_accelerator_taken_by_another_action_is_not_stolen(tmp_path, capsys):
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    shortcuts.parent.mkdir()
    shortcuts.write_text(f'{HEADER}\n(action "image-flip" "<Control><Alt>I")\n')
    assert run_install(tmp_path) == 0
    assert "skipped: <Primary><Alt>i is already used by image-flip" in capsys.readouterr().out
    assert '(action "python-fu-gimp-inpaint" ' not in shortcuts.read_text()
    assert EXPAND_LINE in shortcuts.read_text()  # the other procedure's default is free


def test_no_shortcut_and_a_custom_one(tmp_path):
    assert run_install(tmp_path, "--no-shortcut") == 0
    assert not (tmp_path / "gimp" / "shortcutsrc").exists()
    assert run_install(tmp_path, "--shortcut", "<Shift>F9", "--expand-shortcut", "<Shift>F10") == 0
    text = (tmp_path / "gimp" / "shortcutsrc").read_text()
    assert '(action "python-fu-gimp-inpaint" "<Shift>F9")' in text
    assert '(action "python-fu-gimp-inpaint-expand" "<Shift>F10")' in text
    uninstall(tmp_path / "plug-ins")
    assert (tmp_path / "gimp" / "shortcutsrc").read_text() == f"{HEADER}\n"


def test_a_malformed_shortcut_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as caught:
        run_install(tmp_path, "--shortcut", "Ctrl+Alt+I")
    assert caught.value.code == 2
    for bad in ("<Primary>", "<Hyperspace>i", "<Primary>i j"):
        with pytest.raises(ValueError, match="GTK accelerator"):
            check_accelerator(bad)
    assert check_accelerator("<Control><Shift>slash") == "<Control><Shift>slash"


def test_uninstall_refuses_a_folder_that_is_not_the_plugin(tmp_path, capsys):
    foreign = tmp_path / "plug-ins" / "gimp-inpaint"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "plug-ins")]) == 1
    assert "does not look like" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine"
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "elsewhere")]) == 0


def test_the_token_is_reused_not_replaced(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "token").write_text("existing-token\n")
    report = install(tmp_path / "plug-ins", config, "ws://h:1", None, tmp_path / "gimp")
    assert json.loads(report.connection_file.read_text())["token"] == "existing-token"
    assert (config / "token").read_text() == "existing-token\n"


def test_the_url_defaults_to_the_daemons_configured_host_and_port(tmp_path, capsys):
    config = tmp_path / "config"
    config.mkdir()
    (config / "daemon.toml").write_text('host = "0.0.0.0"\nport = 9000\n')
    assert run_install(tmp_path) == 0
    connection = tmp_path / "plug-ins" / "gimp-inpaint" / "connection.json"
    # a wildcard bind → loopback, over wss:// (a daemon bound beyond loopback serves TLS only), pinned by the
    # certificate the installer made for it, as its first start would have
    written = json.loads(connection.read_text())
    assert written["url"] == "wss://127.0.0.1:9000"
    assert written["fingerprint"] == file_fingerprint(config / CERTIFICATE_FILE)
    assert f"certificate SHA-256 {written['fingerprint']}" in capsys.readouterr().out
    assert mode(config / KEY_FILE) == 0o600
    assert run_install(tmp_path) == 0  # again: the same certificate, the same pin
    assert json.loads(connection.read_text())["fingerprint"] == written["fingerprint"]
    assert run_install(tmp_path, "--url", "ws://example.invalid:1") == 0  # an explicit --url wins, with no pin
    assert json.loads(connection.read_text()) == {"url": "ws://example.invalid:1", "token": written["token"],
                                                  "daemon_command": written["daemon_command"]}
    assert sorted(p.name for p in config.iterdir()) == ["daemon.toml", CERTIFICATE_FILE, KEY_FILE, "token"]


def test_a_plain_ws_daemon_gets_no_pin_and_no_certificate(tmp_path):
    assert run_install(tmp_path) == 0
    connection = json.loads((tmp_path / "plug-ins" / "gimp-inpaint" / "connection.json").read_text())
    assert connection["url"] == "ws://127.0.0.1:7869" and "fingerprint" not in connection
    assert sorted(p.name for p in (tmp_path / "config").iterdir()) == ["token"]


def test_an_unreadable_certificate_of_the_users_fails_the_install_with_what_to_check(tmp_path, capsys):
    config = tmp_path / "config"
    config.mkdir()
    (config / "mine.pem").write_text("not a certificate\n")
    (config / "daemon.toml").write_text('tls_certificate = "mine.pem"\ntls_key = "mine.key"\n')
    assert run_install(tmp_path) == 1
    assert "cannot be read as PEM: check tls_certificate in daemon.toml" in capsys.readouterr().err
    assert not (tmp_path / "plug-ins" / "gimp-inpaint").exists()


def test_an_invalid_daemon_toml_fails_before_writing_anything(tmp_path, capsys):
    config = tmp_path / "config"
    config.mkdir()
    (config / "daemon.toml").write_text("port = 0\n")
    assert run_install(tmp_path) == 1
    assert "sets port = 0" in capsys.readouterr().err
    assert not (tmp_path / "plug-ins").exists() and not (config / "token").exists()


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"),
    ("192.168.1.20", "192.168.1.20"), ("localhost", "localhost"),
])
def test_client_host_for_a_bind_address(host, expected):
    assert client_host(host) == expected


def test_remove_shortcut_leaves_changed_lines():
    text = f'{HEADER}\n(action "python-fu-gimp-inpaint" "<Primary><Alt>i" "F9")\n'
    assert not remove_shortcut(text, PROCEDURE, "<Primary><Alt>i").changed
    added = add_shortcut("(file-version 1)", PROCEDURE, "<Primary><Alt>i")
    assert added.changed and added.text == f"{HEADER}\n{LINE}\n"


def _stub(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


def _stop(pid: int) -> None:
    """SIGTERM the daemon that install.sh left running (not our child) and wait until it is gone."""
    os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def test_install_sh_demo_twice_reuses_the_running_daemon(tmp_path):
    """install.sh --demo, run twice: the second run finds the first run's daemon (on the port of daemon.toml)
    instead of failing to start another. ``python -m venv`` and ``pip install`` are stubbed out (this
    environment already has the packages); everything else is the real script, installer, daemon and CLI."""
    repo = Path(__file__).parents[1]
    bin_dir = Path(sys.executable).parent
    home = tmp_path / "gimp-inpaint-home"
    _stub(tmp_path / "bin" / "python3", f'[ "$1 $2" = "-m venv" ] && exit 0\nexec "{sys.executable}" "$@"\n')
    _stub(home / "venv" / "bin" / "python", f'[ "$1 $2" = "-m pip" ] && exit 0\nexec "{sys.executable}" "$@"\n')
    for script in ("gimp-inpaint", "gimp-inpaint-daemon"):
        _stub(home / "venv" / "bin" / script, f'exec "{bin_dir / script}" "$@"\n')
    config = tmp_path / "xdg-config"
    (config / "gimp-inpaint").mkdir(parents=True)
    (config / "gimp-inpaint" / "daemon.toml").write_text(f"port = {free_port()}\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": str(tmp_path / "bin" / "python3"),
           "XDG_CONFIG_HOME": str(config), "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
           "XDG_DATA_HOME": str(tmp_path / "xdg-data"), "XDG_CACHE_HOME": str(tmp_path / "xdg-cache")}
    runs = []
    pid = None
    try:
        for run, extra in (("first", []), ("second", ["--", "--no-shortcut"])):
            (tmp_path / run).mkdir()
            done = subprocess.run(["bash", str(repo / "installer" / "install.sh"), "--demo", "--home", str(home),
                                   *extra], cwd=tmp_path / run, env=env, capture_output=True, text=True, timeout=90)
            runs.append(done)
            started = re.search(r"keeps running \(pid (\d+)\)", done.stdout)
            pid = pid or (int(started.group(1)) if started else None)
            assert done.returncode == 0, done.stdout + done.stderr
    finally:
        if pid is not None:
            _stop(pid)
    first, second = runs
    assert "starting the daemon" in first.stdout and pid is not None
    assert "already answers: using it" in second.stdout and "starting the daemon" not in second.stdout
    for run in ("first", "second"):
        before_after = load_rgba(tmp_path / run / "demo-before-after.png")
        assert before_after.shape == (512, 1024, 4)
    assert "no GIMP 3 configuration or installation found: assuming GIMP 3.2" in first.stdout
    assert "every GIMP 3 configuration found" in second.stdout  # the first run created GIMP/3.2
    plugin = config / "GIMP" / "3.2" / "plug-ins" / "gimp-inpaint"
    port = (config / "gimp-inpaint" / "daemon.toml").read_text().split("=")[1].strip()
    assert json.loads((plugin / "connection.json").read_text())["url"] == f"ws://127.0.0.1:{port}"


def test_install_goes_into_every_gimp_configuration_and_uninstall_removes_every_copy(own_home, tmp_path, capsys):
    native = own_home / ".config" / "GIMP" / "3.0"
    flatpak = own_home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.2"
    native.mkdir(parents=True)
    flatpak.mkdir(parents=True)
    assert main(["install", "--config-dir", str(tmp_path / "config")]) == 0
    out = capsys.readouterr().out
    assert "GIMP: every GIMP 3 configuration found" in out
    for gimp, label in ((flatpak, "GIMP 3.2 (Flatpak)"), (native, "GIMP 3.0 (native)")):
        assert f"for {label} into {gimp / 'plug-ins' / 'gimp-inpaint'}" in out
        assert mode(gimp / "plug-ins" / "gimp-inpaint" / "gimp-inpaint.py") == 0o755
        assert (gimp / "shortcutsrc").read_text() == f"{HEADER}\n{LINE}\n{EXPAND_LINE}\n"
    assert out.count("GIMP's Flatpak runs plug-ins in a sandbox that cannot start the daemon") == 1
    assert main(["uninstall"]) == 0
    out = capsys.readouterr().out
    for gimp in (flatpak, native):
        assert not (gimp / "plug-ins" / "gimp-inpaint").exists()
        assert (gimp / "shortcutsrc").read_text() == f"{HEADER}\n"
        assert f"Removed {gimp / 'plug-ins' / 'gimp-inpaint'}" in out
    assert "Autostart: " in out and "none registered" in out


def test_a_version_restricted_install_also_updates_a_copy_that_gimp_32_inherited(own_home, tmp_path, capsys):
    gimp30, gimp32 = own_home / ".config" / "GIMP" / "3.0", own_home / ".config" / "GIMP" / "3.2"
    stale = gimp30 / "plug-ins" / "gimp-inpaint"
    stale.mkdir(parents=True)
    (stale / "gimp-inpaint.py").write_text("# an old version\n")
    gimp32.mkdir(parents=True)
    assert main(["install", "--gimp-version", "3.2", "--config-dir", str(tmp_path / "config"), "--no-shortcut"]) == 0
    assert "already installed elsewhere" in capsys.readouterr().out
    for gimp in (gimp30, gimp32):
        assert "PROCEDURE" in (gimp / "plug-ins" / "gimp-inpaint" / "gimp-inpaint.py").read_text()


def test_install_autostart_writes_the_unit_and_uninstall_removes_it(own_home, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(autostart, "run_command", lambda command: calls.append(list(command)) or (0, ""))
    monkeypatch.setattr(autostart.shutil, "which", lambda name: f"/bin/{name}")
    assert run_install(tmp_path, "--autostart") == 0
    unit = own_home / ".config" / "systemd" / "user" / "gimp-inpaint-daemon.service"
    expected = f"ExecStart={sys.executable} -m gimp_inpaint.daemon --config-dir {tmp_path / 'config'} --no-tray\n"
    assert expected in unit.read_text()
    assert f"Autostart: {unit}: ran `/bin/systemctl --user enable --now gimp-inpaint-daemon.service`" in \
        capsys.readouterr().out
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "plug-ins")]) == 0
    assert not unit.exists()
    assert calls[-2:] == [["/bin/systemctl", "--user", "disable", "--now", "gimp-inpaint-daemon.service"],
                          ["/bin/systemctl", "--user", "daemon-reload"]]


def test_env_prints_the_torch_choice_and_the_pip_commands(capsys):
    assert main(["env", "--with-diffusers", "--torch", "cpu", "--python", "/venv/bin/python", "--dry-run"]) == 0
    pin, repo, lock = pinned_torch(), Path(__file__).parents[1], REQUIREMENTS / "lock.txt"
    pip = "/venv/bin/python -m pip install --disable-pip-version-check"
    assert capsys.readouterr().out.splitlines() == [
        f"torch {pin}, cpu build: --torch cpu", "  from https://download.pytorch.org/whl/cpu",
        f"$ {pip} -c {lock} torch=={pin}+cpu --extra-index-url https://download.pytorch.org/whl/cpu",
        f"$ {pip} -c {lock} '{repo}[diffusers]'"]
    assert main(["env", "--python", "/venv/bin/python", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"$ {pip} -c {lock} {repo}"]
    with pytest.raises(SystemExit) as caught:
        main(["env", "--torch", "vulkan"])
    assert caught.value.code == 2


def test_install_sh_with_diffusers_installs_the_chosen_torch_then_the_lock(tmp_path):
    """install.sh --with-diffusers --torch cpu --autostart: the pip command lines (recorded by a stub venv
    python), the systemctl calls (a stub systemctl) and where the plug-in went."""
    repo = Path(__file__).parents[1]
    home, log = tmp_path / "gimp-inpaint-home", tmp_path / "calls.log"
    _stub(tmp_path / "bin" / "python3", f'[ "$1 $2" = "-m venv" ] && exit 0\nexec "{sys.executable}" "$@"\n')
    _stub(home / "venv" / "bin" / "python",
          f'[ "$1 $2" = "-m pip" ] && {{ echo "pip $*" >> "{log}"; exit 0; }}\nexec "{sys.executable}" "$@"\n')
    _stub(tmp_path / "bin" / "systemctl", f'echo "systemctl $*" >> "{log}"\n')
    config = tmp_path / "xdg-config"
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "HOME": str(tmp_path),
           "PYTHON": str(tmp_path / "bin" / "python3"), "XDG_CONFIG_HOME": str(config)}
    done = subprocess.run(["bash", str(repo / "installer" / "install.sh"), "--with-diffusers", "--torch", "cpu",
                           "--autostart", "--home", str(home), "--", "--no-shortcut"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    lock, pin = repo / "installer" / "requirements" / "lock.txt", pinned_torch()
    venv = "pip -m pip install"
    assert log.read_text().splitlines() == [
        f"{venv} --quiet --disable-pip-version-check -c {lock} {repo}",
        f"{venv} --disable-pip-version-check -c {lock} torch=={pin}+cpu --extra-index-url "
        "https://download.pytorch.org/whl/cpu",
        f"{venv} --disable-pip-version-check -c {lock} {repo}[diffusers]",
        "systemctl --user daemon-reload", "systemctl --user enable --now gimp-inpaint-daemon.service"]
    assert f"torch {pin}, cpu build: --torch cpu" in done.stdout
    assert (config / "GIMP" / "3.2" / "plug-ins" / "gimp-inpaint" / "gimp-inpaint.py").is_file()
    unit = (config / "systemd" / "user" / "gimp-inpaint-daemon.service").read_text()
    assert f"ExecStart={sys.executable} -m gimp_inpaint.daemon --no-tray\n" in unit
