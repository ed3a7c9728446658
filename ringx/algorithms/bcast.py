"""The broadcast schedules of ringX (X1, X2, X4 and their overlapped forms).

``q_forward`` (X1/X2): each rank in turn broadcasts its Q; every rank attends
it against its own K/V; an all-reduce(max) of the partial LSEs gives a common
shift; the shifted numerator and denominator are reduced to the Q's owner.

``kv_forward`` (X4): each rank in turn broadcasts its K/V; every rank attends
its own Q against it and merges locally.

``kv_backward`` (X1, X2, X4): each rank in turn broadcasts its K/V; every rank
adds the gradient of its Q and a partial dK/dV for the owner, which are
reduced to the owner. A reduce leaves non-root buffers overwritten, so each
round reduces a fresh buffer (reusing it is the published X4 bug).

With ``overlap`` the next broadcast is posted before the current round
computes, and reductions run asynchronously, two rounds in flight at most.

Under a mask a round whose root's Q (or K/V) no other rank sees moves nothing
(``Ctx.shared_rounds``): the root computes its own block alone, first, and no rank
broadcasts, all-reduces or reduces for it. In a shared Q round, a rank whose keys
the root's queries do not see reduces zeros without computing them.
"""

from __future__ import annotations

import torch

from ..blocks import Grad, attend, attend_backward
from ..kernels import acc_dtype
from ..merge import Partial
from .base import Ctx, InFlight, Tensor


def _rounds(c: Ctx, mine: list[Tensor], shared: tuple[bool, ...]):
    """Yield (root, root's tensors) for each round this rank takes part in, prefetching when overlapping.

    The broadcasts go over the shared rounds in root order, the same sequence on every rank, and so do the
    collectives the caller issues between them. A rank whose own round is not shared (nobody else needs its
    tensors) takes that round first, outside the sequence, while the first broadcast is in flight: were it taken in
    root order, with overlap it would issue its previous round's reductions before the next broadcast, the others
    after it, and the collectives would not meet (the deadlock under packed documents, tests/test_agreement.py)."""
    order = [r for r in range(c.world) if shared[r]]

    def fetch(root: int):
        bufs = mine if root == c.rank else [torch.empty_like(t) for t in mine]
        return [c.comm.broadcast(b, root, async_op=c.overlap) for b in bufs]

    nxt = fetch(order[0]) if order else None
    if not shared[c.rank]:
        yield c.rank, mine
    for i, root in enumerate(order):
        got = [p.wait()[0] for p in nxt]
        if c.overlap and i + 1 < len(order):
            nxt = fetch(order[i + 1])  # in flight while this round computes
        yield root, got
        if not c.overlap and i + 1 < len(order):
            nxt = fetch(order[i + 1])


def q_forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    n = q.shape[1]
    inflight = InFlight()
    own = None
    shared = c.shared_rounds(n, queries=True)
    for root, (qj,) in _rounds(c, [q], shared):
        part = Partial(qj)
        plan = c.plan(root, c.rank, n)
        attend(c.kernel, qj, k, v, plan, c.scale, part)
        if c.world == 1:
            return part.final()  # nothing to combine across ranks
        if not shared[root]:  # my queries see only my keys: my result is final
            own = part.result()
            continue
        o, lse = part.result()
        # contiguous: the CPU kernel's LSE is laid out (B, S, H), and the ranks must reduce element by element
        shift = c.comm.all_reduce_max(lse.clone(memory_format=torch.contiguous_format))
        if plan or root == c.rank:
            shift = shift.masked_fill(torch.isneginf(shift), 0.0)  # rows nobody sees stay 0/0
            den = torch.exp(lse - shift)
            buf = torch.empty(o.numel() + den.numel(), dtype=o.dtype, device=o.device)
            num_view, den_view = buf[: o.numel()].view_as(o), buf[o.numel():].view_as(den)
            torch.mul(o, den.transpose(1, 2).unsqueeze(-1), out=num_view)
            den_view.copy_(den)
        else:  # the root's queries see none of my keys (a mask): I add a numerator and denominator of 0
            buf = torch.zeros(o.numel() + lse.numel(), dtype=o.dtype, device=o.device)
        pending = c.comm.reduce(buf, root, async_op=c.overlap)
        if root == c.rank:
            own = (pending, num_view, den_view, shift)
        else:
            inflight.push(pending)
    inflight.drain()
    if not shared[c.rank]:
        return own
    pending, num, den, shift = own
    pending.wait()
    out = num / den.transpose(1, 2).unsqueeze(-1)
    return out, shift + torch.log(den)


def kv_forward(c: Ctx, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    acc = Partial(q)
    for root, (kj, vj) in _rounds(c, [k, v], c.shared_rounds(q.shape[1], queries=False)):
        attend(c.kernel, q, kj, vj, c.plan(c.rank, root, q.shape[1]), c.scale, acc)
    return acc.final()


def kv_backward(c: Ctx, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor):
    dq = Grad(q)
    inflight = InFlight()
    own = None
    shared = c.shared_rounds(q.shape[1], queries=False)
    for root, (kj, vj) in _rounds(c, [k, v], shared):
        plan = c.plan(c.rank, root, q.shape[1])
        if c.world == 1:  # nothing to reduce: keep dK/dV as the kernel returns them
            dk, dv = Grad(kj), Grad(vj)
            attend_backward(c.kernel, dout, q, kj, vj, out, lse, plan, c.scale, dq, dk, dv)
            return dq.final(), dk.final(), dv.final()
        buf = torch.zeros((2, *k.shape), dtype=acc_dtype(k.dtype), device=k.device)
        dk, dv = Grad(kj, into=buf[0]), Grad(vj, into=buf[1])
        attend_backward(c.kernel, dout, q, kj, vj, out, lse, plan, c.scale, dq, dk, dv)
        if not shared[root]:  # only I see my keys: nothing to reduce
            own = (None, buf)
            continue
        pending = c.comm.reduce(buf, root, async_op=c.overlap)
        if root == c.rank:
            own = (pending, buf)
        else:
            inflight.push(pending)
    inflight.drain()
    pending, buf = own
    if pending is not None:
        pending.wait()
    return dq.final(), buf[0], buf[1]
