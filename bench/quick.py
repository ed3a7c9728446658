"""Quick ring-vs-ringX comparison on local CPU ranks (the README's main command).

At one rank every algorithm is timed against the bare local kernel on the
same data (the library's overhead); at more ranks each algorithm is timed
beside ``ring``. All candidates take turns within every iteration, so the
ratios are measured side by side. Times are medians of the slowest rank per
iteration; p10-p90 and the samples are kept in the JSON output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULTS = dict(seq=2048, batch=1, heads=8, kv_heads=8, head_dim=64, dtype="float32", warmup=2, iters=7)


def _callables(name: str, causal: bool, q, k, v, do, scale: float):
    """(forward, forward+backward) closures for one algorithm, or the bare kernel for ``kernel``."""
    import torch

    import ringx

    if name == "kernel":
        kern = ringx.select_kernel(q.device, q.dtype)

        def fwd():
            return kern.forward(q, k, v, causal, scale)

        def fwdbwd():
            out, lse = kern.forward(q, k, v, causal, scale)
            return kern.backward(do, q, k, v, out, lse, causal, scale)

        return fwd, fwdbwd
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def fwd():
        return ringx.attention(q, k, v, algorithm=name, causal=causal, validate=False)

    def fwdbwd():
        out = ringx.attention(qg, kg, vg, algorithm=name, causal=causal, validate=False)
        return torch.autograd.grad(out, (qg, kg, vg), do)

    return fwd, fwdbwd


def worker(a: argparse.Namespace) -> None:
    """Runs under mpiexec: time every algorithm (and the bare kernel at one rank)."""
    import torch

    import ringx
    from bench.timing import summarize, time_round_robin
    from ringx import launch

    torch.set_num_threads(a.threads)
    ctx = launch.init(timeout_s=600)
    P, r = ctx.world_size, ctx.rank
    dt = getattr(torch, a.dtype)
    g = torch.Generator().manual_seed(1234)
    shape_q = (a.batch, a.seq, a.heads, a.head_dim)
    shape_kv = (a.batch, a.seq, a.kv_heads, a.head_dim)
    Q, K, V, dO = (torch.randn(s, generator=g, dtype=dt) for s in (shape_q, shape_kv, shape_kv, shape_q))
    rows = []
    for causal in (False, True):
        names = (["kernel"] if P == 1 else []) + list(a.algorithms)
        fns = {}
        for name in names:
            layout = "contiguous" if name == "kernel" else ringx.ALGORITHMS[name].layout(causal)
            q, k, v, do = (ringx.shard(t, layout, r, P) for t in (Q, K, V, dO))
            fns[name] = _callables(name, causal, q, k, v, do, a.head_dim**-0.5)
        for m, mode in enumerate(("fwd", "fwd+bwd")):
            # All candidates take turns within each iteration: their ratios are side by side.
            samples = time_round_robin([f[m] for f in fns.values()], a.warmup, a.iters, torch.device("cpu"))
            for name, s in zip(names, samples):
                rows.append({"world": P, "algorithm": name, "causal": causal, "mode": mode,
                             "samples": s, **summarize(s)})
                if r == 0 and not a.quiet:
                    print(f"  P={P} {name:8s} {'causal' if causal else 'full':6s} {mode:8s} "
                          f"{rows[-1]['median'] * 1e3:9.2f} ms", flush=True)
    if r == 0:
        Path(a.out).write_text(json.dumps(rows))
    launch.finalize()


def table(rows: list[dict]) -> str:
    """Markdown: median ms and ratio (vs bare kernel at P=1, vs ring at P>1)."""
    lines = []
    for P in sorted({x["world"] for x in rows}):
        sub = [x for x in rows if x["world"] == P]
        base_name = "kernel" if P == 1 else "ring"
        what = "time / bare kernel" if P == 1 else "time / ring (<1: faster than ring)"
        lines += [f"\n### {P} rank{'s' if P > 1 else ''}: median ms (p10-p90), ratio = {what}\n",
                  "| algorithm | full fwd | ratio | full fwd+bwd | ratio "
                  "| causal fwd | ratio | causal fwd+bwd | ratio |",
                  "|---|---|---|---|---|---|---|---|---|"]
        base = {(x["causal"], x["mode"]): x["median"] for x in sub if x["algorithm"] == base_name}
        for name in dict.fromkeys(x["algorithm"] for x in sub):
            cells = []
            for causal in (False, True):
                for mode in ("fwd", "fwd+bwd"):
                    x = next(y for y in sub if y["algorithm"] == name and y["causal"] == causal and y["mode"] == mode)
                    cells += [f"{x['median'] * 1e3:.1f} ({x['p10'] * 1e3:.1f}-{x['p90'] * 1e3:.1f})",
                              f"{x['median'] / base[causal, mode]:.3f}"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench quick", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", default="1,2,4", help="comma-separated world sizes (default: 1,2,4)")
    p.add_argument("--seq", type=int, default=DEFAULTS["seq"], help="global sequence length (default: %(default)s)")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--heads", type=int, default=DEFAULTS["heads"])
    p.add_argument("--kv-heads", type=int, default=DEFAULTS["kv_heads"])
    p.add_argument("--head-dim", type=int, default=DEFAULTS["head_dim"])
    p.add_argument("--dtype", default=DEFAULTS["dtype"], choices=["float32", "float64"])
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    p.add_argument("--iters", type=int, default=DEFAULTS["iters"], help="timed iterations (default: %(default)s)")
    p.add_argument("--algorithms", default=None, help="comma-separated (default: every registered algorithm)")
    p.add_argument("--out", default="runs/quick", help="output directory (default: %(default)s)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    argv = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(argv)

    import ringx

    a.algorithms = a.algorithms.split(",") if isinstance(a.algorithms, str) else list(ringx.ALGORITHMS)
    if a.worker:
        worker(a)
        return 0
    try:
        ranks = [int(x) for x in a.ranks.split(",")]
    except ValueError:
        p.error(f"--ranks must be comma-separated integers, got {a.ranks!r}")
    unknown = [x for x in a.algorithms if x not in ringx.ALGORITHMS]
    if unknown:
        p.error(f"unknown algorithm(s) {', '.join(unknown)}; choose from {', '.join(ringx.ALGORITHMS)}")
    for name, val in (("--seq", a.seq), ("--batch", a.batch), ("--heads", a.heads), ("--kv-heads", a.kv_heads),
                      ("--head-dim", a.head_dim), ("--iters", a.iters), *(("--ranks", x) for x in ranks)):
        if val < 1:
            p.error(f"{name} must be positive, got {val}")
    if a.warmup < 0:
        p.error("--warmup must be >= 0")
    if a.heads % a.kv_heads:
        p.error(f"--heads ({a.heads}) must be a multiple of --kv-heads ({a.kv_heads})")
    for P in ranks:
        if a.seq % (2 * P):
            p.error(f"--seq {a.seq} must be divisible by {2 * P} (zigzag over {P} ranks)")

    from bench import mpirun, provenance

    prov = provenance.collect([provenance.local_host()], ["-m", "bench", "quick", *argv])
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
        proc = mpirun.run(P, ["-m", "bench", "quick", *fwd, "--worker", "--threads", str(threads),
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
