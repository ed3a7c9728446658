"""Quick ring-vs-ringX comparison on local CPU ranks (the README's main command).

At one rank every algorithm is timed against the bare local kernel on the
same data (the library's overhead); at more ranks each algorithm is timed
beside ``ring``. All candidates take turns within every iteration, in an
order that rotates, so the ratios are measured side by side; each speedup
comes with a paired bootstrap interval, '~' marking one within noise. Times are medians of the slowest rank per
iteration; p10-p90 and the samples are kept in the JSON output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ringx_suite.cli import Parser, split_list

DEFAULTS = dict(seq=2048, batch=1, heads=8, kv_heads=8, head_dim=64, dtype="float32", warmup=2, iters=7)


def band_of(mask) -> tuple[int, int] | None:
    """A window mask as one kernel block's band ``(lo, hi)`` (lo <= query - key <= hi); None for any other."""
    return (-mask.right, mask.left) if mask.kind == "window" else None


def masks_of(specs: list[str] | None, seq: int) -> list[tuple[str, object]]:
    """(label, ringx.Mask) per --mask spec at ``seq`` tokens (drawn with seed 0), default full and causal."""
    import ringx
    from ringx_suite import masks

    if not specs:
        return [("full", ringx.Mask.full()), ("causal", ringx.Mask.causal())]
    out = [(m.short(), m) for m in (masks.parse(x, seq, 0) for x in specs)]
    return list(dict(out).items())


def _callables(name: str, mask, q, k, v, do, scale: float, plugin=None):
    """(forward, forward+backward) closures for one algorithm (``plugin``: a ringx_suite.plugins.Plugin), or the
    bare kernel for ``kernel`` (full, causal and windows, as one band block; None for documents: many blocks, no
    bare kernel call)."""
    import torch

    import ringx

    if name == "kernel":
        kern = ringx.select_kernel(q.device, q.dtype)
        causal, band = bool(mask.plain), band_of(mask)
        if mask.plain is None and band is None:
            return None
        kw = {"band": band} if band else {}

        def fwd():
            return kern.forward(q, k, v, causal, scale, **kw)

        def fwdbwd():
            out, lse = kern.forward(q, k, v, causal, scale, **kw)
            return kern.backward(do, q, k, v, out, lse, causal, scale, **kw)

        return fwd, fwdbwd
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def attend(q, k, v):
        if plugin is not None:  # the contract's call, its output checked (a broken one ends the run in one line)
            return plugin.call(q, k, v, mask, torch.distributed.group.WORLD)
        return ringx.attention(q, k, v, algorithm=name, mask=mask, validate=False)

    def fwd():
        return attend(q, k, v)

    def fwdbwd():
        out = attend(qg, kg, vg)
        return torch.autograd.grad(out, (qg, kg, vg), do)

    return fwd, fwdbwd


def worker(a: argparse.Namespace) -> None:
    """Runs under mpiexec: time every algorithm (and the bare kernel at one rank)."""
    import torch

    import ringx
    from ringx import launch
    from ringx_drivers.measure.timing import time_round_robin
    from ringx_suite.stats import summarize

    torch.set_num_threads(a.threads)
    ctx = launch.init(timeout_s=600)
    P, r = ctx.world_size, ctx.rank
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(1234)
    shape_q = (a.batch, a.seq, a.heads, a.head_dim)
    shape_kv = (a.batch, a.seq, a.kv_heads, a.head_dim)
    Q, K, V, dO = (torch.randn(s, generator=g, dtype=dt) for s in (shape_q, shape_kv, shape_kv, shape_q))
    rows = []
    ext = _plugins(a)
    for label, mask in masks_of(a.mask, a.seq):
        names = (["kernel"] if P == 1 else []) + [n for n in a.algorithms if (ext[n].takes(mask)
                                                  if n in ext else ringx.ALGORITHMS[n].supports(mask))]
        fns = {}
        for name in names:
            layout = "contiguous" if name == "kernel" else ext[name].layout(mask.causal_layout) if name in ext \
                else ringx.ALGORITHMS[name].layout(mask=mask)
            q, k, v, do = (ringx.shard(t, layout, r, P, mask=mask) for t in (Q, K, V, dO))
            f = _callables(name, mask, q, k, v, do, a.head_dim**-0.5, ext.get(name))
            if f is not None:
                fns[name] = f
        names = list(fns)
        for m, mode in enumerate(("fwd", "fwd+bwd")):
            # All candidates take turns within each iteration: their ratios are side by side.
            samples = time_round_robin([f[m] for f in fns.values()], a.warmup, a.iters, torch.device("cpu"))
            for name, s in zip(names, samples):
                rows.append({"world": P, "algorithm": name, "causal": bool(mask.plain) if mask.plain is not None
                             else mask.is_causal, "mask": label, "mode": mode, "samples": s, **summarize(s)})
                if r == 0 and not a.quiet:
                    print(f"  P={P} {name:8s} {label:6s} {mode:8s} "
                          f"{rows[-1]['median'] * 1e3:9.2f} ms", flush=True)
    if r == 0:
        Path(a.out).write_text(json.dumps(rows))
    launch.finalize()


