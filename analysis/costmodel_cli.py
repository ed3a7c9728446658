"""The cost model's commands: predict (one configuration), validate (a campaign), curve (a machine)."""

from __future__ import annotations

from pathlib import Path

from ringx_costmodel import machine as machines
from ringx_costmodel.predict import best_degree, speedup_curve
from ringx_suite.cli import UserError

from . import calibrate, figures, maskview, tables


def run(a) -> int:

    try:
        if a.command == "predict":
            return predict(a)
        if a.command == "map":
            return fastest_map(a)
        if a.command == "validate":
            return validate(a)
        # curve
        machine, gpus_per_node = machines.load(a.machine)
        ranks = [r for r in (2, 8, 64, 512, 4096, 32768) if r <= a.max_ranks]
        algos = ["zigzag", "ringx2", "ringx3", "ringx4", "ringx4o"]
        print(f"predicting {len(algos) + 1} algorithms at {ranks} ranks, seq {a.seq} on {machine.name} "
              f"({machine.source}); tracing costs a few ms per schedule step: about 10 minutes up to 4096 ranks",
              flush=True)
        curve = speedup_curve(machine, algos, ranks, seq=a.seq, gpus_per_node=gpus_per_node)
        print(tables.render(tables.frame_table(curve.round(3)), "markdown"))
        measured = _measured_speedups(a.campaign, algos, a.seq) if a.campaign else None
        out = Path(a.out) if a.out else Path("runs") / "model"
        title = f"{machine.name} ({machine.source.split(' (')[0]}), seq {a.seq}, causal fwd+bwd"
        fig = figures.predicted_speedup_curve(curve, measured, title=title)
        paths = figures.save(fig, out, f"speedup-curve-{machine.name}", ("pdf", "png"))
        curve.to_csv(out / f"speedup-curve-{machine.name}.csv", index=False)
        print(f"figure: {', '.join(map(str, paths))}")
        return 0
    except ValueError as e:
        raise UserError(str(e)) from None


def validate(a) -> int:
    """`analysis validate`: fit the model on a campaign's microbenchmarks, then predicted against measured."""
    import matplotlib.pyplot as plt

    from .records import load
    from .report import default_out

    df = load(a.campaign)
    machine, fit = calibrate.calibrate(df, Path(a.campaign).name, a.cores_per_node, a.cores_per_rank)
    cores = (f", {a.cores_per_rank} core(s) of its own per rank" if a.cores_per_rank else
             f", {a.cores_per_node} cores per node shared by its ranks" if a.cores_per_node else "")
    print(f"fitted machine ({machine.source}): attention throughput {machine.flops_per_s / 1e9:.1f} GFLOP/s "
          f"per rank{cores}")
    if machine.loaded_rates:
        print(f"block throughput: bench kernels with {sorted(machine.loaded_rates)} ranks computing at once")
    print("collectives: time = hops x alpha + bytes x busbw factor / bandwidth\n")
    print(tables.render(tables.frame_table(fit.round(4)), "markdown"))
    v = calibrate.validate(df, machine)
    errors = calibrate.error_summary(v, not machine.kernel_rates)
    print("predicted vs measured (median of each configuration), by rank count:\n")
    print(tables.render(tables.frame_table(errors.round(3)), "markdown"))
    order = calibrate.ranking(v)
    if not order.empty:
        right, noise = int((order["right"] == "yes").sum()), int((order["right"] == "within noise").sum())
        print("\nfastest algorithm, predicted and measured, and the rank correlation (Spearman) of their orders: "
              f"right in {right} of {len(order)} configurations, within noise in {noise}\n")
        print(tables.render(tables.frame_table(order.round(3)), "markdown"))
    out = Path(a.out) if a.out else default_out(a.campaign, "model")
    out.mkdir(parents=True, exist_ok=True)
    v.to_csv(out / "validation.csv", index=False)
    errors.to_csv(out / "errors.csv", index=False)
    if not order.empty:
        order.to_csv(out / "ranking.csv", index=False)
    fig = figures.predicted_vs_measured(v)
    paths = figures.save(fig, out, "predicted-vs-measured", ("pdf", "png"))
    plt.close(fig)
    print(f"figure: {', '.join(map(str, paths))}; tables: {out}/validation.csv, errors.csv, ranking.csv")
    return 0


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
        print(tables.render(tables.frame_table(m.sort_values(["ranks", "algorithm"]).round(3)), "markdown"))
    return m


