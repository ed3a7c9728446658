"""The machine facts a kernel's choice depends on: the device, the optional packages that import, and the
versions of the libraries that do the work.

Tests replace :func:`device_info` and :func:`optional_module` here (``monkeypatch.setattr(machine, ...)``) to
try other machines: every caller looks them up through this module at call time, so a replacement is seen.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceInfo:
    """What the kernel choice depends on, probed once per device."""

    type: str  # torch device type: "cpu", "cuda" (NVIDIA and ROCm alike), ...
    vendor: str  # "cpu", "nvidia", "amd" or "other"
    capability: tuple[int, int] = (0, 0)  # CUDA compute capability on NVIDIA, (0, 0) elsewhere
    name: str = ""  # device name as the driver reports it (e.g. "NVIDIA H100 80GB HBM3", "gfx90a")
    cudnn: int = 0  # cuDNN version as torch reports it (e.g. 91900), 0 when absent


@functools.cache
def _probe(device_type: str, index: int | None) -> DeviceInfo:
    if device_type == "cpu":
        return DeviceInfo("cpu", "cpu")
    if device_type != "cuda":
        return DeviceInfo(device_type, "other")
    props = torch.cuda.get_device_properties(index)
    if torch.version.hip is not None:
        return DeviceInfo("cuda", "amd", (0, 0), getattr(props, "gcnArchName", "") or props.name)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 0
    return DeviceInfo("cuda", "nvidia", (props.major, props.minor), props.name, cudnn or 0)


def device_info(device: torch.device) -> DeviceInfo:
    """The :class:`DeviceInfo` of ``device`` (tests replace this function to try other machines)."""
    index = device.index
    if device.type == "cuda" and index is None:
        index = torch.cuda.current_device()
    return _probe(device.type, index)


@functools.cache
def optional_module(name: str):
    """The module if it imports here, else None (a GPU build may fail to load on the wrong machine)."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - ImportError, OSError (missing .so), RuntimeError (no GPU) alike
        return None


def dist_version(*names: str) -> str | None:
    """The installed version of the first of these distributions that is installed, else None."""
    for n in names:
        try:
            return importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def torch_version() -> str:
    return f"torch {torch.__version__}"


def gpu_runtime() -> str:
    if torch.version.hip is not None:
        return f"HIP {torch.version.hip}"
    return f"CUDA {torch.version.cuda}"
