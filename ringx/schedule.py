"""An algorithm's schedule as data, from the code that runs it.

``trace`` runs an algorithm's real forward and backward schedules for one
rank of a world of any size, on meta tensors (no memory, no network): a
tracing communicator records each operation with its payload (and when an
asynchronous one is waited for), a tracing kernel records each local block's
FLOPs. The ledger it fills is computed by the same code as in a real run,
so the two agree exactly (tests/test_attention_mpi.py and tests/test_hier_mpi.py
check it against runs).

Hierarchical schedules communicate in sub-groups (within a node, across
nodes, Ulysses and ring groups) of a simulated topology (``ranks_per_node``):
each operation records its group's members and how many nodes they span. A
collective is the same on every member of its group: ``(group, index)``
identifies it, and ``index`` is this rank's n-th operation of the pass.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch

from .algorithms import get
from .algorithms.base import Ctx
from .comm import Comm, Ledger
from .flops import block_flops
from .kernels import acc_dtype
from .layouts import Block
from .mask import Mask, as_mask
from .topology import SubGroup, Topology


@dataclass
class Event:
    kind: str  # "compute", "comm" or "wait"
    op: str = ""  # comm: broadcast, reduce, all_reduce, all_gather, reduce_scatter, all_to_all, sendrecv
    flops: float = 0.0  # compute: FLOPs (forward 4*B*H*D per visible pair; backward 2.5x)
    nbytes: int = 0  # comm: the operation's size (nccl-tests convention; sendrecv: bytes this rank sends to its
    # busiest peer: the directions of a link carry traffic at once, so a bidirectional step costs one direction)
    blocking: bool = True  # comm: the rank waits for it at once
    index: int = 0  # comm and wait: the rank's n-th operation (the same collective on every member)
    group: tuple[int, ...] = ()  # comm: the ranks of a sub-group operation; () for all ranks
    nodes: int = 0  # comm: nodes those ranks span (1: within a node); 0 for all ranks (the caller's nodes)
    seq_q: int = 0  # compute: the block's queries
    seq_k: int = 0  # compute: the block's keys
    causal: bool = False  # compute: a causal diagonal block
    band: tuple[int, int] | None = None  # compute: a band block of a mask (see ringx.layouts.Block)
    root: int = -1  # comm: broadcast and reduce: the root's global rank
    p2p: tuple[tuple[str, int, int], ...] = ()  # comm: send, recv, sendrecv: ("send"|"recv", peer's global rank, bytes)


@dataclass
class Trace:
    algorithm: str
    rank: int
    world: int
    ranks_per_node: int = 0  # of the simulated topology (hierarchical algorithms); 0 when none was used
    ulysses_degree: int = 0  # 0: the algorithm has none
    forward: list[Event] = field(default_factory=list)
    backward: list[Event] = field(default_factory=list)
    ledger_forward: Ledger = field(default_factory=Ledger)
    ledger_backward: Ledger = field(default_factory=Ledger)


class _Work:
    def __init__(self, events: list[Event], index: int):
        self.events, self.index = events, index

    def wait(self) -> None:
        self.events.append(Event("wait", index=self.index))


class TraceComm(Comm):
    """A communicator that records operations instead of performing them."""

    traced = True

    def __init__(self, rank: int, world: int, ledger: Ledger, events: list[Event], *, members: tuple[int, ...] = (),
                 nodes: int = 0, counter: itertools.count | None = None):
        self.group, self.rank, self.world, self.ledger = None, rank, world, ledger
        self.events, self.members, self.nodes = events, members, nodes
        self.counter = counter if counter is not None else itertools.count()  # shared with sub-groups

    def sub(self, sg: SubGroup) -> TraceComm:
        return TraceComm(sg.ranks.index(self.rank), sg.size, self.ledger, self.events, members=sg.ranks,
                         nodes=sg.nodes, counter=self.counter)

    def _global(self, group_rank: int) -> int:
        return self.members[group_rank] if self.members else group_rank

    def _run(self, op: str, nbytes: int, async_op: bool, call, root: int = -1, p2p: tuple = ()):
        index = next(self.counter)
        self.events.append(Event("comm", op=op, nbytes=nbytes, blocking=not async_op, index=index,
                                 group=self.members, nodes=self.nodes, root=root, p2p=p2p))
        return [_Work(self.events, index)] if op == "sendrecv" else _Work(self.events, index)


class TraceKernel:
    """Records each block's FLOPs and returns empty meta results of the right shapes."""

    name = "trace"

    def __init__(self, events: list[Event]):
        self.events = events

    @staticmethod
    def _flops(q, k, causal: bool, band=None) -> float:
        b, n, h, d = q.shape
        return block_flops(b, h, d, Block(0, n, 0, k.shape[1], causal, band).flops_pairs)

    def forward(self, q, k, v, causal, scale, *, band=None):
        self.events.append(Event("compute", op="fwd", flops=self._flops(q, k, causal, band), seq_q=q.shape[1],
                                 seq_k=k.shape[1], causal=causal, band=band))
        b, n, h, _ = q.shape
        return (torch.empty(q.shape, dtype=q.dtype, device="meta"),
                torch.empty(b, h, n, dtype=acc_dtype(q.dtype), device="meta"))

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        self.events.append(Event("compute", op="bwd", flops=2.5 * self._flops(q, k, causal, band), seq_q=q.shape[1],
                                 seq_k=k.shape[1], causal=causal, band=band))
        return (torch.empty(q.shape, dtype=q.dtype, device="meta"), torch.empty(k.shape, dtype=k.dtype, device="meta"),
                torch.empty(v.shape, dtype=v.dtype, device="meta"))


