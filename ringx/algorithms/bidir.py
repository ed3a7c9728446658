"""Bidirectional ring: K/V travel both ways around the ring, so a pass takes about P/2 steps.

Two streams leave every rank: the rightward one (to rank+1) carries R = floor(P/2)
hops, the leftward one (to rank-1) L = floor((P-1)/2) hops. At step t this rank
holds the blocks of ranks r-t (rightward) and r+t (leftward, while t <= L), and
after R = ceil((P-1)/2) steps it has seen all 1 + R + L = P blocks. With even P the
opposite rank's block (t = P/2) travels on the rightward stream only: it is sent
once and computed once. Both streams go in one batch per step, posted before the
step's blocks are computed, so the next blocks travel while these are computed.

Backward: K/V travel as in the forward, and each block's dK/dV accumulator
travels with it, collecting the contribution of every rank it visits; at the far
end of its stream (the last rank that saw the block, R or L hops away) it turns
back and goes home the same way, the shorter way round, R or L hops. The turns
and returns of both streams are posted together, so both directions of every
link carry traffic at once; the last R steps only carry accumulators home (the
return is not hidden under compute: it is ~P/2 dK/dV hops exposed, against the
ring's one).

Visibility comes from ``Ctx.plan`` alone; causal runs on the zigzag layout.
Every message is received into buffer sets allocated once per pass (two per
stream and kind).
"""

from __future__ import annotations

from ..blocks import Grad, attend, attend_backward
from ..comm import Buffers
from ..kernels import acc_dtype
from ..merge import Partial
from .base import Ctx, Tensor

RIGHT, LEFT = 1, -1


def hops(world: int) -> dict[int, int]:
    """Hops of each stream: rightward floor(P/2), leftward floor((P-1)/2)."""
    return {RIGHT: world // 2, LEFT: (world - 1) // 2}


def forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    r, n, h = c.rank, q.shape[1], hops(c.world)
    acc = Partial(q)
    held = {RIGHT: (k, v), LEFT: (k, v)}
    bufs = {d: Buffers([k, v]) for d in h}
    for t in range(h[RIGHT] + 1):
        streams = [d for d in h if t < h[d]]
        nxt = c.comm.exchange([(list(held[d]), d, bufs[d].next()) for d in streams]) if streams else None
        if t == 0:
            attend(c.kernel, q, k, v, c.plan(r, r, n), c.scale, acc)
        for d in h:
            if 1 <= t <= h[d]:
                kj, vj = held[d]
                attend(c.kernel, q, kj, vj, c.plan(r, (r - d * t) % c.world, n), c.scale, acc)
        if nxt is not None:
            got = nxt.wait()
            for i, d in enumerate(streams):
                held[d] = (got[2 * i], got[2 * i + 1])
    return acc.final()


def backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
    r, n, h = c.rank, q.shape[1], hops(c.world)
    dq, home_k, home_v = Grad(q), Grad(k), Grad(v)
    held = {RIGHT: (k, v), LEFT: (k, v)}
    bufs = {d: Buffers([k, v]) for d in h}
    acc_bufs = {d: Buffers([k, v], dtype=acc_dtype(k.dtype)) for d in h}
    arriving = None  # (Pending, streams): the accumulators posted last step
    for t in range(2 * h[RIGHT] + 1):
        moving = [d for d in h if t < h[d]]
        nxt = c.comm.exchange([(list(held[d]), d, bufs[d].next()) for d in moving]) if moving else None
        grads = {}
        if t == 0:
            attend_backward(c.kernel, dout, q, k, v, out, lse, c.plan(r, r, n), c.scale, dq, home_k, home_v)
        for d in h:
            if 1 <= t <= h[d]:
                kj, vj = held[d]
                grads[d] = (Grad(kj), Grad(vj))
                attend_backward(c.kernel, dout, q, kj, vj, out, lse, c.plan(r, (r - d * t) % c.world, n), c.scale,
                                dq, *grads[d])
        got = {}
        if arriving is not None:
            tensors = arriving[0].wait()
            got = {d: tensors[2 * i: 2 * i + 2] for i, d in enumerate(arriving[1])}
        sends = []  # (stream, accumulators, direction of travel)
        for d in h:
            if 1 <= t <= h[d]:  # outward with the block; at the far end it turns back
                gk, gv = grads[d]
                dkv = [gk.result(), gv.result()] if t == 1 else [gk.into(got[d][0]), gv.into(got[d][1])]
                sends.append((d, dkv, d if t < h[d] else -d))
            elif h[d] < t < 2 * h[d]:  # on the way home
                sends.append((d, got[d], -d))
            elif t == 2 * h[d] and h[d]:  # home: every other rank's contribution to my block
                home_k.add(0, k.shape[1], got[d][0])
                home_v.add(0, v.shape[1], got[d][1])
        arriving = None
        if sends:
            pending = c.comm.exchange([(dkv, way, acc_bufs[d].next()) for d, dkv, way in sends])
            arriving = (pending, [d for d, _, _ in sends])
        if nxt is not None:
            new = nxt.wait()
            for i, d in enumerate(moving):
                held[d] = (new[2 * i], new[2 * i + 1])
    return dq.final(), home_k.final(), home_v.final()
