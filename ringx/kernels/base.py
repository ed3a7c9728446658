"""What every kernel is: the :class:`Kernel` interface, :class:`KernelBase` (the parts all kernels share) and
the small shape helpers the kernel modules use."""

from __future__ import annotations

import functools
from typing import Protocol

import torch

from . import machine
from .machine import DeviceInfo

Tensor = torch.Tensor
HALF = (torch.float16, torch.bfloat16)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in HALF else dtype


class Kernel(Protocol):
    name: str

    def supports(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None, *,
                 named: bool = False) -> bool: ...

    def version(self) -> str: ...

    def forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, *,
                band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]: ...

    def backward(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                 causal: bool, scale: float, *,
                 band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]: ...


class KernelBase:
    """``supports`` from a pure rule on :class:`DeviceInfo`, so the rules can be tested without the hardware."""

    name = ""
    named_only_on: tuple[str, ...] = ()  # device types where it runs only when asked for by name (too slow to list)

    def supports(self, device: torch.device, dtype: torch.dtype, head_dim: int | None = None, *,
                 named: bool = False) -> bool:
        """Does it run here; ``named``: when asked for by name (lists of what runs here leave out
        ``named_only_on`` devices)."""
        info = machine.device_info(device)
        if not named and info.type in self.named_only_on:
            return False
        return self.runs_on(info, dtype, head_dim)

    def runs_on(self, info: DeviceInfo, dtype: torch.dtype, head_dim: int | None) -> bool:
        raise NotImplementedError

    def version(self) -> str:
        """The library that does the work and its version (e.g. "torch 2.13.0, cuDNN 91900"); asked once."""
        v = self.__dict__.get("_version")
        if v is None:
            v = self._version = self.describe()
        return v

    def describe(self) -> str:
        return machine.torch_version()

    # Filled in by the registry once every kernel exists (it imports every kernel module, so no kernel imports it):
    # a kernel's name -> the kernel, and the rule that routes a band block.
    kernel_named: staticmethod
    band_route: staticmethod

    def for_band(self, q: Tensor, sk: int, band: tuple[int, int]) -> Kernel:
        """The kernel that computes a band block of ``q`` against ``sk`` keys: this one, or its fallback."""
        name = self.band_route(self.name, machine.device_info(q.device), q.dtype, q.shape[-1], q.shape[1], sk, band)
        return self if name == self.name else self.kernel_named(name)

    # A whole plan (the blocks of one query buffer against one K/V buffer). Kernels with a batched path (flash-attn's
    # varlen) override these; ringx.blocks still calls forward/backward block by block.
    def forward_plan(self, q: Tensor, k: Tensor, v: Tensor, plan, scale: float) -> list[tuple]:
        """``(block, out, lse)`` for every block of ``plan`` (blocks with q0, q1, k0, k1, causal, band)."""
        res = []
        for b in plan:
            kw = {} if b.band is None else {"band": b.band}
            out, lse = self.forward(q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1], b.causal, scale, **kw)
            res.append((b, out, lse))
        return res

    def backward_plan(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, plan,
                      scale: float) -> list[tuple]:
        """``(block, dq, dk, dv)`` for every block of ``plan``; ``out``/``lse`` are the rows' global results."""
        res = []
        for b in plan:
            kw = {} if b.band is None else {"band": b.band}
            rows = slice(b.q0, b.q1)
            grads = self.backward(dout[:, rows], q[:, rows], k[:, b.k0:b.k1], v[:, b.k0:b.k1], out[:, rows],
                                  lse[:, :, rows], b.causal, scale, **kw)
            res.append((b, *grads))
        return res


class BandFallback(KernelBase):
    """A kernel with no path of its own for some band blocks (torch-cuda: any band; flash-attn: a band that is no
    window). Such a block goes to the kernel :meth:`for_band` names, forward and backward alike; every other block
    to the kernel's own ``native_forward``/``native_backward``. The one place a kernel falls back."""

    def forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, *,
                band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        other = self if band is None else self.for_band(q, k.shape[1], band)
        if other is not self:
            return other.forward(q, k, v, False, scale, band=band)
        return self.native_forward(q, k, v, causal, scale, band=band)

    def backward(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, causal: bool,
                 scale: float, *, band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        other = self if band is None else self.for_band(q, k.shape[1], band)
        if other is not self:
            return other.backward(dout, q, k, v, out, lse, False, scale, band=band)
        return self.native_backward(dout, q, k, v, out, lse, causal, scale, band=band)

    def native_forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, *,
                       band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """A block this kernel runs itself (``band`` only where :func:`band_route` keeps it here)."""
        raise NotImplementedError

    def native_backward(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                        causal: bool, scale: float, *,
                        band: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError


def check_square(q: Tensor, k: Tensor, causal: bool) -> None:
    """Causal blocks are square (the masking plan asks for no other), so no kernel's alignment can differ."""
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal blocks must be square, got {q.shape[1]} queries x {k.shape[1]} keys")


def bhsd(x: Tensor) -> Tensor:
    """(B, S, H, D) as the (B, H, S, D) view the torch ops take, and back."""
    return x.transpose(1, 2)


def head_dim_ok(head_dim: int | None, most: int = 256, multiple: int = 8) -> bool:
    return head_dim is None or (0 < head_dim <= most and head_dim % multiple == 0)


def is_sm80(info: DeviceInfo) -> bool:
    return info.vendor == "nvidia" and info.capability >= (8, 0)


@functools.cache
def philox_zero(device: torch.device) -> Tensor:
    """An int64 zero for the ops' unused philox seed/offset: made once per device, not per block."""
    return torch.zeros((), dtype=torch.int64, device=device)
