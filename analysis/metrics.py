"""Metrics from a campaign frame, for every record kind (kinds.py): spread, speedup over a baseline, strong and
weak scaling.

Spread: for each (configuration, algorithm) the timed iterations of all repeats are pooled (each
iteration's time is already the slowest rank's); we report their median and the p10-p90 range.
Speedup: baseline median / median (above 1: faster) with ringx_suite/stats.py's bootstrap interval, paired
when the two were timed side by side; an interval that contains 1 is "within noise".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ringx_suite.stats import METHOD, records_speedup

from .kinds import KINDS, kind_of, mask_names

SPREAD_METHOD = "median and p10-p90 of all timed iterations pooled over repeats (iteration = slowest rank)"
CONFIG = list(KINDS["attention"].config)


class NoData(ValueError):
    """The campaign has nothing this figure or table can show."""


class MissingBaseline(NoData):
    """The requested baseline has no measurement at some configuration."""


def _max_over_ranks(g: pd.DataFrame, col: str) -> float:
    """The largest per-rank value of ``col`` (lists with nulls) over a group's records; NaN when none."""
    vals = [m for x in g.get(col, []) if isinstance(x, list) for m in x if m is not None]
    return float(max(vals)) if vals else np.nan


def _median(g: pd.DataFrame, col: str) -> float:
    """The median of a scalar column over a group's records (repeats); NaN when none has it."""
    vals = pd.to_numeric(g[col], errors="coerce").dropna() if col in g else []
    return float(np.median(vals)) if len(vals) else np.nan


def _on_cpu(g: pd.DataFrame) -> bool:
    if "device" in g and g["device"].notna().any():
        return bool((g["device"] == "cpu").any())
    return bool(g["kernel"].isin(["torch-cpu"]).any()) if "kernel" in g else False


def _first(g: pd.DataFrame, col: str):
    vals = g[col].dropna() if col in g else []
    return str(vals.iloc[0]) if len(vals) else None


def _device(g: pd.DataFrame) -> str | None:
    """'cuda' or 'cpu': the records' device, or for older records without it, a CPU kernel means CPU."""
    if "device" in g and g["device"].notna().any():
        return str(g["device"].dropna().iloc[0])
    kernel = _first(g, "kernel")
    return None if kernel is None else "cpu" if kernel == "torch-cpu" else "cuda"


def summarize(df: pd.DataFrame, kind: str = "attention") -> pd.DataFrame:
    """One row per (configuration, candidate) of the ok records of ``kind`` (a kinds.KINDS key), with the pooled
    spread, throughput, MFU against a GPU's published peak, peak memory, and the kind's own measures."""
    k = KINDS[kind]
    ok = df[(df["kind"] == k.record) & (df["status"] == "ok")] if "kind" in df else df.iloc[0:0]
    if ok.empty:
        raise NoData(k.empty)
    if "mask" in k.config:
        ok = ok.assign(mask=mask_names(ok))  # records without a mask field compare by their `causal`
    keys = [*k.config, k.candidate]
    timed = [col for _, col, _ in k.timed]
    rows = []
    for key, g in ok.groupby(keys, dropna=False, sort=True):
        samples = np.concatenate([np.asarray(s, dtype=float) for s in g["samples_s"]])
        med = float(np.median(samples))
        per_rank = g["flops"].iloc[0] / g["world_size"].iloc[0] / med / 1e12 if "flops" in g else np.nan
        peak = g["peak_tflops"].iloc[0] if "peak_tflops" in g else np.nan
        if _on_cpu(g):
            peak = np.nan  # a CPU has no published peak: a guessed one gives MFU above 1
        groups = g["timing_group"] if "timing_group" in g else [None] * len(g)
        rows.append({**dict(zip(keys, key)), "family": g["family"].iloc[0],
                     "device": _device(g), "kernel": _first(g, "kernel"),
                     "runs": [{**{col: list(r[col]) for col in timed}, "timing_group": None if pd.isna(tg) else tg}
                              for (_, r), tg in zip(g.iterrows(), groups)],
                     "median_s": med, "p10_s": float(np.percentile(samples, 10)),
                     "p90_s": float(np.percentile(samples, 90)), "n_samples": len(samples), "n_repeats": len(g),
                     "tflops_per_rank": per_rank,
                     "mfu": per_rank / peak if pd.notna(peak) and peak else np.nan,
                     "mem_peak_bytes": _max_over_ranks(g, "mem_peak_bytes_per_rank"),
                     "call_peak_bytes": _max_over_ranks(g, "call_peak_bytes_per_rank"),
                     "overlap_fraction": _median(g, "overlap_fraction"),
                     "bytes_sent_max_rank": _max_over_ranks(g, "bytes_sent_per_rank"),
                     "implausible": bool("implausible" in g and g["implausible"].map(
                         lambda x: isinstance(x, list) and bool(x)).any()), **k.measures(g, med)})
    out = pd.DataFrame(rows)
    out.attrs["kind"] = kind
    out.attrs["spread_method"] = SPREAD_METHOD
    return out