def trace(algorithm: str, causal: bool | None, world: int, rank: int, *, batch: int, seq: int, heads: int,
          kv_heads: int, head_dim: int, dtype: torch.dtype = torch.bfloat16, backward: bool = True,
          ranks_per_node: int | None = None, ulysses_degree: int | None = None, mask: Mask | None = None,
          inner_ring: int | None = None) -> Trace:
    """The forward (and backward) schedule of ``rank`` among ``world`` ranks for a global ``seq``.

    Hierarchical algorithms run on nodes of ``ranks_per_node`` consecutive ranks (default: one node),
    with ``ulysses_degree`` and ``inner_ring`` as in ``ringx.attention`` (default: the ranks per node). ``mask`` (a
    ``ringx.Mask``) replaces ``causal`` (pass None for it), as in ``ringx.attention``.
    """
    m = as_mask(mask, causal)
    m.check(seq)
    causal = m.causal_layout
    algo = get(algorithm, m)
    n = seq // world
    q = torch.empty(batch, n, heads, head_dim, dtype=dtype, device="meta")
    kv = torch.empty(batch, n, kv_heads, head_dim, dtype=dtype, device="meta")
    topo = Topology.simulated(world, rank, ranks_per_node or world) if algo.topology else None
    degree = algo.degree(world, ulysses_degree, topo.ranks_per_node if topo else None)
    if degree is not None and (world % degree or heads % degree):
        raise ValueError(f"Ulysses degree {degree} must divide the {world} ranks and the {heads} heads")
    if inner_ring is not None:
        if not algo.inner_ring:
            raise ValueError(f"inner_ring applies to double-ring, not to {algorithm}")
        topo.ring_members(inner_ring)  # ValueError when it does not divide the nodes
    tr = Trace(algorithm, rank, world, topo.ranks_per_node if topo else 0, degree or 0)
    layout = algo.layout(causal, degree)
    stash: dict = {}  # shared by the forward and backward, as in a real call

    def ctx(ledger: Ledger, events: list[Event]) -> Ctx:
        return Ctx(TraceComm(rank, world, ledger, events), TraceKernel(events), layout, causal, head_dim**-0.5,
                   algo.overlap, topo, degree, stash, m, inner_ring)

    out, lse = algo.forward(ctx(tr.ledger_forward, tr.forward), q, kv, kv)
    if backward:
        algo.backward(ctx(tr.ledger_backward, tr.backward), torch.empty(q.shape, dtype=dtype, device="meta"), q, kv,
                      kv, out.to(dtype), lse)
    return tr


@dataclass(frozen=True)
class Call:
    """One communication call as the other ranks must meet it: a collective's op, group (global ranks), root and
    size, or a point-to-point call's messages (``p2p``; its group and size are this rank's own business)."""

    op: str
    group: tuple[int, ...] = ()
    root: int = -1
    nbytes: int = 0
    p2p: tuple[tuple[str, int, int], ...] = ()

    def __str__(self) -> str:
        if self.p2p:
            return f"{self.op}(" + ", ".join(f"{k} {'to' if k == 'send' else 'from'} {peer}: {n} B"
                                             for k, peer, n in self.p2p) + ")"
        root = f"root {self.root}, " if self.root >= 0 else ""
        return f"{self.op}({root}{self.nbytes} B on ranks {list(self.group)})"


