"""The command lines and script of each job of a sweep, written into its campaign directory."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from ringx_drivers import options

from .estimate import estimate
from .profiles import expand
from .schedulers import JobShape
from .script import render
from .spec import needs, refuse
from .sweep import Job, Sweep, SweepError

__all__ = ["estimate", "job_commands", "render_job", "resolved_profile", "write_job", "write_jobs"]


def job_commands(sw: Sweep, points: list, points_file: Path, retry_failed: bool = False) -> list[list[str]]:
    """What a job runs, each the words after ``ringx-bench``: its driver's commands (kinds.py: ``run`` with its
    points file, or one ``model`` per model configuration), then the campaign and every setting, spelled out."""
    tail = ["--campaign", sw.campaign, "--out", str(sw.out.resolve()), *options.to_argv(sw.bench, keep_defaults=True)]
    if sw.tag:
        tail += ["--tag", str(sw.tag)]
    if retry_failed:
        tail.append("--retry-failed")
    return [[*cmd, *tail, *_plugin_flags(sw.plugins, cmd)] for cmd in sw.kind.commands(points,
                                                                                      str(points_file.resolve()))]


def _plugin_flags(specs: tuple[str, ...], cmd: list[str]) -> list[str]:
    """``--plugin`` with the sweep's plugins a command runs, imported by every rank on the compute nodes. A command
    that lists its algorithms gets only the plugins it names: a given plugin joins a command's candidates."""
    from ringx_suite.plugins import parse_spec

    named = cmd[cmd.index("--algorithms") + 1].split(",") if "--algorithms" in cmd else None
    mine = [s for s in specs if named is None or parse_spec(s)[0] in named]
    return ["--plugin", ",".join(mine)] if mine else []


def resolved_profile(sw: Sweep):
    """The sweep's profile with its stack's $VARS expanded (prefix, image, plugin): what a job script names. Every
    setting still missing is named in one error."""
    missing = needs(sw.profile, out_given=True)
    if missing:
        raise refuse(sw.profile, missing)
    st = sw.profile.stack
    st = replace(st, **{k: expand(getattr(st, k), f"[stack] {k}") for k in ("prefix", "image", "python",
                                                                             "plugin_path") if getattr(st, k)})
    return replace(sw.profile, stack=st)


def preflight_args(sw: Sweep, job: Job, points: list) -> list[str]:
    """``bench preflight``'s arguments for a job: its shape, the profile's GPUs and network, the sweep's dtypes
    and algorithms (what the points will run)."""
    prof = sw.profile
    args = ["--job", job.name, "--nodes", str(job.nodes), "--ranks-per-node", str(job.ranks_per_node),
            "--gpus-per-node", str(prof.gpus_per_node), "--device", sw.bench["device"],
            "--dtypes", ",".join(dict.fromkeys(p.dtype for p in points)),
            "--algorithms", ",".join(dict.fromkeys(p.algorithm for p in points if p.algorithm not in sw.external))
            or "ring",  # the selftest checks the machine with ours; a plugin is checked by the run's --check
            "--timeout", str(min(sw.bench["timeout"], 300.0))]
    if prof.network:
        args += ["--network", prof.network]
    return args


def render_job(sw: Sweep, job: Job, points: list, suffix: str = "",
               retry_failed: bool = False) -> dict[Path, str]:
    """The files of one job (or a resubmission of part of it), path -> text: its points list and its script."""
    from ringx_drivers import mpirun

    prof = resolved_profile(sw)
    pfile = sw.dir / "points" / f"{job.name}{suffix}.json"
    pre = prof.scheduler.preflight
    shape = JobShape(f"ringx-{sw.campaign}-{job.name}", job.nodes, job.ranks_per_node,
                     sw.limit_s(estimate(sw, job, points)), (sw.dir / "logs").resolve(),
                     sw.account or prof.account, sw.partition or prof.partition, sw.qos or prof.qos)
    text = render(prof, shape, suite=prof.stack.suite(sys.executable), mpiexec=mpirun.mpiexec(),
                  commands=job_commands(sw, points, pfile, retry_failed), job=job.name,
                  preflight_dir=(sw.dir / "preflight").resolve() if pre else None,
                  preflight_args=preflight_args(sw, job, points) if pre else [])
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
