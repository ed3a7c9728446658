"""Fit a machine description to a campaign's microbenchmarks, and judge the model's predictions against it."""

from __future__ import annotations

import numpy as np

from costmodel.machine import Machine
from costmodel.network import Link, busbw_factor, hops
from costmodel.predict import predict
from ringx.flops import block_flops, causal_pairs


def fit_links(coll):
    """Per op: alpha and bandwidth by least squares on relative error over all sizes and rank counts."""
    import pandas as pd

    ok = coll[(coll["kind"] == "collective") & (coll["status"] == "ok") & (coll["world_size"] > 1)]
    links, rows = {}, []
    for op, g in ok.groupby("op"):
        p = g["world_size"].astype(int).to_numpy()
        x = np.column_stack([[hops(op, q) for q in p],
                             g["bytes"].astype(float).to_numpy() * np.array([busbw_factor(op, q) for q in p])])
        t = g["median_s"].to_numpy()
        w = 1.0 / t
        (alpha, inv_bw), *_ = np.linalg.lstsq(x * w[:, None], t * w, rcond=None)
        alpha, inv_bw = max(alpha, 0.0), max(inv_bw, 1e-15)
        links[op] = Link(alpha, 1.0 / inv_bw / 1e9)
        rel = np.abs(x @ np.array([alpha, inv_bw]) - t) / t
        rows.append({"op": op, "alpha_us": alpha * 1e6, "bw_GBps": 1.0 / inv_bw / 1e9, "points": len(t),
                     "median_rel_err": float(np.median(rel)), "worst_rel_err": float(np.max(rel))})
    if not links:
        raise ValueError("no multi-rank collective records to fit (run `python -m bench collectives`)")
    links["default"] = Link(float(np.median([lk.alpha_s for lk in links.values()])),
                            float(np.median([lk.bw_GBps for lk in links.values()])))
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


def fit_kernel_rates(df) -> dict[tuple[str, bool], list[tuple[int, float]]]:
    """(direction, causal) -> [(block length, FLOP/s)] from `bench kernels` records: per block length the
    kernel the attention records ran (else the fastest measured), median over GQA ratios and dtypes."""
    if "kind" not in df:
        return {}
    k = df[(df["kind"] == "kernel") & (df["status"] == "ok")]
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
    return {key: sorted(v) for key, v in rates.items()}


def calibrate(df, name: str, cores_per_node: int | None = None):
    """(fitted Machine, fit table) from a campaign's microbenchmarks: collectives, single-rank attention
    records (one throughput), and `bench kernels` records when there are (throughput by block shape)."""
    links, fit = fit_links(df)
    try:
        flops = fit_throughput(df)
    except ValueError:
        rates = fit_kernel_rates(df)
        if not rates:
            raise
        flops = max(r for table in rates.values() for _, r in table)
    return Machine(name, f"fitted from {name}", flops, links, {}, cores_per_node, fit_kernel_rates(df)), fit


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
                     "predicted_s": pred.total_s, "compute_s": pred.compute_s, "imbalance_s": pred.imbalance_s,
                     "exposed_comm_s": pred.exposed_comm_s})
    out = pd.DataFrame(rows)
    out["rel_err"] = (out["predicted_s"] - out["measured_s"]).abs() / out["measured_s"]
    return out


def error_summary(v):
    """Median and worst relative error per algorithm."""
    import pandas as pd

    g = v.groupby("algorithm")["rel_err"]
    return pd.DataFrame({"points": g.size(), "median_rel_err": g.median(), "worst_rel_err": g.max()}).reset_index()