def speedup(summary: pd.DataFrame, baseline: str = "ring", phase: str | None = None) -> pd.DataFrame:
    """Each candidate's speedup over ``baseline`` at identical configuration (baseline time / time).

    ``speedup_lo``/``speedup_hi`` bound its bootstrap interval (ringx_suite/stats.py), ``within_noise`` is True
    where that interval contains 1. Configurations where the baseline was not measured are dropped; if it
    was measured nowhere, MissingBaseline names the candidates that were. The configuration and the candidate
    column are the summary's kind's (kinds.KINDS); ``phase`` names one of the kind's timed phases (an infer
    record's "TTFT" or "TPOT"; default: the first, the whole timed call). A phase a candidate did not time (TPOT
    of a one-token generation) has a NaN speedup.
    """
    k = kind_of(summary)
    config, cand = list(k.config), k.candidate
    phases = {name: (col, med) for name, col, med in k.timed}
    if phase is not None and phase not in phases:
        raise ValueError(f"{k.record} records have no phase {phase!r}: {', '.join(phases)}")
    samples, med = phases[phase or k.timed[0][0]]
    base = summary[summary[cand] == baseline]
    if base.empty:
        raise MissingBaseline(f"baseline {baseline!r} has no successful {k.unmeasured}; measured: "
                              f"{', '.join(sorted(summary[cand].unique()))}")
    b = base[config + [med, "runs"]].rename(columns={med: "base_s", "runs": "base_runs"})
    out = summary.merge(b, on=config, how="inner")
    timed = out[med].notna() & out["base_s"].notna()
    sps = [records_speedup(br, r, samples) if t else None for br, r, t in zip(out["base_runs"], out["runs"], timed)]
    out["speedup"] = out["base_s"] / out[med]
    out["speedup_lo"] = [x.lo if x else np.nan for x in sps]
    out["speedup_hi"] = [x.hi if x else np.nan for x in sps]
    out["within_noise"] = [bool(x and x.within_noise and a != baseline) for x, a in zip(sps, out[cand])]
    out["paired"] = [bool(x and x.paired) for x in sps]
    out = out.drop(columns=["base_runs"])
    out.attrs.update(summary.attrs)
    out.attrs["baseline"] = baseline
    out.attrs["phase"] = phase or k.timed[0][0]
    out.attrs["interval_method"] = METHOD
    return out


def _scaling(summary: pd.DataFrame, scaling: str, vary: list[str]) -> pd.DataFrame:
    sub = summary[summary["scaling"] == scaling]
    if sub.empty:
        return sub.assign(speedup=[], efficiency=[])
    k = kind_of(summary)
    keep = [c for c in k.config if c not in vary] + [k.candidate]
    parts = []
    for _, g in sub.groupby(keep, dropna=False):
        g = g.sort_values("world_size")
        b = g.iloc[0]
        g = g.assign(base_world=b["world_size"], base_s=b["median_s"])
        g["speedup"] = g["base_s"] / g["median_s"]
        ideal = g["world_size"] / g["base_world"] if scaling == "strong" else 1.0
        g["efficiency"] = g["speedup"] / ideal
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


def strong_scaling(summary: pd.DataFrame) -> pd.DataFrame:
    """Fixed global sequence: speedup over the smallest rank count measured and efficiency = speedup / (P / P0)."""
    return _scaling(summary, "strong", ["world_size", "nodes", "seq_per_rank"])


def weak_scaling(summary: pd.DataFrame) -> pd.DataFrame:
    """Fixed tokens per rank: efficiency = t(P0) / t(P) (1 = perfect)."""
    return _scaling(summary, "weak", ["world_size", "nodes", "seq"])
