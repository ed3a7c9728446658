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
  machine = "frontier"                 # a profile of jobs/profiles (elsewhere: --profile PATH)
  nodes = [1, 2, 4]
  ranks_per_node = 8                   # default: the profile's GPUs per node
  account = "abc123"                   # optional: partition, qos, out (default runs), tag
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

With `driver = "model"` the points are training steps (`bench model`): [params]
takes the model's options (preset, arch, layers, d_model, heads, kv_heads, mlp,
vocab, patch_dim, rope_theta, dtype, checkpoint) and algorithms, seq or
seq_per_rank and batch; a job runs one `bench model` per model configuration
(jobs/sweeps/model-demo.toml).
"""

from __future__ import annotations

import sys

from bench.points.attention import Point
from bench.points.step import StepPoint
from ringx_suite.cli import Parser, UserError
from ringx_suite.cli import main as cli_main
from ringx_suite.store import now

from . import slurm
from .plan import job_commands, write_jobs
from .spec import Job, Sweep, SweepError, load
from .state import manifest, point_states, preflight_state, save_manifest


def cmd_plan(sw: Sweep, a) -> int:
    total = 0.0
    print(f"campaign {sw.campaign} on {sw.profile.name} ({sw.profile.description}) -> {sw.store.records_path}")
    mem = {j.ranks_per_node: sw.profile.memory_per_rank(j.ranks_per_node) for j in sw.jobs}
    print("memory per rank: " + (", ".join(f"{m / 2**30:.1f} GiB at {r} rank(s) per node" for r, m in mem.items())
                                 + " (every point's estimate fits)" if all(mem.values()) else
                                 "not checked (the profile gives no memory_gb)"))
    for j in sw.jobs:
        total += j.estimate_s
        print(f"  job {j.name}: {j.nodes} node(s) x {j.ranks_per_node} = {j.ranks} ranks, {len(j.points)} points "
              f"x {sw.bench['repeats']} repeat(s), estimated {j.estimate_s / 60:.1f} min, time limit "
              f"{slurm.time_limit(sw.limit_s(j.estimate_s))}")
        if a.verbose:
            for p in j.points:
                print(f"    {describe(p)}")
    print(f"total: {len(sw.jobs)} jobs, {sum(len(j.points) for j in sw.jobs)} points, "
          f"estimated {total / 3600:.2f} node-job hours of wall time")
    return 0


def describe(p: Point | StepPoint) -> str:
    """A point on one line, for plan and status."""
    if isinstance(p, StepPoint):
        return p.describe()
    return (f"{p.algorithm:8s} seq={p.seq:<8d} {'causal' if p.causal else 'full':6s} {p.mode:8s} {p.dtype} b{p.batch} "
            f"h{p.heads}/{p.kv_heads} d{p.head_dim}")


def check_stack(sw: Sweep, a) -> None:
    """Refuse (one line) a stack whose torch cannot use the profile's GPUs, unless --allow-cpu-python."""
    from .plan import resolved_profile
    from .stack import check

    prof = resolved_profile(sw)
    try:
        note = check(prof, prof.stack.interpreter(sys.executable), getattr(a, "allow_cpu_python", False))
    except ValueError as e:
        raise SweepError(str(e)) from None
    if note:
        print(f"bench sweep {a.command}: {note}", file=sys.stderr)


def cmd_render(sw: Sweep, a) -> int:
    check_stack(sw, a)
    for script in write_jobs(sw, [(j, j.points, "") for j in sw.jobs]):
        print(script)
    return 0


def _submit(sw: Sweep, pending: list[tuple[Job, list[Point], str]], dry_run: bool, retry: bool = False,
            a=None) -> int:
    if a is not None:
        check_stack(sw, a)
    m = manifest(sw)
    scripts = write_jobs(sw, pending, retry)
    for (job, pts, _), script in zip(pending, scripts):
        if dry_run:
            print(f"# would run: sbatch --parsable {script}  ({len(pts)} points)\n{script.read_text()}")
            continue
        jid = slurm.sbatch(script)
        m["submissions"].append({"job": job.name, "job_id": jid, "script": str(script), "points": len(pts),
                                 "submitted_at": now()})
        save_manifest(sw, m)
        print(f"submitted {job.name}: job {jid} ({len(pts)} points) -> {script}")
    return 0


def cmd_submit(sw: Sweep, a) -> int:
    if sw.profile.scheduler != "slurm":
        raise SweepError(f"machine {sw.profile.name} has no scheduler: use `bench sweep local`")
    return _submit(sw, [(j, j.points, "") for j in sw.jobs], a.dry_run, a=a)


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
    return _submit(sw, pending, a.dry_run, retry=a.failed, a=a)


def cmd_status(sw: Sweep, a) -> int:
    states = point_states(sw)
    subs = {s["job"]: s["job_id"] for s in manifest(sw)["submissions"]}
    width = max(len(j.name) for j in sw.jobs)
    for j in sw.jobs:
        rows = states[j.name]
        counts = {s: sum(1 for _, x in rows if x == s) for s in ("done", "failed", "running", "pending", "missing")}
        job = f"job {subs[j.name]}" if j.name in subs else "not submitted"
        pf = preflight_state(sw, j.name, subs.get(j.name))
        print(f"{j.name:{width}s}  {job:18s} " + "  ".join(f"{k} {v}" for k, v in counts.items())
              + (f"  {pf}" if pf else ""))
        if a.verbose:
            for p, s in rows:
                print(f"    {s:8s} {describe(p)}")
    return 0


