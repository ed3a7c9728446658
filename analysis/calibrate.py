"""Fit a machine description to a campaign's microbenchmarks, and judge the model's predictions against it."""

from __future__ import annotations

import numpy as np

from ringx.flops import block_flops, causal_pairs
from ringx_costmodel.machine import Machine
from ringx_costmodel.network import Link, busbw_factor, hops
from ringx_costmodel.predict import predict


def _fit_link(op: str, g) -> tuple[Link, np.ndarray]:
    """alpha and bandwidth of one op by least squares on relative error; with the relative errors."""
    p = g["world_size"].astype(int).to_numpy()
    x = np.column_stack([[hops(op, q) for q in p],
                         g["bytes"].astype(float).to_numpy() * np.array([busbw_factor(op, q) for q in p])])
    t = g["median_s"].to_numpy()
    w = 1.0 / t
    (alpha, inv_bw), *_ = np.linalg.lstsq(x * w[:, None], t * w, rcond=None)
    alpha, inv_bw = max(alpha, 0.0), max(inv_bw, 1e-15)
    return Link(alpha, 1.0 / inv_bw / 1e9), np.abs(x @ np.array([alpha, inv_bw]) - t) / t


def fit_links(coll):
    """Per op: alpha and bandwidth over all sizes and rank counts (key "op"), and at each measured rank count
    on its own (key "op@P"): latency per hop does not grow with P exactly as the hop count says (gloo's
    loopback, NCCL's protocol switches), so a prediction at a measured P uses that P's own fit."""
    import pandas as pd

    ok = coll[(coll["kind"] == "collective") & (coll["status"] == "ok") & (coll["world_size"] > 1)]
    links, rows = {}, []
    for op, g in ok.groupby("op"):
        links[op], rel = _fit_link(op, g)
        rows.append({"op": op, "ranks": "all", "alpha_us": links[op].alpha_s * 1e6, "bw_GBps": links[op].bw_GBps,
                     "points": len(g), "median_rel_err": float(np.median(rel)), "worst_rel_err": float(np.max(rel))})
        if g["world_size"].nunique() < 2:
            continue
        for p, gp in g.groupby("world_size"):
            lk, rel = _fit_link(op, gp)
            links[f"{op}@{int(p)}"] = lk
            rows.append({"op": op, "ranks": str(int(p)), "alpha_us": lk.alpha_s * 1e6, "bw_GBps": lk.bw_GBps,
                         "points": len(gp), "median_rel_err": float(np.median(rel)),
                         "worst_rel_err": float(np.max(rel))})
    if not links:
        raise ValueError("no multi-rank collective records to fit (run `ringx-bench collectives`)")
    whole = [lk for key, lk in links.items() if "@" not in key]
    links["default"] = Link(float(np.median([lk.alpha_s for lk in whole])),
                            float(np.median([lk.bw_GBps for lk in whole])))
    return links, pd.DataFrame(rows)


def fit_throughput(att) -> float:
    """Per-rank attention FLOP/s from single-rank records (traced FLOPs / median time)."""
    one = att[(att["kind"] == "attention") & (att["status"] == "ok") & (att["world_size"] == 1)]
    if one.empty:
        raise ValueError("no single-rank attention records to fit throughput (run the campaign at 1 rank too)")
    rates = [exact_flops(r) / r["median_s"] for _, r in one.iterrows()]
    return float(np.median(rates))


def exact_flops(r) -> float:
    """FLOPs of one call counted pair by pair, as the traced blocks are (ringx/flops.py)."""
    s = int(r["seq"])
    pairs = causal_pairs(s) if bool(r["causal"]) else s * s
    return block_flops(int(r["batch"]), int(r["heads"]), int(r["head_dim"]), pairs, r["mode"])


def fit_kernel_rates(df, busy: int | None = None) -> dict[tuple[str, bool], list[tuple[int, float]]]:
    """(direction, causal) -> [(block length, FLOP/s)] from `bench kernels` records: per block length the
    kernel the attention records ran (else the fastest measured), median over GQA ratios and dtypes. With
    ``busy``, only the records measured with that many ranks computing at once (their world_size)."""
    if "kind" not in df:
        return {}
    k = df[(df["kind"] == "kernel") & (df["status"] == "ok")]
    if busy is not None:
        k = k[k["world_size"].astype(int) == busy]
    if k.empty:
        return {}
    att = df[(df["kind"] == "attention") & (df["status"] == "ok")] if "kernel" in df else df.iloc[0:0]
    used = set(att["kernel"].dropna()) & set(k["kernel"])
    if used:
        k = k[k["kernel"].isin(used)]
    rates: dict[tuple[str, bool], list[tuple[int, float]]] = {}
    for (direction, causal, seq), g in k.groupby(["direction", "causal", "seq"]):
        best = g.groupby("kernel")["tflops"].median().max()
        rates.setdefault((str(direction), bool(causal)), []).append((int(seq), float(best) * 1e12))
    return {key: _monotone(sorted(v)) for key, v in rates.items()}


