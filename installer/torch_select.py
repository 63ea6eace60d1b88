"""Choose the torch build for this machine's hardware: CUDA (by the NVIDIA driver), ROCm, Apple MPS or CPU.

:func:`choose_torch` is pure (tested on recorded ``nvidia-smi`` / ``rocminfo`` output); :func:`detect_hardware`
is the thin adapter that runs those tools. The torch version is the pin in
``installer/requirements/lock-constraints.in`` (:func:`pinned_torch`), installed from its backend's index:
``https://download.pytorch.org/whl/<tag>`` on Linux and Windows, PyPI on macOS (whose wheels carry MPS).

Wheel tags assumed for that torch (2.13.0 when written): CUDA ``cu126``, ``cu128``, ``cu130`` (Linux x86_64
and Windows; PyPI's Linux default is the CUDA 13 build, as the ``nvidia-*-cu13`` names in
``installer/requirements/torch-runtime.txt`` show), ROCm ``rocm7.1`` (Linux x86_64 only), ``cpu`` (Linux and Windows),
no Intel-Mac wheels since torch 2.3. This set follows the pattern of torch 2.9–2.10's published indexes; it
was NOT verified against download.pytorch.org for 2.13 from here (no network to it): check
``https://download.pytorch.org/whl/torch/`` when the pin moves, and update :data:`CUDA_TAGS` / :data:`ROCM_TAG`.

Drivers: ``nvidia-smi`` prints the newest CUDA version the driver supports ("CUDA Version: 12.6"); a
``cuXY`` wheel bundles its CUDA runtime and needs a driver supporting CUDA X.Y, or, by CUDA's minor-version
compatibility (CUDA Compatibility guide, "Minor Version Compatibility"), any driver of the same major
version (e.g. CUDA 12.2's 535) for most kernels.
"""

from __future__ import annotations

import platform as platform_module
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CUDA_TAGS: tuple[tuple[tuple[int, int], str], ...] = (((13, 0), "cu130"), ((12, 8), "cu128"), ((12, 6), "cu126"))
"""The CUDA wheel tags of the pinned torch, newest first, each with the CUDA version (major, minor) it needs."""

ROCM_TAG = "rocm7.1"
"""The ROCm wheel tag of the pinned torch (Linux x86_64 only)."""

PYTORCH_INDEX = "https://download.pytorch.org/whl/"
"""Base of PyTorch's per-backend pip indexes."""

OVERRIDES = ("cpu", "cuda", "rocm", "mps")
"""The values of ``--torch`` besides ``auto``."""

REQUIREMENTS = Path(__file__).resolve().parent / "requirements"
"""The lock's folder (lock.txt, lock-constraints.in), shipped inside the installer package."""


class TorchChoiceError(Exception):
    """No torch build fits the request (e.g. ``--torch rocm`` on Windows); the message says why."""


@dataclass(frozen=True)
class Hardware:
    """What :func:`detect_hardware` found.

    Attributes:
        platform: ``sys.platform`` (``linux``, ``win32``, ``darwin``).
        machine: ``platform.machine()`` (``x86_64``, ``AMD64``, ``arm64``, ``aarch64``).
        nvidia_gpus: NVIDIA GPU names, from ``nvidia-smi``.
        nvidia_driver: the NVIDIA driver version (``"560.35.03"``), or None.
        cuda: the newest CUDA version (major, minor) the driver supports, or None.
        amd_gpus: AMD GPU names (marketing name, else the gfx target) from ``rocminfo``.
        rocm: the installed ROCm version (``"6.2.0"``), or None; ROCm counts as present when this or
            ``amd_gpus`` is set.
    """

    platform: str
    machine: str
    nvidia_gpus: tuple[str, ...] = ()
    nvidia_driver: str | None = None
    cuda: tuple[int, int] | None = None
    amd_gpus: tuple[str, ...] = ()
    rocm: str | None = None


@dataclass(frozen=True)
class TorchChoice:
    """The torch build to install.

    Attributes:
        backend: ``cpu``, a CUDA tag (``cu126``, ``cu128``, ``cu130``), the ROCm tag, or ``mps``.
        index_url: the pip index to install torch from, or None for PyPI (macOS).
        reason: why, in a sentence for the user.
        version: the torch version (the lock's pin).
    """

    backend: str
    index_url: str | None
    reason: str
    version: str

    def pip_args(self) -> list[str]:
        """``pip install`` arguments for this build: ``torch==<version>+<backend>`` (the build's local version
        label, which only its own index serves) with that index added to PyPI, so torch's own dependencies
        (sympy, filelock, …) come from PyPI under the lock's pins; ``torch==<version>`` from PyPI on macOS."""
        if self.index_url is None:
            return [f"torch=={self.version}"]
        return [f"torch=={self.version}+{self.backend}", "--extra-index-url", self.index_url]


