"""Which kernels exist, what each declares about band blocks, and which one runs a given block.

:data:`KERNELS` holds one instance of each kernel, by name. :func:`select_kernel` takes the named one or the
first of :func:`preference` that runs the device, dtype and head_dim. :func:`band_route` says which kernel
computes a band block for a kernel, from the declarations below.
"""

from __future__ import annotations

import torch

from . import machine
from .bands import flash_window
from .base import HALF, Kernel, KernelBase
from .cpu import TorchCpuKernel
from .flash import FlashAttn3Kernel, FlashAttnKernel
from .flex import TorchFlexKernel
from .machine import DeviceInfo
from .reference import ReferenceKernel
from .torch_gpu import TorchCudaKernel, TorchCudnnKernel, TorchEfficientKernel

KERNELS: dict[str, Kernel] = {
    k.name: k for k in (FlashAttn3Kernel(), TorchCudnnKernel(), FlashAttnKernel(), TorchCudaKernel(),
                        TorchEfficientKernel(), TorchFlexKernel(), TorchCpuKernel(), ReferenceKernel())
}


# How each kernel computes a band block (docs/masks.md's kernel table is checked against these).
BAND_NATIVE = ("reference", "torch-cpu", "torch-cudnn", "torch-efficient", "torch-flex")  # any band
WINDOW_NATIVE = ("flash-attn", "flash-attn3")  # a band that is a bottom-right window (flash_window)
# Every kernel finds the others, and routes its band blocks, through the registry (KernelBase's hooks).
KernelBase.kernel_named = staticmethod(lambda name: KERNELS[name])
KernelBase.band_route = staticmethod(lambda *a: band_route(*a))
VARLEN = ("flash-attn",)  # many blocks of one K/V buffer in one call (varlen_calls, varlen_forward/backward)
BAND_FALLBACK = ("torch-cudnn", "torch-efficient", "reference")  # for kernels without masks, first that runs


def band_route(kernel: str, info: DeviceInfo, dtype: torch.dtype, head_dim: int | None, sq: int, sk: int,
               band: tuple[int, int]) -> str:
    """The kernel that computes a band block for ``kernel`` (a pure rule on the device facts)."""
    if kernel in BAND_NATIVE:
        return kernel
    if kernel in WINDOW_NATIVE and flash_window(sq, sk, band) is not None:
        return kernel
    usual = preference(info, dtype)  # only kernels this device would choose anyway (efficient is NVIDIA's)
    return next(n for n in BAND_FALLBACK if n in usual and KERNELS[n].runs_on(info, dtype, head_dim))


def preference(info: DeviceInfo, dtype: torch.dtype) -> tuple[str, ...]:
    """Kernels to try, fastest first, for a device and dtype (the first that runs the head_dim is chosen).

    - NVIDIA fp16/bf16: ``flash-attn3`` on Hopper (sm90) if it imports, then ``torch-cudnn``
      (on one H100: 620-680 TFLOP/s forward, ~2x the flash op), ``flash-attn`` (the flash op's
      algorithm, ~300-360), ``torch-cuda`` (the flash op), ``torch-efficient``, ``reference``.
    - NVIDIA fp32: ``torch-efficient`` (O(S) memory; 6.0 ms vs 9.0 ms for plain math at 4096x32x128),
      then ``reference``. float64: ``reference`` (no fused GPU kernel takes it).
    - ROCm fp16/bf16: ``flash-attn`` (its ROCm build) if it imports, then ``torch-cuda`` (AOTriton).
      Other dtypes on ROCm: ``reference`` (``torch-efficient`` can be forced; it has not been tried there).
    - CPU: ``torch-cpu`` for every dtype, then ``reference``.
    """
    if info.vendor == "cpu":
        return ("torch-cpu", "reference")
    if info.vendor == "amd":
        return ("flash-attn", "torch-cuda", "reference") if dtype in HALF else ("reference",)
    if info.vendor == "nvidia":
        if dtype in HALF:
            fa3 = ("flash-attn3",) if info.capability[0] == 9 else ()
            return (*fa3, "torch-cudnn", "flash-attn", "torch-cuda", "torch-efficient", "reference")
        if dtype == torch.float32:
            return ("torch-efficient", "reference")
    return ("reference",)


_CHOICE: dict[tuple, Kernel] = {}  # asked at every attention call: decide once per (device, dtype, head_dim)
_ON_CLEAR: list = []  # caches elsewhere that hold answers derived from the choice


def clear_cache() -> None:
    """Forget the kernel choices made so far (after changing what :func:`device_info` reports)."""
    _CHOICE.clear()
    for fn in _ON_CLEAR:
        fn()


def select_kernel(device: torch.device, dtype: torch.dtype, name: str | None = None,
                  head_dim: int | None = None) -> Kernel:
    """The named kernel, or the first of :func:`preference` that runs here (``head_dim`` None: any)."""
    key = (device, dtype, name, head_dim)
    kern = _CHOICE.get(key)
    if kern is not None:
        return kern
    hd = f", head_dim {head_dim}" if head_dim is not None else ""
    if name is not None:
        if name not in KERNELS:
            raise ValueError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
        kern = KERNELS[name]
        if not kern.supports(device, dtype, head_dim, named=True):
            usable = [k for k, v in KERNELS.items() if v.supports(device, dtype, head_dim)]
            raise ValueError(f"kernel {name!r} does not run {dtype}{hd} on {device.type}; "
                             f"usable here: {', '.join(usable)}")
    else:
        order = preference(machine.device_info(device), dtype)
        kern = next((KERNELS[n] for n in order if KERNELS[n].supports(device, dtype, head_dim)), None)
        if kern is None:
            raise ValueError(f"no kernel runs {dtype}{hd} on {device.type} (tried {', '.join(order)})")
    _CHOICE[key] = kern
    return kern