def _monotone(table: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The closest throughput curve that does not fall as blocks grow (pooling adjacent violators): a kernel
    is not slower per FLOP on a larger block, so a dip is noise of that one measurement, not a feature."""
    pools: list[list[float]] = []  # [sum, count]
    for _, r in table:
        pools.append([r, 1])
        while len(pools) > 1 and pools[-2][0] / pools[-2][1] > pools[-1][0] / pools[-1][1]:
            s, c = pools.pop()
            pools[-1][0] += s
            pools[-1][1] += c
    rates = [s / c for s, c in pools for _ in range(c)]
    return [(n, r) for (n, _), r in zip(table, rates)]


def calibrate(df, name: str, cores_per_node: int | None = None, cores_per_rank: int | None = None):
    """(fitted Machine, fit table) from a campaign's microbenchmarks: collectives, single-rank attention
    records (one throughput), and `bench kernels` records when there are (throughput by block shape)."""
    links, inter, fit = _links_by_level(df)
    rates = fit_kernel_rates(df)
    try:
        flops = fit_throughput(df)
    except ValueError:
        if not rates:
            raise
        flops = max(r for table in rates.values() for _, r in table)
    busy = sorted(int(p) for p in df[df["kind"] == "kernel"]["world_size"].unique()) if rates else []
    # measured under load (bench kernels at several rank counts): a table per number of busy ranks
    loaded = {p: fit_kernel_rates(df, p) for p in busy} if len(busy) > 1 else {}
    return Machine(name, f"fitted from {name}", flops, links, inter, cores_per_node, rates, cores_per_rank,
                   loaded), fit


def _links_by_level(df):
    """(links within a node, links across nodes, fit table) from the collective records. `bench collectives
    --levels` measures each level in its own groups (`intra`, `inter`; the group's size is the P of the fit);
    without such records the all-ranks (`world`) records describe the node's links, as before."""
    import pandas as pd

    coll = df[df["kind"] == "collective"] if "kind" in df else df
    level = coll["level"].fillna("world") if "level" in coll else pd.Series("world", index=coll.index)
    if not level.isin(["intra", "inter"]).any():
        links, fit = fit_links(df)
        return links, {}, fit
    parts, tables = {}, []
    for lv in ("intra", "inter"):
        sub = coll[level == lv]
        if sub.empty:
            continue
        sub = sub.assign(world_size=sub["group_size"].fillna(sub["world_size"]).astype(int))
        parts[lv], t = fit_links(sub)
        tables.append(t.assign(level=lv))
    if "intra" not in parts:  # inter measured alone: the node's links from the world records
        parts["intra"], t = fit_links(coll[level == "world"])
        tables.insert(0, t.assign(level="world"))
    fit = pd.concat(tables, ignore_index=True)
    return parts["intra"], parts.get("inter", {}), fit[["level", *[c for c in fit if c != "level"]]]


def validate(df, machine: Machine):
    """Predicted vs measured median for every ok attention configuration of a campaign."""
    import pandas as pd

    from .metrics import summarize

    s = summarize(df)
    rows = []
    for _, r in s.iterrows():
        if r["family"] == "external":
            continue
        pred = predict(r["algorithm"], bool(r["causal"]), r["mode"], int(r["world_size"]), machine,
                       nodes=int(r["nodes"]), batch=int(r["batch"]), seq=int(r["seq"]), heads=int(r["heads"]),
                       kv_heads=int(r["kv_heads"]), head_dim=int(r["head_dim"]), dtype=r["dtype"])
        rows.append({"algorithm": r["algorithm"], "world_size": int(r["world_size"]), "seq": int(r["seq"]),
                     "causal": bool(r["causal"]), "mode": r["mode"], "measured_s": r["median_s"],
                     "measured_p90_s": r.get("p90_s", r["median_s"]), "predicted_s": pred.total_s,
                     "compute_s": pred.compute_s, "imbalance_s": pred.imbalance_s,
                     "exposed_comm_s": pred.exposed_comm_s})
    out = pd.DataFrame(rows)
    out["rel_err"] = (out["predicted_s"] - out["measured_s"]).abs() / out["measured_s"]
    return out


def error_summary(v, one_rank_in_sample: bool = True):
    """Median and worst relative error per algorithm and rank count. Multi-rank points are out of sample; the
    one-rank points are in sample when the calibration read its throughput from them (no kernel records)."""
    import pandas as pd

    g = v.groupby(["algorithm", "world_size"])["rel_err"]
    out = pd.DataFrame({"points": g.size(), "median_rel_err": g.median(), "worst_rel_err": g.max()}).reset_index()
    out.insert(2, "sample", ["in (calibration)" if p == 1 and one_rank_in_sample else "out"
                             for p in out["world_size"]])
    return out.rename(columns={"world_size": "ranks"})


def ranking(v):
    """Per multi-rank configuration: the measured and the predicted fastest algorithm, whether they agree
    ("yes"; "within noise" when the predicted one's measured median is inside the measured fastest's
    samples, below their 90th percentile; else "no"), and Spearman's rank correlation of the predicted and
    measured times of all its algorithms."""
    import pandas as pd

    rows = []
    for (p, seq, causal, mode), g in v[v["world_size"] > 1].groupby(["world_size", "seq", "causal", "mode"]):
        meas, pred = g["measured_s"].to_numpy(), g["predicted_s"].to_numpy()
        rho = g["measured_s"].rank().corr(g["predicted_s"].rank()) if len(g) > 2 else float("nan")  # Spearman
        im, ip = meas.argmin(), pred.argmin()
        right = "yes" if im == ip else "within noise" if meas[ip] <= g["measured_p90_s"].iloc[im] else "no"
        rows.append({"ranks": int(p), "seq": int(seq), "causal": bool(causal), "mode": mode, "algorithms": len(g),
                     "measured_fastest": g["algorithm"].iloc[im], "predicted_fastest": g["algorithm"].iloc[ip],
                     "right": right, "spearman": rho})
    return pd.DataFrame(rows)
