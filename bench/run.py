"""``python -m bench run``: time ring and ringX algorithms under mpiexec or srun.

Every (configuration, algorithm, repeat) becomes one record in the campaign's
store, appended by rank 0 as soon as it is measured. Re-running the same
command skips what is already recorded; failures (an exception or out of
memory on any rank, a failed --check, a collective that times out) become
records too, and the run goes on. A rank that dies or hangs makes the others
stop within --timeout plus a margin, with the records already written intact.

Example (4 local CPU ranks):
  mpiexec -n 4 python -m bench run --seq 1024,2048 --causal true,false --campaign demo
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from dataclasses import replace

from bench.cli import Group, Parser, Progress, describe, load_config, parse_bool, split_list
from bench.points import DTYPES, MODES, Point, make_point, record_config

DEFAULTS = dict(algorithms=None, seq=None, seq_per_rank=None, batch=1, heads=8, kv_heads=None, head_dim=64,
                dtype="float32", causal="true", mode="fwd+bwd", warmup=2, iters=10, repeats=1, kernel=None,
                out="results", campaign="default", tag=None, check=False, check_max_seq=2048,
                peak_tflops=None, timeout=300.0, retry_failed=False, quiet=False, baselines="", inject=None,
                points=None)


def build_parser() -> Parser:
    p = Parser(prog="python -m bench run", description=__doc__, formatter_class=__import__("argparse")
               .RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--config", help="TOML or JSON file with any of the options below (flags override it)")
    add("--points", help="JSON file listing points (dicts of algorithm, seq or seq_per_rank, batch, heads, kv_heads, "
        "head_dim, dtype, causal, mode) instead of the cross product of the flags below (used by bench sweep)")
    add("--algorithms", help="comma-separated names (default: every algorithm supporting the masking)")
    add("--seq", help="global sequence length(s), comma-separated: strong scaling (default 2048)")
    add("--seq-per-rank", help="sequence length(s) per rank: weak scaling (global = this x ranks)")
    add("--batch", type=int)
    add("--heads", type=int, help="query heads (default 8)")
    add("--kv-heads", type=int, help="key/value heads (default: = heads; fewer for GQA/MQA)")
    add("--head-dim", type=int, help="default 64")
    add("--dtype", help=f"one or more of {', '.join(DTYPES)} (default float32; use bf16/fp16 on GPUs)")
    add("--causal", help="true, false or both as 'true,false' (default true)")
    add("--mode", help="fwd, fwd+bwd or both (default fwd+bwd)")
    add("--warmup", type=int, help="untimed iterations per record (default 2)")
    add("--iters", type=int, help="timed iterations per record (default 10)")
    add("--repeats", type=int, help="records per configuration and algorithm (default 1)")
    add("--kernel", help="force a local kernel: flash-attn, torch-cuda, torch-cpu, reference (default: auto)")
    add("--out", help="results root directory (default: results)")
    add("--campaign", help="campaign name: records go to OUT/CAMPAIGN/records.jsonl (default: default)")
    add("--tag", help="free-form label stored in every record")
    add("--check", action="store_true", default=None,
        help="before timing, compare each algorithm with float64 attention; failing ones are recorded, not timed")
    add("--check-max-seq", type=int, help="largest sequence the check uses (reduced beyond; default 2048)")
    add("--peak-tflops", type=float, help="device peak TFLOP/s for MFU (e.g. 989 for H100 SXM bf16)")
    add("--timeout", type=float, help="seconds a rank waits on its peers before a case fails (default 300)")
    add("--retry-failed", action="store_true", default=None, help="re-run configurations recorded as failed")
    add("--baselines", help="outside implementations to time too, at every configuration: ring_flash_attn, torch_cp")
    add("--quiet", action="store_true", default=None, help="no progress output")
    # tests: RANK:CASE:KIND, KIND one of raise, oom (preparing inputs), midraise, kill, hang (timing), check
    add("--inject", help=__import__("argparse").SUPPRESS)
    return p


def resolve(p: Parser, argv: list[str] | None, world: int) -> tuple[dict, list[Point]]:
    """Parse flags (over the config file, over defaults) into validated points for ``world`` ranks."""
    import json

    import ringx

    a = p.parse_args(argv)
    opts = dict(DEFAULTS)
    if a.config:
        opts |= load_config(p, a.config, set(DEFAULTS))
    opts |= {k: v for k, v in vars(a).items() if v is not None and k != "config"}
    for name in ("iters", "repeats", "check_max_seq"):
        if int(opts[name]) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {opts[name]}")
    if opts["warmup"] < 0:
        p.error("--warmup must be >= 0")
    if opts["timeout"] <= 0:
        p.error("--timeout must be positive")
    if opts["kernel"] is not None and opts["kernel"] not in ringx.KERNELS:
        p.error(f"--kernel {opts['kernel']!r}: choose one of {', '.join(ringx.KERNELS)}")
    baselines = split_list(opts["baselines"]) if opts["baselines"] else []
    from bench.baselines import FAMILIES

    for b in baselines:
        if b not in FAMILIES:
            p.error(f"unknown baseline {b!r}; available: {', '.join(FAMILIES)}")
    opts["baselines"] = baselines
    if opts["points"]:
        try:
            raw = json.loads(open(opts["points"]).read())
        except (OSError, json.JSONDecodeError) as e:
            p.error(f"cannot read points file {opts['points']}: {e}")
        if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
            p.error(f"points file {opts['points']} must hold a JSON list of objects")
    else:
        raw = cross_product(p, opts)
    points = []
    for d in raw:
        try:
            points.append(make_point(d, world))
        except ValueError as e:
            p.error(str(e))
    return opts, points


def cross_product(p: Parser, opts: dict) -> list[dict]:
    """Point dicts from the flags: every algorithm x sequence x masking x mode x dtype."""
    import ringx

    try:
        causals = [parse_bool(x) for x in split_list(opts["causal"])]
        seqs = split_list(opts["seq"], int) if opts["seq"] is not None else []
        per_rank = split_list(opts["seq_per_rank"], int) if opts["seq_per_rank"] is not None else []
    except ValueError as e:
        p.error(str(e))
    if seqs and per_rank:
        p.error("give --seq (strong scaling) or --seq-per-rank (weak scaling), not both")
    for s in seqs + per_rank:
        if s < 1:
            p.error(f"sequence lengths must be positive, got {s}")
    modes, dtypes = split_list(opts["mode"]), split_list(opts["dtype"])
    for m in modes:
        if m not in MODES:
            p.error(f"--mode {m!r}: choose fwd or fwd+bwd")
    for d in dtypes:
        if d not in DTYPES:
            p.error(f"--dtype {d!r}: choose one of {', '.join(DTYPES)}")
    heads = opts["heads"]
    kv = opts["kv_heads"] or heads
    for name, v in (("batch", opts["batch"]), ("heads", heads), ("head_dim", opts["head_dim"])):
        if int(v) < 1:
            p.error(f"--{name.replace('_', '-')} must be positive, got {v}")
    if kv < 1 or heads % kv:
        p.error(f"--heads ({heads}) must be a positive multiple of --kv-heads ({kv})")
    names = split_list(opts["algorithms"]) if opts["algorithms"] else None
    for n in names or []:
        if n not in ringx.ALGORITHMS:
            p.error(f"unknown algorithm {n!r}; choose from {', '.join(ringx.ALGORITHMS)}")
    seq_key, lengths = ("seq", seqs or [2048]) if not per_rank else ("seq_per_rank", per_rank)
    return [{"algorithm": n, seq_key: s, "batch": int(opts["batch"]), "heads": heads, "kv_heads": kv,
             "head_dim": int(opts["head_dim"]), "dtype": d, "causal": c, "mode": m}
            for c in causals for s in lengths for m in modes for d in dtypes
            for n in (names or ringx.algorithms.names(c))]


# ---------------------------------------------------------------------------------------------
# Running on every rank


class Injected(RuntimeError):
    """A failure the tests asked for."""


class CheckFailed(RuntimeError):
    """The --check gate found the algorithm wrong at this configuration."""


def maybe_inject(spec: str | None, rank: int, index: int, stage: str) -> None:
    if not spec:
        return
    r, i, kind = spec.split(":")
    if stage == "check" and kind == "check" and int(i) == index:
        raise CheckFailed("injected check failure")  # on every rank, as a real failed check is
    if int(r) != rank or int(i) != index:
        return
    if stage == "prepare" and kind == "raise":
        raise Injected(f"injected failure on rank {rank}")
    if stage == "prepare" and kind == "oom":
        import torch

        raise torch.OutOfMemoryError(f"injected out of memory on rank {rank}")
    if stage == "run" and kind == "midraise":
        raise Injected(f"injected failure mid-run on rank {rank}")
    if stage == "run" and kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if stage == "run" and kind == "hang":
        time.sleep(10**6)


class Runner:
    """Runs the cases of one invocation on every rank; rank 0 writes the records."""

    def __init__(self, opts: dict, argv: list[str]):
        import ringx
        from bench import baselines
        from ringx import launch

        self.opts = opts
        self.ctx = launch.init(timeout_s=opts["timeout"])
        self.group = Group(opts["timeout"])
        self.rank, self.P = self.ctx.rank, self.ctx.world_size
        self.store, self.run_id, self.done, self.nodes = self.group.open_campaign(
            opts["out"], opts["campaign"], ["-m", "bench", "run", *argv])
        self.external = baselines.load(opts["baselines"], self.ctx.device.type)
        self.ringx = ringx
        self.counts = {"recorded": 0, "failed": 0, "skipped": 0}

    def run(self, points: list[Point]) -> None:
        # Baselines from outside run at every configuration the ringx algorithms do.
        configs = list(dict.fromkeys(replace(pt, algorithm="") for pt in points))
        points = points + [replace(c, algorithm=name) for c in configs for name in self.external]
        cases = [(pt, rep) for pt in points for rep in range(int(self.opts["repeats"]))]
        self.progress = Progress(len(cases), self.opts["quiet"], self.rank == 0)
        self.progress.note(f"bench run: {len(cases)} records to make on {self.P} ranks ({self.nodes} node(s)), "
                           f"campaign {self.store.campaign!r} -> {self.store.records_path} (run {self.run_id})")
        for index, (pt, rep) in enumerate(cases):
            self.one(index, pt, rep)
        c = self.counts
        self.progress.note(f"bench run: {c['recorded']} recorded, {c['failed']} failed, {c['skipped']} already in "
                           f"the store -> {self.store.records_path}")

    def one(self, index: int, pt: Point, rep: int) -> None:
        from bench.store import SCHEMA_VERSION, already_recorded, config_key, now

        o, name = self.opts, pt.algorithm
        config = record_config(pt, self.P, self.nodes, rep, o["kernel"], int(o["warmup"]), int(o["iters"]))
        key = config_key(config)
        label = f"{name} seq={pt.seq} {'causal' if pt.causal else 'full'} {pt.mode} {pt.dtype}"
        prior = self.done.get(key)
        if already_recorded(prior, o["retry_failed"]):
            self.counts["skipped"] += 1
            self.progress.step(f"{label}: already recorded ({prior})")
            return
        ext = self.external.get(name)
        rec = {"schema": SCHEMA_VERSION, "kind": "attention", "campaign": self.store.campaign, "tag": o["tag"],
               "run_id": self.run_id, "key": key, "status": "ok", "error": None, "failure": None,
               "written_at": "", "family": "external" if ext else self.ringx.ALGORITHMS[name].family, **config}
        if ext and ext.reason:
            rec.update(status="skipped", error=ext.reason, written_at=now())
            self.write(rec)
            self.progress.step(f"{label}: skipped ({ext.reason})")
            return
        layout = ext.layout(pt.causal) if ext else self.ringx.ALGORITHMS[name].layout(pt.causal)
        inputs, err = None, None
        try:  # 1. inputs (may run out of memory)
            maybe_inject(o["inject"], self.rank, index, "prepare")
            inputs = self.inputs(pt, index)
        except Exception as e:  # noqa: BLE001 - every failure becomes a record
            err = describe(e)
        if not self.settle(rec, err, {}, label, broke_group=False):
            return
        result = {}
        try:  # 2. optional check, one call for the ledger, then the timed iterations
            result = self.measure(index, name, pt, layout, inputs, ext)
        except CheckFailed as e:
            err = ("check", str(e))
        except Exception as e:  # noqa: BLE001
            err = describe(e)
        if not self.settle(rec, err, result, label, broke_group=err is not None and err[0] != "check"):
            return
        self.finish(rec, pt, layout, result, label)

    def inputs(self, pt: Point, index: int):
        import torch

        g = torch.Generator(device="cpu").manual_seed(1000 + index)
        dt = getattr(torch, pt.dtype)
        return [torch.randn(pt.batch, pt.seq_per_rank, h, pt.head_dim, generator=g, dtype=dt).to(self.ctx.device)
                for h in (pt.heads, pt.kv_heads, pt.kv_heads, pt.heads)]

    def measure(self, index: int, name: str, pt: Point, layout: str, inputs, ext) -> dict:
        import torch

        from bench import metrics
        from bench.timing import time_iterations

        o, dev, result = self.opts, self.ctx.device, {}
        if o["check"]:
            cs = min(pt.seq, o["check_max_seq"])
            cs -= cs % self.ringx.layouts.global_divisor(layout, self.P)
            dt = getattr(torch, pt.dtype)
            fn = functools.partial(ext.fn, causal=pt.causal) if ext else None
            err = self.ringx.verify.max_error(name, pt.causal, 1, cs, pt.heads, pt.kv_heads, pt.head_dim, dt, dev,
                                              o["kernel"], seed=index, fn=fn, layout=layout)
            tol = self.ringx.verify.TOLERANCE[dt]
            result.update(check_max_error=err, check_tolerance=tol, check_seq=cs)
            maybe_inject(o["inject"], self.rank, index, "check")
            if not err <= tol:
                raise CheckFailed(f"check failed: max error {err:.3e} > {tol:.0e} at seq {cs}")
        call, stats = make_call(name, ext, pt, inputs, o["kernel"])
        metrics.reset_peak_memory(dev)
        call(stats)  # untimed: fills the ledger
        maybe_inject(o["inject"], self.rank, index, "run")
        samples = time_iterations(functools.partial(call, None), int(o["warmup"]), int(o["iters"]), dev)
        ledgers = [stats.forward, stats.backward] if stats else []
        result.update(samples=samples, mem=metrics.peak_memory(dev), kernel=stats.kernel if stats else "external",
                      sent=sum(x.sent for x in ledgers), received=sum(x.received for x in ledgers),
                      calls=sum(x.calls for x in ledgers),
                      ledger={"forward": stats.forward.as_dict(), "backward": stats.backward.as_dict()}
                      if stats else None)
        return result

    def settle(self, rec: dict, err, result: dict, label: str, broke_group: bool) -> bool:
        """Agree across ranks on how the stage went; record a failure if any rank failed."""
        from bench.store import now

        info = {"error": err[1] if err else None, "kind": err[0] if err else None,
                **{k: result.get(k) for k in ("mem", "sent", "received", "calls")}}
        votes = self.group.agree(err is None, info)
        if votes is None:
            msg = (f"not every rank reported within {self.group.deadline:.0f}s during {label}: a rank died or "
                   "hangs; stopping the run (the records written so far are intact)")
            rec.update(status="failed", failure="timeout", error=msg, written_at=now())
            self.write(rec)
            self.group.give_up(msg)
        self.votes = votes
        bad = [(i, v) for i, v in enumerate(votes) if not v["ok"]]
        if not bad:
            return True
        rec.update(status="failed", failure=bad[0][1]["kind"], failed_ranks=[i for i, _ in bad],
                   error="; ".join(f"rank {i}: {v['error']}" for i, v in bad), written_at=now(),
                   **{k: v for k, v in result.items() if k.startswith("check_")})
        self.write(rec)
        self.counts["failed"] += 1
        self.progress.step(f"{label}: FAILED ({rec['error']})")
        if broke_group or any(v["kind"] != "check" for _, v in bad):
            from ringx import launch

            self.ctx = launch.reinit(self.ctx, self.opts["timeout"])  # a collective may be half-done
        return False

    def finish(self, rec: dict, pt: Point, layout: str, result: dict, label: str) -> None:
        from bench import metrics
        from bench.store import now
        from bench.timing import stat_fields, summarize

        st = summarize(result["samples"])
        flops = metrics.attention_flops(pt.batch, pt.seq, pt.heads, pt.head_dim, pt.causal, pt.mode)
        tflops = flops / self.P / st["median"] / 1e12
        peak = self.opts["peak_tflops"]
        rec.update(
            written_at=now(), kernel=result["kernel"], layout=layout, samples_s=result["samples"],
            **stat_fields(st),
            flops=flops, flops_convention=metrics.FLOPS_CONVENTION, tflops_per_rank=tflops, peak_tflops=peak,
            mfu=tflops / peak if peak else None,
            bytes_sent_per_rank=[v["sent"] for v in self.votes],
            bytes_received_per_rank=[v["received"] for v in self.votes],
            comm_calls_per_rank=[v["calls"] for v in self.votes],
            mem_peak_bytes_per_rank=[v["mem"] for v in self.votes],
            ledger_rank0=result["ledger"], **{k: v for k, v in result.items() if k.startswith("check_")})
        self.write(rec)
        self.counts["recorded"] += 1
        self.progress.step(f"{label}: {st['median'] * 1e3:.2f} ms ({tflops:.3f} TFLOP/s per rank)")

    def write(self, rec: dict) -> None:
        if self.rank == 0:
            self.store.append(rec)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    from mpi4py import MPI

    opts, points = resolve(parser, argv, MPI.COMM_WORLD.Get_size())
    runner = Runner(opts, argv)
    runner.run(points)
    from ringx import launch

    launch.finalize()
    return 0


def make_call(name: str, ext, pt: Point, inputs, kernel):
    """(call(stats), stats): one forward or forward+backward of a ringx algorithm or an outside baseline."""
    import torch

    import ringx

    q, k, v, do = inputs
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
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
