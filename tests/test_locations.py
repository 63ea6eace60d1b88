"""installer.locations: every GIMP 3.x configuration per platform (simulated in temporary homes), the installed
GIMPs recognised, and where an install goes when no configuration exists yet."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest
from gimp_inpaint.installer.locations import (
    GimpConfig,
    InstalledGimp,
    find_gimp_configs,
    find_installed_gimps,
    install_targets,
)


def make(*folders: Path) -> None:
    for folder in folders:
        folder.mkdir(parents=True)


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("platform", "environ", "base"), [
    ("linux", {}, "{home}/.config/GIMP"),
    ("linux", {"XDG_CONFIG_HOME": "{home}/xdg"}, "{home}/xdg/GIMP"),
    ("win32", {"APPDATA": "{home}/AppData/Roaming"}, "{home}/AppData/Roaming/GIMP"),
    ("win32", {}, "{home}/AppData/Roaming/GIMP"),
    ("darwin", {}, "{home}/Library/Application Support/GIMP"),
])
def test_every_native_version_is_found_newest_first(tmp_path, platform, environ, base):
    environ = {key: value.format(home=tmp_path) for key, value in environ.items()}
    base_dir = Path(base.format(home=tmp_path))
    make(base_dir / "3.0", base_dir / "3.2", base_dir / "2.10", base_dir / "notes")
    (base_dir / "3.4").write_text("not a folder")
    found = find_gimp_configs(environ, platform, tmp_path, root=tmp_path)
    assert found == [GimpConfig("3.2", base_dir / "3.2", False), GimpConfig("3.0", base_dir / "3.0", False)]
    assert found[0].plugin_dir == base_dir / "3.2" / "plug-ins"
    assert found[0].shortcut_file == base_dir / "3.2" / "shortcutsrc"


def test_linux_finds_native_and_flatpak_and_orders_them(tmp_path):
    native, flatpak = tmp_path / ".config" / "GIMP", tmp_path / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP"
    make(native / "3.0", flatpak / "3.0", flatpak / "3.2")
    assert find_gimp_configs({}, "linux", tmp_path, tmp_path) == [
        GimpConfig("3.2", flatpak / "3.2", True), GimpConfig("3.0", native / "3.0", False),
        GimpConfig("3.0", flatpak / "3.0", True)]
    assert find_gimp_configs({}, "darwin", tmp_path, tmp_path) == []  # no Flatpak off Linux
    assert GimpConfig("3.2", flatpak / "3.2", True).describe() == "GIMP 3.2 (Flatpak)"


def test_gimp3_directory_overrides_everything(tmp_path):
    make(tmp_path / ".config" / "GIMP" / "3.2")
    executable(tmp_path / "bin" / "gimp-3.0")
    environ = {"GIMP3_DIRECTORY": str(tmp_path / "custom"), "PATH": str(tmp_path / "bin")}
    assert find_gimp_configs(environ, "linux", tmp_path, tmp_path) == [GimpConfig("3.0", tmp_path / "custom", False)]
    targets = install_targets("3.2", environ, "linux", tmp_path, tmp_path)
    assert targets.configs == (GimpConfig("3.0", tmp_path / "custom", False),)
    assert "GIMP3_DIRECTORY" in targets.reason


def test_installed_gimps_on_each_platform(tmp_path):
    path = executable(tmp_path / "usr" / "bin" / "gimp-console-3.0")
    executable(tmp_path / "usr" / "bin" / "gimp-3.0")
    executable(tmp_path / "usr" / "bin" / "gimp")  # unversioned: says nothing
    flatpak_bin = tmp_path / "var" / "lib" / "flatpak" / "app" / "org.gimp.GIMP" / "x86_64" / "stable" / "active"
    flatpak = executable(flatpak_bin / "files" / "bin" / "gimp-3.2")
    found = find_installed_gimps({"PATH": str(tmp_path / "usr" / "bin")}, "linux", tmp_path, tmp_path)
    assert sorted(found, key=str) == sorted([InstalledGimp("3.0", False, path), InstalledGimp(
        "3.0", False, tmp_path / "usr" / "bin" / "gimp-3.0"), InstalledGimp("3.2", True, flatpak)], key=str)

    user_flatpak = tmp_path / "home" / ".local" / "share" / "flatpak" / "app" / "org.gimp.GIMP"
    make(user_flatpak)  # no deployment with a versioned binary: the version is unknown
    assert find_installed_gimps({}, "linux", tmp_path / "home", tmp_path / "nothing") == [
        InstalledGimp(None, True, user_flatpak)]

    program_files = tmp_path / "Program Files"
    exe = executable(program_files / "GIMP 3" / "bin" / "gimp-3.2.exe")
    assert find_installed_gimps({"ProgramFiles": str(program_files)}, "win32", tmp_path, tmp_path) == [
        InstalledGimp("3.2", False, exe)]

    info = tmp_path / "Applications" / "GIMP.app" / "Contents" / "Info.plist"
    info.parent.mkdir(parents=True)
    info.write_bytes(plistlib.dumps({"CFBundleShortVersionString": "3.2.6", "CFBundleName": "GIMP"}))
    broken = tmp_path / "home" / "Applications" / "GIMP-old.app" / "Contents" / "Info.plist"
    broken.parent.mkdir(parents=True)
    broken.write_text("not a plist")
    assert find_installed_gimps({}, "darwin", tmp_path / "home", tmp_path) == [InstalledGimp("3.2", False, info)]


def test_install_targets_every_present_configuration(tmp_path):
    native = tmp_path / ".config" / "GIMP"
    flatpak = tmp_path / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP"
    make(native / "3.0", native / "3.2", flatpak / "3.2")
    targets = install_targets(None, {}, "linux", tmp_path, tmp_path)
    assert targets.configs == (GimpConfig("3.2", native / "3.2", False), GimpConfig("3.2", flatpak / "3.2", True),
                               GimpConfig("3.0", native / "3.0", False))
    assert targets.reason == "every GIMP 3 configuration found"


def test_a_version_restriction_still_updates_copies_installed_elsewhere(tmp_path):
    native = tmp_path / ".config" / "GIMP"
    make(native / "3.0" / "plug-ins" / "gimp-inpaint", native / "3.2", native / "3.4")
    targets = install_targets("3.2", {}, "linux", tmp_path, tmp_path)
    assert targets.configs == (GimpConfig("3.2", native / "3.2", False), GimpConfig("3.0", native / "3.0", False))
    assert "already installed elsewhere" in targets.reason


@pytest.mark.parametrize(("platform", "environ", "binary", "version", "expected"), [
    ("linux", {}, None, None, "{home}/.config/GIMP/3.2"),  # nothing found: 3.2, and said so
    ("linux", {}, "bin/gimp-3.0", None, "{home}/.config/GIMP/3.0"),
    ("linux", {}, "var/lib/flatpak/app/org.gimp.GIMP/x86_64/stable/active/files/bin/gimp-3.2", None,
     "{home}/.var/app/org.gimp.GIMP/config/GIMP/3.2"),
    ("linux", {}, "bin/gimp-3.2", "3.0", "{home}/.config/GIMP/3.0"),
    ("win32", {"APPDATA": "{home}/Roaming"}, "Program Files/GIMP 3/bin/gimp-3.0.exe", None, "{home}/Roaming/GIMP/3.0"),
    ("darwin", {}, None, "3.0", "{home}/Library/Application Support/GIMP/3.0"),
])
def test_without_a_configuration_the_newest_installed_gimps_folder(tmp_path, platform, environ, binary, version,
                                                                    expected):
    environ = {key: value.format(home=tmp_path) for key, value in environ.items()}
    environ |= {"PATH": str(tmp_path / "bin"), "ProgramFiles": str(tmp_path / "Program Files")}
    if binary:
        executable(tmp_path / binary)
    targets = install_targets(version, environ, platform, tmp_path, tmp_path)
    (config,) = targets.configs
    assert config.config_dir == Path(expected.format(home=tmp_path))
    assert config.flatpak == (".var/app" in expected)
    if binary is None and version is None:
        assert targets.reason == "no GIMP 3 configuration or installation found: assuming GIMP 3.2"
    elif version is None:
        assert str(tmp_path / binary) in targets.reason
