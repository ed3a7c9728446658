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

Known to be wrong: communication never slows compute (on CPUs gloo shares the
cores; on GPUs NCCL kernels share SMs); bandwidth is one number per level and
op (no congestion, topology or message-size protocol switches); compute
throughput is one number (small blocks run below it); beyond ``exact_ranks``
ranks a sample of ranks is simulated, which is exact for balanced schedules
and may miss the slowest rank of unbalanced ones.
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


def simulate(events_per_rank: list[list], machine: Machine, p: int, nodes: int) -> Prediction:
    """Replay each rank's events (see module doc); ``events_per_rank`` may be a sample of the P ranks."""
    n = len(events_per_rank)
    clock, pos = [0.0] * n, [0] * n
    compute = [0.0] * n
    posted: dict[int, list[float]] = {}
    finish: dict[int, float] = {}
    channel_free = 0.0  # one communicator runs its operations one at a time, in posting order
    waiting = [None] * n  # index of the blocking collective a rank is held in
    flops = machine.rank_flops(p, nodes)
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
                    dt = e.flops / flops
                    clock[r] += dt
                    compute[r] += dt
                elif e.kind == "wait":
                    if e.index not in finish:
                        break
                    clock[r] = max(clock[r], finish[e.index])
                else:
                    posted.setdefault(e.index, []).append(clock[r])
                    if len(posted[e.index]) == n:
                        start = max(max(posted[e.index]), channel_free)
                        finish[e.index] = channel_free = start + machine.comm_s(e.op, e.nbytes, p, nodes)
                    if e.blocking:
                        waiting[r] = e.index
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
