"""The library's host time, where it decides: tiny shapes on local CPU ranks, one thread per rank.

At 1M tokens on 4,096 GPUs a rank holds 256 tokens and a ring takes 4,096 steps on tiny blocks: there the work
around the kernels (Python, planning, bookkeeping, the input check) decides, not the kernels. Three parts, each
timed side by side (every candidate takes a turn in every round, in an order that rotates; each sample is
--calls calls, the slowest rank's time; medians with 95% paired bootstrap intervals, '~' marking a ratio within
noise):

  call    one rank: every algorithm against the bare kernel on the same tensors (--seq tokens, causal), forward
          and forward+backward; forward+backward also against the autograd floor, the same kernel in a minimal
          torch.autograd.Function (what any differentiable op pays, before any ringx code);
  step    --ranks ranks, --block tokens per rank: each algorithm's default call (the input check at every call)
          against validate=False, and its host time per step: a call's time minus its kernels and its waits
          and posts of communication (gloo's posts wait for the peer; ringx.timeline marks of --record-rounds
          recorded rounds; the largest rank's; the parts are shown, each the largest rank's), over
          its steps (the (queries, keys) block pairs it computes, on the rank that computes most); with --profile
          also the Python function with the most time in its own body under cProfile, and its share;
  decode  the tiny model served at --decode-ranks ranks: each algorithm's time per output token against tp's
          (prompt --prompt-len; each candidate prefills, untimed, then a round is one decode step of each; --iters
          generations of --new-tokens tokens).

Ratios, not absolute times, are what compare across machines. Results: a table on stdout and OUT/table.md,
every sample and the provenance in OUT/results.json.

Example: ringx-bench overhead --parts call --algorithms ring,ringx3,usp
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from ringx_suite.cli import Parser, UserError

PARTS = ("call", "step", "decode")
DEFAULTS = dict(seq=128, batch=1, heads=2, head_dim=32, dtype="float32", warmup=3, iters=40)
MODES = ("fwd", "fwd+bwd")


# ------------------------------------------------------------------------------------------ the ranks' side


def _repeat(fn, n: int):
    def run():
        for _ in range(n):
            fn()
    return run


CALLS = {"call": 10, "step": 2}  # --calls' defaults: enough calls per sample to dwarf the timer, few enough rounds
# to finish: a 4-rank fwd+bwd call takes ~100x a one-rank forward here


def _timed(fns: list, a, calls: int) -> list[list[float]]:
    """Seconds per call of each function, one sample per round (``calls`` calls), the slowest rank's."""
    import torch

    from ringx_drivers.measure.timing import time_round_robin

    samples = time_round_robin([_repeat(f, calls) for f in fns], a.warmup, a.iters, torch.device("cpu"))
    return [[s / calls for s in row] for row in samples]


def _grads(call, q, k, v, do):
    """A forward+backward of ``call(q, k, v) -> out`` on leaf copies of the inputs."""
    import torch

    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    return lambda: torch.autograd.grad(call(qg, kg, vg), (qg, kg, vg), do)


