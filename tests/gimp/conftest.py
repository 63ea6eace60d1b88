"""Fixtures for the real-GIMP tests: the chroots (GIMP 3.0 and 3.2), the GUI tools, the tiny diffusers model.

A missing prerequisite (not root, no debootstrap, no mirror, no diffusers) skips these tests on a
developer machine, but fails them in CI (``CI=true``), where they must really run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

import pytest
from gimp_harness import RELEASES, GimpChroot, GimpUnavailable, ensure_host_tools

TINY_PIPELINES = Path(__file__).resolve().parents[1] / "tiny_pipelines.py"


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when running in CI (``CI=true``), with ``reason``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"GIMP integration prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", params=list(RELEASES), ids=lambda release: f"gimp{RELEASES[release]}-{release}")
def gimp_chroot(request: pytest.FixtureRequest) -> GimpChroot:
    """A Debian chroot with GIMP 3, once per release of :data:`gimp_harness.RELEASES` (trixie: GIMP 3.0, forky:
    GIMP 3.2; the test id names both), built on first use (one to two minutes and 730 MB to 1 GB each) and shared
    by the session's tests."""
    try:
        chroot = GimpChroot(request.param)
        seconds = chroot.ensure_built()
    except (GimpUnavailable, ValueError) as exc:
        unavailable(str(exc))
    if seconds:
        print(f"[gimp] built the chroot {chroot.root} in {seconds:.1f} s")
    return chroot


@pytest.fixture(scope="session")
def gui_tools(gimp_chroot: GimpChroot) -> None:
    """Xvfb and xdotool on the host (installed with apt-get when missing), for the GUI undo test."""
    try:
        ensure_host_tools({"Xvfb": "xvfb", "xdotool": "xdotool"})
    except GimpUnavailable as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SD inpainting pipeline folder, built by ``tests/tiny_pipelines.py``'s command line."""
    if not all(importlib.util.find_spec(name) for name in ("torch", "diffusers")):
        unavailable('torch/diffusers are not installed (pip install "gimp-inpaint[diffusers]")')
    folder = tmp_path_factory.mktemp("tiny-inpaint")
    start = time.monotonic()
    subprocess.run([sys.executable, str(TINY_PIPELINES), str(folder)], check=True, capture_output=True, text=True,
                   timeout=600)
    print(f"[gimp] built the tiny pipeline in {time.monotonic() - start:.1f} s")
    return folder
