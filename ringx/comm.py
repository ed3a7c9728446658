"""Communication over torch.distributed, with a ledger of what each rank moved.

The ledger counts, per operation, the calls and the *payload* bytes this rank
sends and receives, independent of how the collective library routes them:

====================  ==============================  ==================================
op                    sent                            received
====================  ==============================  ==================================
send / recv           the message                     the message
broadcast             root: the buffer                others: the buffer
reduce                non-root: the buffer            root: the buffer
all_reduce            the buffer                      the buffer
all_gather            the local input                 (P-1) x the local input
reduce_scatter        (P-1)/P x the input             the output (input / P)
all_to_all            (P-1)/P x the input             (P-1)/P x the input (= the output's
                                                      rows from the other ranks)
====================  ==============================  ==================================

so algorithms can be compared, and checked against a formula, by the data
they must move. Wire traffic of a concrete collective algorithm (ring, tree)
is the cost model's business, not the ledger's. P is the size of the
operation's group: a hierarchical algorithm holds one Comm per sub-group
(``Comm.sub``), all recording into the same ledger.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from . import timeline
from .topology import SubGroup

Tensor = torch.Tensor

# torch 2.13 renamed the flat collectives; older releases (e.g. 2.4 on Frontier) only have the old names.
all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
reduce_scatter_flat = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def all_max(values: list[int], group: dist.ProcessGroup | None = None) -> list[int]:
    """The elementwise maximum of every rank's ``values`` (a few integers, sent as CPU tensors: ``group`` must move
    them), the same on every rank. Recursive doubling: log2(P) rounds of point-to-point messages (two more when P is
    no power of two), where gloo's all-reduce takes a ring's 2(P-1) steps; not counted in any ledger."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    t = torch.tensor(values, dtype=torch.int64)
    if world == 1:
        return values
    peer = (lambda r: r) if group is None else (lambda r: dist.get_global_rank(group, r))  # noqa: E731
    got = torch.empty_like(t)
    p2 = 1 << (world.bit_length() - 1)  # the largest power of two <= P; rank p2 + i folds into rank i
    if rank >= p2:
        dist.send(t, peer(rank - p2), group=group)
        dist.recv(t, peer(rank - p2), group=group)
        return t.tolist()
    if rank + p2 < world:
        dist.recv(got, peer(rank + p2), group=group)
        torch.maximum(t, got, out=t)
    step = 1
    while step < p2:
        works = [dist.isend(t, peer(rank ^ step), group=group), dist.irecv(got, peer(rank ^ step), group=group)]
        for w in works:
            w.wait()
        torch.maximum(t, got, out=t)
        step <<= 1
    if rank + p2 < world:
        dist.send(t, peer(rank + p2), group=group)
    return t.tolist()


@dataclass
class OpStats:
    calls: int = 0
    sent: int = 0
    received: int = 0


@dataclass
class Ledger:
    """Per-op payload counts for one rank."""

    ops: dict[str, OpStats] = field(default_factory=lambda: defaultdict(OpStats))

    def record(self, op: str, sent: int, received: int) -> None:
        s = self.ops[op]
        s.calls += 1
        s.sent += sent
        s.received += received

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.ops.values())

    @property
    def received(self) -> int:
        return sum(s.received for s in self.ops.values())

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.ops.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {op: {"calls": s.calls, "sent": s.sent, "received": s.received} for op, s in sorted(self.ops.items())}


class _NoLedger(Ledger):
    """Where a call nobody asked the traffic of counts it: nowhere (no ledger made per call, nothing added)."""

    def record(self, op: str, sent: int, received: int) -> None:
        pass


NO_LEDGER = _NoLedger()


def nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


class Pending:
    """Outstanding async operations; ``wait()`` returns the received tensors."""

    def __init__(self, works: list, result: list[Tensor] | None = None, keep: list[Tensor] | None = None):
        self.works = works
        self.payload = result or []
        self._keep = keep  # send buffers must outlive their sends

    def wait(self) -> list[Tensor]:
        for w in self.works:
            w.wait()
        self.works, self._keep = [], None
        return self.payload


class _MarkedWork:
    """Asynchronous work whose wait is marked on the timeline (only made while recording)."""

    def __init__(self, works: list, op: str, nbytes: int, token):
        self.works, self.op, self.nbytes, self.token = works, op, nbytes, token

    def wait(self) -> None:
        t = timeline.start()
        for w in self.works:
            w.wait()
        timeline.stop(t, "wait", self.op, nbytes=self.nbytes)
        timeline.stop(self.token, "comm", self.op, nbytes=self.nbytes)


