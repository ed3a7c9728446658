"""An algorithm's schedule as data, from the code that runs it.

``trace`` runs an algorithm's real forward and backward schedules for one
rank of a world of any size, on meta tensors (no memory, no network): a
tracing communicator records each operation with its payload (and when an
asynchronous one is waited for), a tracing kernel records each local block's
FLOPs. The ledger it fills is computed by the same code as in a real run,
so the two agree exactly (tests/test_schedule.py checks it against runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .algorithms import get
from .algorithms.base import Ctx
from .comm import Comm, Ledger
from .flops import block_flops
from .kernels import acc_dtype
from .layouts import Block


@dataclass
class Event:
    kind: str  # "compute", "comm" or "wait"
    op: str = ""  # comm: broadcast, reduce, all_reduce, all_gather, reduce_scatter, sendrecv
    flops: float = 0.0  # compute: FLOPs (forward 4*B*H*D per visible pair; backward 2.5x)
    nbytes: int = 0  # comm: the operation's size (nccl-tests convention; sendrecv: bytes this rank sends)
    blocking: bool = True  # comm: the rank waits for it at once
    index: int = 0  # comm and wait: the rank's n-th operation (the same collective on every rank)


@dataclass
class Trace:
    algorithm: str
    rank: int
    world: int
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

    def __init__(self, rank: int, world: int, ledger: Ledger, events: list[Event]):
        self.group, self.rank, self.world, self.ledger = None, rank, world, ledger
        self.events, self.count = events, 0

    def _run(self, op: str, nbytes: int, async_op: bool, call):
        self.events.append(Event("comm", op=op, nbytes=nbytes, blocking=not async_op, index=self.count))
        self.count += 1
        return [_Work(self.events, self.count - 1)] if op == "sendrecv" else _Work(self.events, self.count - 1)


class TraceKernel:
    """Records each block's FLOPs and returns empty meta results of the right shapes."""

    name = "trace"

    def __init__(self, events: list[Event]):
        self.events = events

    @staticmethod
    def _flops(q, k, causal: bool) -> float:
        b, n, h, d = q.shape
        return block_flops(b, h, d, Block(0, n, 0, k.shape[1], causal).flops_pairs)

    def forward(self, q, k, v, causal, scale):
        self.events.append(Event("compute", op="fwd", flops=self._flops(q, k, causal)))
        b, n, h, _ = q.shape
        return (torch.empty(q.shape, dtype=q.dtype, device="meta"),
                torch.empty(b, h, n, dtype=acc_dtype(q.dtype), device="meta"))

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        self.events.append(Event("compute", op="bwd", flops=2.5 * self._flops(q, k, causal)))
        return (torch.empty(q.shape, dtype=q.dtype, device="meta"), torch.empty(k.shape, dtype=k.dtype, device="meta"),
                torch.empty(v.shape, dtype=v.dtype, device="meta"))


def trace(algorithm: str, causal: bool, world: int, rank: int, *, batch: int, seq: int, heads: int, kv_heads: int,
          head_dim: int, dtype: torch.dtype = torch.bfloat16, backward: bool = True) -> Trace:
    """The forward (and backward) schedule of ``rank`` among ``world`` ranks for a global ``seq``."""
    algo = get(algorithm, causal)
    n = seq // world
    q = torch.empty(batch, n, heads, head_dim, dtype=dtype, device="meta")
    kv = torch.empty(batch, n, kv_heads, head_dim, dtype=dtype, device="meta")
    tr = Trace(algorithm, rank, world)
    layout = algo.layout(causal)

    def ctx(ledger: Ledger, events: list[Event]) -> Ctx:
        return Ctx(TraceComm(rank, world, ledger, events), TraceKernel(events), layout, causal, head_dim**-0.5,
                   algo.overlap)

    out, lse = algo.forward(ctx(tr.ledger_forward, tr.forward), q, kv, kv)
    if backward:
        algo.backward(ctx(tr.ledger_backward, tr.backward), torch.empty(q.shape, dtype=dtype, device="meta"), q, kv,
                      kv, out.to(dtype), lse)
    return tr


__all__ = ["Event", "Trace", "TraceComm", "TraceKernel", "trace"]
