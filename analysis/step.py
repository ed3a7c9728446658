"""The training step's own views (``bench model`` records, kind "model"; summarized and compared by metrics.py
as kinds.KINDS["model"] says): the step's speedup beside the attention-only speedup at the same attention shape
(so the dilution from attention to a step shows), MFU against sequence length, and a table of its phases.

The attention-only speedup comes from ``bench run`` records in the same campaign(s) at the model's attention
configuration: same ranks, global sequence, batch, query heads, K/V heads, head dim, causal flag, mask and dtype, mode
fwd+bwd. Where there are none, the figure shows the step alone and says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ringx_suite.records import MODEL_PHASES
from ringx_suite.stats import METHOD

from . import figures
from .figures import NoData
from .metrics import speedup, summarize
from .tables import Table

# attention records match a step record on these (the model's head_dim is d_model / heads; the mask as
# kinds.mask_names names it, so a document-masked step is set beside attention under the same distribution)
ATTENTION_KEYS = ["world_size", "seq", "batch", "heads", "kv_heads", "head_dim", "causal", "mask", "dtype"]


def with_attention(sp: pd.DataFrame, df: pd.DataFrame, baseline: str = "ring") -> pd.DataFrame:
    """``sp`` with ``attention_speedup`` (and its interval): the same algorithms' attention-only speedup at the
    model's attention configuration, from the campaign's attention records (NaN where there are none)."""
    att = df[(df["kind"] == "attention") & (df["status"] == "ok")] if "kind" in df else df.iloc[0:0]
    att = att[att["mode"] == "fwd+bwd"] if not att.empty else att
    out = sp.assign(attention_speedup=np.nan, attention_lo=np.nan, attention_hi=np.nan)
    if att.empty:
        return out
    try:
        a = speedup(summarize(att, "attention"), baseline)
    except ValueError:  # no attention records, or none of the baseline
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
    merged.attrs.update(sp.attrs)
    return merged


STEP_WIDTH, ATTENTION_WIDTH = 1.5, 0.6  # thick: the step; thin: attention alone (each keeps its algorithm's dash,
# which with its marker tells apart algorithms of one colour: the palette has fewer colours than algorithms)


def _attention_line(ax, g: pd.DataFrame, st: dict) -> None:
    """The attention-only speedup at the step's shape: a thin line in the algorithm's own dash, open markers."""
    at = g[g["attention_speedup"].notna()]
    if not at.empty:
        ax.plot(at["seq"], at["attention_speedup"].astype(float), linestyle=st["linestyle"], marker=st["marker"],
                color=st["color"], markerfacecolor="none", linewidth=ATTENTION_WIDTH, alpha=0.8)


def speedup_vs_seq(summary: pd.DataFrame, baseline: str = "ring", width: str = "two",
                   records: pd.DataFrame | None = None):
    """Whole-step speedup over the baseline (thick, error bars: 95% bootstrap interval, hollow: within noise)
    beside the attention-only speedup at the same shape (thin, open markers; from ``records``' attention
    records), vs sequence length; one panel per (model, mask, ranks): figures.speedups_vs_seq."""
    sp = speedup(summary, baseline)
    sp = with_attention(sp, records, baseline) if records is not None else \
        sp.assign(attention_speedup=np.nan, attention_lo=np.nan, attention_hi=np.nan)
    if (sp["algorithm"] == baseline).all():
        raise NoData(f"no algorithm besides {baseline} in the model records")
    return figures.speedups_vs_seq(sp, baseline, width, line={"linewidth": STEP_WIDTH}, also=_attention_line,
                                   ylabel=f"speedup over {baseline}\n(thick: step; thin: attention only)")


# The model kind's figures and tables (kinds.py): each takes kinds.Draw's or kinds.MakeTable's keywords.
FIGURES = {"model-speedup": speedup_vs_seq, "model-mfu": figures.mfu_vs_seq}
TITLES = {"model-speedup": "Training step: speedup over the baseline, beside attention alone",
          "model-mfu": "Training step: MFU"}
CAPTIONS = {
    "model-speedup": "Speedup of a whole training step (forward, backward, gradient all-reduce, AdamW) over {baseline} "
                     "(thick lines; error bars: 95% bootstrap interval; hollow: within noise) and of attention alone "
                     "at the model's attention shape (thin lines, open markers, from `bench run` records of the "
                     "campaign), "
                     "against the global sequence length. The gap is the dilution by the rest of the step.",
    "model-mfu": "Model FLOPs utilisation of the step (6N + attention, PaLM's convention) against the device's "
                 "published peak where the records name one; otherwise model TFLOP/s per rank (CPU runs have no "
                 "published peak).",
}


def table(summary: pd.DataFrame, baseline: str = "ring", records: pd.DataFrame | None = None) -> Table:
    """One row per (model, ranks, seq, algorithm): step time, its phases, tokens/s, TFLOP/s or MFU, and the
    step's and attention's speedup over the baseline (attention: from ``records``, where given)."""
    s = summary
    try:
        sp = speedup(s, baseline)
        sp = with_attention(sp, records, baseline) if records is not None else sp.assign(attention_speedup=np.nan)
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
                     *(f"{r[f'{ph}_s'] * 1e3:.1f}" for ph in MODEL_PHASES), f"{r['tokens_per_s_per_rank']:.0f}", mfu,
                     step, att])
    return Table(["model", "ranks", "seq", "algorithm", "step ms", "fwd ms", "bwd ms", "all-reduce ms", "AdamW ms",
                  "tokens/s/rank", "MFU or model FLOP/s", f"step x {baseline}", f"attention x {baseline}"], rows,
                 caption=(f"Median ms per training step (slowest rank per iteration) and its phases (each the "
                          f"slowest rank's median); speedups over {baseline} with their {METHOD}; ~: within noise. "
                          "Attention: `bench run` at the model's attention shape, where recorded."),
                 label="tab:model")


TABLES = {"training step table": ("Training steps", table, False)}
