"""installer.doctor and `gimp-inpaint doctor`: each check on a setup broken in one way, made in a temporary folder,
and the whole run on a healthy one against the real daemon server."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from gimp_inpaint.client import cli
from gimp_inpaint.client.connection import write_connection_config
from gimp_inpaint.daemon.engines.opencv_engine import OpenCVEngine
from gimp_inpaint.installer import doctor
from gimp_inpaint.installer.doctor import Check, Level, TorchFacts
from gimp_inpaint.installer.locations import GimpConfig, InstalledGimp
from gimp_inpaint.installer.torch_select import Hardware, choose_torch
from running_daemon import StepEngine, free_port, running_daemon

pytestmark = pytest.mark.timeout(120)

VERSIONS = {"msgpack": "1.1.0", "websockets": "15.0.1"}
"""The third-party versions the test plug-ins record and the test environment claims."""

CLIENT_SOURCE = Path(doctor._sources()["client"])
"""This installation's client package, one file of which the test plug-ins vendor."""


def make_plugin(config: GimpConfig, url: str, token: str, command: tuple[str, ...] | None = (sys.executable,)) -> Path:
    """A plug-in folder as the installer writes it (entry file 0755, one vendored module, install.json,
    connection.json); returns the folder."""
    folder = config.plugin_dir / "gimp-inpaint"
    (folder / "vendor" / "gimp_inpaint" / "client").mkdir(parents=True)
    entry = folder / "gimp-inpaint.py"
    entry.write_text("#!/usr/bin/env python3\n")
    entry.chmod(0o755)
    (folder / "vendor" / "gimp_inpaint" / "client" / "connection.py").write_bytes(
        (CLIENT_SOURCE / "connection.py").read_bytes())
    (folder / "install.json").write_text(json.dumps({"versions": {**VERSIONS, "gimp_inpaint.client": "source"}}))
    write_connection_config(folder / "connection.json", url, token, daemon_command=command)
    return folder


@pytest.fixture
def config(tmp_path: Path) -> GimpConfig:
    return GimpConfig("3.2", tmp_path / "GIMP" / "3.2", False)


def _check_plugin(config: GimpConfig, versions: dict[str, str] = VERSIONS) -> Check:
    return doctor.check_plugin(config, {"client": CLIENT_SOURCE}, versions, posix=True)


def test_an_intact_plugin_is_ok(config):
    make_plugin(config, "ws://127.0.0.1:7869", "t")
    check = _check_plugin(config)
    assert (check.level, check.name) == (Level.OK, "plug-in (GIMP 3.2 (native))")
    assert "msgpack 1.1.0" in check.detail


@pytest.mark.parametrize(("damage", "level", "words"), [
    ("no plug-in", Level.BROKEN, "not installed"),
    ("no entry file", Level.BROKEN, "gimp-inpaint.py is missing"),
    ("entry not executable", Level.BROKEN, "is not executable, so GIMP does not load it"),
    ("no vendored package", Level.BROKEN, "cannot import its client"),
    ("old vendored code", Level.WARNING, "vendored code differs from this installation's (client/connection.py)"),
    ("other websockets", Level.WARNING, "vendored websockets 15.0.1 (here 16.0)"),
])
def test_a_damaged_plugin_is_reported_with_the_fix(config, damage, level, words):
    if damage != "no plug-in":
        folder = make_plugin(config, "ws://127.0.0.1:7869", "t")
        entry, vendored = folder / "gimp-inpaint.py", folder / "vendor" / "gimp_inpaint"
        if damage == "no entry file":
            entry.unlink()
        elif damage == "entry not executable":
            entry.chmod(0o644)
        elif damage == "no vendored package":
            (vendored / "client" / "connection.py").unlink()
            vendored.joinpath("client").rmdir()
            vendored.rmdir()
        elif damage == "old vendored code":
            (vendored / "client" / "connection.py").write_text("# an older copy\n")
    check = _check_plugin(config, {**VERSIONS, "websockets": "16.0"} if damage == "other websockets" else VERSIONS)
    assert check.level is level
    assert words in check.detail
    assert "gimp-inpaint-install" in check.fix


@pytest.mark.parametrize(("damage", "level", "words"), [
    (None, Level.OK, "ws://127.0.0.1:7869 with the daemon's token"),
    ("token mismatch", Level.BROKEN, "another token than"),
    ("no token file", Level.BROKEN, "token file"),
    ("other url", Level.WARNING, "the plug-in connects to ws://127.0.0.1:7870 but daemon.toml"),
    ("no command", Level.WARNING, "no daemon command"),
    ("missing program", Level.BROKEN, "the daemon command's program /nonexistent/python is missing"),
    ("no plug-in", Level.BROKEN, "no plug-in"),
])
def test_connection_json_against_the_daemons_token_and_url(config, tmp_path, damage, level, words):
    if damage != "no plug-in":
        make_plugin(config, "ws://127.0.0.1:7870" if damage == "other url" else "ws://127.0.0.1:7869",
                    "other" if damage == "token mismatch" else "s3cret",
                    {"no command": None, "missing program": ("/nonexistent/python", "-m", "x")}.get(damage,
                                                                                                  (sys.executable,)))
    check = doctor.check_connection(config, None if damage == "no token file" else "s3cret", tmp_path / "token",
                                    "ws://127.0.0.1:7869")
    assert (check.level, check.name) == (level, "connection (GIMP 3.2 (native))")
    assert words in check.detail


