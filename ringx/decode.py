"""Decode attention: a few new query tokens per sequence against a KV cache sharded over the ranks.

At decode time every rank already holds the new tokens' queries and K/V (``q``, ``k_new``, ``v_new``): the
model's weights are replicated in context parallelism, and each rank computes the new tokens' projections
itself (for one token per sequence that costs the same latency as one rank doing it and then broadcasting the
hidden state, and it moves nothing). What is distributed is the cache, so the schedules differ only in how
the ranks' partial results ``(out, lse)`` are merged; every schedule leaves the *same* merged output on
every rank (bit for bit: each row's final value is computed once, or by the same operations in the same
order everywhere), because every rank runs the next layer on it.

Causality: the new tokens see every cached token, and among themselves causal order. The new tokens' own
K/V block (square, causal) is attended on the ``owner`` sequence shard only: the one whose cache they join
afterwards (:func:`owner`), so no key is counted twice.

==============  ========================================  =====================================================
schedule        algorithms                                per layer and step
==============  ========================================  =====================================================
``ring``        ring, zigzag, stripe, bidir-ring,         the running partial is passed 0 -> 1 -> ... -> R-1,
                double-ring                               each rank merging its own into it; the result goes on
                                                          around (R-1 -> 0 -> ... -> R-2): 2(R-1) sequential
                                                          point-to-point hops (pass-Q without the Q, which every
                                                          rank has). bidir-ring and double-ring differ from ring
                                                          in how K/V travel; at decode no K/V travel, so they
                                                          share ring's pass (their prefill is their forward)
``allreduce``   ringx1, ringx2, ringx4 and their ``o``    all_reduce(max lse), then all_reduce(numerator,
                forms                                     denominator): ringX1's merge, with the reduce to the
                                                          query's owner made an all-reduce since every rank needs
                                                          the output. ringX4 broadcasts the smaller side; at
                                                          decode that is the query, i.e. ringX1. One round:
                                                          nothing to overlap, so ``o`` forms are the same.
``allgather``   ringx3, ringx3b                           all_gather of every rank's (out, lse), merged locally in
                                                          rank order (ringX3's all-gather, of partials instead of
                                                          K/V: one collective instead of two)
``heads``       ulysses, usp, usp-ringx                   the cache is head-sharded in each Ulysses group of u
                                                          ranks (each holds its H/u query heads' K/V of the
                                                          group's tokens); each rank attends its heads, the R = P/u
                                                          groups merge by ``ring`` (usp) or ``allgather``
                                                          (usp-ringx; ulysses has R = 1: no merge), then one
                                                          all_gather of the heads within the group
==============  ========================================  =====================================================

The balanced cache: the new tokens of a step join the sequence shard with the fewest cached tokens, the lowest
on ties (:func:`owner`); every rank knows every shard's length, so all choose alike without communicating. With
equal prefill shards this is round-robin. In the ``heads`` schedule every member of the owner group appends its
heads' slice (:meth:`DecodeLayout.new_kv`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import algorithms, launch
from .algorithms.ulysses import kv_replicas, to_heads
from .api import DTYPES, CallStats, RingxInputError, agreed, backend_device_types, digest, exchange_group, sinks_problem
from .comm import Comm, Ledger, all_gather_flat
from .kernels import Kernel, select_kernel
from .merge import Partial, merge_, with_sink
from .topology import Topology

Tensor = torch.Tensor

# algorithm family -> how the ranks' partials are merged at decode (the module doc's table says why)
SCHEDULES: dict[str, str] = {
    "ring": "ring", "zigzag": "ring", "stripe": "ring", "bidir-ring": "ring", "double-ring": "ring",
    "ringx1": "allreduce", "ringx2": "allreduce", "ringx4": "allreduce",
    "ringx1o": "allreduce", "ringx2o": "allreduce", "ringx4o": "allreduce",
    "ringx3": "allgather", "ringx3b": "allgather",
    "ulysses": "heads", "usp": "heads", "usp-ringx": "heads",
}
# heads-schedule algorithm -> how its sequence shards' partials are merged, across Ulysses groups (DecodeLayout.merge)
SHARD_MERGE: dict[str, str] = {"ulysses": "none", "usp": "ring", "usp-ringx": "allgather"}


def schedule(algorithm: str) -> str:
    """The decode schedule of ``algorithm`` (one of ``ring``, ``allreduce``, ``allgather``, ``heads``)."""
    if algorithm not in SCHEDULES:
        raise RingxInputError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(algorithms.ALGORITHMS)}")
    return SCHEDULES[algorithm]


def owner(lengths: Sequence[int]) -> int:
    """The sequence shard new tokens join: the fewest cached tokens, the lowest index on ties."""
    return min(range(len(lengths)), key=lambda i: (lengths[i], i))


@dataclass
class DecodeLayout:
    """Where this rank's cache lives in ``algorithm``'s decode schedule.

    ``u`` ranks share the heads of one sequence shard (u = 1 outside the ``heads`` schedule); there are
    ``shards`` = P/u sequence shards; this rank holds shard ``shard`` and, of its heads, part ``head_part``.
    """

    algorithm: str
    schedule: str
    merge: str  # how the sequence shards' partials are merged: "ring", "allreduce", "allgather" or "none"
    world: int
    u: int
    shards: int
    shard: int
    head_part: int
    comm: Comm  # the whole group
    ring: Comm  # the ranks holding the same heads, one per sequence shard
    uly: Comm  # the ranks sharing one sequence shard's heads
    _counting: tuple = field(default=(), repr=False, compare=False)  # (ledger, ring, uly) of the last ledger asked

    def counting(self, ledger: Ledger) -> tuple[Comm, Comm]:
        """``ring`` and ``uly`` counting into ``ledger`` (made once per ledger, not per call)."""
        if not self._counting or self._counting[0] is not ledger:
            self._counting = (ledger, _on(self.ring, ledger), _on(self.uly, ledger))
        return self._counting[1], self._counting[2]

    def kv_heads_here(self, kv_heads: int) -> int:
        """K/V heads of this rank's cache (with the replicas Ulysses makes when u does not divide them)."""
        return kv_heads * kv_replicas(kv_heads, self.u) // self.u

    def new_kv(self, k_new: Tensor, v_new: Tensor, at: int) -> tuple[Tensor, Tensor] | None:
        """This rank's part of the new tokens' K/V for its cache, or None when shard ``at`` is not its own."""
        if at != self.shard:
            return None
        return self._heads(k_new), self._heads(v_new)

    def _heads(self, kv: Tensor) -> Tensor:
        if self.u == 1:
            return kv
        reps = kv_replicas(kv.shape[2], self.u)
        full = kv if reps == 1 else kv.repeat_interleave(reps, dim=2)
        n = full.shape[2] // self.u
        return full[:, :, self.head_part * n:(self.head_part + 1) * n]

    def cache_from_prefill(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's decode cache from its prefill K/V shard (B, n, kv_heads, D) in the prefill layout.

        Outside the ``heads`` schedule the shard is the cache; there the Ulysses group all-to-alls it into
        head shards of the group's tokens, as the Ulysses forward does (collective within the group)."""
        if self.u == 1:
            return k, v
        reps = kv_replicas(k.shape[2], self.u)
        kv = torch.stack([k, v]) if reps == 1 else torch.stack([k, v]).repeat_interleave(reps, dim=3)
        kvh = to_heads(self.uly, kv)
        return kvh[0], kvh[1]


def layout(algorithm: str, group: dist.ProcessGroup | None = None, *, topology: Topology | None = None,
           ulysses_degree: int | None = None, ledger: Ledger | None = None) -> DecodeLayout:
    """The :class:`DecodeLayout` of this rank for ``algorithm`` on ``group`` (collective for the ``heads``
    schedule at more than one rank: it may build the Ulysses and ring process groups, once per group)."""
    sched = schedule(algorithm)
    world = dist.get_world_size(group)
    comm = Comm(group, ledger)
    if sched != "heads":
        return DecodeLayout(algorithm, sched, sched, world, 1, world, comm.rank, 0, comm, comm,
                            Comm(None, comm.ledger, solo=True))
    algo = algorithms.ALGORITHMS[algorithm]
    topo = topology if topology is not None else launch.topology(group)
    try:
        rpn = None if algo.ulysses == "all" else topo.ranks_per_node
    except ValueError as e:
        raise RingxInputError(str(e)) from None
    u = algo.degree(world, ulysses_degree, rpn)
    if u is None or u < 1 or world % u:
        raise RingxInputError(f"{algorithm}: Ulysses degree {u} must divide the {world} ranks")
    uly_sg, ring_sg = topo.grid(u)
    uly, ring = comm.sub(uly_sg), comm.sub(ring_sg)
    return DecodeLayout(algorithm, sched, SHARD_MERGE[algorithm], world, u, world // u, ring.rank, uly.rank, comm,
                        ring, uly)


def attend_cache(kernel: Kernel, q: Tensor, k_cache: Tensor, v_cache: Tensor, k_new: Tensor | None,
                 v_new: Tensor | None, scale: float) -> tuple[Tensor, Tensor]:
    """Partial (out, lse) of ``q`` over one cache shard (fully visible) and, if given, the new tokens' own
    K/V (causal among themselves). Out is (B, t, H, D), lse (B, H, t), in the accumulation dtype; a shard
    with no key gives (0, -inf)."""
    acc = Partial(q)
    t = q.shape[1]
    if k_cache.shape[1]:  # an empty K/V block would crash the CPU kernel (SIGFPE): skip it
        out, lse = kernel.forward(q, k_cache, v_cache, False, scale)
        acc.add(0, t, out, lse)
    if k_new is not None:
        out, lse = kernel.forward(q, k_new, v_new, True, scale)
        acc.add(0, t, out, lse)
    return acc.result()


def decode_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, k_new: Tensor, v_new: Tensor, *,
                     layout: DecodeLayout, at: int, softmax_scale: float | None = None, kernel: str | None = None,
                     stats: CallStats | None = None, validate: bool = True, return_lse: bool = False,
                     sinks: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of the new tokens ``q`` (B, t, H, D) over the whole distributed cache plus themselves.

    ``q``, ``k_new`` and ``v_new`` (B, t, kv_heads, D) are the same on every rank. ``k_cache``/``v_cache``
    are this rank's cache shard (B, n_r, kv_heads_here, D), ``n_r`` may differ by rank (and be 0), **before**
    the new tokens are appended; ``at`` is the sequence shard they join (:func:`owner`), whose ranks attend
    them causally. Returns ``out`` (B, t, H, D) in q's dtype, identical on every rank, and with
    ``return_lse`` the LSE (B, H, t) in the accumulation dtype. ``stats.forward`` counts the bytes moved
    (``layout.comm``'s ledger is used when no ``stats`` is given). No autograd (inference). ``sinks`` (H,):
    attention-sink logits, merged into the merged result on every rank alike (nothing more moves).
    """
    lay = layout
    if validate:
        _check(q, k_cache, v_cache, k_new, v_new, lay, at, softmax_scale, kernel, sinks)
    kern = select_kernel(q.device, q.dtype, kernel, head_dim=q.shape[-1])
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    if stats is not None:
        stats.algorithm, stats.layout, stats.kernel = lay.algorithm, f"decode-{lay.schedule}", kern.name
        stats.kernel_version, stats.ulysses_degree = kern.version(), lay.u if lay.schedule == "heads" else 0
        ledger = stats.forward
    else:
        ledger = lay.comm.ledger
    ring, uly = lay.counting(ledger)
    with torch.no_grad():
        qh = q
        if lay.u > 1:
            per = q.shape[2] // lay.u
            qh = q[:, :, lay.head_part * per:(lay.head_part + 1) * per]
        mine = lay.new_kv(k_new, v_new, at)
        out, lse = attend_cache(kern, qh.contiguous(), k_cache, v_cache, *(mine or (None, None)), scale)
        out, lse = _MERGES[lay.merge](ring, out, lse)
        if lay.u > 1:
            out, lse = _gather_heads(uly, out, lse)
        if sinks is not None:  # every rank holds the final result of every head: the sink is its last merge
            out, lse = with_sink(out, lse, sinks)
    out = out.to(q.dtype)
    return (out, lse) if return_lse else out


def _on(c: Comm, ledger: Ledger) -> Comm:
    """``c`` counting into ``ledger``."""
    if c.world == 1:
        return Comm(None, ledger, solo=True)
    return Comm(c.group, ledger, rank=c.rank, world=c.world)


def _pack(out: Tensor, lse: Tensor) -> Tensor:
    return torch.cat([out.reshape(-1), lse.reshape(-1)])


def _unpack(buf: Tensor, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    return buf[:out.numel()].view_as(out), buf[out.numel():].view_as(lse)


def _merge_none(c: Comm, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    return out, lse


def _merge_ring(c: Comm, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """The running partial 0 -> 1 -> ... -> R-1 (each merging its own), then the result R-1 -> 0 -> ... -> R-2."""
    if c.world == 1:
        return out, lse
    r, p = c.rank, c.world
    buf = torch.empty(out.numel() + lse.numel(), dtype=out.dtype, device=out.device)
    if r == 0:
        acc_out, acc_lse = out, lse
    else:
        got_out, got_lse = _unpack(c.recv(buf, r - 1), out, lse)
        acc_out, acc_lse = got_out.clone(), got_lse.clone()
        merge_(acc_out, acc_lse, out, lse)
    if r < p - 1:
        c.send(_pack(acc_out, acc_lse), r + 1)
        res_out, res_lse = _unpack(c.recv(buf, r - 1 if r else p - 1), out, lse)  # the result comes round
        res_out, res_lse = res_out.clone(), res_lse.clone()
    else:
        res_out, res_lse = acc_out, acc_lse
    if r != p - 2:  # the last to get the result passes it no further
        c.send(_pack(res_out, res_lse), (r + 1) % p)
    return res_out, res_lse


def _merge_allreduce(c: Comm, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """ringX1's merge: a common shift (max LSE), then the shifted numerator and denominator summed."""
    if c.world == 1:
        return out, lse
    shift = c.all_reduce_max(lse.clone(memory_format=torch.contiguous_format))
    shift = shift.masked_fill(torch.isneginf(shift), 0.0)  # rows nobody sees stay 0/0 (cannot happen here)
    den = torch.exp(lse - shift)
    buf = _pack(out * den.transpose(1, 2).unsqueeze(-1), den)
    num, den = _unpack(c.all_reduce_sum(buf), out, lse)
    return num / den.transpose(1, 2).unsqueeze(-1), shift + torch.log(den)


def _merge_allgather(c: Comm, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's partial gathered, then merged in one step (the same operations on every rank): the LSE of all
    of them, each partial weighted by exp(its lse - that), summed; a handful of operations whatever P, not P - 1
    pairwise merges. A partial whose rows saw no key (lse -inf) weighs 0; some rank's always saw the new tokens."""
    if c.world == 1:
        return out, lse
    every = c.all_gather(_pack(out, lse))  # (P, out's and lse's elements)
    n = out.numel()
    outs, lses = every[:, :n].view(c.world, *out.shape), every[:, n:].view(c.world, *lse.shape)
    total = torch.logsumexp(lses, dim=0)
    weights = torch.exp(lses - total).transpose(2, 3).unsqueeze(-1)  # (P, B, t, H, 1)
    return (outs * weights).sum(0), total


def _gather_heads(c: Comm, out: Tensor, lse: Tensor) -> tuple[Tensor, Tensor]:
    """Each Ulysses member's heads, concatenated in member order: (B, t, H, D) and (B, H, t)."""
    every = c.all_gather(_pack(out, lse))
    outs, lses = zip(*(_unpack(every[j], out, lse) for j in range(c.world)))
    return torch.cat(outs, dim=2), torch.cat(lses, dim=1)


_MERGES = {"none": _merge_none, "ring": _merge_ring, "allreduce": _merge_allreduce, "allgather": _merge_allgather}


# ------------------------------------------------------------------------------------------ validation

_MSG = 240  # bytes of error text shared with the other ranks


def _problem(q, k_cache, v_cache, k_new, v_new, lay: DecodeLayout, at, scale, kernel, sinks=None) -> str:
    """What is wrong with this rank's input, or ''."""
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("k_new", k_new), ("v_new", v_new)):
        if not isinstance(t, torch.Tensor):
            return f"{name} must be a torch.Tensor, got {type(t).__name__}"
        if t.dim() != 4:
            return f"{name} must be 4-D (batch, tokens, heads, head_dim), got {t.dim()}-D"
    if k_cache.shape != v_cache.shape:
        return f"k_cache and v_cache must have one shape, got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}"
    if k_new.shape != v_new.shape:
        return f"k_new and v_new must have one shape, got {tuple(k_new.shape)} and {tuple(v_new.shape)}"
    b, t, h, d = q.shape
    if min(b, t, h, d) == 0:
        return f"empty input: q has shape {tuple(q.shape)}"
    if k_new.shape[0] != b or k_new.shape[1] != t or k_new.shape[3] != d:
        return f"k_new {tuple(k_new.shape)} must agree with q {tuple(q.shape)} in batch, tokens and head_dim"
    hkv = k_new.shape[2]
    if hkv == 0 or h % hkv:
        return f"q has {h} heads and k_new/v_new {hkv}: the q heads must be a multiple of the k/v heads"
    if h % lay.u:
        return f"{lay.algorithm}: {h} query heads do not divide by the Ulysses degree {lay.u}"
    want = lay.kv_heads_here(hkv)
    if k_cache.shape[0] != b or k_cache.shape[2] != want or k_cache.shape[3] != d:
        return (f"k_cache {tuple(k_cache.shape)} must be (batch {b}, tokens, {want} kv heads, head_dim {d}) "
                f"for {lay.algorithm} at {lay.world} ranks")
    dtypes = {x.dtype for x in (q, k_cache, v_cache, k_new, v_new)}
    if len(dtypes) != 1:
        return f"q, caches and new K/V must share one dtype, got {', '.join(sorted(map(str, dtypes)))}"
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} is not supported; use one of {', '.join(map(str, DTYPES))}"
    if len({x.device for x in (q, k_cache, v_cache, k_new, v_new)}) != 1:
        return "q, caches and new K/V must be on one device"
    moves = backend_device_types(lay.comm.group) if lay.world > 1 else None
    if moves is not None and q.device.type not in moves:
        return f"tensors are on {q.device.type} but this process group's backend moves {' or '.join(sorted(moves))}"
    if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < lay.shards:
        return f"at={at!r} must be a sequence shard 0..{lay.shards - 1}"
    if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        return f"softmax_scale must be a positive finite number, got {scale!r}"
    try:
        select_kernel(q.device, q.dtype, kernel, head_dim=d)
    except ValueError as e:
        return str(e)
    return sinks_problem(sinks, q)


def _check(q, k_cache, v_cache, k_new, v_new, lay: DecodeLayout, at, scale, kernel, sinks=None) -> None:
    """Raise one RingxInputError on every rank if any rank's input is bad or the ranks disagree (the cheap check of
    ``ringx.api.agreed``; the whole signatures only when it fails)."""
    problem = _problem(q, k_cache, v_cache, k_new, v_new, lay, at, scale, kernel, sinks)
    if lay.world == 1:
        if problem:
            raise RingxInputError(f"ringx.decode_attention: {problem}")
        return
    shapes = [list(x.shape) if isinstance(x, torch.Tensor) and x.dim() == 4 else [0] * 4 for x in (q, k_new)]
    dt = q.dtype if isinstance(q, torch.Tensor) else None
    values = [DTYPES.index(dt) if dt in DTYPES else 99, at if isinstance(at, int) else -1,
              int(round((scale or 0.0) * 1e9)), *shapes[0], *shapes[1]]
    pg, device = exchange_group(lay.comm.group, backend_device_types(lay.comm.group), torch.device("cpu"))
    if agreed(bool(problem), digest(values), pg, device):
        return
    sig = [int(bool(problem)), *values, *problem.encode()[:_MSG].ljust(_MSG, b"\0")]
    mine = torch.tensor(sig, dtype=torch.int64, device=device)
    every = torch.empty(lay.world * len(sig), dtype=torch.int64, device=device)
    all_gather_flat(every, mine, group=pg)
    rows = every.view(lay.world, len(sig)).cpu().tolist()
    bad = [(r, bytes(row[-_MSG:]).rstrip(b"\0").decode(errors="replace")) for r, row in enumerate(rows) if row[0]]
    if bad:
        raise RingxInputError("ringx.decode_attention rejected the input ("
                              + "; ".join(f"rank {r}: {m}" for r, m in bad) + ")")
    names = ("dtype", "at", "softmax_scale", "q shape", "q shape", "q shape", "q shape",
             "k_new shape", "k_new shape", "k_new shape", "k_new shape")
    for r, row in enumerate(rows[1:], start=1):
        for i, name in enumerate(names, start=1):
            if row[i] != rows[0][i]:
                raise RingxInputError(f"ringx.decode_attention: {name} differs across ranks (rank 0 and rank {r})")


__all__ = ["DecodeLayout", "SCHEDULES", "attend_cache", "decode_attention", "layout", "owner", "schedule"]
