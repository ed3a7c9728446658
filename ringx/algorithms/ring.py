"""Ring attention: K/V blocks travel point-to-point around the ring.

Forward: at step t this rank holds the K/V of rank (r - t) mod P; the next
block is already in flight while the current one is computed. Backward: the
K/V blocks travel again, and each block's dK/dV accumulator travels with it,
collecting every rank's contribution until it arrives home after P hops.
The same schedule serves the contiguous, zigzag and stripe layouts.

A mask that lets every rank stop after T < P steps (``Ctx.ring_steps``: a
window narrower than a shard, short documents) runs T steps only: T - 1 K/V
shifts, and the dK/dV accumulators go home in one hop from where they are.
Every message is received into one of two buffer sets allocated once per
pass (``comm.Buffers``): K/V, and in the backward the travelling dK/dV.
"""

from __future__ import annotations

from ..blocks import Grad, attend, attend_backward
from ..comm import Buffers
from ..kernels import acc_dtype
from ..merge import Partial
from .base import Ctx, Tensor


def forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    acc = Partial(q)
    bufs = Buffers([k, v])
    steps = c.ring_steps(q.shape[1])
    for step in range(steps):
        nxt = c.comm.ring_shift([k, v], bufs.next()) if step < steps - 1 else None
        attend(c.kernel, q, k, v, c.plan(c.rank, (c.rank - step) % c.world, q.shape[1]), c.scale, acc)
        if nxt is not None:
            k, v = nxt.wait()
    return acc.final()


def backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
    dq = Grad(q)
    bufs, acc_bufs = Buffers([k, v]), Buffers([k, v], dtype=acc_dtype(k.dtype))
    travelling = None  # dK/dV of the block we hold, summed over the ranks it has visited
    steps = c.ring_steps(q.shape[1])
    for step in range(steps):
        nxt = c.comm.ring_shift([k, v], bufs.next()) if step < steps - 1 else None
        dk, dv = Grad(k), Grad(v)
        plan = c.plan(c.rank, (c.rank - step) % c.world, q.shape[1])
        attend_backward(c.kernel, dout, q, k, v, out, lse, plan, c.scale, dq, dk, dv)
        if c.world == 1:
            return dq.final(), dk.final(), dv.final()
        if travelling is None:
            dkv = [dk.result(), dv.result()]
        else:
            got_k, got_v = travelling.wait()
            dkv = [dk.into(got_k), dv.into(got_v)]
        # on to the next holder; after the last step, home (the block's owner is `step` ranks back)
        travelling = c.comm.ring_shift(dkv, acc_bufs.next(), hops=1 if step < steps - 1 else c.world - step)
        if nxt is not None:
            k, v = nxt.wait()
    dk_home, dv_home = travelling.wait()
    return dq.final(), dk_home, dv_home