def calls(events: list[Event], world: int) -> list[Call]:
    """A pass's communication calls in the order this rank issues them."""
    every = tuple(range(world))
    return [Call(e.op, p2p=e.p2p) if e.p2p else Call(e.op, e.group or every, e.root, e.nbytes)
            for e in events if e.kind == "comm"]


def disagreements(sequences: list[list[Call]]) -> list[str]:
    """What keeps the ranks' call sequences (``sequences[r]``: rank r's, in issue order) from completing.

    Three checks, each stricter than any backend needs: on every group, every member issues the same collectives
    (op, root, size) in the same order; between every two ranks, the sizes sent one way are the sizes received
    there, in order; and run as NCCL runs them, every call of a rank in issue order on one stream (a collective
    completes when every member has reached it, point-to-point calls when their peers' current calls hold the
    matching messages), every rank gets to its end. Empty: no rank can wait for ever."""
    problems = _per_group(sequences) + _per_pair(sequences)
    return problems or _in_issue_order(sequences)


def world_calls(algorithm: str, causal: bool | None, world: int, **kwargs) -> list[list[Call]]:
    """Every rank's communication calls of one forward and backward (``trace``'s keyword arguments), for
    ``disagreements``: computed in this process, one rank after another."""
    out = []
    for rank in range(world):
        tr = trace(algorithm, causal, world, rank, **kwargs)
        out.append(calls(tr.forward, world) + calls(tr.backward, world))
    return out


def _per_group(seqs: list[list[Call]]) -> list[str]:
    groups: dict[tuple[int, ...], dict[int, list[Call]]] = {}
    for r, seq in enumerate(seqs):
        for c in seq:
            if not c.p2p:
                groups.setdefault(c.group, {m: [] for m in c.group})[r].append(c)
    problems = []
    for g, per in groups.items():
        first = per[g[0]]
        for m in g[1:]:
            other = per[m]
            i = next((i for i, (a, b) in enumerate(zip(first, other, strict=False)) if a != b),
                     min(len(first), len(other)))
            if i < max(len(first), len(other)):
                a, b = (str(seq[i]) if i < len(seq) else "nothing more" for seq in (first, other))
                problems.append(f"on ranks {list(g)}, collective {i + 1}: rank {g[0]} issues {a}, rank {m} {b}")
                break
    return problems


def _per_pair(seqs: list[list[Call]]) -> list[str]:
    sent: dict[tuple[int, int], list[int]] = {}
    got: dict[tuple[int, int], list[int]] = {}
    for r, seq in enumerate(seqs):
        for c in seq:
            for kind, peer, n in c.p2p:
                if kind == "send":
                    sent.setdefault((r, peer), []).append(n)
                else:
                    got.setdefault((peer, r), []).append(n)
    return [f"rank {a} sends {sent.get((a, b), [])} B to rank {b}, which receives {got.get((a, b), [])} B from it"
            for a, b in sorted(set(sent) | set(got)) if sent.get((a, b)) != got.get((a, b))]


def _in_issue_order(seqs: list[list[Call]]) -> list[str]:
    pos = [0] * len(seqs)
    head = lambda r: seqs[r][pos[r]] if pos[r] < len(seqs[r]) else None  # noqa: E731

    def meets(ranks: set[int]) -> bool:  # every message of these ranks' current calls has its counterpart there
        def mine(r: int, kind: str, peer: int) -> list[int]:
            return [n for k, p, n in head(r).p2p if k == kind and p == peer]
        return all(mine(r, "send", p) == mine(p, "recv", r) and mine(r, "recv", p) == mine(p, "send", r)
                   for r in ranks for _, p, _ in head(r).p2p)

    while True:
        moved = False
        for r in range(len(seqs)):
            c = head(r)
            if c is None:
                continue
            if not c.p2p:
                ready = set(c.group) if all(head(m) == c for m in c.group) else None
            else:  # the ranks linked by their current point-to-point calls complete together
                ready, todo = {r}, [r]
                while todo and ready is not None:
                    h = head(todo.pop())
                    if h is None or not h.p2p:
                        ready = None
                        break
                    for _, p, _ in h.p2p:
                        if p not in ready:
                            ready.add(p)
                            todo.append(p)
                if ready is not None and not meets(ready):
                    ready = None
            if ready:
                for m in ready:
                    pos[m] += 1
                moved = True
        if all(head(r) is None for r in range(len(seqs))):
            return []
        if not moved:
            return [f"stuck: rank {r} waits in call {pos[r] + 1}, {head(r)}"
                    for r in range(len(seqs)) if head(r) is not None]


__all__ = ["Call", "Event", "Trace", "TraceComm", "TraceKernel", "calls", "disagreements", "trace", "world_calls"]
