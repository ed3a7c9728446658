"""Tables of a campaign, written by the one table writer (core/tables.py): Markdown, LaTeX or CSV."""

from __future__ import annotations

import pandas as pd

from core.tables import Table, cell, render  # noqa: F401 - the one writer, used through this module too

from .metrics import speedup


def frame_table(df: pd.DataFrame, caption: str = "", label: str = "") -> Table:
    """Any frame as a Table (missing cells empty)."""
    rows = [[None if (isinstance(v, float) and pd.isna(v)) or v is pd.NA else v for v in r]
            for r in df.itertuples(index=False)]
    return Table([str(c) for c in df.columns], rows, caption, label)


def speedup_table(summary: pd.DataFrame, baseline: str = "ring") -> Table:
    """One row per configuration, one column per algorithm: median ms and speedup over the baseline.

    A speedup whose interval contains 1 is marked '~' (within noise); a cell with no measurement is 'n/a'.
    """
    from .figures import order_key

    sp = speedup(summary, baseline)
    sp = sp.assign(mask=sp["causal"].map({True: "causal", False: "non-causal"}))
    algos = sorted(sp["algorithm"].unique(), key=order_key)
    keys = ["world_size", "seq", "mask", "mode", "dtype"]
    rows, latex = [], {}
    for i, (cfg, g) in enumerate(sp.groupby(keys, sort=True)):
        cells = []
        for j, a in enumerate(algos, start=len(keys)):
            r = g[g["algorithm"] == a]
            if r.empty:
                cells.append("n/a")
                continue
            r = r.iloc[0]
            ms = f"{r['median_s'] * 1e3:.1f}"
            if a == baseline:
                cells.append(f"{ms} ms")
                continue
            noise = "~" if r["within_noise"] else ""
            cells.append(f"{ms} ({noise}{r['speedup']:.2f}x [{r['speedup_lo']:.2f}-{r['speedup_hi']:.2f}])")
            mark = r"$\sim$" if noise else ""
            latex[i, j] = (f"{ms} ({mark}{r['speedup']:.2f}" + r"$\times$"
                           + f"$_{{{r['speedup_lo']:.2f}-{r['speedup_hi']:.2f}}}$)")
        rows.append([*cfg, *cells])
    caption = (f"Median time per call in ms of the slowest rank per iteration, and speedup over {baseline} "
               f"(above 1: faster) with its {sp.attrs['interval_method']}. ~: the interval contains 1 "
               "(within noise). n/a: not measured at that configuration.")
    return Table(["ranks", "seq", "mask", "mode", "dtype", *algos], rows, caption, label="tab:speedup",
                 latex_cells=latex)
