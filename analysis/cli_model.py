"""The cost model's commands: predict (a sweep file), validate (a campaign), curve (a machine)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import figures, model, tables


def _err(cmd: str, msg: str) -> int:
    print(f"python -m analysis {cmd}: error: {msg}", file=sys.stderr)
    return 2


def run(a) -> int:
    import matplotlib.pyplot as plt

    from bench import jobs

    try:
        if a.command == "predict":
            return predict(a)
        if a.command == "validate":
            from .records import load

            df = load(a.campaign)
            machine, fit = model.calibrate(df, Path(a.campaign).name, a.cores_per_node)
            print(f"fitted machine ({machine.source}): attention throughput {machine.flops_per_s / 1e9:.1f} GFLOP/s "
                  f"per rank{f', {a.cores_per_node} cores per node shared by its ranks' if a.cores_per_node else ''}")
            print("collectives: time = hops x alpha + bytes x busbw factor / bandwidth\n")
            print(tables.render(fit.round(4), "markdown"))
            v = model.validate(df, machine)
            print("predicted vs measured (median of each configuration):\n")
            print(tables.render(model.error_summary(v).round(3), "markdown"))
            out = Path(a.out) if a.out else Path(a.campaign) / "model"
            out.mkdir(parents=True, exist_ok=True)
            v.to_csv(out / "validation.csv", index=False)
            fig = figures.predicted_vs_measured(v)
            paths = figures.save(fig, out, "predicted-vs-measured", ("pdf", "png"))
            plt.close(fig)
            print(f"figure: {', '.join(map(str, paths))}; table: {out / 'validation.csv'}")
            return 0
        # curve
        if not a.machine:
            return _err("curve", "give --machine (a profile with a [model] table, e.g. frontier)")
        prof = jobs.load_profile(a.machine)
        machine = model.machine_from_profile(prof)
        ranks = [r for r in (2, 8, 64, 512, 4096, 32768) if r <= a.max_ranks]
        algos = ["zigzag", "ringx2", "ringx3", "ringx4", "ringx4o"]
        print(f"predicting {len(algos) + 1} algorithms at {ranks} ranks, seq {a.seq} on {prof.name} "
              f"({machine.source}); tracing costs a few ms per schedule step: about 10 minutes up to 4096 ranks",
              flush=True)
        curve = model.speedup_curve(machine, algos, ranks, seq=a.seq, gpus_per_node=prof.gpus_per_node or 1)
        print(tables.render(curve.round(3), "markdown"))
        measured = _measured_speedups(a.campaign, algos, a.seq) if a.campaign else None
        out = Path(a.out) if a.out else Path("runs") / "model"
        fig = figures.predicted_speedup_curve(curve, measured, title=f"{prof.name} ({machine.source.split(' (')[0]}), "
                                                           f"seq {a.seq}, causal fwd+bwd")
        paths = figures.save(fig, out, f"speedup-curve-{prof.name}", ("pdf", "png"))
        curve.to_csv(out / f"speedup-curve-{prof.name}.csv", index=False)
        print(f"figure: {', '.join(map(str, paths))}")
        return 0
    except ValueError as e:
        return _err(a.command, str(e))


def _measured_speedups(campaign: str, algos: list[str], seq: int):
    """The campaign's measured speedups over ring at the curve's configuration (causal fwd+bwd, same sequence)."""
    from .metrics import speedup, summarize
    from .records import load

    s = speedup(summarize(load(campaign)))
    m = s[(s["seq"] == seq) & s["causal"].astype(bool) & (s["mode"] == "fwd+bwd") & s["algorithm"].isin(algos)
          & (s["world_size"] > 1)]
    m = m.rename(columns={"world_size": "ranks"})[["algorithm", "ranks", "speedup"]]
    if m.empty:
        print(f"measured: none in {campaign} at seq {seq}, causal fwd+bwd (no points drawn)")
    else:
        print(f"measured speedups from {campaign} (open markers):\n")
        print(tables.render(m.sort_values(["ranks", "algorithm"]).round(3), "markdown"))
    return m


def predict(a) -> int:
    from bench import jobs, sweep

    sw = sweep.load(a.campaign)
    prof = jobs.load_profile(a.machine) if a.machine else sw.profile
    machine = model.machine_from_profile(prof)
    print(f"campaign {sw.campaign}: predictions on {prof.name} ({machine.source})\n")
    lines = ["| job | algorithm | seq | mask | mode | predicted ms | compute | imbalance | exposed comm | fastest |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for j in sw.jobs:
        preds = {}
        for pt in j.points:
            preds[pt] = model.predict(pt.algorithm, pt.causal, pt.mode, j.ranks, machine, nodes=j.nodes,
                                      batch=pt.batch, seq=pt.seq, heads=pt.heads, kv_heads=pt.kv_heads,
                                      head_dim=pt.head_dim, dtype=pt.dtype, exact_ranks=16)
        cfgs = {pt: (pt.seq, pt.causal, pt.mode, pt.dtype, pt.batch, pt.heads, pt.kv_heads, pt.head_dim)
                for pt in preds}  # the configuration the algorithms compete at
        best: dict = {}
        for pt, pr in preds.items():
            if cfgs[pt] not in best or pr.total_s < preds[best[cfgs[pt]]].total_s:
                best[cfgs[pt]] = pt
        for pt, pr in preds.items():
            lines.append(f"| {j.name} | {pt.algorithm} | {pt.seq} | {'causal' if pt.causal else 'full'} | {pt.mode} | "
                         f"{pr.total_s * 1e3:.2f} | {pr.compute_s * 1e3:.2f} | {pr.imbalance_s * 1e3:.2f} | "
                         f"{pr.exposed_comm_s * 1e3:.2f} | {'yes' if best[cfgs[pt]] is pt else ''} |")
    print("\n".join(lines))
    return 0
