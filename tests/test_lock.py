"""installer/requirements/lock.txt against pyproject.toml: every dependency and extra is pinned, inside its
range, for every Python the project supports, and torch with its CUDA wheels stays out (its index brings them).
A change of ranges without ``bash installer/requirements/refresh`` fails here, before a fresh clone's CI does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomllib backport
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = REPO / "installer" / "requirements"
PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")
"""The Python versions the lock must cover (``requires-python >= 3.10``)."""


def _lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def _pins(python: str) -> dict[str, Version]:
    """``{name: version}`` of the lock's lines whose environment marker holds on Linux with ``python``."""
    environment = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
                   "platform_python_implementation": "CPython"}
    pins: dict[str, Version] = {}
    for line in _lines(REQUIREMENTS / "lock.txt"):
        requirement, _, marker = line.partition(";")
        name, _, version = requirement.partition("==")
        if not marker.strip() or Marker(marker).evaluate(environment):
            assert canonicalize_name(name) not in pins, f"{name} pinned twice for Python {python}"
            pins[canonicalize_name(name)] = Version(version.strip())
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]] + \
        [Requirement(text) for extra in project["optional-dependencies"].values() for text in extra]


@pytest.mark.parametrize("python", PYTHONS)
def test_every_declared_dependency_is_pinned_inside_its_range(python: str) -> None:
    pins = _pins(python)
    for requirement in _declared():
        if requirement.marker and not requirement.marker.evaluate({"python_version": python}):
            continue
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{requirement} is not in the lock: run bash installer/requirements/refresh"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} ∉ {requirement}"


def test_torch_and_its_cuda_wheels_stay_out_of_the_lock() -> None:
    names = {canonicalize_name(line.split("==")[0]) for line in _lines(REQUIREMENTS / "lock.txt")}
    runtime = {canonicalize_name(name) for name in _lines(REQUIREMENTS / "torch-runtime.txt")}
    assert "torch" not in names and not names & runtime
    assert not {name for name in names if name.startswith(("nvidia-", "cuda-", "triton"))}


def test_the_known_breakage_is_kept_out() -> None:
    """transformers 5.24 needs peft >= 0.22 for LoRAs, which PyPI does not have (2026-12): lock-constraints.in."""
    for python in PYTHONS:
        pins = _pins(python)
        assert pins["transformers"] < Version("5.24")
        assert "torch" not in pins
    (torch,) = (Requirement(line) for line in _lines(REQUIREMENTS / "lock-constraints.in") if line.startswith("torch"))
    assert len(torch.specifier) == 1 and next(iter(torch.specifier)).operator == "=="  # one build per backend