class Buffers:
    """Receive buffers shaped like ``like``, allocated once (on first use) and used in turn.

    A ring step receives into one set while the previous set is computed on (and sent on), so two
    sets serve any ring: the set a step receives into was last sent two steps earlier, and that send
    was waited for one step earlier.
    """

    def __init__(self, like: list[Tensor], count: int = 2, dtype: torch.dtype | None = None):
        self.like, self.count, self.dtype = like, count, dtype
        self.sets: list[list[Tensor]] = []
        self.turn = 0

    def next(self) -> list[Tensor]:
        if len(self.sets) < self.count:
            self.sets.append([torch.empty(t.shape, dtype=self.dtype or t.dtype, device=t.device) for t in self.like])
            return self.sets[-1]
        got = self.sets[self.turn]
        self.turn = (self.turn + 1) % self.count
        return got


class Comm:
    """The collectives the algorithms use, on one process group, counted in a ledger.

    With a single rank every operation is a no-op that moves (and records) nothing.
    """

    traced = False  # the tracer (ringx.schedule.TraceComm) wants each point-to-point call's messages

    def __init__(self, group: dist.ProcessGroup | None, ledger: Ledger | None = None, *, solo: bool = False,
                 rank: int | None = None, world: int | None = None):
        """``solo``: a group of one rank (no process group needed); ``rank``/``world``: this rank's place in
        ``group`` when the caller knows it already (asking torch.distributed costs microseconds a call)."""
        self.group = group
        self.rank = 0 if solo else dist.get_rank(group) if rank is None else rank
        self.world = 1 if solo else dist.get_world_size(group) if world is None else world
        self.ledger = ledger if ledger is not None else Ledger()

    def sub(self, sg: SubGroup) -> Comm:
        """A communicator on ``sg`` (ranks of this communicator's group), counting into the same ledger."""
        return Comm(sg.pg, self.ledger, solo=sg.size == 1)

    def _global(self, group_rank: int) -> int:
        return group_rank if self.group is None else dist.get_global_rank(self.group, group_rank)

    def _run(self, op: str, nbytes: int, async_op: bool, call, root: int = -1, p2p: tuple = ()):
        """Perform one operation (``call`` posts it); a hook for tracing schedules without a network.
        ``root`` (broadcast, reduce) and ``p2p`` (its ``("send"|"recv", peer, nbytes)`` messages) are global ranks,
        for the tracer: every rank must issue the same collectives in the same order, and sends must meet receives.

        Timeline marks (when recording): the post, and for an asynchronous operation its wait and the
        time it was in flight (post to wait); a blocking one is in flight for its whole call."""
        if not timeline.ON:
            return call()
        t = timeline.start()
        w = call()
        timeline.stop(t, "post", op, nbytes=nbytes)
        if not async_op:
            timeline.stop(t, "comm", op, nbytes=nbytes)
            return w
        marked = _MarkedWork(w if isinstance(w, list) else [w], op, nbytes, t)
        return [marked] if isinstance(w, list) else marked

    def broadcast(self, t: Tensor, root: int, async_op: bool = False) -> Pending:
        if self.world == 1:
            return Pending([], [t])
        n = nbytes(t)
        self.ledger.record("broadcast", n if self.rank == root else 0, 0 if self.rank == root else n)
        g = self._global(root)
        w = self._run("broadcast", n, async_op, lambda: dist.broadcast(t, g, group=self.group, async_op=async_op),
                      root=g)
        return Pending([w] if async_op else [], [t])

    def reduce(self, t: Tensor, root: int, async_op: bool = False) -> Pending:
        """Sum ``t`` onto ``root``. On other ranks ``t`` is left overwritten: never reuse it."""
        if self.world == 1:
            return Pending([], [t])
        n = nbytes(t)
        self.ledger.record("reduce", 0 if self.rank == root else n, n if self.rank == root else 0)
        g = self._global(root)
        w = self._run("reduce", n, async_op, lambda: dist.reduce(t, g, op=dist.ReduceOp.SUM, group=self.group,
                                                                  async_op=async_op), root=g)
        return Pending([w] if async_op else [], [t])

    def all_reduce_max(self, t: Tensor) -> Tensor:
        if self.world == 1:
            return t
        n = nbytes(t)
        self.ledger.record("all_reduce", n, n)
        self._run("all_reduce", n, False, lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group))
        return t

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """Sum ``t`` over the group in place; every rank gets the same result."""
        if self.world == 1:
            return t
        n = nbytes(t)
        self.ledger.record("all_reduce", n, n)
        self._run("all_reduce", n, False, lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group))
        return t

    def send(self, t: Tensor, dst: int) -> None:
        """Send ``t`` to group rank ``dst`` and wait (a chain step: the peer has posted or will post its recv)."""
        t = t.contiguous()
        self.ledger.record("send", nbytes(t), 0)
        g = self._global(dst)
        self._run("send", nbytes(t), False, lambda: dist.isend(t, g, group=self.group).wait(),
                  p2p=(("send", g, nbytes(t)),))

    def recv(self, t: Tensor, src: int) -> Tensor:
        """Receive into ``t`` (contiguous) from group rank ``src``."""
        self.ledger.record("recv", 0, nbytes(t))
        g = self._global(src)
        self._run("recv", nbytes(t), False, lambda: dist.irecv(t, g, group=self.group).wait(),
                  p2p=(("recv", g, nbytes(t)),))
        return t

    def all_gather(self, t: Tensor) -> Tensor:
        """All ranks' ``t`` stacked as (P, *t.shape), in group-rank order."""
        return self._all_gather(t, False).wait()[0]

    def all_gather_async(self, t: Tensor) -> Pending:
        """``all_gather`` left in flight: ``wait()`` returns [the stacked tensor]."""
        return self._all_gather(t, True)

    def _all_gather(self, t: Tensor, async_op: bool) -> Pending:
        if self.world == 1:
            return Pending([], [t.unsqueeze(0)])
        t = t.contiguous()
        n = nbytes(t)
        self.ledger.record("all_gather", n, n * (self.world - 1))
        out = torch.empty((self.world, *t.shape), dtype=t.dtype, device=t.device)
        w = self._run("all_gather", n * self.world, async_op,
                      lambda: all_gather_flat(out.view(-1), t.view(-1), group=self.group, async_op=async_op))
        return Pending([w] if async_op else [], [out], [t])

    def all_to_all(self, t: Tensor) -> Tensor:
        """Send ``t[i]`` to group rank i; row i of the (P, ...) result came from rank i."""
        if self.world == 1:
            return t
        t = t.contiguous()
        n = nbytes(t)
        moved = n - n // self.world  # the row a rank keeps does not travel
        self.ledger.record("all_to_all", moved, moved)
        out = torch.empty_like(t)
        self._run("all_to_all", n, False, lambda: dist.all_to_all_single(out.view(-1), t.view(-1), group=self.group))
        return out

    def reduce_scatter(self, t: Tensor) -> Tensor:
        """Sum (P, *shape) ``t`` over ranks and keep slice ``rank``."""
        if self.world == 1:
            return t[0]
        t = t.contiguous()
        n = nbytes(t)
        self.ledger.record("reduce_scatter", n - n // self.world, n // self.world)
        out = torch.empty(t.shape[1:], dtype=t.dtype, device=t.device)
        self._run("reduce_scatter", n, False, lambda: reduce_scatter_flat(out.view(-1), t.view(-1),
                                                                           op=dist.ReduceOp.SUM, group=self.group))
        return out

    def ring_shift(self, tensors: list[Tensor], into: list[Tensor] | None = None, hops: int = 1) -> Pending:
        """Send each tensor to rank+hops and receive its peer's from rank-hops (into ``into``, else new buffers),
        asynchronously (``hops`` a multiple of P: the tensors stay, nothing moves)."""
        return self.exchange([(list(tensors), hops, into)])

    def exchange(self, streams: list[tuple[list[Tensor], int, list[Tensor] | None]]) -> Pending:
        """Point-to-point streams posted together, asynchronously: for each ``(tensors, d, into)`` send
        ``tensors`` to rank+d and receive the same shapes from rank-d into ``into`` (new buffers if None).
        ``wait()`` returns every stream's received tensors, concatenated in order.

        Messages to one peer are posted in stream order on every rank, so they match. The operation's
        size for the cost model is the bytes sent to the busiest peer: the two directions of a link
        carry traffic at once, so a bidirectional step costs one direction's bytes, not both.
        """
        if self.world == 1:
            return Pending([], [t for ts, _, _ in streams for t in ts])
        ops, recvs, sends, to_peer, messages = [], [], [], {}, []
        for tensors, d, into in streams:
            if d % self.world == 0:  # to itself: nothing moves
                recvs += list(tensors)
                continue
            dst, src = self._global((self.rank + d) % self.world), self._global((self.rank - d) % self.world)
            for i, t in enumerate(tensors):
                t = t.contiguous()
                r = torch.empty_like(t) if into is None else into[i]
                self.ledger.record("send", nbytes(t), 0)
                self.ledger.record("recv", 0, nbytes(t))
                ops += [(dist.isend, t, dst), (dist.irecv, r, src)]
                recvs.append(r)
                sends.append(t)
                to_peer[dst] = to_peer.get(dst, 0) + nbytes(t)
                if self.traced:  # off the hot path of a real call
                    messages += [("send", dst, nbytes(t)), ("recv", src, nbytes(t))]
        if not ops:
            return Pending([], recvs)
        post = lambda: dist.batch_isend_irecv([dist.P2POp(f, t, peer, self.group) for f, t, peer in ops])  # noqa: E731
        return Pending(self._run("sendrecv", max(to_peer.values()), True, post, p2p=tuple(messages)), recvs, sends)