def test_no_daemon_running_is_a_warning_naming_the_command():
    url = f"ws://127.0.0.1:{free_port()}"
    check, welcome = doctor.check_daemon(url, "t", doctor.connect_daemon, "0.1.0")
    assert (check.level, welcome) == (Level.WARNING, None)
    assert check.detail == f"not running at {url}"
    assert "gimp-inpaint-daemon" in check.fix
    assert doctor.check_engines(welcome).detail == "not checked: no daemon answered"


@pytest.mark.parametrize(("wrong_token", "version", "level", "words"), [
    (False, None, Level.OK, "gimp-inpaint daemon"),
    (False, "9.9", Level.WARNING, "but this installation is 9.9"),
    (True, None, Level.BROKEN, "unauthorized"),
])
def test_a_running_daemon_is_checked_with_its_token_and_version(tmp_path, wrong_token, version, level, words):
    with running_daemon(tmp_path, [OpenCVEngine()]) as (url, token):
        check, welcome = doctor.check_daemon(url, "wrong" if wrong_token else token, doctor.connect_daemon,
                                             version or doctor._version("gimp-inpaint"))
    assert check.level is level
    assert words in check.detail
    if not wrong_token:
        engines = doctor.check_engines(welcome)
        assert (engines.level, engines.detail) == (Level.WARNING, "available: opencv")


def test_engines_none_available_is_broken_and_a_diffusion_engine_is_ok(tmp_path):
    """A daemon whose available engines all take no prompt (migan, opencv: removal only) gets a warning; one with
    an engine that takes a prompt (a diffusion model) is OK."""
    with running_daemon(tmp_path, [StepEngine("sd"), OpenCVEngine()]) as (url, token):
        _, welcome = doctor.check_daemon(url, token, doctor.connect_daemon, None)
    assert doctor.check_engines(welcome).level is Level.WARNING  # "sd" here is a StepEngine: no prompt
    diffusion = replace(welcome, engines=[replace(engine, uses_prompt=engine.name == "sd")
                                          for engine in welcome.engines])
    assert doctor.check_engines(diffusion).level is Level.OK
    nothing = replace(welcome, engines=[replace(engine, available=False, detail="pip install x")
                                        for engine in welcome.engines])
    check = doctor.check_engines(nothing)
    assert (check.level, check.detail) == (Level.BROKEN, "available: none; unavailable: sd (pip install x), "
                                                         "opencv (pip install x)")


NVIDIA = Hardware("linux", "x86_64", ("NVIDIA RTX 4090",), "560.35.03", (12, 6))
NO_GPU = Hardware("linux", "x86_64")
CUDA_TORCH = TorchFacts("2.13.0+cu126", cuda="12.6")


@pytest.mark.parametrize(("torch", "hardware", "level", "words"), [
    (None, NVIDIA, Level.WARNING, "not installed: only the opencv engine works"),
    (TorchFacts("2.13.0+cpu"), NVIDIA, Level.WARNING, "cannot use the GPU of this machine"),
    (CUDA_TORCH, NVIDIA, Level.BROKEN, "cannot use the GPU (torch.cuda.is_available() is False)"),
    (replace(CUDA_TORCH, gpu_available=True, gpu_name="NVIDIA RTX 4090"), NVIDIA, Level.OK, "uses NVIDIA RTX 4090"),
    (TorchFacts("2.13.0+cpu"), NO_GPU, Level.OK, "on the CPU, as expected here"),
    (TorchFacts("2.13.0"), Hardware("darwin", "arm64"), Level.BROKEN, "cannot use MPS"),
])
def test_torch_against_the_hardware(torch, hardware, level, words):
    check = doctor.check_torch(torch, choose_torch(hardware, version="2.13.0"), python="/venv/bin/python")
    assert check.level is level
    assert words in check.detail
    if level is not Level.OK and hardware is NVIDIA:
        assert check.fix.startswith("gimp-inpaint-install env --with-diffusers --torch cuda, or "
                                    "`/venv/bin/python -m pip install "
                                    "torch==2.13.0+cu126 --extra-index-url https://download.pytorch.org/whl/cu126`")


