"""End-to-end training steps (``bench model`` records): speedup of the whole step over ring beside the
attention-only speedup at the same attention shape (so the dilution from attention to a step shows), MFU
against sequence length, and a table of the step's phases.

The attention-only speedup comes from ``bench run`` records in the same campaign(s) at the model's attention
configuration: same ranks, global sequence, batch, query heads, K/V heads, head dim, masking and dtype, mode
fwd+bwd. Where there are none, the figure shows the step alone and says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ringx_suite.records import MODEL_COMPARE_BY
from ringx_suite.stats import METHOD

from . import figures
from .figures import NoData, _fig, _legend, _mask, save, style, styled
from .tables import Table

CONFIG = list(MODEL_COMPARE_BY)
PHASES = ("forward", "backward", "grad_allreduce", "optimizer")
# attention records match a model record on these (the model's head_dim is d_model / heads)
ATTENTION_KEYS = ["world_size", "seq", "batch", "heads", "kv_heads", "head_dim", "causal", "dtype"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (configuration, algorithm) of the ok model records, timed iterations pooled over repeats."""
    ok = df[(df["kind"] == "model") & (df["status"] == "ok")] if "kind" in df else df.iloc[0:0]
    if ok.empty:
        raise NoData("no successful model records (run `python -m bench model`)")
    rows = []
    for key, g in ok.groupby(CONFIG + ["algorithm"], dropna=False, sort=True):
        samples = np.concatenate([np.asarray(s, dtype=float) for s in g["samples_s"]])
        med = float(np.median(samples))
        first = g.iloc[0]
        on_cpu = (g["device"] == "cpu").any()
        peak = first.get("peak_tflops")
        tflops = first["flops"] / first["world_size"] / med / 1e12
        groups = g["timing_group"] if "timing_group" in g else [None] * len(g)
        mem = [m for x in g["mem_peak_bytes_per_rank"] for m in (x if isinstance(x, list) else []) if m is not None]
        rows.append({**dict(zip(CONFIG + ["algorithm"], key)), "family": first["family"],
                     "head_dim": int(first["d_model"]) // int(first["heads"]),
                     "runs": [{"samples_s": list(s), "timing_group": None if pd.isna(tg) else tg}
                              for s, tg in zip(g["samples_s"], groups)],
                     "median_s": med, "p10_s": float(np.percentile(samples, 10)),
                     "p90_s": float(np.percentile(samples, 90)),
                     **{f"{ph}_s": float(np.median([x for d in g["phase_samples_s"] for x in d[ph]])) for ph in PHASES},
                     "tokens_per_s_per_rank": first["batch"] * first["seq"] / first["world_size"] / med,
                     "flops_per_token": first["flops_per_token"], "tflops_per_rank": tflops,
                     "mfu": tflops / peak if not on_cpu and pd.notna(peak) and peak else np.nan,
                     "mem_peak_bytes": float(max(mem)) if mem else np.nan})
    return pd.DataFrame(rows)


def speedup(summary: pd.DataFrame, baseline: str = "ring") -> pd.DataFrame:
    """Each algorithm's step speedup over ``baseline`` at identical configuration, with its bootstrap interval
    (metrics.speedup at a model configuration)."""
    from .metrics import MissingBaseline
    from .metrics import speedup as attention_speedup

    try:
        return attention_speedup(summary, baseline, config=CONFIG)
    except MissingBaseline:
        raise NoData(f"baseline {baseline!r} has no successful model record; measured: "
                     f"{', '.join(sorted(summary['algorithm'].unique()))}") from None