def _plugins(a: argparse.Namespace) -> dict:
    """The usable plugins among --algorithms and --plugin, by name; those that cannot run here are said in one line
    each (by the launcher, before any rank starts) and left out of ``a.algorithms``."""
    import ringx
    from ringx_suite import plugins

    got = plugins.load_apart(a.algorithms, a.plugin, "[quick]", quiet=a.worker)  # said once, by the launcher
    usable = {}
    for n, p in got.items():
        refused = p.refusal("cpu", ())
        why = refused[2] if refused else None
        if why and not a.worker:
            print(f"[quick] {n} left out: {why}", file=sys.stderr, flush=True)
        if not why:
            usable[n] = p
    a.algorithms = [n for n in dict.fromkeys([*a.algorithms, *got]) if n in ringx.ALGORITHMS or n in usable]
    return usable


def table(rows: list[dict]) -> str:
    """Markdown per rank count: median ms (p10-p90) and speedup over the baseline (bare kernel at one rank,
    ring beyond), with its paired bootstrap interval; '~' marks an interval containing 1 (within noise)."""
    from ringx_suite.stats import speedup
    from ringx_suite.tables import Table, render

    parts = []
    for P in sorted({x["world"] for x in rows}):
        sub = [x for x in rows if x["world"] == P]
        labels = list(dict.fromkeys(_label(x) for x in sub))
        base_name = "kernel" if P == 1 else "ring"
        base = {(_label(x), x["mode"]): x["samples"] for x in sub if x["algorithm"] == base_name}
        out = []
        for name in dict.fromkeys(x["algorithm"] for x in sub):
            cells = [name]
            for label in labels:
                for mode in ("fwd", "fwd+bwd"):
                    x = next((y for y in sub if y["algorithm"] == name and _label(y) == label and y["mode"] == mode),
                             None)
                    if x is None:
                        cells += ["n/a", "-"]
                        continue
                    sp = speedup(base[label, mode], x["samples"], paired=True) if (label, mode) in base else None
                    cells += [f"{x['median'] * 1e3:.1f} ({x['p10'] * 1e3:.1f}-{x['p90'] * 1e3:.1f})",
                              "-" if name == base_name or sp is None else sp.text()]
            out.append(cells)
        what = "the bare kernel (below 1: the library's overhead)" if P == 1 else "ring (above 1: faster)"
        head = ["algorithm"] + [c for label in labels for c in (f"{label} fwd", "speedup", f"{label} fwd+bwd",
                                                                  "speedup")]
        parts.append(f"\n### {P} rank{'s' if P > 1 else ''}: median ms (p10-p90); speedup over {what}\n\n" + render(
            Table(head, out), "markdown").rstrip())
    return "\n".join(parts)


def _label(row: dict) -> str:
    """A row's mask (rows from before --mask: their causal flag)."""
    return row.get("mask") or ("causal" if row["causal"] else "full")


