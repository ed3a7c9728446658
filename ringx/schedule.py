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

    def __init__(self, rank: int, world: int, ledger: Ledger, events: list[Event], *, members: tuple[int, ...] = (),
                 nodes: int = 0, counter: itertools.count | None = None):
        self.group, self.rank, self.world, self.ledger = None, rank, world, ledger
        self.events, self.members, self.nodes = events, members, nodes
        self.counter = counter if counter is not None else itertools.count()  # shared with sub-groups

    def sub(self, sg: SubGroup) -> TraceComm:
        return TraceComm(sg.ranks.index(self.rank), sg.size, self.ledger, self.events, members=sg.ranks,
                         nodes=sg.nodes, counter=self.counter)

    def _run(self, op: str, nbytes: int, async_op: bool, call):
        index = next(self.counter)
        self.events.append(Event("comm", op=op, nbytes=nbytes, blocking=not async_op, index=index,
                                 group=self.members, nodes=self.nodes))
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
    causal = m.kind != "full"
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


__all__ = ["Event", "Trace", "TraceComm", "TraceKernel", "trace"]