def fastest_map(a) -> int:
    """`analysis map`: the predicted fastest algorithm per (sequence, ranks) on each machine, table and figure."""
    import matplotlib.pyplot as plt
    import pandas as pd

    import ringx
    from ringx_suite import plugins

    from . import predicted

    try:
        seqs = [int(x) for x in a.seqs.split(",") if x]
        ranks = [int(x) for x in a.ranks.split(",") if x]
    except ValueError:
        raise UserError("--seqs and --ranks take comma-separated integers") from None
    described = [machines.load(name) for name in a.machines.split(",") if name]
    algos = ringx.algorithms.names(True)
    outside = _plugins(a.plugin)
    if a.algorithms:
        algos = [x for x in a.algorithms.split(",") if x]
        installed, builtin = plugins.installed(), set(ringx.algorithms.names())
        outside += [x for x in algos if x not in builtin and x in installed and x not in outside]
        unknown = [x for x in algos if x not in ringx.algorithms.names() and x not in outside]
        if unknown:
            raise UserError(f"--algorithms: unknown {', '.join(unknown)}; choose from "
                            f"{', '.join(ringx.algorithms.names())}")
    if a.mask:
        from ringx_suite import masks

        for seq in seqs:
            masks.parse(a.mask, seq, a.seed)  # a bad spec fails before any tracing
    algos = [*algos, *(x for x in outside if x not in algos)]
    table = predicted.fastest(described, seqs, ranks, algos, progress=lambda msg: print(msg, flush=True),
                              mask=a.mask, seed=a.seed)
    out = Path(a.out) if a.out else Path("runs") / "model"
    out.mkdir(parents=True, exist_ok=True)
    name = "fastest-map" + (f"-{maskview.slug(a.mask)}" if a.mask else "")
    table.to_csv(out / f"{name}.csv", index=False)
    best = table[table["fastest"]].assign(degrees=lambda d: [_degrees(None if pd.isna(u) else int(u), p)
                                                             for u, p in zip(d["ulysses_degree"], d["ranks"])])
    caption = predicted.CAPTION if not a.mask else predicted.CAPTION.replace("Causal,", f"Mask {a.mask},")
    print(tables.render(tables.frame_table(best[["machine", "seq", "ranks", "algorithm", "degrees", "speedup"]]
                                           .round(3), caption=caption), "markdown"))
    wins = predicted.beats(table, "double-ring", ["ring", "ringx3b", "usp"])
    if not wins.empty:
        wins.to_csv(out / (name.replace("fastest-map", "double-ring-wins") + ".csv"), index=False)
        print("\nwhere double-ring is predicted faster (vs_X: X's time over double-ring's):\n")
        print(tables.render(tables.frame_table(wins.round(3)), "markdown"))
    fig = predicted.map_figure(table)
    paths = figures.save(fig, out, name, ("pdf", "png"))
    plt.close(fig)
    if not a.mask:
        fig = predicted.curves_figure(table)
        paths += figures.save(fig, out, "speedup-curves", ("pdf", "png"))
        plt.close(fig)
    print(f"figure: {', '.join(map(str, paths))}; table: {out / (name + '.csv')}")
    return 0


def _plugins(given: str | None) -> list[str]:
    """The names of ``--plugin``'s plugins, each made predictable (costmodel/traced.py): an installed plugin by its
    name, or a spec loaded here. A name or spec that is neither: one-line UserError."""
    from ringx_costmodel import traced
    from ringx_suite import plugins

    names = []
    for item in [x.strip() for x in (given or "").split(",") if x.strip()]:
        if ":" not in item:
            if item not in plugins.installed():
                raise UserError(f"--plugin {item}: not an installed plugin ({', '.join(sorted(plugins.installed()))})"
                                "; give [NAME=]MODULE:ATTR or [NAME=]FILE.py:ATTR")
            names.append(item)
            continue
        name, p = next(iter(plugins.load([], [item]).items()))
        if p.failure:
            raise UserError(p.failure)
        traced.register(name, p.fn)
        names.append(name)
    return names


def _degrees(u: int | None, p: int) -> str:
    return "" if u is None else f"{u} x {p // u}"


def predict(a) -> int:
    """Every algorithm at one configuration on a machine description: predicted time and the fastest."""
    import ringx

    machine, gpus_per_node = machines.load(a.machine)
    causal = a.causal == "true"
    try:
        ranks = [int(x) for x in a.ranks.split(",") if x]
    except ValueError:
        raise UserError(f"--ranks must be comma-separated integers, got {a.ranks!r}") from None
    mask = None
    if a.mask:
        from ringx_suite import masks

        mask = masks.parse(a.mask, a.seq, a.seed)
        causal = mask.causal_layout
    what = mask.short() if mask else "causal" if causal else "non-causal"
    if a.batch < 1:
        raise UserError(f"--batch must be a positive integer, got {a.batch}")
    outside = _plugins(a.plugin)  # a plugin that cannot be loaded is refused before anything is printed
    print(f"predictions on {machine.name} ({machine.source}): batch {a.batch}, seq {a.seq}, {a.heads}/{a.kv_heads} "
          f"heads, head_dim {a.head_dim}, {what} {a.mode}\n")
    rows, cannot = [], []
    for p in ranks:
        nodes = max(1, p // gpus_per_node)
        preds, degree = {}, {}
        for name in [*ringx.algorithms.names(causal), *outside]:
            try:
                degree[name], preds[name] = best_degree(name, causal, a.mode, p, machine, nodes=nodes, batch=a.batch,
                                                        seq=a.seq, heads=a.heads, kv_heads=a.kv_heads,
                                                        head_dim=a.head_dim, exact_ranks=16, mask=mask)
            except ValueError as e:  # impossible for it (heads, divisibility); a plugin that cannot be traced
                cannot.append(f"{name} at {p} ranks: {e}")
        if not preds:
            raise UserError(f"seq {a.seq} cannot be split over {p} ranks by any algorithm")
        best = min(preds, key=lambda n: preds[n].total_s)
        rows += [[p, nodes, n, _degrees(degree[n], p), round(pr.total_s * 1e3, 3), round(pr.compute_s * 1e3, 3),
                  round(pr.exposed_comm_s * 1e3, 3), "yes" if n == best else ""] for n, pr in preds.items()]
    print(tables.render(tables.Table(["ranks", "nodes", "algorithm", "Ulysses x ring", "predicted ms", "compute",
                                      "exposed comm", "fastest"], rows), "markdown"), end="")
    print("\nUlysses x ring: the degrees of usp/usp-ringx that the model predicts fastest (each divides the ranks "
          "and the heads); ulysses is all ranks x 1.")
    if outside:
        print("plugins (" + ", ".join(outside) + "): from a trace of their own calls, each call blocking where it is "
              "issued, their FLOPs as torch counts them (docs/plugins.md).")
    if cannot:
        print("\nnot predicted (cannot run at that configuration, or cannot be traced):\n"
              + "\n".join(f"- {c}" for c in cannot))
    return 0
