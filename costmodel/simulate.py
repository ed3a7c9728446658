"""A cost model for every algorithm: predicted time, and why, from the traced schedule.

Schedule: ``ringx.schedule.trace`` gives, per rank, the blocks' FLOPs and the
communication operations in order (checked byte-exact against real ledgers).

Machine: per-rank attention throughput (FLOP/s, with ranks sharing a node's
cores when there are more ranks than cores), and per operation a latency and a
bus bandwidth, within a node and across nodes. An operation of size n on P
ranks costs hops(P) x alpha + n x busbw_factor(P) / bandwidth, with nccl-tests'
factors and hops P-1 for all_gather/reduce_scatter, 2 log2 P for all_reduce
(a tree's latency), log2 P for broadcast/reduce, 1 for the ring exchange.

Simulation: every rank walks its events with its own clock; the k-th
collective starts when the last rank posts it and the previous one has ended
(a communicator runs its operations one at a time, as NCCL's stream does, so
double-buffered transfers share the link rather than each having it whole); a
blocking one holds every rank until it ends, an asynchronous one runs beside
compute until waited for.
Predicted time = the slowest rank's clock. Breakdown: compute (mean over
ranks), imbalance (slowest rank's compute minus the mean), exposed
communication (the rest).

Compute: per block, the kernel throughput measured at that block length and mask (bench kernels),
with as many ranks of the node computing at once when measured so (interference through memory);
otherwise one number. CPU ranks bound to one core each cannot run a transfer beside a block
(``Machine.overlaps``): there asynchronous operations are costed as blocking.

Known to be wrong: bandwidth is one number per level, op and rank count (no congestion, topology or
message-size protocol switches); NCCL kernels sharing SMs with attention is not modelled; copies
that rearrange tensors around a collective (ringX3's O(S) gather and reduce-scatter buffers) cost
nothing here, and that is ringX3's error on CPU ranks; beyond ``exact_ranks`` ranks a sample of
ranks is simulated, which is exact for balanced schedules and may miss the slowest rank of
unbalanced ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from .machine import Machine


@dataclass
class Prediction:
    total_s: float
    compute_s: float  # mean over ranks
    imbalance_s: float  # slowest rank's compute - mean
    exposed_comm_s: float  # total - slowest rank's compute


def simulate(events_per_rank: list[list], machine: Machine, p: int, nodes: int,
             ranks: list[int] | None = None) -> Prediction:
    """Replay each rank's events (see module doc); ``events_per_rank`` may be a sample of the P ranks
    (``ranks`` names them; default 0..n-1).

    A collective is identified by its group and the members' running index: a sub-group operation (of a
    hierarchical schedule) waits for its sampled members only, costs the link its members span, and runs on
    its own communicator (sub-groups are separate communicators, so their operations do not queue behind
    each other's).
    """
    n = len(events_per_rank)
    ranks = list(range(n)) if ranks is None else ranks
    clock, pos = [0.0] * n, [0] * n
    compute = [0.0] * n
    posted: dict[tuple, list[float]] = {}
    finish: dict[tuple, float] = {}
    channel_free: dict[int, float] = {}  # per communicator: one operation at a time, in posting order
    mine: list[dict[int, tuple]] = [{} for _ in range(n)]  # per rank: its op index -> collective key
    waiting = [None] * n  # key of the blocking collective a rank is held in
    sampled = set(ranks)
    ids: dict[tuple, int] = {}  # group -> a small id (hashing a 4096-rank tuple per operation costs more than it)
    groups: dict[int, tuple[int, int]] = {}  # id(group tuple) -> (its id, how many sampled ranks it has)
    keep: list[tuple] = []
    share = machine.core_share(p, nodes)
    busy = max(1, p // max(1, nodes))  # ranks of a node computing at once
    overlap = machine.overlaps(p, nodes)
    while True:
        moved = False
        for r in range(n):
            evs = events_per_rank[r]
            while pos[r] < len(evs):
                e = evs[pos[r]]
                if waiting[r] is not None:
                    if waiting[r] not in finish:
                        break
                    clock[r] = max(clock[r], finish[waiting[r]])
                    waiting[r] = None
                    pos[r] += 1
                    moved = True
                    continue
                if e.kind == "compute":
                    rate = machine.block_rate(e.op, getattr(e, "causal", False), getattr(e, "seq_q", 0),
                                              getattr(e, "seq_k", 0), busy)
                    dt = e.flops / (rate * share)
                    clock[r] += dt
                    compute[r] += dt
                elif e.kind == "wait":
                    key = mine[r][e.index]
                    if key not in finish:
                        break
                    clock[r] = max(clock[r], finish[key])
                else:
                    group = getattr(e, "group", ()) or ()
                    known = groups.get(id(group))  # the same tuple object for a rank's every op in its group
                    if known is None:
                        gid = ids.setdefault(group, len(ids))
                        known = groups[id(group)] = (gid, len(sampled.intersection(group)) if group else n)
                        keep.append(group)  # ids stay valid while the group is alive
                    gid, need = known
                    key = (gid, e.index)
                    mine[r][e.index] = key
                    posted.setdefault(key, []).append(clock[r])
                    if len(posted[key]) == need:
                        size, span = (len(group), getattr(e, "nodes", 0) or 1) if group else (p, nodes)
                        start = max(max(posted[key]), channel_free.get(gid, 0.0))
                        finish[key] = channel_free[gid] = start + machine.comm_s(e.op, e.nbytes, size, span)
                    if e.blocking or not overlap:
                        waiting[r] = key
                        moved = True
                        continue
                pos[r] += 1
                moved = True
        if all(pos[r] == len(events_per_rank[r]) for r in range(n)):
            break
        if not moved:
            raise RuntimeError("schedule simulation made no progress (ranks disagree on their collectives)")
    total = max(clock)
    mean_c, max_c = sum(compute) / n, max(compute)
    return Prediction(total, mean_c, max_c - mean_c, max(0.0, total - max_c))


def sample_ranks(p: int, exact_ranks: int) -> list[int]:
    if p <= exact_ranks:
        return list(range(p))
    k = max(2, exact_ranks // 8)
    return sorted({round(i * (p - 1) / (k - 1)) for i in range(k)})


def simulate_call(forward: list[list], backward: list[list] | None, machine: Machine, p: int, nodes: int,
                  ranks: list[int] | None = None) -> Prediction:
    """One call: the forward's events replayed, then the backward's (None: a forward-only call), the two
    predictions summed field by field."""
    fwd = simulate(forward, machine, p, nodes, ranks)
    if backward is None:
        return fwd
    bwd = simulate(backward, machine, p, nodes, ranks)
    return Prediction(*(a + b for a, b in zip(vars(fwd).values(), vars(bwd).values())))