def pinned_torch(constraints: Path = REQUIREMENTS / "lock-constraints.in") -> str:
    """The torch version pinned by ``torch==X`` in ``constraints``.

    Raises:
        TorchChoiceError: the file is missing or pins no torch.
    """
    try:
        text = constraints.read_text(encoding="utf-8")
    except OSError as exc:
        raise TorchChoiceError(f"cannot read the torch pin from {constraints}: {exc} "
                               f"(reinstall gimp-inpaint: the file ships with its installer)") from exc
    match = re.search(r"^torch==([^\s#;]+)", text, re.MULTILINE)
    if match is None:
        raise TorchChoiceError(f"{constraints} pins no torch (expected a line torch==X.Y.Z)")
    return match.group(1)


def parse_nvidia_smi(summary: str, query: str) -> tuple[tuple[str, ...], str | None, tuple[int, int] | None]:
    """GPU names, driver version and supported CUDA version from ``nvidia-smi`` outputs.

    Args:
        summary: plain ``nvidia-smi`` output (its header has ``Driver Version: X`` and ``CUDA Version: X.Y``).
        query: ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`` output, one GPU a line.
    """
    names, drivers = [], []
    for line in query.splitlines():
        name, _, gpu_driver = line.rpartition(",")
        if name.strip():
            names.append(name.strip())
            drivers.append(gpu_driver.strip())
    driver_match = re.search(r"Driver Version:\s*([\d.]+)", summary)
    cuda_match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", summary)
    driver = driver_match.group(1) if driver_match else (drivers[0] if drivers else None)
    cuda = (int(cuda_match.group(1)), int(cuda_match.group(2))) if cuda_match else None
    return tuple(names), driver, cuda


def parse_rocminfo(text: str) -> tuple[str, ...]:
    """AMD GPU names from ``rocminfo`` output: each agent with ``Device Type: GPU``, by its ``Marketing Name``
    (else its ``Name``, the gfx target)."""
    gpus = []
    for agent in re.split(r"\n\*{5,}\s*\nAgent \d+\s*\n\*{5,}", text)[1:]:
        fields = dict(re.findall(r"^ {2}([A-Za-z][\w ]*?):[ \t]*(.*?)[ \t]*$", agent, re.MULTILINE))
        if fields.get("Device Type") == "GPU":
            gpus.append(fields.get("Marketing Name") or fields.get("Name", "AMD GPU"))
    return tuple(gpus)


def _cuda_tag(cuda: tuple[int, int]) -> tuple[str, str] | None:
    """(tag, how it fits) for a driver supporting ``cuda``, or None when no tag's major version fits."""
    for needed, tag in CUDA_TAGS:
        if needed <= cuda:
            return tag, f"supports CUDA {cuda[0]}.{cuda[1]}"
    same_major = [tag for needed, tag in CUDA_TAGS if needed[0] == cuda[0]]
    if same_major:
        return same_major[-1], (f"supports CUDA {cuda[0]}.{cuda[1]}, which runs {same_major[-1]} by CUDA's "
                                f"minor-version compatibility (update the driver if a kernel fails)")
    return None


def _nvidia(hardware: Hardware, version: str, forced: bool) -> TorchChoice | None:
    gpu = ", ".join(hardware.nvidia_gpus) or "NVIDIA GPU"
    if hardware.cuda is None:
        if not forced:
            return None
        tag = CUDA_TAGS[0][1]
        return TorchChoice(tag, PYTORCH_INDEX + tag, f"--torch cuda with no NVIDIA driver found: the newest CUDA "
                                                     f"build, {tag}", version)
    fit = _cuda_tag(hardware.cuda)
    if fit is None:
        oldest = CUDA_TAGS[-1][0]
        message = (f"{gpu}, driver {hardware.nvidia_driver} supports CUDA {hardware.cuda[0]}.{hardware.cuda[1]}, "
                   f"older than torch {version}'s oldest CUDA build (CUDA {oldest[0]}.{oldest[1]}): update the "
                   f"NVIDIA driver")
        if forced:
            raise TorchChoiceError(message)
        return TorchChoice("cpu", PYTORCH_INDEX + "cpu", message + "; using the CPU build meanwhile", version)
    tag, how = fit
    return TorchChoice(tag, PYTORCH_INDEX + tag, f"{gpu}, driver {hardware.nvidia_driver} {how} → {tag}", version)


