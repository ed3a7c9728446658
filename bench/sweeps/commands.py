"""``ringx-bench sweep COMMAND FILE``: a campaign of jobs from one sweep file.

Commands:
  plan      the jobs, their points and an estimated duration of each
  render    write the job scripts and point lists into the campaign directory
  submit    render, then sbatch one job per (nodes, ranks per node); --dry-run prints instead
  local     run the same job scripts here, one after the other: progress and ETA, logs in the campaign
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

Job scripts call the suite's installed command (`ringx-bench`) from the profile's
software stack ([stack]: a prefix's bin/, modules, a container): install the suite
there (`pip install .`); the compute nodes need no checkout.
"""

from __future__ import annotations

import os
import sys
import time

from ringx_suite.cli import Parser, UserError
from ringx_suite.cli import main as cli_main
from ringx_suite.store import now

from . import slurm
from .plan import write_jobs
from .schedulers import SCHEDULERS
from .spec import Job, Sweep, SweepError, load, needs, refuse
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
                print(f"    {sw.kind.describe(p)}")
    print(f"total: {len(sw.jobs)} jobs, {sum(len(j.points) for j in sw.jobs)} points, "
          f"estimated {total / 3600:.2f} node-job hours of wall time")
    missing = needs(sw.profile, out_given=True)
    if missing:
        print(str(refuse(sw.profile, missing)).replace(f"machine {sw.profile.name} needs", "note: render will need", 1))
    return 0


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


def _submit(sw: Sweep, pending: list[tuple[Job, list, str]], dry_run: bool, retry: bool = False,
            a=None) -> int:
    if a is not None:
        check_stack(sw, a)
    m = manifest(sw)
    scripts = write_jobs(sw, pending, retry)
    for (job, pts, _), script in zip(pending, scripts):
        if dry_run:
            print(f"# would run: sbatch --parsable {script}  ({len(pts)} points)\n{script.read_text()}")
            continue
        jid = sw.scheduler.submit(script)
        m["submissions"].append({"job": job.name, "job_id": jid, "script": str(script), "points": len(pts),
                                 "submitted_at": now()})
        save_manifest(sw, m)
        print(f"submitted {job.name}: job {jid} ({len(pts)} points) -> {script}")
    return 0


def cmd_submit(sw: Sweep, a) -> int:
    if not sw.scheduler.queues:
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
                print(f"    {s:8s} {sw.kind.describe(p)}")
    return 0


def _minutes(s: float) -> str:
    return f"{s / 60:.1f} min"


def cmd_local(sw: Sweep, a) -> int:
    """Each job's script, here, one after the other; while one runs, its points done of all, and an ETA.

    A job's output goes to the campaign's logs/ (as a Slurm job's does), named like Slurm's (%x-%j.out, the
    start time standing for the job id); a job that fails is reported with the end of its log.
    """
    from ringx_drivers import mpirun

    scripts = write_jobs(sw, [(j, j.points, "") for j in sw.jobs])
    keys = {j.name: set(sw.keys(j)) for j in sw.jobs}
    total = sum(len(k) for k in keys.values())
    env = {**os.environ, **({"PYTHONPATH": str(mpirun.ROOT)} if mpirun.CHECKOUT else {})}
    local = SCHEDULERS["local"]
    start = time.monotonic()
    first = _recorded(sw, keys)
    left_s = sum(j.estimate_s for j in sw.jobs)  # the plan's figure until points finish here
    for j, script in zip(sw.jobs, scripts):
        print(f"[sweep local] {j.name}: {j.ranks} rank(s), {len(j.points)} points (~{_minutes(j.estimate_s)})",
              flush=True)
        log = local.log((sw.dir / "logs").resolve(), f"ringx-{sw.campaign}-{j.name}", time.strftime("%Y%m%d-%H%M%S"))
        proc = local.start(script, log, env)
        shown, said_at = None, -PROGRESS_EVERY_S
        while proc.poll() is None:
            time.sleep(0.5 if shown is None else 2.0)
            if time.monotonic() - said_at >= PROGRESS_EVERY_S:  # a line at most this often while a job runs
                now = _progress(sw, keys, j, total, first, start, left_s, shown, a.quiet)
                if now != shown:  # a line was printed
                    said_at, shown = time.monotonic(), now
        _progress(sw, keys, j, total, first, start, left_s, shown, a.quiet)  # and the job's last count
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            print(f"[sweep local] {j.name} failed (exit {proc.returncode}); its log: {log}; its script: {script}\n"
                  + "\n".join(f"  | {line}" for line in tail), file=sys.stderr)
            return 1
        left_s -= j.estimate_s
        print(f"[sweep local] {j.name} done in {_minutes(time.monotonic() - start)} so far; log: {log}", flush=True)
    print(f"[sweep local] done -> {sw.store.records_path}")
    return 0


def _recorded(sw: Sweep, keys: dict[str, set[str]]) -> dict[str, int]:
    """Job name -> how many of its records (points x repeats) the campaign holds, ok or failed."""
    try:
        done = set(sw.store.done())
    except Exception:  # a record being written while we read: count it next time
        return {}
    return {name: len(k & done) for name, k in keys.items()}


PROGRESS_EVERY_S = 15.0  # seconds between progress lines of a running job


