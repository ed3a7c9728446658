"""Ulysses and USP: all-to-all from sequence shards to head shards, attention, all-to-all back.

Within a Ulysses group of u ranks an all-to-all turns each rank's n tokens of
all H heads into the group's u*n tokens of H/u heads. Those tokens are then
attended by a schedule across the R = P/u Ulysses groups (an inner context on
the ring group): ``ulysses`` has u = P, so R = 1 and the attention is local
over the whole sequence; ``usp`` runs the zigzag ring (``ring.py``) across
groups; ``usp-ringx`` runs ringX3's all-gather (``gather.py``). A second
all-to-all brings out and LSE back to sequence shards.

Layouts: with ``contiguous`` each group's u*n tokens are consecutive, so the
inner schedule sees a contiguous layout over R; with ``zigzag-u{u}`` each
group holds one zigzag pair of a ring of R, so the inner ring is a balanced
zigzag ring (see ``ringx.layouts``).

The forward keeps its head-sharded q, k, v, out and LSE in the call's stash,
as autograd does in DeepSpeed-Ulysses, so the backward moves only dO in and
dQ, dK, dV out. When u does not divide the K/V heads (GQA/MQA), K/V heads are
replicated before the all-to-all up to lcm(kv_heads, u), so each rank gets the
K/V heads its query heads use (as the USP paper does); the ledger counts the
replicated bytes, and the replicas' gradients are summed on the way back.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..comm import Comm
from ..kernels import acc_dtype
from ..layouts import ulysses_degree_of
from ..merge import with_sink
from .base import Ctx, Tensor


def kv_replicas(kv_heads: int, degree: int) -> int:
    """How many copies of each K/V head travel so that every rank gets whole K/V heads."""
    return degree // math.gcd(kv_heads, degree)


def to_heads(comm: Comm, x: Tensor) -> Tensor:
    """(..., n, H, D) on each of u ranks -> (..., u*n, H/u, D): the group's tokens of my H/u heads."""
    u = comm.world
    *lead, n, h, d = x.shape
    got = comm.all_to_all(x.reshape(*lead, n, u, h // u, d).movedim(-3, 0))  # row i: rank i's tokens
    return got.movedim(0, -4).reshape(*lead, u * n, h // u, d)


def to_seq(comm: Comm, x: Tensor) -> Tensor:
    """Inverse of :func:`to_heads`: (..., u*n, H/u, D) -> (..., n, H, D)."""
    u = comm.world
    *lead, s, h, d = x.shape
    got = comm.all_to_all(x.reshape(*lead, u, s // u, h, d).movedim(-4, 0))  # row j: my tokens of j's heads
    return got.movedim(0, -3).reshape(*lead, s // u, u * h, d)


def _split(c: Ctx) -> tuple[Comm, Ctx]:
    """The Ulysses communicator, and the context of the schedule across Ulysses groups."""
    uly, ring = c.topology.grid(c.ulysses_degree)
    inner = "zigzag" if ulysses_degree_of(c.layout) is not None else c.layout
    return c.comm.sub(uly), Ctx(c.comm.sub(ring), c.kernel, inner, c.causal, c.scale, c.overlap,
                                  mask=c.mask)


def schedule(inner_forward: Callable, inner_backward: Callable) -> tuple[Callable, Callable]:
    """(forward, backward) of Ulysses around the given schedule across groups."""

    def forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        uly, rc = _split(c)
        if uly.world == 1:  # a group of one: no all-to-all, so none of the layout copies around it
            return inner_forward(rc, q, k, v)
        reps = kv_replicas(k.shape[2], uly.world)
        kv = torch.stack([k, v]) if reps == 1 else torch.stack([k, v]).repeat_interleave(reps, dim=3)
        qh, kvh = to_heads(uly, q), to_heads(uly, kv)
        out_h, lse_h = inner_forward(rc, qh, kvh[0], kvh[1])
        out_h = out_h.to(q.dtype)
        lse = to_seq(uly, lse_h.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)
        out = to_seq(uly, out_h)
        if c.sinks is not None:  # the backward's copy of the result is final too: my heads' sinks merged into it
            out_h, lse_h = with_sink(out_h, lse_h, c.sinks.view(uly.world, -1)[uly.rank])
            out_h = out_h.to(q.dtype)
        c.stash.update(q=qh, k=kvh[0], v=kvh[1], out=out_h, lse=lse_h)
        return out, lse

    def backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
        uly, rc = _split(c)
        if uly.world == 1:
            return inner_backward(rc, dout, q, k, v, out, lse)
        s = c.stash  # filled by this call's forward
        dq_h, dk_h, dv_h = inner_backward(rc, to_heads(uly, dout), s["q"], s["k"], s["v"], s["out"], s["lse"])
        dq = to_seq(uly, dq_h.to(q.dtype))
        dkv = to_seq(uly, torch.stack([dk_h, dv_h]).to(k.dtype)).to(acc_dtype(k.dtype))
        if dkv.shape[3] != k.shape[2]:
            dkv = dkv.unflatten(3, (k.shape[2], -1)).sum(4)  # the replicas of each K/V head
        return dq, dkv[0], dkv[1]

    return forward, backward
