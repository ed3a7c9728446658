"""How long each job of a sweep takes, and the command line and script that run it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from bench import options
from bench.points import step as step_points
from bench.points.attention import Point
from bench.points.step import StepPoint
from costmodel.machine import from_table
from costmodel.predict import predict
from ringx.flops import attention_flops

from . import slurm
from .spec import Job, Sweep, SweepError


def call_seconds(sw: Sweep, job: Job, p: Point | StepPoint) -> float:
    """One call's time: the cost model where the profile describes the machine, else compute-bound.

    Compute-bound: FLOPs per rank / (peak x efficiency). A training step (model point) is always compute-bound:
    the cost model knows attention only.
    """
    prof = sw.profile
    rate = max(prof.peak_tflops * prof.efficiency, 1e-6) * 1e12
    if isinstance(p, StepPoint):
        return step_points.step_flops(p) / job.ranks / rate
    if prof.model:
        return predict(p.algorithm, p.causal, p.mode, job.ranks, from_table(prof.name, prof.model), nodes=job.nodes,
                       batch=p.batch, seq=p.seq, heads=p.heads, kv_heads=p.kv_heads, head_dim=p.head_dim,
                       dtype=p.dtype, exact_ranks=8).total_s
    return attention_flops(p.batch, p.seq, p.heads, p.head_dim, p.causal, p.mode) / job.ranks / rate


def estimate(sw: Sweep, job: Job, points: list) -> float:
    """Seconds a job needs: its launches' start-up, the preflight, then per point and repeat its calls, plus a
    fixed cost per point.

    A Slurm job launches ``bench preflight``, then ``bench run`` (or one ``bench model`` per model
    configuration), each paying ``startup_s + startup_per_rank_s x ranks`` (imports from a parallel filesystem
    and the rendezvous grow with the rank count), and the preflight's checks take ``preflight_s``. It only grows
    with the work (more points, longer sequences, more iterations) and with the ranks.
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
    slurm_job = prof.scheduler == "slurm"
    runs = len(step_points.commands(points)) if sw.driver == "model" else 1
    launches = runs + (1 if slurm_job else 0)
    return launches * prof.startup(job.ranks) + (prof.preflight_s if slurm_job else 0.0) + work * b["repeats"]


def job_commands(sw: Sweep, points: list, points_file: Path, retry_failed: bool = False) -> list[list[str]]:
    """What a job runs, each the words after ``python -m bench``: ``bench run`` with its points file, or one
    ``bench model`` per model configuration (its sequences and algorithms listed); then the campaign and every
    setting, spelled out."""
    tail = ["--campaign", sw.campaign, "--out", str(sw.out.resolve()), *options.to_argv(sw.bench, keep_defaults=True)]
    if sw.tag:
        tail += ["--tag", str(sw.tag)]
    if retry_failed:
        tail.append("--retry-failed")
    if sw.driver == "model":
        return [[*cmd, *tail] for cmd in step_points.commands(points)]
    return [["run", "--points", str(points_file.resolve()), *tail]]


def resolved_profile(sw: Sweep):
    """The sweep's profile with its stack's $VARS expanded (prefix, image, plugin): what a job script names."""
    from dataclasses import replace

    from .profiles import expand
    from .spec import SweepError

    st = sw.profile.stack
    try:
        st = replace(st, **{k: expand(getattr(st, k), f"[stack] {k}") for k in ("prefix", "image", "python",
                                                                                 "plugin_path") if getattr(st, k)})
    except ValueError as e:
        raise SweepError(f"{e} (set it, or give [stack] {str(e).split()[1]} in the sweep file)") from None
    if sw.profile.network and sw.profile.gpu_runtime == "rocm" and not st.plugin_path:
        raise SweepError(f"machine {sw.profile.name}: RCCL needs the aws-ofi-rccl plugin for {sw.profile.network}: "
                         "give [stack] plugin_path (its lib/ directory) in the profile or the sweep file")
    return replace(sw.profile, stack=st)


def preflight_args(sw: Sweep, job: Job, points: list) -> list[str]:
    """``bench preflight``'s arguments for a job: its shape, the profile's GPUs and network, the sweep's dtypes
    and algorithms (what the points will run)."""
    prof = sw.profile
    args = ["--job", job.name, "--nodes", str(job.nodes), "--ranks-per-node", str(job.ranks_per_node),
            "--gpus-per-node", str(prof.gpus_per_node), "--device", sw.bench["device"],
            "--dtypes", ",".join(dict.fromkeys(p.dtype for p in points)),
            "--algorithms", ",".join(dict.fromkeys(p.algorithm for p in points)),
            "--timeout", str(min(sw.bench["timeout"], 300.0))]
    if prof.network:
        args += ["--network", prof.network]
    return args


def render_job(sw: Sweep, job: Job, points: list, suffix: str = "",
               retry_failed: bool = False) -> dict[Path, str]:
    """The files of one job (or a resubmission of part of it), path -> text: its points list and its script."""
    from bench import mpirun

    prof = resolved_profile(sw)
    pfile = sw.dir / "points" / f"{job.name}{suffix}.json"
    slurm_job = prof.scheduler == "slurm"
    text = slurm.render(prof, job_name=f"ringx-{sw.campaign}-{job.name}", nodes=job.nodes,
                        ranks_per_node=job.ranks_per_node, limit_s=sw.limit_s(estimate(sw, job, points)),
                        log_dir=(sw.dir / "logs").resolve(), workdir=mpirun.ROOT,
                        python=prof.stack.interpreter(sys.executable), mpiexec=mpirun.mpiexec(),
                        commands=job_commands(sw, points, pfile, retry_failed), account=sw.account,
                        partition=sw.partition, qos=sw.qos, job=job.name,
                        preflight_dir=(sw.dir / "preflight").resolve() if slurm_job else None,
                        preflight_args=preflight_args(sw, job, points) if slurm_job else [])
    return {pfile: json.dumps([p.spec() for p in points], indent=1) + "\n",
            sw.dir / "jobs" / f"{job.name}{suffix}.sh": text}


def write_jobs(sw: Sweep, jobs: list[tuple[Job, list, str]], retry_failed: bool = False) -> list[Path]:
    """Render every job first, then write them all: a value that cannot be rendered leaves nothing behind, and
    neither does a write that fails (the directories this call made are removed)."""
    try:
        files = [render_job(sw, job, pts, suffix, retry_failed) for job, pts, suffix in jobs]
    except ValueError as e:
        raise SweepError(str(e)) from None
    made = [d for d in (*reversed(sw.dir.parents), sw.dir, *(sw.dir / d for d in ("jobs", "points", "logs")))
            if not d.exists()]
    try:
        for d in made:
            d.mkdir(parents=True, exist_ok=True)
        for job_files in files:
            for path, text in job_files.items():
                path.write_text(text)
                if path.suffix == ".sh":
                    path.chmod(0o755)
    except OSError as e:
        for d in reversed(made):
            shutil.rmtree(d, ignore_errors=True)
        raise SweepError(f"cannot write the jobs of {sw.campaign} under {sw.dir}: {e.strerror or e}") from None
    return [next(p for p in f if p.suffix == ".sh") for f in files]


def write_job(sw: Sweep, job: Job, points: list, suffix: str = "", retry_failed: bool = False) -> Path:
    """Write one job's points list and script."""
    return write_jobs(sw, [(job, points, suffix)], retry_failed)[0]
