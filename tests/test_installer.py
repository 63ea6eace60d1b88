"""installer: layout, file modes, vendored packages usable without site-packages, shortcutsrc edits, uninstall."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from running_daemon import running_daemon

from daemon.engines.opencv_engine import OpenCVEngine
from installer.__main__ import main
from installer.bundle import PROCEDURE, install, uninstall
from installer.locations import gimp_config_dir
from installer.shortcuts import HEADER, add_shortcut, check_accelerator, remove_shortcut

pytestmark = pytest.mark.timeout(120)

LINE = '(action "python-fu-gimp-inpaint" "<Primary><Alt>i")'


def run_install(tmp_path: Path, *extra: str) -> int:
    return main(["install", "--plugin-dir", str(tmp_path / "plug-ins"), "--config-dir", str(tmp_path / "config"),
                 "--gimp-config-dir", str(tmp_path / "gimp"), *extra])


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
    assert json.loads((folder / "connection.json").read_text()) == {"url": "ws://127.0.0.1:7999", "token": token}
    vendor = folder / "vendor"
    assert sorted(p.name for p in vendor.iterdir()) == ["client", "licenses", "msgpack", "plugin_gimp", "protocol",
                                                        "websockets"]
    assert sorted(p.name for p in (vendor / "client").iterdir()) == ["__init__.py", "connection.py"]
    assert not list(vendor.rglob("*.so")) and not list(vendor.rglob("__pycache__"))
    assert (vendor / "msgpack" / "fallback.py").is_file() and (vendor / "websockets" / "sync" / "client.py").is_file()
    assert {p.name for p in (vendor / "licenses").iterdir()} >= {"websockets-LICENSE"}


def test_entry_file_registers_the_procedure_the_installer_binds():
    entry = Path(__file__).parents[1] / "plugin_gimp" / "gimp-inpaint" / "gimp-inpaint.py"
    assert f'PROCEDURE = "{PROCEDURE}"' in entry.read_text()
    assert entry.read_text().startswith("#!/usr/bin/env python3\n")


ISOLATED = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import msgpack, websockets, protocol, client.connection, plugin_gimp.fill
    from websockets.sync.client import connect
    assert msgpack.Packer.__module__ == "msgpack.fallback", msgpack.Packer.__module__
    for name in ("msgpack", "websockets", "protocol", "client", "plugin_gimp"):
        assert sys.modules[name].__file__.startswith(sys.argv[1]), sys.modules[name].__file__
    assert not {"numpy", "PIL", "platformdirs", "daemon"} & {m.split(".")[0] for m in sys.modules}
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
    from client.connection import InpaintClient, pick_engine, read_connection_config
    from protocol import InpaintRequest, Plane
    url, token = read_connection_config(Path(sys.argv[2]))
    with InpaintClient.connect(sys.argv[3], token, "isolated") as client:
        engine = pick_engine(client.welcome, "")
        image = Plane(16, 16, 4, bytes(range(256)) * 4)
        mask = Plane(16, 16, 1, bytes([0] * 128 + [255] * 128))
        result = client.inpaint(InpaintRequest("j1", engine, 3, 4, image, mask, feather=0, grow=0))
    (variant,) = result.variants
    assert (variant.x, variant.y, len(variant.image.data)) == (3, 4, 1024)
    assert variant.image.data[:512] == image.data[:512]  # unmasked top half: the original, exactly
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
    assert shortcuts.read_text() == f"{HEADER}\n{LINE}\n"
    out = capsys.readouterr().out
    assert str(tmp_path / "plug-ins" / "gimp-inpaint") in out and str(shortcuts) in out
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "plug-ins")]) == 0
    assert not (tmp_path / "plug-ins" / "gimp-inpaint").exists()
    assert shortcuts.read_text() == f"{HEADER}\n"
    assert "removed <Primary><Alt>i" in capsys.readouterr().out


def test_reinstall_keeps_ownership_of_the_shortcut(tmp_path):
    assert run_install(tmp_path) == 0
    assert run_install(tmp_path) == 0
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    assert shortcuts.read_text().count(LINE) == 1
    uninstall(tmp_path / "plug-ins")
    assert LINE not in shortcuts.read_text()


def test_a_users_own_shortcut_for_the_action_is_kept_and_survives_uninstall(tmp_path, capsys):
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    shortcuts.parent.mkdir()
    mine = f'{HEADER}\n# (action "edit-undo" "<Primary>z")\n(action "python-fu-gimp-inpaint" "F9")\n'
    shortcuts.write_text(mine)
    assert run_install(tmp_path) == 0
    assert "kept the existing shortcut of python-fu-gimp-inpaint (F9)" in capsys.readouterr().out
    assert shortcuts.read_text() == mine
    assert main(["uninstall", "--plugin-dir", str(tmp_path / "plug-ins")]) == 0
    assert shortcuts.read_text() == mine


def test_an_accelerator_taken_by_another_action_is_not_stolen(tmp_path, capsys):
    shortcuts = tmp_path / "gimp" / "shortcutsrc"
    shortcuts.parent.mkdir()
    shortcuts.write_text(f'{HEADER}\n(action "image-flip" "<Control><Alt>I")\n')
    assert run_install(tmp_path) == 0
    assert "skipped: <Primary><Alt>i is already used by image-flip" in capsys.readouterr().out
    assert "python-fu-gimp-inpaint" not in shortcuts.read_text()


def test_no_shortcut_and_a_custom_one(tmp_path):
    assert run_install(tmp_path, "--no-shortcut") == 0
    assert not (tmp_path / "gimp" / "shortcutsrc").exists()
    assert run_install(tmp_path, "--shortcut", "<Shift>F9") == 0
    assert '(action "python-fu-gimp-inpaint" "<Shift>F9")' in (tmp_path / "gimp" / "shortcutsrc").read_text()


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


def test_remove_shortcut_leaves_changed_lines():
    text = f'{HEADER}\n(action "python-fu-gimp-inpaint" "<Primary><Alt>i" "F9")\n'
    assert not remove_shortcut(text, PROCEDURE, "<Primary><Alt>i").changed
    added = add_shortcut("(file-version 1)", PROCEDURE, "<Primary><Alt>i")
    assert added.changed and added.text == f"{HEADER}\n{LINE}\n"


@pytest.mark.parametrize(("environ", "platform", "expected"), [
    ({"GIMP3_DIRECTORY": "/custom/gimp"}, "linux", "/custom/gimp"),
    ({}, "linux", "{home}/.config/GIMP/3.0"),
    ({"XDG_CONFIG_HOME": "/xdg"}, "linux", "/xdg/GIMP/3.0"),
    ({"APPDATA": "C:/Users/u/AppData/Roaming"}, "win32", "C:/Users/u/AppData/Roaming/GIMP/3.0"),
    ({}, "darwin", "{home}/Library/Application Support/GIMP/3.0"),
])
def test_gimp_config_dir_per_platform(tmp_path, environ, platform, expected):
    assert gimp_config_dir(environ, platform, tmp_path) == Path(expected.format(home=tmp_path))


def test_gimp_config_dir_finds_the_flatpak_when_only_it_exists(tmp_path):
    flatpak = tmp_path / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP" / "3.0"
    flatpak.mkdir(parents=True)
    assert gimp_config_dir({}, "linux", tmp_path) == flatpak
    (tmp_path / ".config" / "GIMP" / "3.0").mkdir(parents=True)
    assert gimp_config_dir({}, "linux", tmp_path) == tmp_path / ".config" / "GIMP" / "3.0"
