"""The report's section "Against the field's implementations": every outsider (the field's peers, a user's plugins;
docs/plugins.md) at each configuration against ring and against the fastest of ours there, with the 95% intervals,
an implausible record's cell marked. Drawn only when a campaign holds outsiders."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ringx_suite.plausible import MARK

from . import figures, metrics
from .tables import Table, _constants

SECTION = "Against the field's implementations"
OUTSIDE = ("peer", "plugin", "external")  # records' `family` of an implementation that is not ours
FIGURE = "field"
TITLE = "Ours over the field's implementations"
CAPTION = ("Speedup of ring and of the fastest of ours at each configuration over each outside implementation (its "
           "time over ours; above 1: ours faster), with the 95% interval; hollow: within noise. " + MARK +
           " beside a point: a record there is implausible (above the device's peak or a link's bandwidth).")


def outsiders(summary: pd.DataFrame) -> list[str]:
    """The outside implementations with successful records, in name order."""
    if "family" not in summary:
        return []
    return sorted(summary.loc[summary["family"].isin(OUTSIDE), "algorithm"].unique())


def rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Per (configuration, outsider, ours in {ring, the fastest of ours there}): the speedup of ours over the
    outsider with its interval, both medians, and whether a record of either is implausible."""
    keys = [c for c, _ in _constants(summary)[0]]
    out = []
    ours = summary[~summary["family"].isin(OUTSIDE)]
    for x in outsiders(summary):
        sp = metrics.speedup(summary, baseline=x)
        for cfg, g in sp.groupby(keys, sort=True):
            cfg = cfg if isinstance(cfg, tuple) else (cfg,)
            mine = g[g["algorithm"].isin(ours["algorithm"])]
            if mine.empty:
                continue
            fastest = mine.loc[mine["speedup"].idxmax(), "algorithm"]
            for role, a in (("ring", "ring"), ("fastest of ours", fastest)):
                r = g[g["algorithm"] == a]
                if r.empty:
                    continue
                r = r.iloc[0]
                at = summary
                for k, v in zip(keys, cfg):
                    at = at[at[k] == v]
                bad = bool(at[at["algorithm"].isin([a, x])]["implausible"].any()) if "implausible" in at else False
                out.append({**dict(zip(keys, cfg)), "outsider": x, "role": role, "ours": a,
                            "outsider_ms": float(at.loc[at["algorithm"] == x, "median_s"].iloc[0]) * 1e3,
                            "ours_ms": r["median_s"] * 1e3, "speedup": r["speedup"], "speedup_lo": r["speedup_lo"],
                            "speedup_hi": r["speedup_hi"], "within_noise": bool(r["within_noise"]),
                            "implausible": bad})
    return pd.DataFrame(out)


def table(summary: pd.DataFrame, baseline: str = "ring", records: pd.DataFrame | None = None,
          d: pd.DataFrame | None = None) -> Table:
    """One row per (configuration, outsider): its median ms, ring's speedup over it and the fastest of ours'
    (``d``: :func:`rows` of the summary, when the caller has them)."""
    d = rows(summary) if d is None else d
    if d.empty:
        raise ValueError("no outside implementation (peer or plugin) with successful records")
    varying, fixed = _constants(summary)
    keys = [c for c, _ in varying]
    body = []
    for key, g in d.groupby([*keys, "outsider"], sort=True):
        cfg, x = key[:-1], key[-1]
        cells = []
        for role in ("ring", "fastest of ours"):
            r = g[g["role"] == role]
            if r.empty:
                cells.append("\u2013")
                continue
            r = r.iloc[0]
            hi = f"{r['speedup_hi']:.2f}" if np.isfinite(r["speedup_hi"]) else "inf"
            who = "" if role == "ring" else f"{r['ours']} "
            cells.append(f"{who}{'~' if r['within_noise'] else ''}{r['speedup']:.2f}x [{r['speedup_lo']:.2f}-{hi}]"
                         + (MARK if r["implausible"] else ""))
        body.append([*(int(v) if isinstance(v, int | np.integer) else v for v in cfg), x,
                     round(float(g["outsider_ms"].iloc[0]), 3), *cells])
    caption = ("Each outside implementation's median time per call (ms, the slowest rank's per iteration), then "
               "the speedup over it (its time over ours; above 1: ours faster) of ring and of the fastest of ours at "
               "that configuration, with the 95% interval. ~: within noise. " + MARK + ": a record of that cell is "
               "implausible; the speedup cannot be trusted.") + (f" Every row: {fixed}." if fixed else "")
    names = [n for _, n in varying]
    return Table([*names, "implementation", "its ms", "ring over it", "fastest of ours over it"], body, caption,
                 label="tab:field", numeric={"ranks", "seq", "its ms"})


@figures.styled
def figure(summary: pd.DataFrame, baseline: str = "ring", width: str = "two", records: pd.DataFrame | None = None,
           d: pd.DataFrame | None = None):
    """A panel per outsider: ring's and the fastest of ours' speedup over it at each configuration (``d``: as
    :func:`table`'s)."""
    d = rows(summary) if d is None else d
    if d.empty:
        raise figures.NoData("no outside implementation (peer or plugin) with successful records")
    keys = [c for c, _ in _constants(summary)[0]]
    names = list(dict.fromkeys(d["outsider"]))
    fig, axes, ncols = figures._fig(len(names), width, sharey=True)
    for ax, x in zip(axes, names):
        g = d[d["outsider"] == x].reset_index(drop=True)
        labels = list(dict.fromkeys(" ".join(_short(k, r[k]) for k in keys) for _, r in g.iterrows()))
        g = g.assign(at=[labels.index(" ".join(_short(k, r[k]) for k in keys)) for _, r in g.iterrows()])
        for role, shift, st in (("ring", -0.12, figures.style("ring")), ("fastest of ours", 0.12, None)):
            part = g[g["role"] == role].assign(at=lambda p, s=shift: p["at"] + s)
            if part.empty:
                continue
            style = st or {"marker": "D", "color": "#0072B2"}
            figures._errorbars(ax, figures._finite_intervals(part), "at",
                               {"marker": style["marker"], "color": style["color"], "linestyle": "none",
                                "label": role})
            if role != "ring":
                for _, r in part.iterrows():
                    ax.annotate(r["ours"], (r["at"], r["speedup"]), fontsize=5, xytext=(3, 2),
                                textcoords="offset points")
            for _, r in part[part["implausible"]].iterrows():
                ax.annotate(MARK, (r["at"], r["speedup"]), color="red", fontsize=8, xytext=(-6, 2),
                            textcoords="offset points")
        ax.axhline(1.0, color="#777", linewidth=0.6)
        ax.set_title(f"over {x}")
        ax.set_yscale("log")
        figures._plain_log(ax)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    figures._labels(axes, ncols, "configuration", "speedup over it")
    figures._legend(fig, axes, width, order=["ring", "fastest of ours"])
    return fig


def _short(col: str, v) -> str:
    if col == "world_size":
        return f"P{int(v)}"
    if col == "seq":
        return figures.tokens(v)
    return str(v)
