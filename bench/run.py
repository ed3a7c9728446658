"""``python -m bench run``: time ring and ringX algorithms under mpiexec or srun.

All algorithms of one configuration are timed side by side: within every
iteration each takes its turn, in an order that rotates from one iteration to
the next, so their ratios are measured under the same conditions and sample i
of each comes from the same round. Every (configuration, algorithm, repeat)
becomes one record with its own samples, written by rank 0 to this run's file
in the campaign store as soon as its configuration is measured. Re-running the
same command skips what is recorded; failures (an exception or out of memory
on any rank, a failed --check, a collective that times out) become records
too, and the run goes on. A rank that hangs makes every rank stop within
--timeout + 30 s (rank 0, when alive, first records which ranks did not
report); a killed rank ends the job at once (the launcher's doing). The
records already written stay intact.

Example (4 local CPU ranks):
  mpiexec -n 4 python -m bench run --seq 1024,2048 --causal true,false --campaign demo
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field, replace

from bench import options
from bench.measure.failures import CheckFailed, Recorder, maybe_inject, parse_inject, run_guarded
from bench.measure.pinning import pin
from bench.measure.ranks import Group, Progress, describe
from bench.points import Point, make_point, record_config
from ringx_suite.cli import Parser, UserError, load_config, split_list

RUN_ONLY = dict(out="runs", campaign="default", tag=None, retry_failed=False, quiet=False, baselines="", inject=None,
                points=None)


def build_parser() -> Parser:
    p = Parser(prog="python -m bench run", description=__doc__)
    add = p.add_argument
    add("--config", help="TOML or JSON file with any of the options below (flags override it)")
    add("--points", help="JSON file listing points (dicts of algorithm, seq or seq_per_rank, batch, heads, kv_heads, "
        "head_dim, dtype, causal, mode) instead of the cross product of the flags below (used by bench sweep)")
    options.add_arguments(p.add_argument_group("points (lists are crossed)"), options.PARAMS.values())
    options.add_arguments(p.add_argument_group("measurement"), options.SETTINGS.values())
    g = p.add_argument_group("output")
    g.add_argument("--out", help="output root: records go to OUT/CAMPAIGN/ (default: runs)")
    g.add_argument("--campaign", help="campaign name, a plain directory name (default: default)")
    g.add_argument("--tag", help="free-form label stored in every record")
    g.add_argument("--retry-failed", action="store_true", default=None,
                   help="re-run configurations recorded as failed")
    g.add_argument("--baselines", help="outside implementations to time too, at every configuration: "
                   "ring_flash_attn, torch_cp")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress output")
    add("--inject", help=argparse.SUPPRESS)  # tests only: RANK:CASE:KIND[@PHASE], see parse_inject
    return p


def resolve(argv: list[str] | None, world: int) -> tuple[dict, list[Point]]:
    """Flags (over the config file, over the definitions' defaults) into validated points for ``world`` ranks."""
    import ringx
    from bench.baselines import FAMILIES

    a = build_parser().parse_args(argv)
    valid = set(options.PARAMS) | set(options.SETTINGS) | set(RUN_ONLY)
    given = load_config(a.config, valid) if a.config else {}
    given |= {k: v for k, v in vars(a).items() if v is not None and k != "config"}
    opts = dict(RUN_ONLY) | {k: v for k, v in given.items() if k in RUN_ONLY}
    opts |= options.settings(given, "")
    if opts["kernel"] is not None and opts["kernel"] not in ringx.KERNELS:
        raise UserError(f"--kernel {opts['kernel']!r}: choose one of {', '.join(ringx.KERNELS)}")
    from ringx_suite.store import check_campaign_name

    check_campaign_name(opts["campaign"])
    baselines = split_list(opts["baselines"]) if opts["baselines"] else []
    for b in baselines:
        if b not in FAMILIES:
            raise UserError(f"unknown baseline {b!r}; available: {', '.join(FAMILIES)}")
    opts["baselines"] = baselines
    opts["inject"] = parse_inject(opts["inject"])
    if opts["points"]:
        try:
            raw = json.loads(open(opts["points"]).read())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read points file {opts['points']}: {e}") from None
        if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
            raise UserError(f"points file {opts['points']} must hold a JSON list of objects")
    else:
        raw = cross_product({k: given.get(k) for k in options.PARAMS})
    return opts, [make_point(d, world) for d in raw]


def cross_product(params: dict) -> list[dict]:
    """Point dicts from the parameters: every masking x sequence x mode x dtype x algorithm."""
    import ringx

    P = options.PARAMS
    many = {k: options.value(P[k], params[k], "", many=True) for k in params if params[k] is not None}
    if "seq" in many and "seq_per_rank" in many:
        raise UserError("give --seq (strong scaling) or --seq-per-rank (weak scaling), not both")
    for k in ("batch", "heads", "kv_heads", "head_dim"):
        if k in many and len(many[k]) != 1:
            raise UserError(f"--{k.replace('_', '-')} takes one value (sweep files cross several)")
    one = {k: many[k][0] if k in many else P[k].default for k in ("batch", "heads", "kv_heads", "head_dim")}
    one["kv_heads"] = one["kv_heads"] or one["heads"]
    if one["heads"] % one["kv_heads"]:
        raise UserError(f"--heads ({one['heads']}) must be a multiple of --kv-heads ({one['kv_heads']})")
    names = many.get("algorithms")
    for n in names or []:
        if n not in ringx.ALGORITHMS:
            raise UserError(f"unknown algorithm {n!r}; choose from {', '.join(ringx.ALGORITHMS)}")
    seq_key = "seq_per_rank" if "seq_per_rank" in many else "seq"
    lengths = many.get(seq_key, [2048])
    return [{"algorithm": n, seq_key: s, **one, "dtype": d, "causal": c, "mode": m}
            for c in many.get("causal", [P["causal"].default]) for s in lengths
            for m in many.get("mode", [P["mode"].default]) for d in many.get("dtype", [P["dtype"].default])
            for n in (names or ringx.algorithms.names(c))]


# ---------------------------------------------------------------------------------------------
# Running on every rank


@dataclass
class Case:
    """One algorithm of a configuration group: its record in the making and what measuring it gave."""

    index: int  # position in the run's case list (--inject addresses it)
    point: Point
    rec: dict
    label: str
    layout: str = ""
    ext: object = None
    call: object = None
    stats: object = None
    result: dict = field(default_factory=dict)
    votes: list = field(default_factory=list)  # every rank's report of the last stage


class Runner:
    """Runs the cases of one invocation on every rank; rank 0 writes the records."""

    def __init__(self, opts: dict, argv: list[str], points: list[Point]):
        import ringx
        from bench import baselines
        from ringx import launch

        self.opts = opts
        self.ctx = launch.init(timeout_s=opts["timeout"], **_launch_args(opts))
        self.group = Group(opts["timeout"])
        self.rank, self.P = self.ctx.rank, self.ctx.world_size
        self.external = baselines.load(opts["baselines"], self.ctx.device.type)
        self.ringx = ringx
        # Baselines from outside run at every configuration the ringx algorithms do.
        configs = list(dict.fromkeys(replace(pt, algorithm="") for pt in points))
        self.plan = [(c, [pt.algorithm for pt in points if replace(pt, algorithm="") == c] + list(self.external))
                     for c in configs]
        self.store, self.run_id, self.done, self.nodes = self.group.open_campaign(
            opts["out"], opts["campaign"], ["-m", "bench", "run", *argv], pending=self.pending,
            hook=lambda: maybe_inject(opts["inject"], self.rank, 0, "open"))
        interrupt_cleanly(self.store, self.rank)
        self.pinned = pin(self.ctx)
        from bench.measure.memory import device_memory

        # The smallest rank's memory, so every rank refuses the same points (0: unknown, not checked).
        self.memory = min(self.group.comm.allgather(device_memory(self.ctx.device, self.ctx.local_world_size)))
        self.counts = {"recorded": 0, "failed": 0, "skipped": 0}
        self.failures = Recorder(self.group, self.store, self.reinit, self.counts, opts["inject"])
        self.config_seed = 0  # one seed per configuration: its algorithms share one float64 reference

    def key(self, pt: Point, rep: int, nodes: int) -> tuple[str, dict]:
        """A case's record key and configuration fields."""
        from ringx_suite.store import config_key

        o = self.opts
        config = record_config(pt, self.P, nodes, rep, o["kernel"], int(o["warmup"]), int(o["iters"]))
        return config_key(config), config

    def pending(self, done: dict[str, str], nodes: int) -> set[str]:
        """The keys this run will write: every case not already recorded (claimed in the store for the run)."""
        from ringx_suite.store import already_recorded

        keys = {self.key(replace(c, algorithm=n), rep, nodes)[0] for c, names in self.plan for n in names
                for rep in range(int(self.opts["repeats"]))}
        return {k for k in keys if not already_recorded(done.get(k), self.opts["retry_failed"])}

    def run(self) -> None:
        reps = int(self.opts["repeats"])
        total = sum(len(n) for _, n in self.plan) * reps
        self.progress = self.failures.progress = Progress(total, self.opts["quiet"], self.rank == 0)
        self.progress.note(f"bench run: {total} records to make on {self.P} ranks ({self.nodes} node(s), device "
                           f"{self.ctx.device.type}), campaign {self.store.campaign!r} -> {self.store.records_path}")
        if self.pinned:
            self.progress.note(f"bench run: CPU ranks pinned, rank 0 to core(s) {self.pinned}")
        cores = os.cpu_count() or 1
        if self.ctx.device.type == "cpu" and self.P > cores and self.nodes == 1:
            self.progress.note(f"bench run: note: {self.P} ranks share {cores} cores; times include that contention")
        index = 0
        for c, names in self.plan:
            for rep in range(reps):
                cases = []
                for name in names:
                    cases.append(self.case(index, replace(c, algorithm=name), rep))
                    index += 1
                self.measure_group([x for x in cases if x is not None])
        c = self.counts
        self.progress.note(f"bench run: {c['recorded']} recorded, {c['failed']} failed, {c['skipped']} already in "
                           f"the store -> {self.store.records_path}")
        self.store.release()

    def case(self, index: int, pt: Point, rep: int) -> Case | None:
        """The case's record skeleton, or None when it is already recorded or cannot run here (recorded so)."""
        from ringx_suite.store import SCHEMA_VERSION, already_recorded, now

        o, name = self.opts, pt.algorithm
        key, config = self.key(pt, rep, self.nodes)
        label = f"{name} seq={pt.seq} {'causal' if pt.causal else 'full'} {pt.mode} {pt.dtype}"
        prior = self.done.get(key)
        if already_recorded(prior, o["retry_failed"]):
            self.counts["skipped"] += 1
            self.progress.step(f"{label}: already recorded ({prior})")
            return None
        ext = self.external.get(name)
        rec = {"schema": SCHEMA_VERSION, "kind": "attention", "campaign": self.store.campaign, "tag": o["tag"],
               "run_id": self.run_id, "key": key, "status": "ok", "error": None, "failure": None,
               "written_at": "", "device": self.ctx.device.type,
               "family": "external" if ext else self.ringx.ALGORITHMS[name].family, **config}
        if ext and ext.reason:
            rec.update(status="skipped", error=ext.reason, written_at=now())
            self.write(rec, index)
            self.progress.step(f"{label}: skipped ({ext.reason})")
            return None
        too_big = self.memory_problem(pt)
        if too_big:  # refused before allocating: the same on every rank, so no agreement is needed
            rec.update(status="failed", failure="oom", error=too_big, written_at=now())
            self.write(rec, index)
            self.counts["failed"] += 1
            self.progress.step(f"{label}: FAILED ({too_big})")
            return None
        layout = ext.layout(pt.causal) if ext else self.ringx.ALGORITHMS[name].layout(pt.causal)
        return Case(index, pt, rec, label, layout, ext)

    def memory_problem(self, pt: Point) -> str:
        """'' when the point's estimated memory per rank fits this device, else why it is not run."""
        from bench.points import memory_bytes

        have = self.memory
        need = memory_bytes(pt, self.P, self.opts["check_max_seq"] if self.opts["check"] else 0)
        if not have or need <= have:
            return ""
        return (f"not run: needs at least {need / 2**30:.1f} GiB per rank (inputs, gradients, the algorithm's "
                f"buffers), more than the {have / 2**30:.1f} GiB this rank has")

    def measure_group(self, cases: list[Case]) -> None:
        """Inputs, check and one untimed call per algorithm (each may fail alone), then all timed side by side."""
        if not cases:
            return
        inputs = None
        err = None
        try:  # one set of inputs for the whole configuration: the algorithms see the same data
            inputs = self.inputs(cases[0].point)
        except Exception as e:  # noqa: BLE001 - every failure becomes a record
            err = describe(e)
        if not self.failures.settle_all(cases, err, "making the inputs of", broke_group=False):
            return
        live = []
        cs = self.check_seq(cases)
        self.config_seed += 1
        for c in cases:
            if self.failures.stage(c, lambda c=c: self.prepare(c, inputs), "preparing", broke_group=False) and \
                    self.failures.stage(c, lambda c=c: self.check(c, cs), "checking", broke_group=False) and \
                    self.failures.stage(c, lambda c=c: self.first_call(c), "the first call of", broke_group=True):
                live.append(c)
        if not live:
            return
        err = None
        try:
            from bench.measure.timing import time_round_robin

            calls = [self.failures.injecting(c.index, c.call) for c in live]
            samples = time_round_robin(calls, int(self.opts["warmup"]), int(self.opts["iters"]), self.ctx.device)
        except Exception as e:  # noqa: BLE001
            err = describe(e)
        if not self.failures.settle_all(live, err, "timing", broke_group=True):
            return
        group_id = uuid.uuid4().hex[:12] if len(live) > 1 else None
        for c, s in zip(live, samples):
            self.finish(c, s, group_id)

    def inputs(self, pt: Point):
        import torch

        g = torch.Generator(device="cpu").manual_seed(1000)  # timing does not depend on the values
        dt = getattr(torch, pt.dtype)
        return [torch.randn(pt.batch, pt.seq_per_rank, h, pt.head_dim, generator=g, dtype=dt).to(self.ctx.device)
                for h in (pt.heads, pt.kv_heads, pt.kv_heads, pt.heads)]

    def prepare(self, c: Case, inputs) -> None:
        self.failures.hook(c.index, "prepare")
        c.call, c.stats = make_call(c.point.algorithm, c.ext, c.point, inputs, self.opts["kernel"])

    def check_seq(self, cases: list[Case]) -> int:
        """One check length for the whole configuration (every layout can split it), so the float64
        reference is computed once and shared by every algorithm of the configuration."""
        import math

        pt = cases[0].point
        div = math.lcm(*(self.ringx.layouts.global_divisor(c.layout, self.P) for c in cases))
        cs = min(pt.seq, int(self.opts["check_max_seq"]))
        return max(cs - cs % div, div if pt.seq >= div else 0)

    def check(self, c: Case, cs: int) -> None:
        import functools

        import torch

        o, pt = self.opts, c.point
        if not o["check"]:
            return
        dt = getattr(torch, pt.dtype)
        fn = functools.partial(c.ext.fn, causal=pt.causal) if c.ext else None
        t0 = time.perf_counter()
        ref = self.ringx.verify.reference(pt.causal, 1, cs, pt.heads, pt.kv_heads, pt.head_dim, dt,
                                          seed=self.config_seed, device=self.ctx.device)
        err = self.ringx.verify.check(ref, pt.algorithm, self.ctx.device, o["kernel"], fn=fn, layout=c.layout)
        tol = self.ringx.verify.TOLERANCE[dt]
        c.result.update(check_max_error=err, check_tolerance=tol, check_seq=cs, check_s=time.perf_counter() - t0)
        self.failures.hook(c.index, "check")
        if not err <= tol:
            raise CheckFailed(f"check failed: max error {err:.3e} > {tol:.0e} at seq {cs}")

    def first_call(self, c: Case) -> None:
        """One untimed call: fills the ledger and measures this algorithm's own peak memory."""
        from bench.measure.memory import peak_memory, reset_peak_memory

        dev = self.ctx.device
        reset_peak_memory(dev)
        self.failures.hook(c.index, "run")
        c.call(c.stats)
        st = c.stats
        ledgers = [st.forward, st.backward] if st else []
        c.result.update(mem=peak_memory(dev), kernel=st.kernel if st else "external",
                        kernel_version=getattr(st, "kernel_version", None) if st else None,
                        sent=sum(x.sent for x in ledgers), received=sum(x.received for x in ledgers),
                        calls=sum(x.calls for x in ledgers),
                        ledger={"forward": st.forward.as_dict(), "backward": st.backward.as_dict()} if st else None)
        c.call = _untracked(c.call)

    def finish(self, c: Case, samples: list[float], group_id: str | None) -> None:
        from ringx.flops import CONVENTION, attention_flops
        from ringx_suite.stats import stat_fields
        from ringx_suite.store import now

        pt, result, votes = c.point, c.result, c.votes
        fields = stat_fields(samples)
        flops = attention_flops(pt.batch, pt.seq, pt.heads, pt.head_dim, pt.causal, pt.mode)
        tflops = flops / self.P / fields["median_s"] / 1e12
        peak = self.opts["peak_tflops"]
        c.rec.update(
            written_at=now(), kernel=result["kernel"], kernel_version=result["kernel_version"], layout=c.layout,
            timing_group=group_id, samples_s=samples, **fields,
            flops=flops, flops_convention=CONVENTION, tflops_per_rank=tflops, peak_tflops=peak,
            mfu=tflops / peak if peak else None,
            bytes_sent_per_rank=[v["sent"] for v in votes],
            bytes_received_per_rank=[v["received"] for v in votes],
            comm_calls_per_rank=[v["calls"] for v in votes],
            mem_peak_bytes_per_rank=[v["mem"] for v in votes],
            ledger_rank0=result["ledger"],
            **{k: v for k, v in result.items() if k.startswith("check_")})
        self.write(c.rec, c.index)
        self.counts["recorded"] += 1
        self.progress.step(f"{c.label}: {fields['median_s'] * 1e3:.2f} ms ({tflops:.3f} TFLOP/s per rank)")

    def write(self, rec: dict, index: int) -> None:
        self.failures.write(rec, index)

    def reinit(self) -> None:
        """A new process group (a collective may be half-done)."""
        from ringx import launch

        self.ctx = launch.reinit(self.ctx, self.opts["timeout"])

def _launch_args(opts: dict) -> dict:
    return {k: opts[k] for k in ("device", "backend") if opts.get(k) not in (None, "auto")}


def _untracked(call):
    """The timed form of a call: no stats, no input validation exchange."""
    return lambda: call(None)


def interrupt_cleanly(store, rank: int) -> None:
    """Ctrl-C / SIGTERM: every rank stops at once, with one line from rank 0 and no traceback.

    A rank blocked inside a collective never returns to Python, so a Python-level handler would not run: the
    C-level handler writes the signal to a pipe, and a thread reading it ends the process (after letting a
    record write in progress finish, so the store stays intact).
    """
    import threading

    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)

    def watch() -> None:
        sig = os.read(r, 1)
        store.quiesce()
        if rank == 0:
            name = "interrupted" if sig and sig[0] == signal.SIGINT else "terminated"
            print(f"\nbench run: {name}; the records written so far are in {store.records_path}", file=sys.stderr,
                  flush=True)
        os._exit(130 if sig and sig[0] == signal.SIGINT else 143)

    threading.Thread(target=watch, daemon=True, name="ringx-interrupt").start()