def with_attention(sp: pd.DataFrame, df: pd.DataFrame, baseline: str = "ring") -> pd.DataFrame:
    """``sp`` with ``attention_speedup`` (and its interval): the same algorithms' attention-only speedup at the
    model's attention configuration, from the campaign's attention records (NaN where there are none)."""
    from . import metrics

    att = df[(df["kind"] == "attention") & (df["status"] == "ok")] if "kind" in df else df.iloc[0:0]
    att = att[att["mode"] == "fwd+bwd"] if not att.empty else att
    out = sp.assign(attention_speedup=np.nan, attention_lo=np.nan, attention_hi=np.nan)
    if att.empty:
        return out
    try:
        a = metrics.speedup(metrics.summarize(att), baseline)
    except (ValueError, metrics.MissingBaseline):
        return out
    a = a[ATTENTION_KEYS + ["algorithm", "speedup", "speedup_lo", "speedup_hi"]].rename(
        columns={"speedup": "attention_speedup", "speedup_lo": "attention_lo", "speedup_hi": "attention_hi"})
    a = a.drop_duplicates(ATTENTION_KEYS + ["algorithm"])
    for c in ATTENTION_KEYS:  # align the join keys' types (Int64/bool/string)
        a[c] = a[c].astype(object)
    left = sp.copy()
    for c in ATTENTION_KEYS:
        left[c] = left[c].astype(object)
    merged = left.merge(a, on=ATTENTION_KEYS + ["algorithm"], how="left")
    return merged


def _panels(d0: pd.DataFrame, width: str):
    keys = sorted({(str(m), int(w)) for m, w in zip(d0["model"], d0["world_size"])})
    fig, axes, _ = _fig(len(keys), width=width)
    return fig, axes, [(ax, m, w, d0[(d0["model"] == m) & (d0["world_size"] == w)])
                       for ax, (m, w) in zip(axes, keys)]


def _seq_axis(ax, model: str, world: int, causal: bool) -> None:
    ax.set_xscale("log", base=2)
    ax.set_title(f"{model}, {world} rank{'s' if world != 1 else ''}, {_mask(causal)}")
    ax.set_xlabel("sequence length (tokens)")


@styled
def speedup_vs_seq(df: pd.DataFrame, baseline: str = "ring", width: str = "two"):
    """Whole-step speedup over the baseline (solid, error bars: 95% bootstrap interval, hollow: within noise)
    beside the attention-only speedup at the same shape (dotted, open markers), vs sequence length; one panel
    per (model, ranks)."""
    sp = with_attention(speedup(summarize(df), baseline), df, baseline)
    sp = sp[sp["algorithm"] != baseline]
    if sp.empty:
        raise NoData(f"no algorithm besides {baseline} in the model records")
    fig, axes, panels = _panels(sp, width)
    for ax, model, world, d in panels:
        for a in sorted(dict.fromkeys(d["algorithm"]), key=figures.order_key):
            g = d[d["algorithm"] == a].sort_values("seq")
            st = style(a)
            ax.errorbar(g["seq"], g["speedup"], yerr=[g["speedup"] - g["speedup_lo"], g["speedup_hi"] - g["speedup"]],
                        capsize=2, elinewidth=0.6, marker=st["marker"], color=st["color"], linestyle="-", label=a)
            noise = g[g["within_noise"].astype(bool)]
            ax.plot(noise["seq"], noise["speedup"], linestyle="none", marker=st["marker"], color=st["color"],
                    markerfacecolor="white", zorder=3)
            at = g[g["attention_speedup"].notna()]
            if not at.empty:
                ax.plot(at["seq"], at["attention_speedup"].astype(float), linestyle=":", marker=st["marker"],
                        color=st["color"], markerfacecolor="none", alpha=0.8)
        ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=(0, (1, 1)))
        _seq_axis(ax, model, world, bool(d["causal"].iloc[0]))
    axes[0].set_ylabel(f"speedup over {baseline}\n(solid: step; dotted: attention only)")
    _legend(fig, axes, width)
    return fig


@styled
def mfu_vs_seq(df: pd.DataFrame, width: str = "two"):
    """MFU of the whole step (model FLOPs, ringx/flops.py) vs sequence length; TFLOP/s per rank without a GPU peak."""
    s = summarize(df)
    col, label = ("mfu", "MFU (model FLOPs)") if s["mfu"].notna().any() else (
        "tflops_per_rank", "model TFLOP/s per rank")
    fig, axes, panels = _panels(s, width)
    for ax, model, world, d in panels:
        for a in sorted(dict.fromkeys(d["algorithm"]), key=figures.order_key):
            g = d[d["algorithm"] == a].sort_values("seq")
            ax.plot(g["seq"], g[col], **style(a))
        _seq_axis(ax, model, world, bool(d["causal"].iloc[0]))
    axes[0].set_ylabel(label)
    _legend(fig, axes, width)
    return fig


