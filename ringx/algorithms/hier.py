"""ringX3b: K/V all-gathered in two levels, across nodes first, then within the node.

Forward: the all-gather among the ranks with my local rank (one per node) is
posted, and my own block is computed while it is in flight. Then the node's
ranks gather what each of them received, so every rank holds all K/V; the
blocks that came across nodes are computed while that second gather is in
flight, the node-mates' blocks after it. Backward: the same gathers and
overlap, then dK/dV go home in two reduce-scatters, within the node (to the
node-mate with the owner's local rank), then across nodes (to the owner), so
each rank sends across nodes only (nodes-1) dK/dV-sized pieces.

Each block is masked by the plan of (my rank, its source rank), so any
rank -> node mapping is exact; with one node the inter-node level moves
nothing and this is an all-gather ringX3 (and with one rank per node too).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..blocks import Grad, attend, attend_backward
from ..kernels import acc_dtype
from ..merge import Partial
from . import gather
from .base import Ctx, Tensor


def _blocks(c: Ctx, k: Tensor, v: Tensor) -> Iterator[tuple[int, Tensor, tuple[int, int]]]:
    """Yield (source rank, its (2, ...) K/V, slot) in arrival order; slot [j, i] is the source's
    place after both gathers: position i of the inter-node group of local rank j."""
    t = c.topology
    inter, intra = c.comm.sub(t.inter), c.comm.sub(t.intra)
    mine = torch.stack([k, v])
    first = inter.all_gather_async(mine)
    yield c.rank, mine, (t.local_rank, t.inter.ranks.index(c.rank))  # computed while `first` travels
    across = first.wait()[0]  # (nodes, 2, B, n, H, D)
    second = intra.all_gather_async(across)
    for i, src in enumerate(t.inter.ranks):
        if src != c.rank:
            yield src, across[i], (t.local_rank, i)  # computed while `second` travels
    every = second.wait()[0]  # (ranks per node, nodes, 2, B, n, H, D)
    for j in range(t.ranks_per_node):
        if j != t.local_rank:
            for i, src in enumerate(t.inter_members(j)):
                yield src, every[j, i], (j, i)


def forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    if c.world == 1:  # nothing to gather: ringX3's one local block, without the two-level buffers
        return gather.forward(c, q, k, v)
    acc = Partial(q)
    for src, kv, _ in _blocks(c, k, v):
        attend(c.kernel, q, kv[0], kv[1], c.plan(c.rank, src, q.shape[1]), c.scale, acc)
    return acc.result()


def backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
    if c.world == 1:
        return gather.backward(c, dout, q, k, v, out, lse)
    t = c.topology
    dq = Grad(q)
    dkv = torch.zeros((t.ranks_per_node, t.nodes, 2, *k.shape), dtype=acc_dtype(k.dtype), device=k.device)
    for src, kv, (j, i) in _blocks(c, k, v):
        dk, dv = Grad(kv[0], into=dkv[j, i, 0]), Grad(kv[1], into=dkv[j, i, 1])
        attend_backward(c.kernel, dout, q, kv[0], kv[1], out, lse, c.plan(c.rank, src, q.shape[1]), c.scale,
                        dq, dk, dv)
    # slot row j goes to the node-mate with local rank j, then column i to the i-th node's rank
    mine = c.comm.sub(t.inter).reduce_scatter(c.comm.sub(t.intra).reduce_scatter(dkv))
    return dq.result(), mine[0], mine[1]