def main(argv: list[str] | None = None) -> int:
    from ringx_drivers import options

    p = Parser(prog="ringx-bench quick", description=__doc__)
    p.add_argument("--ranks", default="1,2,4", help="comma-separated world sizes (default: 1,2,4)")
    opts = [options.PARAMS[k] for k in ("algorithms", "seq", "batch", "heads", "kv_heads", "head_dim", "dtype", "mask")]
    opts += [options.SETTINGS[k] for k in ("warmup", "iters")]
    options.add_arguments(p, opts, DEFAULTS)
    from ringx_suite.plugins import FLAG_HELP

    p.add_argument("--plugin", default="", help=FLAG_HELP)
    p.add_argument("--out", default="runs/quick", help="output directory (default: %(default)s)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv)

    import ringx
    from ringx_suite.cli import UserError

    try:
        for o in opts:
            given = getattr(a, o.name)
            setattr(a, o.name, options.value(o, DEFAULTS.get(o.name) if given is None else given, "bench quick",
                                             many=o.name in ("algorithms", "mask")))
        a.algorithms = a.algorithms or list(ringx.ALGORITHMS)
        a.plugin = split_list(a.plugin)
        ranks = options.value(options.Option("ranks", None, "", int, low=1, high=64), a.ranks, "bench quick",
                              many=True)
    except UserError as e:
        p.error(str(e))
    if a.worker:
        worker(a)
        return 0
    from ringx_suite import plugins

    known = {*ringx.ALGORITHMS, *plugins.installed(), *(plugins.parse_spec(x)[0] for x in a.plugin)}
    unknown = [x for x in a.algorithms if x not in known]
    if unknown:
        p.error(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ringx.ALGORITHMS)}, or a "
                "plugin (--plugin, or installed)")
    _plugins(a)
    if a.dtype not in ("float32", "float64"):
        p.error(f"--dtype {a.dtype}: quick runs on CPU ranks, use float32 or float64")
    if a.heads % a.kv_heads:
        p.error(f"--heads ({a.heads}) must be a multiple of --kv-heads ({a.kv_heads})")
    for P in ranks:
        if a.seq % (2 * P):
            p.error(f"--seq {a.seq} must be divisible by {2 * P} (zigzag over {P} ranks)")
    try:
        masks_of(a.mask, a.seq)  # a bad spec: one line here, before any rank starts
    except UserError as e:
        p.error(str(e))

    from ringx_drivers import mpirun
    from ringx_drivers.measure import provenance

    prov = provenance.collect([provenance.local_host()], ["-m", "ringx_bench", "quick", *argv])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    rows = []
    for P in ranks:
        threads = max(1, cores // P)
        print(f"[quick] {P} rank(s) x {threads} thread(s): {len(a.algorithms)} algorithms, seq {a.seq}, "
              f"{a.dtype}, {a.warmup} warm-up + {a.iters} timed iterations", flush=True)
        part = out / f"P{P}.json"
        fwd = [x for x in argv if x != "--worker"]
        proc = mpirun.run(P, ["-m", "ringx_bench", "quick", *fwd, "--worker", "--threads", str(threads),
                              "--out", str(part.resolve())], capture=False, threads_per_rank=threads)
        if proc.returncode != 0:
            print(f"[quick] the {P}-rank run failed (exit {proc.returncode}); results so far are in {out}",
                  file=sys.stderr)
            return 1
        rows += json.loads(part.read_text())
    md = (f"## ring vs ringX on CPU ranks\n\nseq {a.seq} (global), batch {a.batch}, heads {a.heads}/{a.kv_heads}, "
          f"head_dim {a.head_dim}, {a.dtype}, {a.iters} timed iterations after {a.warmup} warm-up\n" + table(rows))
    print(md)
    (out / "table.md").write_text(md + "\n")
    (out / "results.json").write_text(json.dumps({"provenance": prov, "config": vars(a), "rows": rows},
                                                 indent=1))
    print(f"\n[quick] table: {out / 'table.md'}; samples and provenance: {out / 'results.json'}")
    return 0