def _progress(sw: Sweep, keys, job: Job, total: int, first: dict, start: float, left_s: float, shown, quiet: bool):
    """Print a line when the count of finished points changed: this job's, the campaign's, the elapsed time and an
    ETA (measured rate once points finish here, else the plan's estimate). Returns what it showed."""
    now_done = _recorded(sw, keys)
    if not now_done:
        return shown
    campaign = sum(now_done.values())
    if campaign == shown or quiet:
        return campaign if not quiet else shown
    elapsed = time.monotonic() - start
    here = campaign - sum(first.values())
    eta = elapsed / here * (total - campaign) if here > 0 else max(left_s - elapsed, 0.0)
    print(f"[sweep local] {job.name}: {now_done[job.name]}/{len(keys[job.name])} points, campaign {campaign}/{total}, "
          f"{_minutes(elapsed)} elapsed, ETA {_minutes(eta)}{'' if here else ' (estimated)'}", flush=True)
    return campaign


COMMANDS = {"plan": cmd_plan, "render": cmd_render, "submit": cmd_submit, "local": cmd_local, "status": cmd_status,
            "resubmit": cmd_resubmit}


def cmd_predict(sw: Sweep, a) -> int:
    """Each point's predicted time on the profile's machine description, and the fastest per configuration."""
    from ringx_costmodel.machine import from_table
    from ringx_costmodel.machine import load as load_machine
    from ringx_costmodel.predict import predict
    from ringx_suite.tables import Table, render

    if not sw.kind.predicts:
        raise SweepError(f"predict covers attention points (bench run); {sw.path.name} is a {sw.driver} sweep "
                         f"(driver = \"{sw.driver}\", {sw.kind.what}): its plan estimates each point")
    try:
        machine = load_machine(a.machine)[0] if a.machine else from_table(sw.profile.name, sw.profile.model)
    except ValueError as e:  # a profile without a [model] table (local, or a site not described yet)
        raise SweepError(f"{e}: give --machine PROFILE (one with a [model] table, e.g. frontier) or add a "
                         f"[model] table to the profile (docs/cost-model.md)") from None
    print(f"campaign {sw.campaign}: predictions on {machine.name} ({machine.source})\n")
    from ringx_costmodel import traced

    for name, plugin in sw.external.items():  # the sweep's plugins: predicted from a trace of their own calls
        if not plugin.why_not("cpu"):  # one that cannot run here is refused by the trace, with its reason
            traced.register(name, plugin.fn)
    rows, cannot = [], []
    for j in sw.jobs:
        preds = {}
        for pt in j.points:
            try:
                preds[pt] = predict(pt.algorithm, pt.causal, pt.mode, j.ranks, machine, nodes=j.nodes,
                                    batch=pt.batch, seq=pt.seq, heads=pt.heads, kv_heads=pt.kv_heads,
                                    head_dim=pt.head_dim, dtype=pt.dtype, exact_ranks=16,
                                    mask=pt.the_mask() if pt.mask else None)
            except traced.CannotTrace as e:  # a plugin the trace cannot run: said, the others predicted
                cannot.append(f"{j.name} {pt.algorithm} seq={pt.seq}: {e}")
        best: dict = {}
        for pt, pr in preds.items():  # the algorithms compete at one configuration
            cfg = pt.spec() | {"algorithm": ""}
            key = tuple(sorted(cfg.items()))
            if key not in best or pr.total_s < preds[best[key]].total_s:
                best[key] = pt
        fastest = set(best.values())
        rows += [[j.name, pt.algorithm, pt.seq, pt.mask_text(), pt.mode, round(pr.total_s * 1e3, 3),
                  round(pr.compute_s * 1e3, 3), round(pr.imbalance_s * 1e3, 3), round(pr.exposed_comm_s * 1e3, 3),
                  "yes" if pt in fastest else ""] for pt, pr in preds.items()]
    print(render(Table(["job", "algorithm", "seq", "mask", "mode", "predicted ms", "compute", "imbalance",
                        "exposed comm", "fastest"], rows), "markdown"), end="")
    if cannot:
        print("\nnot predicted:\n" + "\n".join(f"- {c}" for c in dict.fromkeys(cannot)))
    return 0


COMMANDS["predict"] = cmd_predict
HELP = {"plan": "the jobs, their points, estimated duration and time limit of each",
        "render": "write the job scripts and point lists into the campaign directory",
        "submit": "render, then sbatch one job per (nodes, ranks per node)",
        "local": "run the same job scripts here: progress and ETA while they run, logs in the campaign",
        "status": "per job and point: done, failed, running, pending or missing",
        "resubmit": "submit only what is missing (--failed: failed points too)",
        "predict": "each point's predicted time (cost model) and the fastest algorithm per configuration"}


WRITES_JOBS = ("render", "submit", "resubmit", "local")  # these need every setting of the job scripts


def build_parser() -> Parser:
    p = Parser(prog="ringx-bench sweep", description=__doc__)
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
            c.add_argument("--quiet", action="store_true", help="no progress lines while a job runs")
        if name == "predict":
            c.add_argument("--machine", help="another profile with a [model] table (default: the sweep's)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    def go() -> int:
        try:
            sw = load(a.file, getattr(a, "account", ""), getattr(a, "partition", ""), getattr(a, "qos", ""),
                      a.profile, for_jobs=a.command in WRITES_JOBS)
            return COMMANDS[a.command](sw, a)
        except RuntimeError as e:  # sbatch or a local job failed: said plainly, no traceback
            raise UserError(str(e)) from None

    return cli_main(f"bench sweep {a.command}", go)
