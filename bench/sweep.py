"""``python -m bench sweep COMMAND FILE``: a campaign of jobs from one sweep file.

Commands:
  plan      the jobs, their points and an estimated duration of each
  render    write the job scripts and point lists into the campaign directory
  submit    render, then sbatch one job per (nodes, ranks per node); --dry-run prints instead
  local     run the same jobs here with mpiexec (no scheduler)
  status    per job and point: done, failed, running, pending or missing
  resubmit  submit only what is missing (--failed: failed points too)

The sweep file (TOML) names the campaign, a machine profile (jobs/profiles),
node counts and ranks per node, and the benchmark parameters. A parameter
given as a list is crossed with the others, unless `zip` groups it with
others of equal length; `exclude` rules drop the points they match:

  campaign = "scaling"
  machine = "frontier"                 # or a path to a profile .toml
  nodes = [1, 2, 4]
  ranks_per_node = 8                   # default: the profile's GPUs per node
  account = "abc123"                   # optional: partition, qos, out (default results), tag
  zip = [["seq", "heads"]]             # pair these lists element-wise instead of crossing them
  [bench]                              # warmup, iters, repeats, check, check_max_seq, timeout, kernel,
                                       #   peak_tflops
  iters = 10
  [params]                             # algorithms, seq or seq_per_rank, batch, heads, kv_heads,
  algorithms = ["ring", "ringx4"]      #   head_dim, dtype, causal, mode
  seq = [65536, 131072]
  heads = [32, 64]
  causal = [true, false]
  [[exclude]]                          # drop points matching every key given
  algorithms = "ringx2"
  causal = false
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench import jobs
from bench.points import Point, make_point, record_config
from bench.store import Store, config_key, now

TOP = {"campaign", "machine", "nodes", "ranks_per_node", "account", "partition", "qos", "out", "tag", "time_margin",
       "bench", "params", "zip", "exclude"}
BENCH = {"warmup": 2, "iters": 10, "repeats": 1, "check": False, "check_max_seq": 2048, "timeout": 300.0,
         "kernel": None, "peak_tflops": None}
PARAMS = {"algorithms", "seq", "seq_per_rank", "batch", "heads", "kv_heads", "head_dim", "dtype", "causal", "mode"}


class SweepError(ValueError):
    """A problem with the sweep file, reported before anything is submitted."""


def _unknown(keys, valid, where: str) -> None:
    for k in keys:
        if k not in valid:
            near = difflib.get_close_matches(k, sorted(valid), n=1)
            raise SweepError(f"unknown key {k!r} in {where}" + (f"; did you mean {near[0]!r}?" if near else ""))


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def expand(params: dict, zips: list[list[str]], excludes: list[dict]) -> list[dict]:
    """Point dicts: lists crossed, zipped groups paired, excluded combinations dropped."""
    params = {("algorithm" if k == "algorithms" else k): v for k, v in params.items()}
    zips = [["algorithm" if k == "algorithms" else k for k in g] for g in zips]
    zipped = {k for g in zips for k in g}
    for g in zips:
        for k in g:
            if k not in params:
                raise SweepError(f"zip names {k!r}, which is not a parameter of this sweep")
        lengths = {len(_as_list(params[k])) for k in g}
        if len(lengths) != 1:
            raise SweepError(f"zip group {g} needs lists of equal length, got lengths {sorted(lengths)}")
    axes = [[{k: v} for v in _as_list(params[k])] for k in params if k not in zipped]
    axes += [[dict(zip(g, vals)) for vals in zip(*(_as_list(params[k]) for k in g))] for g in zips]
    points = []
    for combo in itertools.product(*axes):
        d = {}
        for part in combo:
            d |= part
        if not any(all(d.get("algorithm" if k == "algorithms" else k) in _as_list(v) for k, v in rule.items())
                   for rule in excludes):
            points.append(d)
    return points


@dataclass
class Job:
    nodes: int
    ranks_per_node: int
    points: list[Point]
    estimate_s: float = 0.0

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def name(self) -> str:
        return f"N{self.nodes}x{self.ranks_per_node}"


@dataclass
class Sweep:
    path: Path
    campaign: str
    profile: jobs.Profile
    jobs: list[Job]
    bench: dict
    out: Path
    account: str = ""
    partition: str = ""
    qos: str = ""
    tag: str | None = None
    time_margin: float = 2.0
    _call_s: dict = field(default_factory=dict, init=False, repr=False)  # estimate's cache per (job, point)

    def limit_s(self, estimate_s: float) -> float:
        """A job's time limit: the estimate times the margin, plus 5 minutes of slack."""
        return estimate_s * self.time_margin + 300

    @property
    def store(self) -> Store:
        return Store(self.out, self.campaign)

    @property
    def dir(self) -> Path:
        return self.out / self.campaign / "sweep"

    def keys(self, job: Job) -> dict[str, Point]:
        """Record key -> point, for every point and repeat of a job (as bench run will write them)."""
        b = self.bench
        return {config_key(record_config(pt, job.ranks, job.nodes, rep, b["kernel"], b["warmup"], b["iters"])): pt
                for pt in job.points for rep in range(b["repeats"])}


