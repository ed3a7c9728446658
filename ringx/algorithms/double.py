"""Double ring: an inner ring over ranks of a node, inside an outer ring across nodes.

The ranks form inner rings of I ranks of one node (``inner_ring``, default the ranks
per node) and outer rings of P/I ranks, one per inner position: the ranks with the
same position in their inner ring (``Topology.rings``). With I = ranks per node these
are the node (intra) and the ranks with my local rank (inter).

Forward: at outer step s this rank holds an outer block (the K/V of a rank of its
outer ring, s hops back); the inner ring circulates the inner ring's outer blocks
for I steps (as ``ring.py`` does), while the outer ring fetches the next outer block
(posted before the inner round, waited after it). So the slow link's transfer hides
under a whole inner round of compute. After P/I outer steps every block was seen.

Backward: the same two levels. Within an inner round, each circulating block's
dK/dV accumulator travels with it and comes back to the rank that injected it after
I hops; that rank adds it to the outer accumulator of its outer block, which travels
the outer ring with the blocks (posted after the round, waited after the next one),
and arrives home after P/I hops.

Which block a rank holds is worked out from the ring members (any rank -> node map
with equal nodes), and visibility comes from ``Ctx.plan`` alone; causal runs on the
zigzag layout. Messages are received into buffer sets allocated once per pass
(two per level and kind).
"""

from __future__ import annotations

from ..blocks import Grad, attend, attend_backward
from ..comm import Buffers
from ..kernels import acc_dtype
from ..merge import Partial
from .base import Ctx, Tensor


class _Rings:
    """This rank's two rings and which rank's K/V it holds when."""

    def __init__(self, c: Ctx):
        t = c.topology
        size = c.inner_ring or t.ranks_per_node
        (self.inner_sg, self.outer_sg), (inner_rings, outer_rings) = t.rings(size), t.ring_members(size)
        self.inner, self.outer = c.comm.sub(self.inner_sg), c.comm.sub(self.outer_sg)
        self.I, self.O = len(self.inner_sg.ranks), len(self.outer_sg.ranks)
        self.inner_of = {m: ring for ring in inner_rings for m in ring}
        self.outer_of = {m: ring for ring in outer_rings for m in ring}
        self.rank = c.rank

    def source(self, s: int, i: int) -> int:
        """Whose K/V this rank holds at outer step s, inner step i."""
        ring = self.inner_of[self.rank]
        m = ring[(ring.index(self.rank) - i) % self.I]  # the inner-ring member that injected the block
        outer = self.outer_of[m]
        return outer[(outer.index(m) - s) % self.O]


def forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    g = _Rings(c)
    acc = Partial(q)
    outer_bufs, inner_bufs = Buffers([k, v]), Buffers([k, v])
    outer_kv = (k, v)
    for s in range(g.O):
        nxt_outer = g.outer.ring_shift(list(outer_kv), outer_bufs.next()) if s < g.O - 1 else None
        kj, vj = outer_kv
        for i in range(g.I):
            nxt = g.inner.ring_shift([kj, vj], inner_bufs.next()) if i < g.I - 1 else None
            attend(c.kernel, q, kj, vj, c.plan(c.rank, g.source(s, i), q.shape[1]), c.scale, acc)
            if nxt is not None:
                kj, vj = nxt.wait()
        if nxt_outer is not None:
            outer_kv = tuple(nxt_outer.wait())
    return acc.final()


def backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
    g = _Rings(c)
    n, adt = q.shape[1], acc_dtype(k.dtype)
    dq = Grad(q)
    outer_bufs, inner_bufs = Buffers([k, v]), Buffers([k, v])
    outer_acc, inner_acc = Buffers([k, v], dtype=adt), Buffers([k, v], dtype=adt)
    outer_kv = (k, v)
    outer_arriving = None  # the outer accumulator of the block I hold, in flight
    total = None
    for s in range(g.O):
        nxt_outer = g.outer.ring_shift(list(outer_kv), outer_bufs.next()) if s < g.O - 1 else None
        kj, vj = outer_kv
        travelling = None
        for i in range(g.I):
            nxt = g.inner.ring_shift([kj, vj], inner_bufs.next()) if i < g.I - 1 else None
            dk, dv = Grad(kj), Grad(vj)
            plan = c.plan(c.rank, g.source(s, i), n)
            attend_backward(c.kernel, dout, q, kj, vj, out, lse, plan, c.scale, dq, dk, dv)
            if g.I == 1:
                dkv = [dk.result(), dv.result()]
            elif travelling is None:
                travelling = g.inner.ring_shift([dk.result(), dv.result()], inner_acc.next())
            else:
                got_k, got_v = travelling.wait()
                travelling = g.inner.ring_shift([dk.into(got_k), dv.into(got_v)], inner_acc.next())
            if nxt is not None:
                kj, vj = nxt.wait()
        if travelling is not None:
            dkv = travelling.wait()  # my outer block's dK/dV from every rank of my inner ring
        if g.O == 1:
            total = dkv
            break
        if outer_arriving is None:
            first = outer_acc.next()  # its own buffer: the inner buffers are reused while it travels
            first[0].copy_(dkv[0])
            first[1].copy_(dkv[1])
            dkv = first
        else:
            got = outer_arriving.wait()
            dkv = [got[0].add_(dkv[0]), got[1].add_(dkv[1])]
        outer_arriving = g.outer.ring_shift(dkv, outer_acc.next())
        if nxt_outer is not None:
            outer_kv = tuple(nxt_outer.wait())
    if total is None:
        total = outer_arriving.wait()
    return dq.final(), total[0], total[1]