def choose_torch(hardware: Hardware, override: str | None = None, version: str | None = None) -> TorchChoice:
    """The torch build for ``hardware``.

    Without ``override`` (or with ``"auto"``): macOS on Apple silicon → ``mps`` (PyPI); an NVIDIA driver → the
    newest CUDA tag it supports; ROCm on Linux x86_64 → :data:`ROCM_TAG`; otherwise ``cpu``.

    Args:
        hardware: from :func:`detect_hardware` (or recorded, in tests).
        override: ``cpu``, ``cuda``, ``rocm`` or ``mps`` (``--torch``), or None / ``"auto"``.
        version: the torch version; default :func:`pinned_torch`.

    Raises:
        TorchChoiceError: no build for this platform (an Intel Mac; ``rocm`` off Linux x86_64; ``mps`` off
            Apple silicon; ``cuda`` on macOS or with a driver too old), or the pin cannot be read.
        ValueError: ``override`` is not one of :data:`OVERRIDES` or ``auto``.
    """
    if override not in (None, "auto", *OVERRIDES):
        raise ValueError(f"--torch must be auto, {', '.join(OVERRIDES)}; got {override!r}")
    version = version or pinned_torch()
    override = None if override == "auto" else override
    if hardware.platform == "darwin":
        if hardware.machine != "arm64":
            raise TorchChoiceError(f"torch {version} has no wheels for Intel Macs (the last was 2.2.2); the "
                                   f"OpenCV engine works without torch")
        if override in ("cuda", "rocm"):
            raise TorchChoiceError(f"--torch {override}: macOS has no {override.upper()}; use mps or cpu")
        return TorchChoice("mps" if override != "cpu" else "cpu", None,
                           "macOS on Apple silicon: PyPI's torch, which runs on the GPU through MPS"
                           if override != "cpu" else "--torch cpu: PyPI's torch on macOS (MPS left unused)", version)
    if override == "mps":
        raise TorchChoiceError("--torch mps needs macOS on Apple silicon")
    cpu = TorchChoice("cpu", PYTORCH_INDEX + "cpu", "no NVIDIA or ROCm GPU found: the CPU build", version)
    if override == "cpu":
        return TorchChoice("cpu", cpu.index_url, "--torch cpu", version)
    if override in (None, "cuda"):
        nvidia = _nvidia(hardware, version, forced=override == "cuda")
        if nvidia is not None:
            return nvidia
    if override in (None, "rocm") and (hardware.amd_gpus or hardware.rocm or override == "rocm"):
        if not hardware.platform.startswith("linux") or hardware.machine != "x86_64":
            if override == "rocm":
                raise TorchChoiceError(f"torch's ROCm builds are for Linux x86_64 only, not {hardware.platform} "
                                       f"{hardware.machine}")
            return TorchChoice("cpu", cpu.index_url, f"{', '.join(hardware.amd_gpus) or 'AMD GPU'}: torch has "
                                                     f"ROCm builds for Linux x86_64 only; the CPU build", version)
        found = ", ".join(hardware.amd_gpus) or "no AMD GPU listed by rocminfo"
        rocm = f"ROCm {hardware.rocm}" if hardware.rocm else "ROCm"
        return TorchChoice(ROCM_TAG, PYTORCH_INDEX + ROCM_TAG, f"{found}, {rocm} → {ROCM_TAG}", version)
    return cpu


Runner = Callable[[Sequence[str]], str | None]
"""Runs a command and returns its stdout, or None when it is missing or fails (injected in tests)."""


def run_tool(command: Sequence[str]) -> str | None:
    """``command``'s stdout, or None when the program is not on PATH, fails, or takes over 20 s."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def detect_hardware(run: Runner = run_tool, platform: str | None = None, machine: str | None = None,
                    rocm_root: Path = Path("/opt/rocm")) -> Hardware:
    """Look at this machine: ``nvidia-smi`` (twice), ``rocminfo`` and ``<rocm_root>/.info/version``.

    Args:
        run: runs a tool (:data:`Runner`); default :func:`run_tool`.
        platform, machine: default ``sys.platform`` and ``platform.machine()``.
        rocm_root: the ROCm installation folder.
    """
    platform = sys.platform if platform is None else platform
    machine = platform_module.machine() if machine is None else machine
    summary = run(["nvidia-smi"])
    names: tuple[str, ...] = ()
    driver, cuda = None, None
    if summary is not None:
        query = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]) or ""
        names, driver, cuda = parse_nvidia_smi(summary, query)
    rocminfo = run(["rocminfo"]) if platform.startswith("linux") else None
    try:
        rocm = (rocm_root / ".info" / "version").read_text(encoding="utf-8").strip().split("-")[0] or None
    except OSError:
        rocm = None
    return Hardware(platform, machine, names, driver, cuda, parse_rocminfo(rocminfo or ""), rocm)


def pip_commands(python: str, choice: TorchChoice | None, source: Path,
                 lock: Path = REQUIREMENTS / "lock.txt") -> list[list[str]]:
    """The ``pip install`` commands that set up the daemon's environment from the lock.

    With ``choice`` (the generative engines): first torch from its backend's index
    (:meth:`TorchChoice.pip_args`; torch is not in the lock, its dependencies are), then ``source[diffusers]``
    with the lock as constraints, which finds that torch already satisfied. Without: only ``source`` with the lock.

    Args:
        python: the environment's interpreter.
        choice: the torch build, or None for the OpenCV engine only.
        source: the gimp-inpaint source tree (holding pyproject.toml).
        lock: ``installer/requirements/lock.txt``.
    """
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    package = [*pip, "-c", str(lock), f"{source}[diffusers]" if choice else str(source)]
    return [[*pip, "-c", str(lock), *choice.pip_args()], package] if choice else [package]
