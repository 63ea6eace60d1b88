"""The built wheel: one top-level import package, ``gimp_inpaint``, so it cannot overwrite PyPI's ``installer``
(pypa/installer) or ``daemon`` (python-daemon), and it carries the files the installer copies at run time."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                     ".hypothesis", ".ruff_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The project's wheel, built from a copy of the source tree (so the checkout gets no build/ folder)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(root / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    (built,) = (root / "dist").glob("gimp_inpaint-*.whl")
    return zipfile.ZipFile(built)


def test_the_only_top_level_names_are_gimp_inpaint_and_its_dist_info(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/", 1)[0] for name in wheel.namelist()}
    (dist_info,) = (name for name in top if name.endswith(".dist-info"))
    assert top == {"gimp_inpaint", dist_info}
    assert wheel.read(f"{dist_info}/top_level.txt").decode().split() == ["gimp_inpaint"]


def test_the_wheel_carries_every_package_and_the_files_used_at_run_time(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    for package in ("protocol", "daemon", "daemon/engines", "client", "plugin_gimp", "installer"):
        assert f"gimp_inpaint/{package}/__init__.py" in names
    assert "gimp_inpaint/__init__.py" not in names  # a namespace package: nothing of ours at the top but the folder
    assert {"gimp_inpaint/plugin_gimp/gimp-inpaint/gimp-inpaint.py", "gimp_inpaint/client/assets/astronaut.png",
            "gimp_inpaint/client/assets/astronaut-patch-mask.png", "gimp_inpaint/installer/install.sh",
            "gimp_inpaint/installer/install.ps1", "gimp_inpaint/installer/requirements/lock.txt",
            "gimp_inpaint/installer/requirements/lock-constraints.in"} <= names
    assert not any(name.startswith("gimp_inpaint/tests/") or "/__pycache__/" in name for name in names)


def test_console_scripts_keep_their_names_and_point_into_the_package(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = (name for name in wheel.namelist() if name.endswith(".dist-info/entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(entry_points).decode())
    assert dict(parser["console_scripts"]) == {
        "gimp-inpaint": "gimp_inpaint.client.cli:main",
        "gimp-inpaint-daemon": "gimp_inpaint.daemon.__main__:main",
        "gimp-inpaint-install": "gimp_inpaint.installer.__main__:main",
    }