def load(path: str | Path, account: str = "", partition: str = "", qos: str = "") -> Sweep:
    """Parse and validate a sweep file; every impossible point is reported before anything runs."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise SweepError(f"{path} is not valid TOML: {e}") from None
    params = dict(raw.get("params", {}))
    zips = raw.get("zip", []) + params.pop("zip", [])  # TOML puts a zip written after [params] inside it
    _unknown(raw, TOP, path.name)
    _unknown(raw.get("bench", {}), BENCH, f"[bench] of {path.name}")
    _unknown(params, PARAMS, f"[params] of {path.name}")
    for rule in raw.get("exclude", []):
        _unknown(rule, PARAMS, f"[[exclude]] of {path.name}")
    for k in ("campaign", "machine", "nodes"):
        if k not in raw:
            raise SweepError(f"{path.name} needs {k!r}")
    campaign = str(raw["campaign"])
    try:
        jobs.sbatch_value("campaign", campaign)
        profile = jobs.load_profile(str(raw["machine"]))
    except ValueError as e:
        raise SweepError(str(e)) from None
    bench = BENCH | raw.get("bench", {})
    for k in ("warmup", "iters", "repeats"):
        if not isinstance(bench[k], int) or bench[k] < (0 if k == "warmup" else 1):
            raise SweepError(f"[bench] {k} must be a{' non-negative' if k == 'warmup' else ' positive'} integer")
    if bench["peak_tflops"] is None and profile.peak_tflops:
        bench["peak_tflops"] = profile.peak_tflops
    nodes = _as_list(raw["nodes"])
    rpns = _as_list(raw.get("ranks_per_node", profile.gpus_per_node or None))
    if rpns == [None]:
        raise SweepError(f"machine {profile.name} has no GPUs per node: give ranks_per_node")
    problems = []
    for n in nodes + rpns:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            problems.append(f"node counts and ranks_per_node must be positive integers, got {n!r}")
    for r in rpns:
        if profile.gpus_per_node and isinstance(r, int) and r > profile.gpus_per_node:
            problems.append(f"ranks_per_node {r} exceeds the {profile.gpus_per_node} GPUs per node of "
                            f"{profile.name} (one rank per GPU)")
    if problems:
        raise SweepError("; ".join(dict.fromkeys(problems)))
    dicts = expand(params, zips, raw.get("exclude", []))
    if not dicts:
        raise SweepError("the sweep has no points (every combination is excluded?)")
    sweep_jobs = []
    for n in nodes:
        for r in rpns:
            pts = []
            for d in dicts:
                try:
                    pts.append(make_point(d, n * r))
                except ValueError as e:
                    problems.append(f"{n} node(s) x {r} ranks, point {json.dumps(d)}: {e}")
            sweep_jobs.append(Job(n, r, pts))
    if problems:
        raise SweepError(f"{len(problems)} impossible point(s):\n  " + "\n  ".join(problems))
    sw = Sweep(path, campaign, profile, sweep_jobs, bench, Path(raw.get("out", "results")),
               account or raw.get("account", ""), partition or raw.get("partition", ""), qos or raw.get("qos", ""),
               raw.get("tag"), float(raw.get("time_margin", 2.0)))
    for j in sw.jobs:
        j.estimate_s = estimate(sw, j, j.points)
    return sw


def call_seconds(sw: Sweep, job: Job, p: Point) -> float:
    """One call's time: the cost model where the profile describes the machine, else compute-bound.

    Compute-bound: FLOPs per rank / (peak x efficiency).
    """
    prof = sw.profile
    if prof.model:
        from analysis.model import machine_from_profile, predict

        return predict(p.algorithm, p.causal, p.mode, job.ranks, machine_from_profile(prof), nodes=job.nodes,
                       batch=p.batch, seq=p.seq, heads=p.heads, kv_heads=p.kv_heads, head_dim=p.head_dim,
                       dtype=p.dtype, exact_ranks=8).total_s
    from bench.metrics import attention_flops

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
    b = sw.bench
    args = ["--points", str(points_file.resolve()), "--campaign", sw.campaign, "--out", str(sw.out.resolve()),
            "--warmup", str(b["warmup"]), "--iters", str(b["iters"]), "--repeats", str(b["repeats"]),
            "--timeout", str(b["timeout"])]
    if b["check"]:
        args += ["--check", "--check-max-seq", str(b["check_max_seq"])]
    if b["kernel"]:
        args += ["--kernel", b["kernel"]]
    if b["peak_tflops"]:
        args += ["--peak-tflops", str(b["peak_tflops"])]
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
    text = jobs.render(sw.profile, job_name=f"ringx-{sw.campaign}-{job.name}", nodes=job.nodes,
                       ranks_per_node=job.ranks_per_node, limit_s=sw.limit_s(estimate(sw, job, points)),
                       log_dir=(sw.dir / "logs").resolve(), workdir=mpirun.ROOT, python=sys.executable,
                       mpiexec=mpirun.mpiexec(), bench_args=bench_args(sw, pfile, retry_failed), account=sw.account,
                       partition=sw.partition, qos=sw.qos)
    script.write_text(text)
    script.chmod(0o755)
    return script


def manifest(sw: Sweep) -> dict:
    path = sw.dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"campaign": sw.campaign, "submissions": []}


def save_manifest(sw: Sweep, m: dict) -> None:
    sw.dir.mkdir(parents=True, exist_ok=True)
    (sw.dir / "manifest.json").write_text(json.dumps(m, indent=1) + "\n")


def point_states(sw: Sweep, env: dict | None = None) -> dict[str, list[tuple[Point, str]]]:
    """job name -> [(point, state)] with state done, failed, running, pending or missing."""
    recorded = sw.store.done()
    subs = manifest(sw)["submissions"]
    live: dict[str, str] = {}
    for s in subs:  # the latest submission of each job decides running/pending
        live[s["job"]] = s["job_id"]
    job_states = {name: jobs.job_state(jid, env) for name, jid in live.items()} if sw.profile.scheduler == "slurm" \
        else {}
    out = {}
    for job in sw.jobs:
        rows = []
        for key, pt in sw.keys(job).items():
            st = recorded.get(key)
            if st == "ok":
                rows.append((pt, "done"))
            elif st == "failed":
                rows.append((pt, "failed"))
            elif job_states.get(job.name) in ("RUNNING", "COMPLETING"):
                rows.append((pt, "running"))
            elif job_states.get(job.name) in ("PENDING", "CONFIGURING", "REQUEUED"):
                rows.append((pt, "pending"))
            else:
                rows.append((pt, "missing"))
        out[job.name] = rows
    return out


# ------------------------------------------------------------------------------------------------ commands


def cmd_plan(sw: Sweep, a) -> int:
    total = 0.0
    print(f"campaign {sw.campaign} on {sw.profile.name} ({sw.profile.description}) -> {sw.store.records_path}")
    for j in sw.jobs:
        total += j.estimate_s
        print(f"  job {j.name}: {j.nodes} node(s) x {j.ranks_per_node} = {j.ranks} ranks, {len(j.points)} points "
              f"x {sw.bench['repeats']} repeat(s), estimated {j.estimate_s / 60:.1f} min, time limit "
              f"{jobs.time_limit(sw.limit_s(j.estimate_s))}")
        if a.verbose:
            for p in j.points:
                print(f"    {p.algorithm:8s} seq={p.seq:<8d} {'causal' if p.causal else 'full':6s} {p.mode:8s} "
                      f"{p.dtype} b{p.batch} h{p.heads}/{p.kv_heads} d{p.head_dim}")
    print(f"total: {len(sw.jobs)} jobs, {sum(len(j.points) for j in sw.jobs)} points, "
          f"estimated {total / 3600:.2f} node-job hours of wall time")
    return 0


def cmd_render(sw: Sweep, a) -> int:
    for j in sw.jobs:
        print(write_job(sw, j, j.points))
    return 0


def _submit(sw: Sweep, pending: list[tuple[Job, list[Point], str]], dry_run: bool, retry: bool = False) -> int:
    m = manifest(sw)
    for job, pts, suffix in pending:
        script = write_job(sw, job, pts, suffix, retry)
        if dry_run:
            print(f"# would run: sbatch --parsable {script}  ({len(pts)} points)\n{script.read_text()}")
            continue
        jid = jobs.sbatch(script)
        m["submissions"].append({"job": job.name, "job_id": jid, "script": str(script), "points": len(pts),
                                 "submitted_at": now()})
        save_manifest(sw, m)
        print(f"submitted {job.name}: job {jid} ({len(pts)} points) -> {script}")
    return 0


def cmd_submit(sw: Sweep, a) -> int:
    if sw.profile.scheduler != "slurm":
        raise SweepError(f"machine {sw.profile.name} has no scheduler: use `bench sweep local`")
    return _submit(sw, [(j, j.points, "") for j in sw.jobs], a.dry_run)


def cmd_resubmit(sw: Sweep, a) -> int:
    states = point_states(sw)
    want = {"missing", "failed"} if a.failed else {"missing"}
    pending = []
    n = len(manifest(sw)["submissions"])
    for j in sw.jobs:
        pts = list(dict.fromkeys(p for p, s in states[j.name] if s in want))
        if pts:
            pending.append((j, pts, f"-r{n}"))
    if not pending:
        print("nothing to resubmit: every point is done" + ("" if a.failed else " or failed (add --failed)")
              + ", running or pending")
        return 0
    return _submit(sw, pending, a.dry_run, retry=a.failed)


def cmd_status(sw: Sweep, a) -> int:
    states = point_states(sw)
    subs = {s["job"]: s["job_id"] for s in manifest(sw)["submissions"]}
    width = max(len(j.name) for j in sw.jobs)
    for j in sw.jobs:
        rows = states[j.name]
        counts = {s: sum(1 for _, x in rows if x == s) for s in ("done", "failed", "running", "pending", "missing")}
        job = f"job {subs[j.name]}" if j.name in subs else "not submitted"
        print(f"{j.name:{width}s}  {job:18s} " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        if a.verbose:
            for p, s in rows:
                print(f"    {s:8s} {p.algorithm:8s} seq={p.seq} {'causal' if p.causal else 'full'} {p.mode}")
    return 0


def cmd_local(sw: Sweep, a) -> int:
    from bench import mpirun

    for j in sw.jobs:
        script = write_job(sw, j, j.points)
        print(f"[sweep local] {j.name}: {j.ranks} rank(s), {len(j.points)} points (~{j.estimate_s / 60:.1f} min)",
              flush=True)
        args = ["-m", "bench", "run", *bench_args(sw, sw.dir / "points" / f"{j.name}.json")]
        if a.quiet:
            args.append("--quiet")
        proc = mpirun.run(j.ranks, args, capture=False, env=sw.profile.env)
        if proc.returncode != 0:
            print(f"[sweep local] {j.name} failed (exit {proc.returncode}); its script: {script}", file=sys.stderr)
            return 1
    print(f"[sweep local] done -> {sw.store.records_path}")
    return 0


COMMANDS = {"plan": cmd_plan, "render": cmd_render, "submit": cmd_submit, "local": cmd_local, "status": cmd_status,
            "resubmit": cmd_resubmit}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=list(COMMANDS))
    p.add_argument("file", help="the sweep file (TOML)")
    p.add_argument("--dry-run", action="store_true", help="submit/resubmit: print scripts instead of submitting")
    p.add_argument("--failed", action="store_true", help="resubmit: failed points too, not only missing ones")
    p.add_argument("--account", default="", help="override the sweep file's / profile's account")
    p.add_argument("--partition", default="")
    p.add_argument("--qos", default="")
    p.add_argument("--verbose", "-v", action="store_true", help="plan/status: list every point")
    p.add_argument("--quiet", action="store_true", help="local: no per-record progress")
    a = p.parse_args(argv)
    try:
        sw = load(a.file, a.account, a.partition, a.qos)
        return COMMANDS[a.command](sw, a)
    except (SweepError, RuntimeError) as e:
        print(f"bench sweep {a.command}: error: {e}", file=sys.stderr)
        return 2