FIGURES = {"model-speedup": speedup_vs_seq, "model-mfu": mfu_vs_seq}
TITLES = {"model-speedup": "Training step: speedup over the baseline, beside attention alone",
          "model-mfu": "Training step: MFU"}
CAPTIONS = {
    "model-speedup": "Speedup of a whole training step (forward, backward, gradient all-reduce, AdamW) over {baseline} "
                     "(solid; error bars: 95% bootstrap interval; hollow: within noise) and of attention alone at "
                     "the model's attention shape (dotted, open markers, from `bench run` records of the campaign), "
                     "against the global sequence length. The gap is the dilution by the rest of the step.",
    "model-mfu": "Model FLOPs utilisation of the step (6N + attention, PaLM's convention) against the device's "
                 "published peak where the records name one; otherwise model TFLOP/s per rank (CPU runs have no "
                 "published peak).",
}


def build_figures(df: pd.DataFrame, out, formats, baseline: str = "ring", width: str = "two"):
    """(name -> files, name -> why skipped) for the model figures."""
    import matplotlib.pyplot as plt

    made, skipped = {}, {}
    for name, fn in FIGURES.items():
        try:
            fig = fn(df, baseline=baseline, width=width) if name == "model-speedup" else fn(df, width=width)
        except NoData as e:
            skipped[name] = str(e)
            continue
        made[name] = save(fig, out, name, formats)
        plt.close(fig)
    return made, skipped


def table(df: pd.DataFrame, baseline: str = "ring") -> Table:
    """One row per (model, ranks, seq, algorithm): step time, its phases, tokens/s, TFLOP/s or MFU, and the
    step's and attention's speedup over the baseline."""
    s = summarize(df)
    try:
        sp = with_attention(speedup(s, baseline), df, baseline)
    except NoData:
        sp = s.assign(speedup=np.nan, speedup_lo=np.nan, speedup_hi=np.nan, within_noise=False,
                      attention_speedup=np.nan)
    sp = sp.sort_values(["model", "world_size", "seq", "algorithm"],
                        key=lambda c: c.map(figures.order_key) if c.name == "algorithm" else c)
    rows = []
    for _, r in sp.iterrows():
        step = "" if pd.isna(r["speedup"]) or r["algorithm"] == baseline else (
            f"{'~' if r['within_noise'] else ''}{r['speedup']:.2f}x [{r['speedup_lo']:.2f}-{r['speedup_hi']:.2f}]")
        att = "" if pd.isna(r["attention_speedup"]) or r["algorithm"] == baseline else f"{r['attention_speedup']:.2f}x"
        mfu = f"{r['mfu']:.1%}" if pd.notna(r["mfu"]) else f"{r['tflops_per_rank'] * 1e3:.2f} GF/s"
        rows.append([r["model"], int(r["world_size"]), int(r["seq"]), r["algorithm"], f"{r['median_s'] * 1e3:.1f}",
                     *(f"{r[f'{ph}_s'] * 1e3:.1f}" for ph in PHASES), f"{r['tokens_per_s_per_rank']:.0f}", mfu,
                     step, att])
    return Table(["model", "ranks", "seq", "algorithm", "step ms", "fwd ms", "bwd ms", "all-reduce ms", "AdamW ms",
                  "tokens/s/rank", "MFU or model FLOP/s", f"step x {baseline}", f"attention x {baseline}"], rows,
                 caption=(f"Median ms per training step (slowest rank per iteration) and its phases (each the "
                          f"slowest rank's median); speedups over {baseline} with their {METHOD}; ~: within noise. "
                          "Attention: `bench run` at the model's attention shape, where recorded."),
                 label="tab:model")