def _floor(kern, causal: bool, scale: float):
    """The kernel in a minimal autograd Function: ``(q, k, v) -> out``."""
    import torch

    class Floor(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            out, lse = kern.forward(q, k, v, causal, scale)
            ctx.save_for_backward(q, k, v, out, lse)
            return out

        @staticmethod
        def backward(ctx, dout):
            q, k, v, out, lse = ctx.saved_tensors
            return kern.backward(dout, q, k, v, out, lse, causal, scale)

    return Floor.apply


def call_part(a, ctx) -> list[dict]:
    """One rank: every algorithm against the bare kernel (and, forward+backward, the autograd floor)."""
    import ringx

    q, k, v, do = _tensors(a, a.seq)
    kern, scale = ringx.select_kernel(q.device, q.dtype), a.head_dim ** -0.5

    def bare():
        return kern.forward(q, k, v, True, scale)

    def bare_both():
        out, lse = kern.forward(q, k, v, True, scale)
        return kern.backward(do, q, k, v, out, lse, True, scale)

    rows = []
    for mode in a.modes:
        fns = {"kernel": bare} if mode == "fwd" else {"kernel": bare_both, "autograd floor": _grads(
            _floor(kern, True, scale), q, k, v, do)}
        for name in a.algorithms:
            def call(q_, k_, v_, name=name):
                return ringx.attention(q_, k_, v_, algorithm=name, causal=True)
            fns[name] = (lambda c=call: c(q, k, v)) if mode == "fwd" else _grads(call, q, k, v, do)
        for name, s in zip(fns, _timed(list(fns.values()), a, a.calls or CALLS["call"])):
            rows.append({"part": "call", "world": 1, "mode": mode, "name": name, "samples": s})
        _say(a, ctx, f"call, {mode}: {len(fns)} candidates timed")
    return rows


def step_part(a, ctx) -> list[dict]:
    """P ranks: the default call against validate=False, and host time per step from recorded calls."""
    import torch.distributed as dist

    import ringx

    P, r, calls = ctx.world_size, ctx.rank, a.calls or CALLS["step"]
    Q, K, V, dO = _tensors(a, a.block * P)
    rows, runs = [], []
    for name in a.algorithms:  # what cannot run at this shape is refused alike on every rank, and said so
        layout = ringx.ALGORITHMS[name].layout(True)
        try:
            ringx.attention(*(ringx.shard(t, layout, r, P) for t in (Q, K, V)), algorithm=name, causal=True)
            runs.append(name)
        except ringx.RingxInputError as e:
            rows += [{"part": "step", "world": P, "mode": m, "name": name, "skipped": str(e)} for m in a.modes]
    for mode in a.modes:
        fns, unchecked = {}, {}
        for name in runs:
            layout = ringx.ALGORITHMS[name].layout(True)
            q, k, v, do = (ringx.shard(t, layout, r, P) for t in (Q, K, V, dO))
            for checked in (True, False):
                def call(q_, k_, v_, name=name, checked=checked):
                    return ringx.attention(q_, k_, v_, algorithm=name, causal=True, validate=checked)
                fn = (lambda c=call, q=q, k=k, v=v: c(q, k, v)) if mode == "fwd" else _grads(call, q, k, v, do)
                fns[name, checked] = fn
                if not checked:
                    unchecked[name] = fn
        samples = dict(zip(fns, _timed(list(fns.values()), a, calls)))
        for name in runs:
            parts = [_recorded(unchecked[name], calls) for _ in range(a.record_rounds)]
            mine = {key: statistics.median(p[key] for p in parts) for key in parts[0]}
            if a.profile:
                mine["profile"] = _profiled(unchecked[name], calls * a.record_rounds)
            every = [None] * P
            dist.all_gather_object(every, mine)
            steps = max(x["steps"] for x in every)  # a rank whose block pair is masked out still takes the step
            host = max(_host(x) for x in every)
            rows.append({"part": "step", "world": P, "mode": mode, "name": name, "block": a.block,
                         "samples": samples[name, False], "checked_samples": samples[name, True],
                         "ranks": every, "steps": steps, "host_per_step": host / steps})
            if a.profile:  # the largest share on any rank
                rows[-1]["profile_top"] = max((f for x in every for f in x["profile"][:1]), key=lambda f: f[1])
        _say(a, ctx, f"step, {P} ranks, {mode}: {len(runs)} algorithms timed and recorded")
    return rows


def _host(part: dict) -> float:
    """A recorded call's host time: its time less its kernels, its waits and its posts (gloo's point-to-point posts
    wait for the peer, so on CPU ranks they are communication too); merges stay in (the library's own arithmetic)."""
    return part["wall"] - part["kernel"] - part["wait"] - part["post"]


def _recorded(fn, calls: int) -> dict:
    """Per call, from ``calls`` recorded calls: the wall time; the kernels; the merges; the waits (for asynchronous
    operations, and blocking operations whole); the posts of asynchronous ones; and the steps (block pairs,
    forward and backward counted apart)."""
    from ringx import timeline

    t0 = time.perf_counter()
    with timeline.record() as rec:
        for _ in range(calls):
            fn()
    wall = time.perf_counter() - t0
    sums = {"kernel": 0.0, "merge": 0.0, "wait": 0.0, "post": 0.0}
    prev = None
    for m in rec.marks:
        d = m.end_s - m.start_s
        if m.cat == "compute":
            sums["kernel"] += d
        elif m.cat in ("merge", "wait", "post"):
            sums[m.cat] += d
        elif m.cat == "comm" and prev is not None and prev.cat == "post" and prev.start_s == m.start_s:
            sums["post"] -= prev.end_s - prev.start_s  # a blocking operation: waited for whole, not a post
            sums["wait"] += d
        prev = m
    steps = sum(len({m.step for m in rec.marks if m.cat == "compute" and m.op == op}) for op in ("fwd", "bwd"))
    return {"wall": wall / calls, **{k: v / calls for k, v in sums.items()}, "steps": max(1, steps)}


def _profiled(fn, calls: int, top: int = 5) -> list[tuple[str, float]]:
    """The Python functions taking the most time in their own bodies over ``calls`` calls under cProfile, each with
    its share of the calls' whole time (of a step's too: both are divided by the steps). Built-in functions (the
    kernels, waits for communication, torch's operators) are left out: they are below the Python host code."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    st = pstats.Stats(prof)
    own = [(f"{Path(file).parent.name}/{Path(file).name}:{fn_name}", tt / st.total_tt)
           for (file, _line, fn_name), (_cc, _nc, tt, _ct, _callers) in st.stats.items() if file != "~"]
    return sorted(own, key=lambda x: -x[1])[:top]


def decode_part(a, ctx) -> list[dict]:
    """P ranks: each algorithm's time per output token against tp's. Every candidate prefills the prompt (untimed),
    then the decode steps are timed side by side, one step of each candidate per round (the slowest rank's), so
    sample i of every candidate is the same step of the same generation; --iters generations after --warmup."""
    import torch

    from ringx_drivers import models
    from ringx_drivers.driver import replicated_model
    from ringx_drivers.measure.timing import time_round_robin
    from ringx_drivers.models import serving

    P = ctx.world_size
    cfg = models.PRESETS["tiny"]
    names = [n for n in [serving.TP, *a.algorithms] if not serving.problem(cfg, n, a.prompt_len, a.new_tokens, P)]
    prompt = serving.prompt_tokens(cfg, a.batch, a.prompt_len, seed=1)
    # a model each (the same weights): candidates sharing one would find its weights warm in the CPU's caches,
    # where tp's own slices are not
    servers = [serving.Server(replicated_model(cfg, seed=1, device=torch.device("cpu"), world=P,
                                               dtype=getattr(torch, a.dtype)).eval(), n, batch=a.batch,
                              prompt_len=a.prompt_len, new_tokens=a.new_tokens) for n in names]
    samples: list[list[float]] = [[] for _ in names]
    for generation in range(a.warmup + a.iters):
        for s in servers:
            s.prefill(prompt)
        steps = time_round_robin([s.step for s in servers], 0, a.new_tokens - 1, torch.device("cpu"))
        if generation >= a.warmup:
            for mine, got in zip(samples, steps):
                mine += got
    _say(a, ctx, f"decode, {P} ranks: {len(names)} candidates timed")
    return [{"part": "decode", "world": P, "mode": "decode", "name": n, "samples": s} for n, s in zip(names, samples)]


def _tensors(a, seq: int):
    import torch

    g = torch.Generator().manual_seed(1234)
    dt = getattr(torch, a.dtype)
    q_shape, kv_shape = (a.batch, seq, a.heads, a.head_dim), (a.batch, seq, a.kv_heads, a.head_dim)
    return [torch.randn(s, generator=g, dtype=dt) for s in (q_shape, kv_shape, kv_shape, q_shape)]


def _say(a, ctx, text: str) -> None:
    if ctx.rank == 0 and not a.quiet:
        print(f"[overhead] {text}", flush=True)


def worker(a) -> None:
    import torch

    from ringx import launch

    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=600)
    rows = {"call": call_part, "step": step_part, "decode": decode_part}[a.part](a, ctx)
    if ctx.rank == 0:
        Path(a.out).write_text(json.dumps(rows))
    launch.finalize()


# ------------------------------------------------------------------------------------------ the table


def _ratio(base: list[float], cand: list[float]) -> str:
    """median(cand) / median(base) with its paired interval (above 1: the candidate takes longer)."""
    from ringx_suite.stats import speedup

    return speedup(cand, base, paired=True).text()


def _us(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e6:.0f}"


def _md(head: list[str], body: list[list[str]]) -> str:
    from ringx_suite.tables import Table, render

    return render(Table(head, body), "markdown").rstrip()


def table(rows: list[dict], a) -> str:
    """The three parts' tables (markdown): times are medians, ratios candidate / baseline with their interval."""
    out = []
    calls = [x for x in rows if x["part"] == "call"]
    if calls:
        by = {(x["mode"], x["name"]): x["samples"] for x in calls}
        body = []
        for name in ["kernel", "autograd floor", *a.algorithms]:
            cells = [name]
            for mode in a.modes:
                s = by.get((mode, name))
                base = by[mode, "kernel"]
                cells += ["-", "-"] if s is None else [_us(s), "-" if name == "kernel" else _ratio(base, s)]
            if "fwd+bwd" in a.modes:
                s = by.get(("fwd+bwd", name))
                floor = by.get(("fwd+bwd", "autograd floor"))
                cells.append(_ratio(floor, s) if s is not None and name not in ("kernel", "autograd floor") else "-")
            body.append(cells)
        head = ["algorithm"] + [c for m in a.modes for c in (f"{m} µs", f"{m} / kernel")]
        head += ["fwd+bwd / autograd floor"] if "fwd+bwd" in a.modes else []
        out.append(f"### One rank: host time per call (B={a.batch}, S={a.seq}, H={a.heads}/{a.kv_heads}, "
                   f"D={a.head_dim}, {a.dtype}, causal, one thread)\n\n" + _md(head, body))
    for P in sorted({x["world"] for x in rows if x["part"] == "step"}):
        for mode in a.modes:
            sub = [x for x in rows if x["part"] == "step" and x["world"] == P and x["mode"] == mode]
            skipped = [f"{x['name']} ({x['skipped'].split(': ', 1)[-1].split(';')[0]})" for x in sub if "skipped" in x]
            sub = [x for x in sub if "skipped" not in x]
            body = [[x["name"], str(int(x["steps"])),
                     f"{statistics.median(x['samples']) * 1e3:.2f}", _ratio(x["samples"], x["checked_samples"]),
                     *(f"{max(r[k] for r in x['ranks']) * 1e6:.0f}" for k in ("kernel", "merge", "wait", "post")),
                     f"{x['host_per_step'] * 1e6:.0f}"]
                    + ([f"`{x['profile_top'][0]}` {x['profile_top'][1]:.1%}"] if "profile_top" in x else [])
                    for x in sub]
            head = ["algorithm", "steps", "call ms (validate=False)", "default / validate=False", "kernels µs",
                    "merges µs", "waits µs", "posts µs", "host µs per step"]
            head += ["largest Python function's own time (cProfile)"] if any("profile_top" in x for x in sub) else []
            out.append(f"### {P} ranks, {a.block} tokens per rank, {mode}: the input check, and host time per step "
                       "(the largest rank's)\n\n" + _md(head, body)
                       + (f"\n\nNot run at this shape: {'; '.join(skipped)}." if skipped else ""))
    dec = [x for x in rows if x["part"] == "decode"]
    if dec:
        worlds = sorted({x["world"] for x in dec})
        by = {(x["world"], x["name"]): x["samples"] for x in dec}
        body = []
        for name in dict.fromkeys(x["name"] for x in dec):
            cells = [name]
            for P in worlds:
                s, tp = by.get((P, name)), by.get((P, "tp"))
                cells += ["-", "-"] if s is None else [
                    f"{statistics.median(s) * 1e3:.3f}", "-" if name == "tp" or tp is None else _ratio(tp, s)]
            body.append(cells)
        head = ["algorithm"] + [c for P in worlds for c in (f"{P} rank{'s' if P > 1 else ''}: ms per token", "/ tp")]
        out.append(f"### Decode: time per output token (tiny, {a.dtype}, batch {a.batch}, prompt {a.prompt_len}, "
                   f"{a.new_tokens} new tokens)\n\n" + _md(head, body))
    return "\n\n".join(out)


# ------------------------------------------------------------------------------------------ the command


def build_parser() -> tuple[Parser, list]:
    from ringx_drivers import options

    p = Parser(prog="ringx-bench overhead", description=__doc__)
    p.add_argument("--parts", default=",".join(PARTS), help="which parts, comma-separated: call, step, decode "
                   "(default: all three)")
    opts = [options.PARAMS[k] for k in ("algorithms", "seq", "batch", "heads", "kv_heads", "head_dim", "dtype")]
    opts += [options.SETTINGS[k] for k in ("warmup", "iters")]
    options.add_arguments(p, opts, DEFAULTS)
    p.add_argument("--modes", default=",".join(MODES), help="fwd, fwd+bwd or both (call and step parts; default: both)")
    p.add_argument("--calls", default=None, help="calls per timed sample (default: 10 in the call part, 2 in the step "
                   "part)")
    p.add_argument("--ranks", default="2,4", help="step part: comma-separated rank counts (default: 2,4)")
    p.add_argument("--block", default="64", help="step part: tokens per rank (default: 64)")
    p.add_argument("--record-rounds", default="5", help="step part: recorded rounds of --calls calls per algorithm "
                   "for the host time per step (default: 5)")
    p.add_argument("--profile", action="store_true", help="step part: also run each algorithm's calls under "
                   "cProfile and name the Python function with the most time in its own body, with its share of the "
                   "calls' time (kernels and waits left out: they are not Python)")
    p.add_argument("--decode-ranks", default="1,2", help="decode part: comma-separated rank counts (default: 1,2)")
    p.add_argument("--prompt-len", default="128", help="decode part: prompt tokens (default: 128)")
    p.add_argument("--new-tokens", default="16", help="decode part: tokens generated per round (default: 16)")
    p.add_argument("--out", default="runs/overhead", help="output directory (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)
    return p, opts


def resolve(a, opts) -> None:
    """Every option checked and typed in place; UserError (one line) for the first bad one."""
    import ringx
    from ringx_drivers import options
    from ringx_suite.cli import split_list

    where = "bench overhead"
    for o in opts:
        given = getattr(a, o.name)
        setattr(a, o.name, options.value(o, DEFAULTS.get(o.name) if given is None else given, where,
                                         many=o.name == "algorithms"))
    a.algorithms = a.algorithms or list(ringx.ALGORITHMS)
    a.kv_heads = a.kv_heads or a.heads
    count = options.Option
    for name, high in (("calls", 100_000), ("block", 1 << 20), ("record_rounds", 1000), ("prompt_len", 1 << 20),
                       ("new_tokens", 10_000)):
        setattr(a, name, options.value(count(name, None, "", int, low=1 if name != "new_tokens" else 2, high=high,
                                             nullable=name == "calls"), getattr(a, name), where))
    for name in ("ranks", "decode_ranks"):
        setattr(a, name, options.value(count(name, None, "", int, low=1, high=64), getattr(a, name), where, many=True))
    a.parts, a.modes = split_list(a.parts), split_list(a.modes)
    for what, got, known in (("part", a.parts, PARTS), ("mode", a.modes, MODES)):
        bad = [x for x in got if x not in known]
        if bad or not got:
            raise UserError(f"unknown {what}(s) {', '.join(bad) or '(none)'}; choose from {', '.join(known)}")
    unknown = [x for x in a.algorithms if x not in ringx.ALGORITHMS]
    if unknown:
        raise UserError(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ringx.ALGORITHMS)}")
    if a.dtype not in ("float32", "float64"):
        raise UserError(f"--dtype {a.dtype}: overhead runs on CPU ranks, use float32 or float64")
    if a.heads % a.kv_heads:
        raise UserError(f"--heads ({a.heads}) must be a multiple of --kv-heads ({a.kv_heads})")
    if a.seq % 2 or a.block % 2:
        raise UserError(f"--seq ({a.seq}) and --block ({a.block}) must be even (the zigzag layouts' two chunks)")


def main(argv: list[str] | None = None) -> int:
    p, opts = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv)
    try:
        resolve(a, opts)
    except UserError as e:
        p.error(str(e))
    if a.worker:
        worker(a)
        return 0

    from ringx_drivers import mpirun
    from ringx_drivers.measure import provenance

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(part, P) for part in a.parts for P in {"call": [1], "step": a.ranks, "decode": a.decode_ranks}[part]]
    rows: list[dict] = []
    for i, (part, P) in enumerate(runs, 1):
        print(f"[overhead] {i}/{len(runs)}: {part} at {P} rank{'s' if P > 1 else ''}, one thread each, "
              f"{a.warmup} warm-up + {a.iters} rounds", flush=True)
        part_json = out / f"{part}-P{P}.json"
        proc = mpirun.run(P, ["-m", "ringx_bench", "overhead", *argv, "--worker", "1", "--part", part,
                              "--out", str(part_json.resolve())], capture=False, threads_per_rank=1)
        if proc.returncode != 0:
            print(f"[overhead] the {part} part at {P} ranks failed (exit {proc.returncode}); results so far are in "
                  f"{out}", file=sys.stderr)
            return 1
        rows += json.loads(part_json.read_text())
    md = "## Host time: ringx-bench overhead\n\n" + table(rows, a)
    print(md)
    (out / "table.md").write_text(md + "\n")
    prov = provenance.collect([provenance.local_host()], ["-m", "ringx_bench", "overhead", *argv])
    (out / "results.json").write_text(json.dumps({"provenance": prov, "config": vars(a), "rows": rows}, indent=1))
    print(f"\n[overhead] table: {out / 'table.md'}; samples and provenance: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
