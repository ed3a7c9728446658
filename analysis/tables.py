"""Tables of a campaign in Markdown, LaTeX (booktabs) or CSV."""

from __future__ import annotations

import io

import pandas as pd

from .metrics import speedup


def speedup_table(summary: pd.DataFrame, baseline: str = "ring") -> pd.DataFrame:
    """One row per configuration, one column per algorithm: median ms and speedup over the baseline."""
    sp = speedup(summary, baseline)
    sp = sp.assign(mask=sp["causal"].map({True: "causal", False: "non-causal"}),
                   cell=[f"{m * 1e3:.1f} ({s:.2f}x)" for m, s in zip(sp["median_s"], sp["speedup"])])
    table = sp.pivot_table(index=["world_size", "seq", "mask", "mode", "dtype"], columns="algorithm", values="cell",
                           aggfunc="first")
    from .figures import order_key

    table = table[sorted(table.columns, key=order_key)]
    table = table.reset_index().rename(columns={"world_size": "ranks"})
    table.columns.name = None
    table.attrs["caption"] = (f"Median time per call in ms and speedup over {baseline} "
                              f"(median of all timed iterations, each the slowest rank's).")
    return table


def render(df: pd.DataFrame, fmt: str) -> str:
    """``df`` as markdown, latex or csv text."""
    df = df.fillna("")
    if fmt == "csv":
        buf = io.StringIO()
        df.to_csv(buf, index=False)
        return buf.getvalue()
    cols = [str(c) for c in df.columns]
    rows = [[str(v) for v in r] for r in df.itertuples(index=False)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"
    if fmt == "latex":
        def esc(s: str) -> str:
            return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

        out = [r"\begin{table}", r"\centering", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
               " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
        out += [" & ".join(esc(v) for v in r) + r" \\" for r in rows]
        out += [r"\bottomrule", r"\end{tabular}"]
        if df.attrs.get("caption"):
            out.append(r"\caption{" + esc(df.attrs["caption"]) + "}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"
    raise ValueError(f"unknown table format {fmt!r}: choose markdown, latex or csv")
