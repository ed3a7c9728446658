"""Attention of local queries against one K/V buffer, following a masking plan.

These two functions are the compute step every algorithm shares: the plan
(from :mod:`ringx.layouts`) says which sub-blocks are visible, the kernel
computes each, and the merge folds them into the running result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .kernels import Kernel, acc_dtype
from .layouts import Block
from .merge import Partial

Tensor = torch.Tensor


def attend(kernel: Kernel, q: Tensor, k: Tensor, v: Tensor, plan: Sequence[Block], scale: float,
           acc: Partial) -> None:
    """Add the attention of ``q`` over the visible parts of ``k``/``v`` to ``acc``."""
    for b in plan:
        out, lse = kernel.forward(q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1], b.causal, scale)
        acc.add(b.q0, b.q1, out, lse)


class Grad:
    """A gradient accumulator for one tensor, allocated on first use."""

    def __init__(self, like: Tensor, into: Tensor | None = None):
        self.like = like
        self.value: Tensor | None = into  # a zeroed buffer to accumulate into, if given

    def add(self, lo: int, hi: int, g: Tensor) -> None:
        full = (lo, hi) == (0, self.like.shape[1])
        if self.value is None and full:
            self.value = g.to(acc_dtype(self.like.dtype))
            return
        if self.value is None:
            self.value = torch.zeros(self.like.shape, dtype=acc_dtype(self.like.dtype), device=self.like.device)
        self.value[:, lo:hi] += g

    def plus(self, other: Tensor) -> Tensor:
        """The accumulated gradient plus ``other`` (which may be reused as storage)."""
        if self.value is None:
            return other
        return self.value.add_(other)

    def result(self) -> Tensor:
        """Accumulated gradient in the accumulation dtype (zeros if nothing was added)."""
        if self.value is None:
            return torch.zeros(self.like.shape, dtype=acc_dtype(self.like.dtype), device=self.like.device)
        return self.value


def attend_backward(kernel: Kernel, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    plan: Sequence[Block], scale: float, dq: Grad, dk: Grad, dv: Grad) -> None:
    """Add the gradients of every visible sub-block; ``out``/``lse`` are the rows' global results."""
    for b in plan:
        gq, gk, gv = kernel.backward(dout[:, b.q0:b.q1], q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1],
                                     out[:, b.q0:b.q1], lse[:, :, b.q0:b.q1], b.causal, scale)
        dq.add(b.q0, b.q1, gq)
        dk.add(b.k0, b.k1, gk)
        dv.add(b.k0, b.k1, gv)
