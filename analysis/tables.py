"""Tables of a campaign, written by the one table writer (ringx_suite/tables.py): Markdown, LaTeX or CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ringx_suite.plausible import MARK
from ringx_suite.tables import Table, cell, latex_escape, render  # noqa: F401 - the one writer, used through this module too

from .kinds import MASK_ORDER, mask_order
from .metrics import speedup


def frame_table(df: pd.DataFrame, caption: str = "", label: str = "") -> Table:
    """Any frame as a Table (missing cells empty)."""
    rows = [[None if (isinstance(v, float) and pd.isna(v)) or v is pd.NA else v for v in r]
            for r in df.itertuples(index=False)]
    return Table([str(c) for c in df.columns], rows, caption, label)


CONFIG_COLUMNS = [("world_size", "ranks"), ("seq", "seq"), ("mask", "mask"), ("mode", "mode"), ("dtype", "dtype")]
SHAPE = ["batch", "heads", "kv_heads", "head_dim"]
EMPTY = "\u2013"  # an en dash: not measured


def _constants(sp: pd.DataFrame) -> tuple[list[tuple[str, str]], str]:
    """(the configuration columns that vary, a phrase naming those that do not: lifted into the caption)."""
    varying, fixed = [], []
    for col, name in CONFIG_COLUMNS:
        if col == "mask" and sp.attrs.get("mask"):
            continue  # one mask's table of a masked campaign (by_mask): its caption names the mask first
        vals = sorted(sp[col].dropna().unique(), key=str)
        if len(vals) > 1 or col in ("world_size", "seq"):
            varying.append((col, name))
        else:
            fixed.append(f"{'ranks ' if col == 'world_size' else ''}{vals[0]}" if vals else "")
    shape = {c: sorted(sp[c].dropna().unique()) for c in SHAPE if c in sp}
    if all(len(v) == 1 for v in shape.values()) and shape:
        b, h, kv, d = (int(shape[c][0]) for c in SHAPE)
        fixed.insert(0, f"batch {b}, {h} heads ({kv} K/V), head dim {d}")
    return varying, ", ".join(x for x in fixed if x)


def by_mask(summary: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """(mask, its rows) of a summary whose campaign has masks beyond causal and non-causal, one per mask in
    kinds.MASK_ORDER (the mask also in each part's ``attrs["mask"]``); else [(None, the whole summary)].

    Campaigns of full and causal attention only keep one table with a `mask` column when it varies (as before
    masks existed); a masked campaign gets a table per mask, its mask named in the heading, caption and label.
    """
    masks = sorted(set(summary["mask"].dropna()), key=mask_order) if "mask" in summary else []
    if not set(masks) - set(MASK_ORDER):
        return [(None, summary)]
    parts = []
    for m in masks:
        part = summary[summary["mask"] == m].reset_index(drop=True)
        part.attrs = {**summary.attrs, "mask": m}
        parts.append((m, part))
    return parts


def for_mask(t: Table, mask: str | None) -> Table:
    """``t`` as one mask's table (by_mask): the mask first in its captions and its label suffixed."""
    if mask is None:
        return t
    slug = "".join(c if c.isalnum() else "-" for c in mask).strip("-")
    return Table(t.columns, t.rows, f"Mask {mask}. {t.caption}", f"{t.label}-{slug}" if t.label else "",
                 t.numeric, t.latex_cells, f"Mask {mask}. {t.latex_caption}" if t.latex_caption else "", t.wide)


def speedup_table(summary: pd.DataFrame, baseline: str = "ring", records: pd.DataFrame | None = None) -> Table:
    """One row per configuration: the baseline's median time with its p10-p90 spread, and every other algorithm's
    speedup over it (above 1: faster) with the speedup's 95% interval.

    Columns that are the same in every row are named in the caption instead. A speedup whose interval contains
    1 is marked '~' (within noise); a cell with no measurement is an en dash, explained in the caption.
    LaTeX cells put the spread and the interval as sub/superscripts and use \\times.
    """
    from .figures import order_key

    sp = speedup(summary, baseline)
    others = [a for a in sorted(sp["algorithm"].unique(), key=order_key) if a != baseline]
    varying, fixed = _constants(sp)
    keys = [c for c, _ in varying]
    rows, latex, empty, flagged = [], {}, False, False
    base_col = len(keys)
    odd = summary[summary["implausible"]] if "implausible" in summary else summary.iloc[0:0]

    def implausible(cfg: tuple, algorithm: str) -> bool:  # ringx_suite/plausible.py: it cannot be right
        hit = odd[odd["algorithm"] == algorithm]
        for k, v in zip(keys, cfg):
            hit = hit[hit[k] == v]
        return not hit.empty
    for i, (cfg, g) in enumerate(sp.groupby(keys, sort=True)):
        cfg = cfg if isinstance(cfg, tuple) else (cfg,)
        b = g[g["algorithm"] == baseline].iloc[0]
        ms = [_ms(b[c] * 1e3) for c in ("median_s", "p10_s", "p90_s")]
        cells = [f"{ms[0]} [{ms[1]}-{ms[2]}]"]
        latex[i, base_col] = f"${ms[0]}_{{{ms[1]}}}^{{{ms[2]}}}$"
        for j, a in enumerate(others, start=base_col + 1):
            r = g[g["algorithm"] == a]
            if r.empty:
                cells.append(EMPTY)
                empty = True
                latex[i, j] = "--"
                continue
            r = r.iloc[0]
            noise = "~" if r["within_noise"] else ""
            hi = f"{r['speedup_hi']:.2f}" if pd.notna(r["speedup_hi"]) and r["speedup_hi"] < 1e9 else "inf"
            mark = MARK if implausible(cfg, a) or implausible(cfg, baseline) else ""
            flagged = flagged or bool(mark)
            cells.append(f"{noise}{r['speedup']:.2f}x [{r['speedup_lo']:.2f}-{hi}]{mark}")
            sim, top = (r"\sim " if noise else ""), (hi if hi != "inf" else r"\infty")
            latex[i, j] = f"${sim}{r['speedup']:.2f}" + r"\times" + f"_{{{r['speedup_lo']:.2f}}}^{{{top}}}$"
        rows.append([*(int(v) if isinstance(v, int | np.integer) else v for v in cfg), *cells])
    def caption(spread: str, interval: str) -> str:
        text = (f"{baseline}: median time per call in ms (each iteration timed on the slowest rank), with the p10 "
                f"and p90 of its iterations {spread}. Other columns: speedup over {baseline} (its median time over "
                f"theirs; above 1: faster) with its {sp.attrs['interval_method']} {interval}. ~: the interval "
                "contains 1 (within noise).")
        if fixed:
            text += f" Every row: {fixed}."
        if empty:
            text += f" {EMPTY}: not measured at that configuration (failed, skipped or not asked for)."
        if flagged:
            text += (f" {MARK}: a record of that cell is implausible (above the device's peak or a link's "
                     "bandwidth): the speedup cannot be trusted.")
        return text

    names = [n for _, n in varying]
    return Table([*names, f"{baseline} (ms)", *others], rows, caption("as [p10-p90]", "as [low-high]"),
                 label="tab:speedup", latex_cells=latex, numeric={"ranks", "seq", f"{baseline} (ms)", *others},
                 latex_caption=caption("as subscript and superscript", "as subscript (low) and superscript (high)"),
                 wide=len(others) > 4)


def _ms(v: float) -> str:
    """Milliseconds to three significant digits, trailing zeros kept (57.0, 190, 0.512)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def spread_table(summary: pd.DataFrame, *, baseline: str = "ring", records: pd.DataFrame | None = None) -> Table:
    """Every (configuration, algorithm): median time and its p10-p90 spread, samples and repeats."""
    from .figures import order_key

    d = summary.assign(order=[order_key(a) for a in summary["algorithm"]])
    d = d.sort_values(["world_size", "seq", "mask", "mode", "dtype", "order"])
    rows = [[int(r.world_size), int(r.seq), r.mask, r.mode, r.dtype, r.algorithm, round(r.median_s * 1e3, 3),
             round(r.p10_s * 1e3, 3), round(r.p90_s * 1e3, 3), round((r.p90_s - r.p10_s) / r.median_s * 100, 1),
             int(r.n_samples), int(r.n_repeats)] for r in d.itertuples()]
    return Table(["ranks", "seq", "mask", "mode", "dtype", "algorithm", "median ms", "p10 ms", "p90 ms",
                  "spread %", "samples", "repeats"], rows,
                 "Every configuration's spread: median and p10-p90 of the timed iterations (each the slowest rank's), "
                 "pooled over repeats; spread % = (p90 - p10) / median.", label="tab:spread")


# The attention kind's tables in a report (kinds.py): what -> (heading, table of a summary, folded in HTML); each
# takes kinds.MakeTable's keywords, those it ignores too.
TABLES = {"speedup table": ("Speedup over {baseline}", speedup_table, False),
          "spread table": ("Spread of every configuration", spread_table, True)}
