"""``ringx-bench run``: time ring and ringX algorithms under mpiexec or srun.

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
  mpiexec -n 4 ringx-bench run --seq 1024,2048 --causal true,false --campaign demo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

from ringx_drivers import options
from ringx_drivers.driver import (
    Case,
    CaseDriver,
    Invocation,
    Stage,
    add_output_arguments,
    given_options,
    ledger_totals,
    mpi_main,
    per_rank_fields,
)
from ringx_drivers.measure.failures import CheckFailed
from ringx_drivers.points.attention import Point, make_point, record_config
from ringx_suite.cli import Parser, UserError, split_list

PROG = "ringx-bench run"


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__)
    add = p.add_argument
    add("--config", help="TOML or JSON file with any of the options below (flags override it)")
    add("--points", help="JSON file listing points (dicts of algorithm, seq or seq_per_rank, batch, heads, kv_heads, "
        "head_dim, dtype, causal, mode) instead of the cross product of the flags below (used by bench sweep)")
    options.add_arguments(p.add_argument_group("points (lists are crossed)"), options.PARAMS.values())
    options.add_arguments(p.add_argument_group("measurement"), options.SETTINGS.values())
    add_output_arguments(p)
    from ringx_suite.plugins import FLAG_HELP

    add("--plugin", help=FLAG_HELP)
    add("--baselines", help=argparse.SUPPRESS)  # gone: a one-line error says where the peers went
    add("--inject", help=argparse.SUPPRESS)  # tests only: RANK:CASE:KIND[@PHASE], see parse_inject
    return p


def resolve(argv: list[str] | None, world: int, prog: str = PROG) -> tuple[Invocation, dict, list[Point]]:
    """Flags (over the config file, over the definitions' defaults) into the checked invocation, the plugins by name
    (loaded here, on every rank alike, before any collective) and the validated points for ``world`` ranks.
    ``prog``: the command that says so when a plugin is left out (bench trace takes these flags too)."""
    from ringx_suite import plugins

    argv = list(argv or [])
    valid = set(options.PARAMS) | set(options.SETTINGS) | set(options.OUTPUT) | {"baselines", "inject", "points",
                                                                                "plugin"}
    given = given_options(build_parser(), argv, valid)
    if given.get("baselines"):
        raise UserError("--baselines is gone: the field's implementations are plugins now; name them in --algorithms "
                        f"({', '.join(sorted(plugins.installed()))})")
    inv = Invocation.of(given, argv)
    specs = split_list(given.get("plugin") or "")
    if given.get("points"):
        path = given["points"]
        try:
            raw = json.loads(open(path).read())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read points file {path}: {e}") from None
        if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
            raise UserError(f"points file {path} must hold a JSON list of objects")
        named = list(dict.fromkeys(str(d.get("algorithm")) for d in raw))
    else:
        raw, named = None, options.value(options.PARAMS["algorithms"], given.get("algorithms"), "", many=True) or []
    loaded = plugins.load_apart(named, specs, prog)
    if raw is None:
        raw = cross_product({k: given.get(k) for k in options.PARAMS}, loaded)
    return inv, loaded, [make_point(d, world, external=loaded, seed=inv.settings.mask_seed) for d in raw]


def cross_product(params: dict, plugins: dict | None = None) -> list[dict]:
    """Point dicts from the parameters: every masking x sequence x mode x dtype x algorithm. ``plugins`` by name (the
    --plugin ones and those --algorithms names) join the algorithms asked for (default: every built-in)."""
    import ringx
    from ringx_suite import masks

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
    plugins = plugins or {}
    for n in names or []:
        if n not in ringx.ALGORITHMS and n not in plugins:
            raise UserError(f"unknown algorithm {n!r}; choose from {', '.join(ringx.ALGORITHMS)}, or a plugin "
                            "(--plugin, or installed: ringx-bench plugins lists them)")
    seq_key = "seq_per_rank" if "seq_per_rank" in many else "seq"
    lengths = many.get(seq_key, [2048])
    specs = masks.reconcile(many.get("mask"), many.get("causal"), [P["causal"].default])
    return [{"algorithm": n, seq_key: s, **one, "dtype": d, "mask": c, "mode": m}
            for c in specs for s in lengths
            for m in many.get("mode", [P["mode"].default]) for d in many.get("dtype", [P["dtype"].default])
            for n in [*(names or ringx.algorithms.names(masks.causal_layout(c))),
                      *(p for p in plugins if p not in (names or ()))]]


# ---------------------------------------------------------------------------------------------
# Running on every rank


class Attention(CaseDriver):
    """``bench run``: every configuration's algorithms (built-in and plugins) timed side by side."""

    prog, command, kind = "bench run", "run", "attention"

    def __init__(self, inv: Invocation, points: list[Point], plugins: dict):
        super().__init__(inv)
        self.points, self.external = points, plugins

    def before_campaign(self) -> None:
        import ringx

        self.ringx = ringx
        configs = list(dict.fromkeys(replace(pt, algorithm="") for pt in self.points))
        self.plan = [(c, [pt.algorithm for pt in self.points if replace(pt, algorithm="") == c]) for c in configs]

    def open(self, **kw) -> None:
        super().open(**kw)
        from ringx_drivers.measure.memory import device_memory

        # The smallest rank's memory, so every rank refuses the same points (0: unknown, not checked).
        self.memory = min(self.group.comm.allgather(device_memory(self.ctx.device, self.ctx.local_world_size)))
        import torch

        self.device_name = torch.cuda.get_device_name(self.ctx.device) if self.ctx.device.type == "cuda" else None

    # -- points and records --------------------------------------------------------------------------------

    def configurations(self) -> list[tuple[int, list[Point]]]:
        return [(rep, [replace(c, algorithm=n) for n in names]) for c, names in self.plan
                for rep in range(self.settings.repeats)]

    def config(self, pt: Point, rep: int, nodes: int) -> dict:
        s = self.settings
        return record_config(pt, self.P, nodes, rep, s.kernel, s.warmup, s.iters)

    def label(self, pt: Point) -> str:
        return f"{pt.algorithm} seq={pt.seq} {pt.mask_text()} {pt.mode} {pt.dtype}"

    def record_fields(self, pt: Point) -> dict:
        ext = self.external.get(pt.algorithm)
        if ext:  # the field's implementations (bench/peers/) apart from a user's own
            return ext.record_fields()
        return {"family": self.ringx.ALGORITHMS[pt.algorithm].family}

    def own(self, pt: Point):
        return self.external.get(pt.algorithm)

    def layout(self, pt: Point) -> str:
        ext = self.external.get(pt.algorithm)
        if ext:
            return ext.layout(pt.the_mask().causal_layout)
        return self.ringx.ALGORITHMS[pt.algorithm].layout(mask=pt.the_mask())

    def start(self, total: int) -> None:
        self.progress.note(f"bench run: {total} records to make on {self.P} ranks ({self.nodes} node(s), device "
                           f"{self.ctx.device.type}), campaign {self.store.campaign!r} -> {self.store.records_path}")
        self.note_machine()

    def unrunnable(self, pt: Point):
        ext = self.external.get(pt.algorithm)
        refused = ext.refusal(self.ctx.device.type, [pt.the_mask()]) if ext else None
        if refused:
            return refused
        too_big = self.memory_problem(pt)  # refused before allocating
        return ("failed", "oom", too_big) if too_big else None

    def memory_problem(self, pt: Point) -> str:
        """'' when the point's estimated memory per rank fits this device, else why it is not run."""
        from ringx_drivers.points.attention import memory_bytes

        have, s = self.memory, self.settings
        ext = self.external.get(pt.algorithm)
        need = memory_bytes(pt, self.P, s.check_max_seq if s.check else 0, ext.memory_like if ext else "ring")
        if not have or need <= have:
            return ""
        return (f"not run: needs at least {need / 2**30:.1f} GiB per rank (inputs, gradients, the algorithm's "
                f"buffers), more than the {have / 2**30:.1f} GiB this rank has")

    # -- the stages ----------------------------------------------------------------------------------------

    def inputs(self, cases: list[Case]):
        """q, k, v and dout of the configuration (timing does not depend on the values), and its check length."""
        import torch

        pt = cases[0].point
        g = torch.Generator(device="cpu").manual_seed(1000)
        dt = getattr(torch, pt.dtype)
        tensors = [torch.randn(pt.batch, pt.seq_per_rank, h, pt.head_dim, generator=g, dtype=dt).to(self.ctx.device)
                   for h in (pt.heads, pt.kv_heads, pt.kv_heads, pt.heads)]
        return tensors, self.check_seq(cases)

    def stages(self, c: Case, shared) -> list[Stage]:
        tensors, cs = shared
        return [Stage("preparing", lambda: self.prepare(c, tensors), False),
                Stage("checking", lambda: self.check(c, cs), False),
                Stage("the first call of", lambda: self.first_call(c), True)]

    def prepare(self, c: Case, inputs) -> None:
        self.failures.hook(c.index, "prepare")
        c.call, c.stats = make_call(c.algorithm, c.own, c.point, inputs, self.settings.kernel)

    def check_seq(self, cases: list[Case]) -> int:
        """One check length for the whole configuration (every layout can split it), so the float64
        reference is computed once and shared by every algorithm of the configuration."""
        import math

        pt = cases[0].point
        div = math.lcm(*(self.ringx.layouts.global_divisor(c.layout, self.P) for c in cases))
        if pt.mask and pt.mask_seed is None and pt.the_mask().seq_len is not None:
            return pt.seq  # documents (or groups, slices) given literally fit this length only
        cs = min(pt.seq, self.settings.check_max_seq)
        return max(cs - cs % div, div if pt.seq >= div else 0)

    def check_mask(self, pt: Point, cs: int):
        """The mask the check runs at ``cs`` tokens: the point's, or its distribution drawn again for ``cs``."""
        if pt.mask is None:
            return pt.causal
        return pt.the_mask(cs)

    def check(self, c: Case, cs: int) -> None:
        import torch
        import torch.distributed as dist

        s, pt = self.settings, c.point
        if not s.check:
            return
        dt = getattr(torch, pt.dtype)
        t0 = time.perf_counter()
        m = self.check_mask(pt, cs)
        fn = None
        if c.own:
            whole = m if not isinstance(m, bool) else self.ringx.Mask.causal() if m else self.ringx.Mask.full()

            def fn(q, k, v):
                return c.own.call(q, k, v, whole, dist.group.WORLD)
        ref = self.ringx.verify.reference(m, 1, cs, pt.heads, pt.kv_heads, pt.head_dim, dt,
                                          seed=self.config_seed, device=self.ctx.device)
        err = self.ringx.verify.check(ref, pt.algorithm, self.ctx.device, s.kernel, fn=fn, layout=c.layout)
        tol = self.ringx.verify.TOLERANCE[dt]
        c.result.update(check_max_error=err, check_tolerance=tol, check_seq=cs, check_s=time.perf_counter() - t0)
        self.failures.hook(c.index, "check")
        if not err <= tol:
            raise CheckFailed(f"check failed: max error {err:.3e} > {tol:.0e} at seq {cs}")

    def first_call(self, c: Case) -> None:
        """One untimed call: fills the ledger and measures this algorithm's own peak memory. A plugin's call is
        counted at the dispatcher (ringx.traffic) after it, as ours would be: its first call may set things up."""
        from ringx_drivers.measure.memory import peak_memory, reset_peak_memory

        dev = self.ctx.device
        reset_peak_memory(dev)
        self.failures.hook(c.index, "run")
        c.call(c.stats)
        st = c.stats
        c.result.update(mem=peak_memory(dev), kernel=st.kernel if st else c.algorithm,
                        kernel_version=getattr(st, "kernel_version", None) if st else None)
        if st:
            c.result.update(**ledger_totals(st), ledger={"forward": st.forward.as_dict(),
                                                         "backward": st.backward.as_dict()})
        else:
            from ringx.traffic import Traffic

            with Traffic() as t:
                c.call(None)
            lg = t.ledger
            c.result.update(sent=lg.sent, received=lg.received, calls=lg.calls,
                            ledger={c.point.mode: lg.as_dict(), **({"not_counted": sorted(t.unknown)}
                                                                    if t.unknown else {})})
        c.call = _untracked(c.call)

    def after_timing(self, live: list[Case]) -> list[dict]:
        """After the timed rounds, one more call per ringx case measures what the attention allocates (its call
        peak), and with --trace one more is recorded on the timeline: its overlap_fraction (not a plugin's: nothing
        inside it is marked, so there is no overlap to measure). Every rank's, gathered."""
        import torch

        from ringx import timeline
        from ringx_drivers.measure.memory import call_peak

        dev, comm, out = self.ctx.device, self.group.comm, []
        for c in live:
            # a plugin's call peak is not measured: a call that fails under the memory mode would fail its whole group
            mine = {"call_peak": None if c.own else call_peak(c.call, dev)[1]}
            if self.settings.trace and not c.own:
                torch.distributed.barrier()
                with timeline.record(dev) as rec:
                    c.call()
                spans = [m.end_s for m in rec.marks] or [0.0]
                mine.update(overlap=timeline.overlap_fraction(rec.marks),
                            span=max(spans) - min((m.start_s for m in rec.marks), default=0.0))
            out.append(comm.allgather(mine))
        return out

    def finish(self, c: Case, samples: list[float], extra, group_id: str | None, shared) -> str:
        from ringx.flops import CONVENTION, mask_flops
        from ringx_suite import plausible
        from ringx_suite.stats import stat_fields
        from ringx_suite.store import now

        pt, result, votes = c.point, c.result, c.votes
        fields = stat_fields(samples)
        flops = mask_flops(pt.batch, pt.seq, pt.heads, pt.head_dim, pt.the_mask(), pt.mode)
        tflops = flops / self.P / fields["median_s"] / 1e12
        peak = self.settings.peak_tflops
        sent = per_rank_fields(votes)["bytes_sent_per_rank"]
        link = self.settings.link_gb_per_s
        wrong = plausible.problems(tflops, peak or plausible.known_peak(self.device_name), sent, fields["median_s"],
                                   link)
        c.rec.update(
            written_at=now(), kernel=result["kernel"], kernel_version=result["kernel_version"], layout=c.layout,
            timing_group=group_id, samples_s=samples, **fields,
            flops=flops, flops_convention=CONVENTION, tflops_per_rank=tflops, peak_tflops=peak,
            mfu=tflops / peak if peak else None, **per_rank_fields(votes), **({"link_gb_per_s": link} if link else {}),
            mem_peak_bytes_per_rank=[v["mem"] for v in votes],
            **({"call_peak_bytes_per_rank": [x["call_peak"] for x in extra]} if not c.own else {}),
            **_overlap_fields(extra),
            ledger_rank0=result["ledger"],
            **{k: v for k, v in result.items() if k.startswith("check_")},
            **({"implausible": wrong} if wrong else {}))
        return f"{fields['median_s'] * 1e3:.2f} ms ({tflops:.3f} TFLOP/s per rank)" + \
            (f" IMPLAUSIBLE: {'; '.join(wrong)}" if wrong else "")


def _overlap_fields(extra: list[dict]) -> dict:
    """overlap_fraction (of the rank whose traced call took longest) and every rank's, when traced."""
    if "overlap" not in extra[0]:
        return {}
    slowest = max(range(len(extra)), key=lambda r: extra[r]["span"])
    return {"overlap_fraction": extra[slowest]["overlap"], "overlap_fraction_per_rank": [x["overlap"] for x in extra]}


def _untracked(call):
    """The timed form of a call: no stats, no input validation exchange."""
    return lambda: call(None)


def main(argv: list[str] | None = None) -> int:
    def make(argv: list[str], world: int) -> Attention:
        inv, plugins, points = resolve(argv, world)
        return Attention(inv, points, plugins)

    return mpi_main(PROG, argv, make)


def make_call(name: str, ext, pt: Point, inputs, kernel):
    """(call(stats), stats): one forward or forward+backward of a ringx algorithm or a plugin. While the timeline
    records, a plugin's forward and backward are each one ``call`` mark (nothing inside a plugin is marked)."""
    import torch
    import torch.distributed as dist

    import ringx
    from ringx import timeline

    q, k, v, do = inputs
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))  # shares the inputs' storage: no copy
    if ext:
        mask = pt.the_mask()

        def f(q_, k_, v_, _stats):
            t = timeline.ON and timeline.start()
            out = ext.call(q_, k_, v_, mask, dist.group.WORLD)
            if t:
                timeline.stop(t, "call", "fwd")
            return out
        stats = None
    else:
        stats, mask = ringx.CallStats(), pt.the_mask()

        def f(q_, k_, v_, st):
            return ringx.attention(q_, k_, v_, algorithm=name, mask=mask, kernel=kernel, stats=st,
                                   validate=st is not None)

    def fwd(st):
        with torch.no_grad():
            return f(q, k, v, st)

    def fwdbwd(st):
        out = f(qg, kg, vg, st)
        t = ext is not None and timeline.ON and timeline.start()
        grads = torch.autograd.grad(out, (qg, kg, vg), do)
        if t:
            timeline.stop(t, "call", "bwd")
        return grads

    return (fwd if pt.mode == "fwd" else fwdbwd), stats


if __name__ == "__main__":
    sys.exit(main())
