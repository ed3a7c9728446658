"""How long each job of a sweep takes: what its time limit and the plan's figures come from."""

from __future__ import annotations

from ringx_costmodel.machine import from_table
from ringx_costmodel.predict import predict

from .sweep import Job, Sweep


def call_seconds(sw: Sweep, job: Job, p) -> float:
    """One call's time: the cost model where the profile describes the machine and knows the points (attention),
    else compute-bound: FLOPs per rank / (peak x efficiency)."""
    prof = sw.profile
    if prof.model and sw.kind.predicts:
        ext = sw.external.get(p.algorithm)  # a plugin is sized as the built-in whose buffers it says it holds
        return predict(ext.memory_like if ext else p.algorithm, p.causal, p.mode, job.ranks,
                       from_table(prof.name, prof.model), nodes=job.nodes,
                       batch=p.batch, seq=p.seq, heads=p.heads, kv_heads=p.kv_heads, head_dim=p.head_dim,
                       dtype=p.dtype, exact_ranks=8, mask=p.the_mask() if p.mask else None).total_s
    rate = max(prof.peak_tflops * prof.efficiency, 1e-6) * 1e12
    return sw.kind.flops(p) / job.ranks / rate


def estimate(sw: Sweep, job: Job, points: list) -> float:
    """Seconds a job needs: its launches' start-up, the preflight, then per point and repeat its calls, plus a
    fixed cost per point.

    A job launches its driver's commands (``bench run``, or one ``bench model`` per model configuration), after
    ``bench preflight`` where the scheduler checks allocations, each paying ``startup_s + startup_per_rank_s x
    ranks`` (imports from a parallel filesystem and the rendezvous grow with the rank count); the preflight's
    checks take ``preflight_s``. It only grows with the work (more points, longer sequences, more iterations) and
    with the ranks.
    """
    b, prof = sw.bench, sw.profile
    calls = b["warmup"] + b["iters"] + 1 + (3 if b["check"] else 0)
    cache = sw._call_s
    work = 0.0
    for p in points:
        key = (job.nodes, job.ranks, p)
        if key not in cache:
            cache[key] = call_seconds(sw, job, p)
        work += cache[key] * calls + prof.per_point_s
    pre = sw.scheduler.preflight
    launches = len(sw.kind.commands(points, "")) + (1 if pre else 0)
    return launches * prof.startup(job.ranks) + (prof.preflight_s if pre else 0.0) + work * b["repeats"]
