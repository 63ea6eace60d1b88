"""installer.torch_select: recorded nvidia-smi / rocminfo output → the torch build, its index and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from gimp_inpaint.installer.torch_select import (
    Hardware,
    TorchChoiceError,
    choose_torch,
    detect_hardware,
    parse_nvidia_smi,
    parse_rocminfo,
    pinned_torch,
)


def nvidia_smi(driver: str, cuda: str, gpu: str, mode: str = "Off") -> str:
    """Plain ``nvidia-smi`` as a 5xx driver prints it (the header layout of drivers 530-580, Linux and Windows)."""
    return f"""Tue Nov 26 10:12:44 2026
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI {driver:<22} Driver Version: {driver:<14} CUDA Version: {cuda:<8} |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|=========================================+========================+======================|
|   0  {gpu[:26]:<26} {mode:>7} |   00000000:01:00.0  On |                  N/A |
|  0%   38C    P8              9W /  200W |     612MiB /  12282MiB |      2%      Default |
+-----------------------------------------+------------------------+----------------------+
"""


ROCMINFO = """ROCk module is loaded
=====================
HSA System Attributes
=====================
Runtime Version:         1.1
System Timestamp Freq.:  1000.000000MHz
==========
HSA Agents
==========
*******
Agent 1
*******
  Name:                    AMD Ryzen 9 7950X 16-Core Processor
  Uuid:                    CPU-XX
  Marketing Name:          AMD Ryzen 9 7950X 16-Core Processor
  Vendor Name:             CPU
  Feature:                 None specified
  Device Type:             CPU
  Pool Info:
    Pool 1
      Segment:                 GLOBAL; FLAGS: FINE GRAINED
*******
Agent 2
*******
  Name:                    gfx1100
  Uuid:                    GPU-8b2a5e3c1f0d4e6a
  Marketing Name:          Radeon RX 7900 XTX
  Vendor Name:             AMD
  Feature:                 KERNEL_DISPATCH
  Device Type:             GPU
  ISA Info:
    ISA 1
      Name:                    amdgcn-amd-amdhsa--gfx1100
*******
Agent 3
*******
  Name:                    gfx1036
  Marketing Name:
  Vendor Name:             AMD
  Device Type:             GPU
