"""Attention of local queries against one K/V buffer, following a masking plan.

These two functions are the compute step every algorithm shares: the plan
(from :mod:`ringx.layouts`) says which sub-blocks are visible, the kernel
computes each, and the merge folds them into the running result.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import timeline
from .kernels import Kernel, acc_dtype
from .layouts import Block
from .merge import Partial

Tensor = torch.Tensor


def _rows(x: Tensor, lo: int, hi: int) -> Tensor:
    """``x[:, lo:hi]``, or ``x`` itself when that is all of it (most blocks at small world sizes)."""
    return x if lo == 0 and hi == x.shape[1] else x[:, lo:hi]


def attend(kernel: Kernel, q: Tensor, k: Tensor, v: Tensor, plan: Sequence[Block], scale: float,
           acc: Partial) -> None:
    """Add the attention of ``q`` over the visible parts of ``k``/``v`` to ``acc``."""
    for b in plan:
        qb, kb, vb = _rows(q, b.q0, b.q1), _rows(k, b.k0, b.k1), _rows(v, b.k0, b.k1)
        t = timeline.ON and timeline.start()
        if b.band is None:
            out, lse = kernel.forward(qb, kb, vb, b.causal, scale)
        else:  # masks other than full/causal: a band block
            out, lse = kernel.forward(qb, kb, vb, False, scale, band=b.band)
        if t:
            timeline.stop(t, "compute", "fwd", timeline.block_name(b.q0, b.q1, b.k0, b.k1))
        acc.add(b.q0, b.q1, out, lse)


class Grad:
    """A gradient accumulator for one tensor, allocated on first use.

    A first gradient covering every row is adopted as the kernel returned it (its
    own dtype, no copy); it is widened to the accumulation dtype when a second one
    is added, or when :meth:`result` is asked for.
    """

    def __init__(self, like: Tensor, into: Tensor | None = None):
        self.like = like
        self.acc = acc_dtype(like.dtype)
        self.value: Tensor | None = into  # a zeroed buffer to accumulate into, if given

    def add(self, lo: int, hi: int, g: Tensor) -> None:
        if self.value is None:
            if lo == 0 and hi == self.like.shape[1]:
                self.value = g
                return
            self.value = torch.zeros(self.like.shape, dtype=self.acc, device=self.like.device)
        elif self.value.dtype != self.acc:
            self.value = self.value.to(self.acc)
        if lo == 0 and hi == self.value.shape[1]:
            self.value += g
        else:
            self.value[:, lo:hi] += g

    def plus(self, other: Tensor) -> Tensor:
        """The accumulated gradient plus ``other`` (which may be reused as storage)."""
        if self.value is None:
            return other
        if self.value.dtype != self.acc:
            return other.add_(self.value)  # ``other`` is in the accumulation dtype already
        return self.value.add_(other)

    def into(self, buf: Tensor) -> Tensor:
        """Add the accumulated gradient into ``buf`` (a received accumulator) in place; returns ``buf``."""
        if self.value is not None:
            buf.add_(self.value)
        return buf

    def result(self) -> Tensor:
        """Accumulated gradient in the accumulation dtype (zeros if nothing was added)."""
        if self.value is None:
            return torch.zeros(self.like.shape, dtype=self.acc, device=self.like.device)
        if self.value.dtype != self.acc:
            self.value = self.value.to(self.acc)
        return self.value

    def final(self) -> Tensor:
        """The gradient for handing back to the caller, who casts it to the input dtype: a single
        adopted block stays in the kernel's dtype (no widening only to narrow it again)."""
        return self.value if self.value is not None else self.result()


def attend_backward(kernel: Kernel, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                    plan: Sequence[Block], scale: float, dq: Grad, dk: Grad, dv: Grad) -> None:
    """Add the gradients of every visible sub-block; ``out``/``lse`` are the rows' global results."""
    for b in plan:
        q0, q1, k0, k1 = b.q0, b.q1, b.k0, b.k1
        lse_b = lse if q0 == 0 and q1 == lse.shape[2] else lse[:, :, q0:q1]
        args = (_rows(dout, q0, q1), _rows(q, q0, q1), _rows(k, k0, k1), _rows(v, k0, k1), _rows(out, q0, q1), lse_b)
        t = timeline.ON and timeline.start()
        if b.band is None:
            gq, gk, gv = kernel.backward(*args, b.causal, scale)
        else:
            gq, gk, gv = kernel.backward(*args, False, scale, band=b.band)
        if t:
            timeline.stop(t, "compute", "bwd", timeline.block_name(q0, q1, k0, k1))
        dq.add(q0, q1, gq)
        dk.add(k0, k1, gk)
        dv.add(k0, k1, gv)