def check_slurm_world(world: int, rank: int) -> None:
    """Refuse N copies of rank 0 (an MPI that does not see srun's tasks) with the likely cause."""
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS")
    if not tasks or not tasks.isdigit():
        return
    tasks = int(tasks)
    if world == 1 and tasks > 1:
        procid = os.environ.get("SLURM_PROCID", "0")
        if procid == "0":
            print(f"bench run: error: srun started {tasks} tasks but MPI sees 1 rank in each: {tasks} copies of "
                  "rank 0 would write one store. Launch with `srun --mpi=pmi2` (or pmix, as your MPI needs), or "
                  "install mpi4py built against the machine's MPI (MPICC=cc pip install --no-binary mpi4py "
                  "mpi4py).", file=sys.stderr, flush=True)
        sys.exit(2)
    if world == tasks and os.environ.get("SLURM_PROCID", str(rank)) != str(rank):
        print(f"bench run: warning: MPI rank {rank} is Slurm task {os.environ['SLURM_PROCID']}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from ringx_suite.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)

    def go() -> int:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        check_slurm_world(world.Get_size(), world.Get_rank())
        opts, points = resolve(argv, world.Get_size())
        runner = Runner(opts, argv, points)
        run_guarded(runner.group, runner.run)
        from ringx import launch

        launch.finalize()
        return 0

    return cli_main("python -m bench run", go)


def make_call(name: str, ext, pt: Point, inputs, kernel):
    """(call(stats), stats): one forward or forward+backward of a ringx algorithm or an outside baseline."""
    import torch

    import ringx

    q, k, v, do = inputs
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))  # shares the inputs' storage: no copy
    if ext:
        def f(q_, k_, v_, _stats):
            return ext.fn(q_, k_, v_, causal=pt.causal)
        stats = None
    else:
        stats = ringx.CallStats()

        def f(q_, k_, v_, st):
            return ringx.attention(q_, k_, v_, algorithm=name, causal=pt.causal, kernel=kernel, stats=st,
                                   validate=st is not None)

    def fwd(st):
        with torch.no_grad():
            return f(q, k, v, st)

    def fwdbwd(st):
        return torch.autograd.grad(f(qg, kg, vg, st), (qg, kg, vg), do)

    return (fwd if pt.mode == "fwd" else fwdbwd), stats


if __name__ == "__main__":
    sys.exit(main())