*** Done ***
"""

PIN = pinned_torch()


def recorded(driver: str, cuda: str, gpu: str) -> Hardware:
    names, found_driver, found_cuda = parse_nvidia_smi(nvidia_smi(driver, cuda, gpu), f"{gpu}, {driver}\n")
    return Hardware("linux", "x86_64", names, found_driver, found_cuda)


def test_the_pin_is_read_from_the_lock_constraints(tmp_path):
    constraints = Path(__file__).parents[1] / "installer" / "requirements" / "lock-constraints.in"
    assert f"torch=={PIN} " in constraints.read_text()
    (tmp_path / "c.in").write_text("# torch==9\ntransformers<5\n")
    with pytest.raises(TorchChoiceError, match="pins no torch"):
        pinned_torch(tmp_path / "c.in")
    with pytest.raises(TorchChoiceError, match="cannot read"):
        pinned_torch(tmp_path / "missing.in")


def test_nvidia_smi_is_parsed():
    summary = nvidia_smi("560.35.03", "12.6", "NVIDIA GeForce RTX 4070")
    query = "NVIDIA GeForce RTX 4070, 560.35.03\nNVIDIA RTX A2000 12GB, 560.35.03\n"
    assert parse_nvidia_smi(summary, query) == (("NVIDIA GeForce RTX 4070", "NVIDIA RTX A2000 12GB"),
                                                "560.35.03", (12, 6))


def test_rocminfo_lists_gpu_agents_only():
    assert parse_rocminfo(ROCMINFO) == ("Radeon RX 7900 XTX", "gfx1036")
    assert parse_rocminfo("") == ()


@pytest.mark.parametrize(("driver", "cuda", "gpu", "backend", "reason"), [
    ("560.35.03", "12.6", "NVIDIA GeForce RTX 4070", "cu126",
     "NVIDIA GeForce RTX 4070, driver 560.35.03 supports CUDA 12.6 → cu126"),
    ("570.124.06", "12.8", "NVIDIA GeForce RTX 5090", "cu128",
     "NVIDIA GeForce RTX 5090, driver 570.124.06 supports CUDA 12.8 → cu128"),
    ("575.57.08", "12.9", "NVIDIA GeForce RTX 3060", "cu128", "supports CUDA 12.9 → cu128"),
    ("580.95.05", "13.0", "NVIDIA H200", "cu130", "supports CUDA 13.0 → cu130"),
    ("535.183.01", "12.2", "Tesla T4", "cu126", "minor-version compatibility"),
])
def test_cuda_tag_follows_the_drivers_cuda_version(driver, cuda, gpu, backend, reason):
    choice = choose_torch(recorded(driver, cuda, gpu))
    assert (choice.backend, choice.index_url) == (backend, f"https://download.pytorch.org/whl/{backend}")
    assert reason in choice.reason
    assert choice.pip_args() == [f"torch=={PIN}+{backend}", "--extra-index-url",
                                 f"https://download.pytorch.org/whl/{backend}"]


def test_a_driver_too_old_for_every_cuda_build_falls_back_to_cpu_or_fails_when_forced():
    old = recorded("470.256.02", "11.4", "NVIDIA GeForce GTX 1080")
    choice = choose_torch(old)
    assert choice.backend == "cpu" and "update the NVIDIA driver" in choice.reason
    with pytest.raises(TorchChoiceError, match="older than torch"):
        choose_torch(old, "cuda")


@pytest.mark.parametrize(("hardware", "override", "backend", "index", "reason"), [
    (Hardware("linux", "x86_64"), None, "cpu", "https://download.pytorch.org/whl/cpu", "no NVIDIA or ROCm GPU"),
    (Hardware("win32", "AMD64"), None, "cpu", "https://download.pytorch.org/whl/cpu", "no NVIDIA or ROCm GPU"),
    (Hardware("linux", "x86_64", amd_gpus=("Radeon RX 7900 XTX",), rocm="6.4.1"), None, "rocm7.1",
     "https://download.pytorch.org/whl/rocm7.1", "Radeon RX 7900 XTX, ROCm 6.4.1 → rocm7.1"),
    (Hardware("linux", "x86_64"), "rocm", "rocm7.1", "https://download.pytorch.org/whl/rocm7.1", "ROCm → rocm7.1"),
    (Hardware("win32", "AMD64", amd_gpus=("Radeon RX 7800 XT",)), None, "cpu",
     "https://download.pytorch.org/whl/cpu", "ROCm builds for Linux x86_64 only"),
    (Hardware("darwin", "arm64"), None, "mps", None, "MPS"),
    (Hardware("darwin", "arm64"), "mps", "mps", None, "MPS"),
    (Hardware("darwin", "arm64"), "cpu", "cpu", None, "--torch cpu"),
    (Hardware("linux", "x86_64"), "cuda", "cu130", "https://download.pytorch.org/whl/cu130", "no NVIDIA driver found"),
    (recorded("560.35.03", "12.6", "NVIDIA GeForce RTX 4070"), "cpu", "cpu", "https://download.pytorch.org/whl/cpu",
     "--torch cpu"),
    (Hardware("linux", "x86_64", ("NVIDIA GeForce RTX 4070",), "560.35.03", (12, 6), ("gfx1036",)), "rocm",
     "rocm7.1", "https://download.pytorch.org/whl/rocm7.1", "gfx1036"),
])
def test_choice_per_platform_and_override(hardware, override, backend, index, reason):
    choice = choose_torch(hardware, override)
    assert (choice.backend, choice.index_url, choice.version) == (backend, index, PIN)
    assert reason in choice.reason
    assert choice.pip_args() == ([f"torch=={PIN}+{backend}", "--extra-index-url", index] if index
                                 else [f"torch=={PIN}"])


@pytest.mark.parametrize(("hardware", "override", "message"), [
    (Hardware("darwin", "x86_64"), None, "no wheels for Intel Macs"),
    (Hardware("darwin", "arm64"), "cuda", "macOS has no CUDA"),
    (Hardware("win32", "AMD64"), "rocm", "Linux x86_64 only"),
    (Hardware("linux", "x86_64"), "mps", "Apple silicon"),
])
def test_impossible_requests_are_refused(hardware, override, message):
    with pytest.raises(TorchChoiceError, match=message):
        choose_torch(hardware, override)


def test_an_unknown_override_is_a_value_error():
    with pytest.raises(ValueError, match="--torch must be"):
        choose_torch(Hardware("linux", "x86_64"), "vulkan")


def test_detect_hardware_runs_the_tools(tmp_path):
    calls = []
    query = "nvidia-smi --query-gpu=name,driver_version --format=csv,noheader"
    outputs = {"nvidia-smi": nvidia_smi("560.35.03", "12.6", "NVIDIA GeForce RTX 4070"),
               query: "NVIDIA GeForce RTX 4070, 560.35.03\n", "rocminfo": ROCMINFO}

    def run(command):
        calls.append(" ".join(command))
        return outputs.get(" ".join(command))

    (tmp_path / ".info").mkdir()
    (tmp_path / ".info" / "version").write_text("6.4.1-120\n")
    found = detect_hardware(run, "linux", "x86_64", tmp_path)
    assert found == Hardware("linux", "x86_64", ("NVIDIA GeForce RTX 4070",), "560.35.03", (12, 6),
                             ("Radeon RX 7900 XTX", "gfx1036"), "6.4.1")
    assert calls == list(outputs)
    assert choose_torch(found).backend == "cu126"  # NVIDIA wins over ROCm when both are present
    calls.clear()
    assert detect_hardware(lambda command: calls.append(command), "win32", "AMD64", tmp_path / "none") == \
        Hardware("win32", "AMD64")
    assert calls == [["nvidia-smi"]]  # no rocminfo off Linux, no query without a driver