def test_no_torch_build_for_the_machine_is_a_warning():
    check = doctor.check_torch(TorchFacts("2.2.2"), None, "torch 2.13.0 has no wheels for Intel Macs")
    assert (check.level, check.detail) == (Level.WARNING, "torch 2.2.2 (no CUDA or ROCm); no torch build fits this "
                                                          "machine: torch 2.13.0 has no wheels for Intel Macs")


@pytest.mark.parametrize(("total", "level"), [(3 * 10**9, Level.WARNING), (24 * 10**9, Level.OK)])
def test_vram(total, level):
    torch = replace(CUDA_TORCH, gpu_available=True, gpu_name="GPU", vram_free=10**9, vram_total=total)
    assert doctor.check_vram(torch).level is level
    assert doctor.check_vram(None).level is Level.OK


@pytest.mark.parametrize(("configs", "installed", "level"), [
    ((), (), Level.BROKEN),
    ((), (InstalledGimp("3.2", False, Path("/usr/bin/gimp-3.2")),), Level.WARNING),
    ((GimpConfig("3.0", Path("/home/u/.config/GIMP/3.0"), False),), (), Level.OK),
])
def test_gimp_installations(configs, installed, level):
    assert doctor.check_gimp(configs, installed).level is level


@pytest.mark.parametrize(("version", "level"), [((3, 9, 18), Level.BROKEN), ((3, 11, 7), Level.OK)])
def test_python_version(version, level):
    assert doctor.check_python(version).level is level


@pytest.mark.parametrize(("prefix", "package", "level"), [
    ("/venv", Path("/src"), Level.OK), ("/usr", Path("/src"), Level.WARNING), ("/venv", None, Level.BROKEN),
])
def test_virtual_environment(prefix, package, level):
    assert doctor.check_venv(prefix, "/usr", package, "0.1.0" if package else None).level is level


@pytest.mark.parametrize(("cached", "wanted", "offline", "level", "words"), [
    ({"a/model": 2 * 10**9}, ["a/model"], True, Level.OK, "offered: a/model (2.0 GB)"),
    ({}, ["a/model"], False, Level.OK, "not downloaded yet (the first fill downloads it): a/model"),
    ({}, ["a/model"], True, Level.BROKEN, "HF_HUB_OFFLINE forbids the download"),
    ({}, ["/no/such/model.safetensors"], False, Level.BROKEN, "missing: /no/such/model.safetensors"),
    (None, ["a/model"], False, Level.WARNING, "huggingface_hub is not installed"),
])
def test_models_in_the_hugging_face_cache(tmp_path, cached, wanted, offline, level, words):
    check = doctor.check_models(cached, wanted, tmp_path, offline)
    assert check.level is level
    assert words in check.detail


@pytest.mark.parametrize(("free", "level"), [(5 * 10**9, Level.WARNING), (50 * 10**9, Level.OK)])
def test_free_disk(tmp_path, free, level):
    assert doctor.check_disk(tmp_path, free).level is level


@pytest.mark.parametrize(("environ", "expected"), [
    ({"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}, Path("/c")),
    ({"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}, Path("/h/hub")),
    ({"XDG_CACHE_HOME": "/x"}, Path("/x/huggingface/hub")),
    ({}, Path("/home/u/.cache/huggingface/hub")),
])
def test_hf_cache_dir(environ, expected):
    assert doctor.hf_cache_dir(environ, Path("/home/u")) == expected


def test_a_healthy_setup_has_nothing_broken(tmp_path):
    home, config_dir = tmp_path / "home", tmp_path / "daemon"
    environ = {"XDG_CONFIG_HOME": str(home / ".config"), "HF_HUB_CACHE": str(tmp_path / "hub"), "PATH": ""}
    gimp = GimpConfig("3.2", home / ".config" / "GIMP" / "3.2", False)
    with running_daemon(config_dir, [OpenCVEngine()]) as (url, token):
        (config_dir / "daemon.toml").write_text(f"port = {url.rsplit(':', 1)[1]}\n")
        make_plugin(gimp, url, token)
        checks = list(doctor.run_checks(config_dir, environ, home, probe_torch=lambda: None,
                                        probe_hardware=lambda: NO_GPU))
    levels = {check.name: check.level for check in checks}
    assert Level.BROKEN not in levels.values(), [check.line() for check in checks]
    assert levels["daemon"] is Level.OK
    assert levels["connection (GIMP 3.2 (native))"] is Level.OK
    assert levels["torch"] is Level.WARNING  # no torch: only opencv


def test_the_command_exits_1_with_one_line_per_check_when_something_is_broken(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_CONFIG_HOME", "GIMP3_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert cli.main(["doctor", "--config-dir", str(tmp_path / "daemon")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"{sum(line.startswith('broken ') for line in lines)} broken"
    assert any(line.startswith("broken   gimp: no GIMP 3 installation or configuration found → fix: ")
               for line in lines)
    assert any(line.startswith("broken   daemon: no token file") for line in lines)
    assert [line.split()[1] for line in lines[:3]] == ["python:", "environment:", "torch:"]
