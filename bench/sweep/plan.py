"""How long each job of a sweep takes, and the command line and script that run it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench import options
from bench.points import Point
from costmodel.machine import from_table
from costmodel.predict import predict
from ringx.flops import attention_flops

from . import slurm
from .spec import Job, Sweep


def call_seconds(sw: Sweep, job: Job, p: Point) -> float:
    """One call's time: the cost model where the profile describes the machine, else compute-bound.

    Compute-bound: FLOPs per rank / (peak x efficiency).
    """
    prof = sw.profile
    if prof.model:
        return predict(p.algorithm, p.causal, p.mode, job.ranks, from_table(prof.name, prof.model), nodes=job.nodes,
                       batch=p.batch, seq=p.seq, heads=p.heads, kv_heads=p.kv_heads, head_dim=p.head_dim,
                       dtype=p.dtype, exact_ranks=8).total_s
    rate = max(prof.peak_tflops * prof.efficiency, 1e-6) * 1e12
    return attention_flops(p.batch, p.seq, p.heads, p.head_dim, p.causal, p.mode) / job.ranks / rate


def estimate(sw: Sweep, job: Job, points: list[Point]) -> float:
    """Seconds a job needs: start-up, then per point and repeat its calls, plus a fixed cost per point.

    It only grows with the work (more points, longer sequences, more iterations).
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
    return prof.startup_s + work * b["repeats"]


def bench_args(sw: Sweep, points_file: Path, retry_failed: bool = False) -> list[str]:
    """``bench run``'s arguments for a job: its points file, the campaign and every setting, spelled out."""
    args = ["--points", str(points_file.resolve()), "--campaign", sw.campaign, "--out", str(sw.out.resolve()),
            *options.to_argv(sw.bench, keep_defaults=True)]
    if sw.tag:
        args += ["--tag", str(sw.tag)]
    if retry_failed:
        args.append("--retry-failed")
    return args


def write_job(sw: Sweep, job: Job, points: list[Point], suffix: str = "", retry_failed: bool = False) -> Path:
    """Write the points list and the script of one job (or a resubmission of part of it)."""
    from bench import mpirun

    for d in ("jobs", "points", "logs"):
        (sw.dir / d).mkdir(parents=True, exist_ok=True)
    pfile = sw.dir / "points" / f"{job.name}{suffix}.json"
    pfile.write_text(json.dumps([p.spec() for p in points], indent=1) + "\n")
    script = sw.dir / "jobs" / f"{job.name}{suffix}.sh"
    text = slurm.render(sw.profile, job_name=f"ringx-{sw.campaign}-{job.name}", nodes=job.nodes,
                       ranks_per_node=job.ranks_per_node, limit_s=sw.limit_s(estimate(sw, job, points)),
                       log_dir=(sw.dir / "logs").resolve(), workdir=mpirun.ROOT, python=sys.executable,
                       mpiexec=mpirun.mpiexec(), bench_args=bench_args(sw, pfile, retry_failed), account=sw.account,
                       partition=sw.partition, qos=sw.qos)
    script.write_text(text)
    script.chmod(0o755)
    return script