def cmd_local(sw: Sweep, a) -> int:
    from bench import mpirun

    scripts = write_jobs(sw, [(j, j.points, "") for j in sw.jobs])
    for j, script in zip(sw.jobs, scripts):
        print(f"[sweep local] {j.name}: {j.ranks} rank(s), {len(j.points)} points (~{j.estimate_s / 60:.1f} min)",
              flush=True)
        for cmd in job_commands(sw, j.points, sw.dir / "points" / f"{j.name}.json"):
            proc = mpirun.run(j.ranks, ["-m", "bench", *cmd, *(["--quiet"] if a.quiet else [])], capture=False,
                              env=sw.profile.env)
            if proc.returncode != 0:
                print(f"[sweep local] {j.name} failed (exit {proc.returncode}); its script: {script}",
                      file=sys.stderr)
                return 1
    print(f"[sweep local] done -> {sw.store.records_path}")
    return 0


COMMANDS = {"plan": cmd_plan, "render": cmd_render, "submit": cmd_submit, "local": cmd_local, "status": cmd_status,
            "resubmit": cmd_resubmit}


def cmd_predict(sw: Sweep, a) -> int:
    """Each point's predicted time on the profile's machine description, and the fastest per configuration."""
    from costmodel.machine import from_table
    from costmodel.machine import load as load_machine
    from costmodel.predict import predict
    from ringx_suite.tables import Table, render

    if sw.driver == "model":
        raise SweepError(f"predict covers attention points (bench run); {sw.path.name} is a model sweep (driver = "
                         "\"model\"): its plan estimates each training step")
    machine = load_machine(a.machine)[0] if a.machine else from_table(sw.profile.name, sw.profile.model)
    print(f"campaign {sw.campaign}: predictions on {machine.name} ({machine.source})\n")
    rows = []
    for j in sw.jobs:
        preds = {pt: predict(pt.algorithm, pt.causal, pt.mode, j.ranks, machine, nodes=j.nodes, batch=pt.batch,
                             seq=pt.seq, heads=pt.heads, kv_heads=pt.kv_heads, head_dim=pt.head_dim, dtype=pt.dtype,
                             exact_ranks=16) for pt in j.points}
        best: dict = {}
        for pt, pr in preds.items():  # the algorithms compete at one configuration
            cfg = pt.spec() | {"algorithm": ""}
            key = tuple(sorted(cfg.items()))
            if key not in best or pr.total_s < preds[best[key]].total_s:
                best[key] = pt
        fastest = set(best.values())
        rows += [[j.name, pt.algorithm, pt.seq, "causal" if pt.causal else "full", pt.mode, round(pr.total_s * 1e3, 3),
                  round(pr.compute_s * 1e3, 3), round(pr.imbalance_s * 1e3, 3), round(pr.exposed_comm_s * 1e3, 3),
                  "yes" if pt in fastest else ""] for pt, pr in preds.items()]
    print(render(Table(["job", "algorithm", "seq", "mask", "mode", "predicted ms", "compute", "imbalance",
                        "exposed comm", "fastest"], rows), "markdown"), end="")
    return 0


COMMANDS["predict"] = cmd_predict
HELP = {"plan": "the jobs, their points, estimated duration and time limit of each",
        "render": "write the job scripts and point lists into the campaign directory",
        "submit": "render, then sbatch one job per (nodes, ranks per node)",
        "local": "run the same jobs here with mpiexec (no scheduler)",
        "status": "per job and point: done, failed, running, pending or missing",
        "resubmit": "submit only what is missing (--failed: failed points too)",
        "predict": "each point's predicted time (cost model) and the fastest algorithm per configuration"}


def build_parser() -> Parser:
    p = Parser(prog="python -m bench sweep", description=__doc__)
    sub = p.commands()
    for name in COMMANDS:
        c = sub.add_parser(name, help=HELP[name], description=HELP[name])
        c.add_argument("file", help="the sweep file (TOML)")
        if name in ("render", "submit", "resubmit"):
            c.add_argument("--allow-cpu-python", action="store_true",
                           help="write GPU jobs even when the stack's torch cannot use the GPUs (CPU-only build)")
        c.add_argument("--profile", metavar="PATH", help="a machine profile file outside jobs/profiles/, in place "
                       "of the sweep file's machine (a profile's set-up lines run as shell: trust it)")
        if name in ("submit", "resubmit"):
            c.add_argument("--dry-run", action="store_true", help="print the scripts instead of submitting")
            c.add_argument("--account", default="", help="override the sweep file's / profile's account")
            c.add_argument("--partition", default="", help="override the partition")
            c.add_argument("--qos", default="", help="override the QOS")
        if name == "resubmit":
            c.add_argument("--failed", action="store_true", help="failed points too, not only missing ones")
        if name in ("plan", "status"):
            c.add_argument("--verbose", "-v", action="store_true", help="list every point")
        if name == "local":
            c.add_argument("--quiet", action="store_true", help="no per-record progress")
        if name == "predict":
            c.add_argument("--machine", help="another profile with a [model] table (default: the sweep's)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    def go() -> int:
        try:
            sw = load(a.file, getattr(a, "account", ""), getattr(a, "partition", ""), getattr(a, "qos", ""),
                      a.profile)
            return COMMANDS[a.command](sw, a)
        except RuntimeError as e:  # sbatch or a local job failed: said plainly, no traceback
            raise UserError(str(e)) from None

    return cli_main(f"bench sweep {a.command}", go)
