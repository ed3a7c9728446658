"""ringX3: all-gather K/V, attend locally, reduce-scatter dK/dV.

K and V travel together in one all-gather; the gathered blocks are put in
global order so the masking plan can use long contiguous key ranges. The
backward gathers again (memory stays O(S) only inside the call) and returns
each rank's dK/dV with one reduce-scatter.
"""

from __future__ import annotations

import torch

from ..blocks import Grad, attend, attend_backward
from ..layouts import shard_all, unshard
from ..merge import Partial
from .base import Ctx, Tensor


def _gather_kv(c: Ctx, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    if c.world == 1:
        return k, v  # the whole sequence is already here: no stacking copy
    kv = c.comm.all_gather(torch.stack([k, v]))  # (P, 2, B, n, H, D)
    full = unshard(list(kv.unbind(0)), c.layout, dim=2)  # (2, B, S, H, D)
    return full[0], full[1]


def forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    kg, vg = _gather_kv(c, k, v)
    acc = Partial(q)
    attend(c.kernel, q, kg, vg, c.gathered_plan(q.shape[1]), c.scale, acc)
    return acc.final()


def backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
    kg, vg = _gather_kv(c, k, v)
    dq, dk, dv = Grad(q), Grad(kg), Grad(vg)
    attend_backward(c.kernel, dout, q, kg, vg, out, lse, c.gathered_plan(q.shape[1]), c.scale, dq, dk, dv)
    if c.world == 1:
        return dq.final(), dk.final(), dv.final()  # nothing to scatter
    dkv = torch.stack([dk.result(), dv.result()])  # (2, B, S, H, D)
    per_rank = shard_all(dkv, c.layout, c.world, dim=2)  # (P, 2, B, n, H, D): rank r's slice is its dK/dV
    mine = c.comm.reduce_scatter(per_rank)
    return dq.final(), mine[0], mine[1]
