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

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from bench.collectives import busbw_factor  # nccl-tests' factors, one definition for benchmark and model


def hops(op: str, p: int) -> float:
    """Latency steps of one operation on ``p`` ranks.

    all_gather/reduce_scatter are rings (P-1 steps). all_reduce takes a tree's
    latency (2 log2 P: NCCL/RCCL switch small messages to trees, gloo to
    halving-doubling) with the ring's bandwidth term; a ring's 2(P-1) steps
    would make thousands of small LSE all-reduces cost seconds each.
    broadcast/reduce are trees (log2 P); NCCL runs them as a pipelined chain
    whose latency grows with P, so at thousands of ranks this is optimistic.
    """
    if op == "sendrecv":
        return 1.0
    log_p = math.ceil(math.log2(p))
    if op in ("broadcast", "reduce"):
        return log_p
    if op == "all_reduce":
        return 2 * log_p
    return p - 1


@dataclass
class Link:
    alpha_s: float  # latency per hop
    bw_GBps: float  # bus bandwidth


@dataclass
class Machine:
    name: str
    source: str  # "published" or "fitted from ..."
    flops_per_s: float  # attention throughput of one rank alone on its device (or core)
    intra: dict[str, Link]  # op (or "default") -> link within a node
    inter: dict[str, Link] = field(default_factory=dict)  # across nodes
    cores_per_node: int | None = None  # CPU ranks share cores: throughput x min(1, cores / ranks per node)

    def link(self, op: str, nodes: int) -> Link:
        table = self.inter if nodes > 1 and self.inter else self.intra
        return table.get(op) or table["default"]

    def comm_s(self, op: str, nbytes: int, p: int, nodes: int = 1) -> float:
        if p == 1:
            return 0.0
        lk = self.link(op, nodes)
        return hops(op, p) * lk.alpha_s + nbytes * busbw_factor(op, p) / (lk.bw_GBps * 1e9)

    def rank_flops(self, p: int, nodes: int) -> float:
        share = 1.0 if not self.cores_per_node else min(1.0, self.cores_per_node / max(1, p // max(1, nodes)))
        return self.flops_per_s * share


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


@functools.lru_cache(maxsize=512)
def _traces(algorithm, causal, p, ranks, batch, seq, heads, kv_heads, head_dim, dtype, backward) -> tuple:
    """The sampled ranks' schedules; cached because tracing dominates and a schedule does not depend on the
    machine (the planner and `analysis predict` ask for the same configurations)."""
    import torch

    from ringx.schedule import trace

    return tuple(trace(algorithm, causal, p, r, batch=batch, seq=seq, heads=heads, kv_heads=kv_heads,
                       head_dim=head_dim, dtype=getattr(torch, dtype), backward=backward) for r in ranks)


def predict(algorithm: str, causal: bool, mode: str, p: int, machine: Machine, *, nodes: int = 1, batch: int = 1,
            seq: int, heads: int, kv_heads: int, head_dim: int, dtype: str = "bfloat16",
            exact_ranks: int = 64) -> Prediction:
    """Predicted time of one call of ``algorithm`` (mode "fwd" or "fwd+bwd") on ``p`` ranks."""
    traces = _traces(algorithm, bool(causal), p, tuple(sample_ranks(p, exact_ranks)), batch, seq, heads, kv_heads,
                     head_dim, dtype, mode == "fwd+bwd")
    fwd = simulate([t.forward for t in traces], machine, p, nodes)
    if mode == "fwd":
        return fwd
    bwd = simulate([t.backward for t in traces], machine, p, nodes)
    return Prediction(*(a + b for a, b in zip(vars(fwd).values(), vars(bwd).values())))


# ------------------------------------------------------------------------------------------ calibration


def fit_links(coll):
    """Per op: alpha and bandwidth by least squares on relative error over all sizes and rank counts."""
    import pandas as pd

    ok = coll[(coll["kind"] == "collective") & (coll["status"] == "ok") & (coll["world_size"] > 1)]
    links, rows = {}, []
    for op, g in ok.groupby("op"):
        p = g["world_size"].astype(int).to_numpy()
        x = np.column_stack([[hops(op, q) for q in p],
                             g["bytes"].astype(float).to_numpy() * np.array([busbw_factor(op, q) for q in p])])
        t = g["median_s"].to_numpy()
        w = 1.0 / t
        (alpha, inv_bw), *_ = np.linalg.lstsq(x * w[:, None], t * w, rcond=None)
        alpha, inv_bw = max(alpha, 0.0), max(inv_bw, 1e-15)
        links[op] = Link(alpha, 1.0 / inv_bw / 1e9)
        rel = np.abs(x @ np.array([alpha, inv_bw]) - t) / t
        rows.append({"op": op, "alpha_us": alpha * 1e6, "bw_GBps": 1.0 / inv_bw / 1e9, "points": len(t),
                     "median_rel_err": float(np.median(rel)), "worst_rel_err": float(np.max(rel))})
    if not links:
        raise ValueError("no multi-rank collective records to fit (run `python -m bench collectives`)")
    links["default"] = Link(float(np.median([lk.alpha_s for lk in links.values()])),
                            float(np.median([lk.bw_GBps for lk in links.values()])))
    return links, pd.DataFrame(rows)


def fit_throughput(att) -> float:
    """Per-rank attention FLOP/s from single-rank records (traced FLOPs / median time)."""
    one = att[(att["kind"] == "attention") & (att["status"] == "ok") & (att["world_size"] == 1)]
    if one.empty:
        raise ValueError("no single-rank attention records to fit throughput (run the campaign at 1 rank too)")
    rates = [exact_flops(r) / r["median_s"] for _, r in one.iterrows()]
    return float(np.median(rates))


def exact_flops(r) -> float:
    """FLOPs of one call counted pair by pair (the convention the traced blocks use)."""
    b, s, h, d = int(r["batch"]), int(r["seq"]), int(r["heads"]), int(r["head_dim"])
    pairs = s * (s + 1) / 2 if bool(r["causal"]) else s * s
    return 4.0 * b * h * d * pairs * (3.5 if r["mode"] == "fwd+bwd" else 1.0)


def calibrate(df, name: str, cores_per_node: int | None = None):
    """(fitted Machine, fit table) from a campaign's collectives and single-rank attention records."""
    links, fit = fit_links(df)
    return Machine(name, f"fitted from {name}", fit_throughput(df), links, {}, cores_per_node), fit


def machine_from_profile(prof) -> Machine:
    """The published machine description in a profile's [model] table."""
    m = getattr(prof, "model", None) or {}
    if not m:
        raise ValueError(f"profile {prof.name} has no [model] table")
    intra = {"default": Link(**m["intra"])}
    inter = {"default": Link(**m["inter"])} if "inter" in m else {}
    return Machine(prof.name, m.get("source", "published"), float(m["flops_per_s"]), intra, inter,
                   m.get("cores_per_node"))


# ------------------------------------------------------------------------------------------ use


def validate(df, machine: Machine):
    """Predicted vs measured median for every ok attention configuration of a campaign."""
    import pandas as pd

    from .metrics import summarize

    s = summarize(df)
    rows = []
    for _, r in s.iterrows():
        if r["family"] == "external":
            continue
        pred = predict(r["algorithm"], bool(r["causal"]), r["mode"], int(r["world_size"]), machine,
                       nodes=int(r["nodes"]), batch=int(r["batch"]), seq=int(r["seq"]), heads=int(r["heads"]),
                       kv_heads=int(r["kv_heads"]), head_dim=int(r["head_dim"]), dtype=r["dtype"])
        rows.append({"algorithm": r["algorithm"], "world_size": int(r["world_size"]), "seq": int(r["seq"]),
                     "causal": bool(r["causal"]), "mode": r["mode"], "measured_s": r["median_s"],
                     "predicted_s": pred.total_s, "compute_s": pred.compute_s, "imbalance_s": pred.imbalance_s,
                     "exposed_comm_s": pred.exposed_comm_s})
    out = pd.DataFrame(rows)
    out["rel_err"] = (out["predicted_s"] - out["measured_s"]).abs() / out["measured_s"]
    return out


def error_summary(v):
    """Median and worst relative error per algorithm."""
    import pandas as pd

    g = v.groupby("algorithm")["rel_err"]
    return pd.DataFrame({"points": g.size(), "median_rel_err": g.median(), "worst_rel_err": g.max()}).reset_index()


def speedup_curve(machine: Machine, algorithms: list[str], ranks: list[int], *, seq: int, gpus_per_node: int,
                  baseline: str = "ring", causal: bool = True, mode: str = "fwd+bwd", heads: int = 32,
                  kv_heads: int = 8, head_dim: int = 128, dtype: str = "bfloat16"):
    """Predicted speedup over the baseline at a fixed global sequence for growing rank counts."""
    import pandas as pd

    rows = []
    for p in ranks:
        nodes = max(1, p // gpus_per_node)
        times = {a: predict(a, causal, mode, p, machine, nodes=nodes, seq=seq, heads=heads, kv_heads=kv_heads,
                            head_dim=head_dim, dtype=dtype, exact_ranks=16)
                 for a in dict.fromkeys([baseline, *algorithms])}
        for a in algorithms:
            rows.append({"algorithm": a, "ranks": p, "nodes": nodes, "predicted_s": times[a].total_s,
                         "speedup": times[baseline].total_s / times[a].total_s})
    return pd.DataFrame(rows)
