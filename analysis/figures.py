"""Publication figures from a campaign: one paper style, readable in grayscale.

Each function takes frames from :mod:`analysis.metrics` (or the collective
records) and returns the matplotlib Figure; :func:`save` writes it.
The speedup, throughput, scaling and memory figures draw any record kind's
summary (analysis/kinds.py): its panels are the kind's grouping keys (mask
among them), its lines its candidates. Algorithms keep one marker, line
style and colour across every figure.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # headless machines fall back to Agg; Jupyter keeps its inline backend
import matplotlib.ticker
import numpy as np
import pandas as pd

from ringx_suite.records import LEVEL_ORDER

from .kinds import MASK_ORDER, kind_of, mask_names, mask_order
from .metrics import MissingBaseline, NoData, speedup, strong_scaling  # noqa: F401 - raised to callers

WIDTH_IN = {"one": 3.5, "two": 7.16}  # one and two columns of a two-column paper: figures are saved at exactly this
MAX_COLS = {"one": 2, "two": 4}  # panels per row that stay readable at that width
PANEL_H = {"one": 1.45, "two": 1.65}  # inches per row of panels
LEGEND_COLS = {"one": 4, "two": 8}
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6.5, "xtick.labelsize": 6.5,
         "ytick.labelsize": 6.5, "lines.linewidth": 1.0, "lines.markersize": 3.5, "axes.grid": True,
         "grid.linewidth": 0.4, "grid.alpha": 0.5, "savefig.dpi": 300, "axes.titlepad": 3,
         "pdf.fonttype": 42, "ps.fonttype": 42, "legend.handlelength": 2.2, "legend.columnspacing": 1.0}
MARKERS = "osD^v<>PX*hp"
DASHES = ["-", "--", "-.", ":"]
# Okabe-Ito: distinguishable with colour-vision deficiencies; markers and dashes carry it in grayscale.
COLORS = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#999999", "#882255",
          "#B8A000"]
ORDER = ["ring", "zigzag", "stripe", "bidir-ring", "double-ring",
         "ringx1", "ringx2", "ringx3", "ringx4", "ringx1o", "ringx2o", "ringx4o",
         "ringx3b", "ulysses", "usp", "usp-ringx"]
NOISE = "hollow markers: within noise (the 95% interval contains 1)"


# Serving's tensor-parallel baseline (bench infer's `tp`): a style of its own, outside the algorithms' cycle.
TP_STYLE = {"marker": "*", "markersize": 5.5, "linestyle": "-", "linewidth": 1.4, "color": "#6A3D9A"}


# Implementations from outside (the field's peers, a user's plugins; docs/plugins.md): dash-dot-dot lines and
# markers of their own, so they never read as one of ours.
OUTSIDE_MARKERS = "x+1234"
OUTSIDE_DASH = (0, (4, 1, 1, 1, 1, 1))  # dash-dot-dot: none of DASHES


def style(algorithm: str) -> dict:
    if algorithm == "tp":
        return {**TP_STYLE, "label": algorithm}
    if algorithm not in ORDER:
        i = int(hashlib.md5(algorithm.encode()).hexdigest(), 16)  # the same style for a name in every figure
        return {"marker": OUTSIDE_MARKERS[i % len(OUTSIDE_MARKERS)], "linestyle": OUTSIDE_DASH,
                "color": COLORS[i % len(COLORS)], "label": algorithm}
    i = ORDER.index(algorithm)
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": DASHES[i % len(DASHES)],
            "color": COLORS[i % len(COLORS)], "label": algorithm}


def order_key(algorithm: str) -> tuple:
    """Sort key putting algorithms in the paper's order (ORDER), unknown ones after it by name."""
    return (ORDER.index(algorithm) if algorithm in ORDER else len(ORDER), algorithm)


def _algos(df: pd.DataFrame) -> list[str]:
    """The candidates (kinds.py; algorithms) of a frame, in the paper's order."""
    return sorted(dict.fromkeys(df[kind_of(df).candidate]), key=order_key)


def _rows(df: pd.DataFrame, candidate: str) -> pd.DataFrame:
    return df[df[kind_of(df).candidate] == candidate]


def styled(fn):
    """Draw the whole figure under the paper style (fonts, lines, grid)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def plural(n: int, word: str) -> str:
    """'1 rank', '4 ranks'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def on_gpus(df: pd.DataFrame) -> bool:
    """True when every record ran on GPUs (records' `device`; older ones: a CPU kernel means CPU)."""
    if "device" in df and df["device"].notna().any():
        return bool((df["device"].dropna() == "cuda").all())
    return "kernel" in df and df["kernel"].notna().any() and not df["kernel"].isin(["torch-cpu"]).any()


def rank_label(df: pd.DataFrame) -> str:
    """The rank axis: GPUs only for GPU runs; nodes named when the runs span several."""
    unit = "GPUs" if on_gpus(df) else "CPU ranks"
    return f"{unit} (nodes)" if "nodes" in df and df["nodes"].max() > 1 else unit


def tokens(v: float) -> str:
    """Sequence lengths and sizes as 1K, 128K, 1M (powers of 1024), else plain."""
    v = int(v)
    for div, suffix in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if v >= div and v % (div // 4 if div > 1024 else div) == 0:
            return f"{v / div:g}{suffix}"
    return str(v)


def _ncols(n: int, width: str) -> int:
    """Panels per row: the most that fit the width and fill the rows evenly, else the most that fit."""
    most = MAX_COLS[width]
    for c in range(min(most, n), max(1, (most + 1) // 2) - 1, -1):
        if n % c == 0:
            return c
    return min(most, n)


def _fig(n: int, width: str = "two", height: float | None = None, sharex: bool = False, sharey: bool = False,
         ncols: int | None = None):
    """A constrained-layout figure exactly WIDTH_IN[width] wide with ``n`` panels in rows (``ncols`` per row, else
    as many as fit evenly); unused slots removed.

    Returns (figure, the n axes in reading order, columns)."""
    ncols = ncols or _ncols(n, width)
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(WIDTH_IN[width], (height or PANEL_H[width]) * nrows + 0.35),
                             squeeze=False, sharex=sharex, sharey=sharey, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.04, hspace=0.06)
    flat = list(np.ravel(grid))
    for ax in flat[n:]:
        fig.delaxes(ax)
    axes = flat[:n]
    for k, ax in enumerate(axes):  # inner panels of a shared axis carry no tick labels
        below = k + ncols < n
        if sharex and below:
            ax.tick_params(labelbottom=False)
        if sharey and k % ncols:
            ax.tick_params(labelleft=False)
    fig._ringx_cols = ncols
    return fig, axes, ncols


def _labels(axes, ncols: int, xlabel: str, ylabel: str) -> None:
    """Axis labels said once: one x label under all columns and one y label beside all rows of panels
    (a single panel labels its own axes)."""
    fig = axes[0].get_figure()
    size = plt.rcParams["axes.labelsize"]
    if len(axes) > ncols:
        fig.supylabel(ylabel, fontsize=size)
    else:
        axes[0].set_ylabel(ylabel)
    if ncols > 1:
        fig.supxlabel(xlabel, fontsize=size)
    else:
        axes[-1].set_xlabel(xlabel)


def _legend(fig, axes, width: str = "two", order: list[str] | None = None) -> None:
    """One legend for all panels, above them (algorithms in the paper's order, or the labels in ``order``;
    reference lines last)."""
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if not lab.startswith("_"):
                seen.setdefault(lab, h)
    refs = ("ideal", "y = x")
    rank = {lab: i for i, lab in enumerate(order or [])}
    labels = sorted(seen, key=lambda a: (a in refs, rank.get(a, len(rank)), *order_key(a)))
    if seen:
        ncol = min(len(seen), LEGEND_COLS[width] if fig.get_figwidth() > 4 else LEGEND_COLS["one"])
        # Long labels (kernel, dtype, GQA ratio) need fewer columns to fit the width: ~0.05 in per character
        # at the legend's font size, plus the line sample and spacing.
        per_item = 0.05 * max(len(k) for k in labels) + 0.4
        ncol = max(1, min(ncol, int(fig.get_figwidth() / per_item)))
        fig.legend([seen[k] for k in labels], labels, loc="outside upper center", ncol=ncol, frameon=False)


def save(fig, out: str | Path | None, name: str, formats=("pdf", "png")) -> list[Path]:
    """Write the figure at its exact size (no tight cropping: a column's width is a column's width)."""
    if out is None:
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with plt.rc_context(STYLE):
        for fmt in formats:
            p = out / f"{name}.{fmt}"
            fig.savefig(p)
            paths.append(p)
    return paths


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


def log_ticks(ax, axis: str = "y") -> None:
    """Readable major ticks on a log axis: 1-2-5 steps (denser when the range is short, sparser when long),
    at least two of them, plain numbers; minor ticks unlabelled."""
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    lo, hi = max(lo, 1e-300), max(hi, 1e-300)
    ticks: list[float] = []
    for steps in ((1.0,), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0,
                                                                         6.0, 7.0, 8.0, 9.0)):
        ticks = [m * 10.0**e for e in range(int(np.floor(np.log10(lo))) - 1, int(np.ceil(np.log10(hi))) + 1)
                 for m in steps if lo <= m * 10.0**e <= hi]
        if len(ticks) >= 3 or (len(ticks) >= 2 and steps != (1.0,)):
            break
    if len(ticks) > 6:
        ticks = ticks[::-(-len(ticks) // 6)]
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    a.set_major_formatter(matplotlib.ticker.FixedFormatter([_num(t) for t in ticks]))
    a.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _plain_log(ax, axis: str = "y") -> None:
    for a in ("x", "y") if axis == "both" else (axis,):
        log_ticks(ax, a)


def x_at(ax, values, fmt=tokens, width_in: float | None = None, log2: bool = True) -> None:
    """Ticks exactly at the measured x values (log2 axis), thinned so that their labels cannot collide."""
    values = sorted({float(v) for v in values})
    if log2:
        ax.set_xscale("log", base=2)
    labels = [fmt(v) for v in values]
    if width_in is None:
        width_in = ax.get_figure().get_figwidth() / max(1, getattr(ax.get_figure(), "_ringx_cols", 1)) - 0.35
    font_in = plt.rcParams["xtick.labelsize"] / 72 if isinstance(plt.rcParams["xtick.labelsize"], float) else 0.09
    need = sum(max(len(x) for x in lab.split("\n")) * 0.6 * font_in + 0.06 for lab in labels)
    step = max(1, int(np.ceil(need / max(width_in * 0.85, 0.1))))
    keep = values[::step] if values[-1] in values[::step] else values[::-1][::step][::-1]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(keep))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([fmt(v) for v in keep]))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    if len(values) > 1:
        pad = (np.log2(values[-1]) - np.log2(values[0])) * 0.08 if log2 else (values[-1] - values[0]) * 0.08
        ax.set_xlim((values[0] / 2**pad, values[-1] * 2**pad) if log2 else (values[0] - pad, values[-1] + pad))


ACROSS = {"world_size": lambda v: plural(int(v), "rank"), "seq": lambda v: f"{tokens(v)} tokens",
          "prompt_len": lambda v: f"{tokens(v)}-token prompt"}


def _panels(d0: pd.DataFrame, across: str) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) of each panel: one per value of the frame's kind's grouping keys (kinds.py: mask, and the
    model for training steps) and of ``across``; masks in kinds.MASK_ORDER. Titles: 'tiny, 2 ranks, causal'."""
    by = [*kind_of(d0).panel_by, across]
    groups = dict(iter(d0.groupby(by, sort=False)))
    out = []
    for key in sorted(groups, key=lambda key: tuple(mask_order(v) if c == "mask" else v for c, v in zip(by, key))):
        named = dict(zip(by, key))
        parts = [str(named[c]) for c in by[:-1] if c != "mask"] + [ACROSS[across](named[across])]
        out.append((", ".join(parts + ([str(named["mask"])] if "mask" in named else [])), groups[key]))
    return out


def _mask_rows(panels: list[tuple[str, pd.DataFrame]], width: str) -> int | None:
    """Columns that give a masked campaign's figure one row per mask (kinds.mask_names: masks beyond causal and
    non-causal), when every mask has the same number of panels and they fit the width; None otherwise (the
    panels fill the rows as they come, as for full and causal attention)."""
    masks = [str(d["mask"].iloc[0]) if "mask" in d else None for _, d in panels]
    if not set(masks) - {*MASK_ORDER, None} or None in masks:
        return None
    counts = {m: masks.count(m) for m in masks}
    k = next(iter(counts.values()))
    return k if len(counts) > 1 and set(counts.values()) == {k} and k <= MAX_COLS[width] else None


def _rank_ticks(d: pd.DataFrame):
    """A formatter for rank ticks: 'P' or, when the runs span nodes, 'P\\n(N)'."""
    nodes = {int(w): int(n) for w, n in zip(d["world_size"], d["nodes"])} if "nodes" in d else {}
    multi = any(n > 1 for n in nodes.values())
    return lambda v: f"{int(v)}\n({nodes.get(int(v), '?')})" if multi else f"{int(v)}"


def _errorbars(ax, g, x: str, st: dict) -> None:
    """Speedup markers with their 95% interval; hollow where the interval contains 1 (within noise)."""
    ax.errorbar(g[x], g["speedup"], yerr=[(g["speedup"] - g["speedup_lo"]).clip(lower=0),
                                          (g["speedup_hi"] - g["speedup"]).clip(lower=0)],
                capsize=1.5, elinewidth=0.6, **st)
    noise = g[g["within_noise"].astype(bool)]
    ax.plot(noise[x], noise["speedup"], linestyle="none", marker=st["marker"], color=st["color"],
            markerfacecolor="white", zorder=3, label="_noise")


def _finite_intervals(sp: pd.DataFrame) -> pd.DataFrame:
    """One-sample speedups have an infinite interval: draw no bar for them (the caption says so)."""
    hi = sp["speedup_hi"].where(np.isfinite(sp["speedup_hi"]), sp["speedup"])
    return sp.assign(speedup_hi=hi)


@styled
def speedup_vs_seq(summary: pd.DataFrame, baseline: str = "ring", width: str = "two",
                   records: pd.DataFrame | None = None):
    """Speedup over the baseline vs global sequence length, one panel per (grouping keys, rank count).

    Error bars: the speedup's 95% bootstrap interval; hollow markers: within noise (the interval contains 1).
    """
    return speedups_vs_seq(speedup(summary, baseline), baseline, width)


@styled
def speedups_vs_seq(sp: pd.DataFrame, baseline: str, width: str = "two", ylabel: str | None = None,
                    line: dict | None = None, also=None):
    """The speedup-vs-sequence figure of a speedup frame (metrics.speedup) of any kind. ``line``: style
    overrides of every candidate's line; ``also(ax, rows, style)``: more to draw per candidate and panel."""
    sp = _finite_intervals(sp)
    panels = _panels(sp, "world_size")
    fig, axes, ncols = _fig(len(panels), width, sharex=True, sharey=kind_of(sp).share_y,
                            ncols=_mask_rows(panels, width))
    for ax, (title, d) in zip(axes, panels):
        for a in _algos(d):
            if a != baseline:
                g, st = _rows(d, a).sort_values("seq"), {**style(a), **(line or {})}
                _errorbars(ax, g, "seq", st)
                if also is not None:
                    also(ax, g, st)
        ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=(0, (1, 1)))
        ax.set_title(title)
        x_at(ax, sp["seq"])
    _labels(axes, ncols, "sequence length (tokens)", ylabel or f"speedup over {baseline}")
    _legend(fig, axes, width)
    return fig


@styled
def speedup_vs_ranks(summary: pd.DataFrame, baseline: str = "ring", width: str = "two",
                     records: pd.DataFrame | None = None):
    """Speedup over the baseline against ranks (nodes), one line per algorithm, one panel per sequence length and
    masking: the view scaling papers show. Error bars and hollow markers as in :func:`speedup_vs_seq`."""
    sp = _finite_intervals(speedup(summary, baseline))
    sp = sp[sp["scaling"] == "strong"] if "scaling" in sp else sp
    if sp.empty or sp["world_size"].nunique() < 2:
        raise NoData("speedup against ranks needs strong-scaling records at two or more rank counts")
    panels = _panels(sp, "seq")
    fig, axes, ncols = _fig(len(panels), width, sharex=True, sharey=True,
                            ncols=_mask_rows(panels, width))
    fmt = _rank_ticks(sp)
    for ax, (title, d) in zip(axes, panels):
        for a in _algos(d):
            if a != baseline:
                _errorbars(ax, _rows(d, a).sort_values("world_size"), "world_size", style(a))
        ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=(0, (1, 1)))
        ax.set_title(title)
        x_at(ax, sp["world_size"], fmt)
    _labels(axes, ncols, rank_label(sp), f"speedup over {baseline}")
    _legend(fig, axes, width)
    return fig


@styled
def scaling(summary: pd.DataFrame, width: str = "two", *, baseline: str = "ring", records: pd.DataFrame | None = None):
    """Strong scaling: time vs ranks on log-log axes, with the ideal line and a p10-p90 band."""
    st_df = strong_scaling(summary)
    if st_df.empty or st_df["world_size"].nunique() < 2:
        raise NoData("scaling needs strong-scaling records at two or more rank counts")
    panels = _panels(st_df, "seq")
    fig, axes, ncols = _fig(len(panels), width, sharex=True, sharey=False,
                            ncols=_mask_rows(panels, width))
    fmt = _rank_ticks(st_df)
    for ax, (title, d) in zip(axes, panels):
        for a in _algos(d):
            g = _rows(d, a).sort_values("world_size")
            s = style(a)
            ax.plot(g["world_size"], g["median_s"] * 1e3, **s)
            ax.fill_between(g["world_size"], g["p10_s"] * 1e3, g["p90_s"] * 1e3, color=s["color"], alpha=0.15,
                            linewidth=0)
        w = np.array(sorted(d["world_size"].unique()), dtype=float)
        best0 = d[d["world_size"] == w[0]]["median_s"].min() * 1e3
        ax.plot(w, best0 * w[0] / w, color="0.5", linewidth=0.8, linestyle=(0, (4, 2)), label="ideal")
        ax.set_yscale("log")
        ax.set_title(title)
        x_at(ax, st_df["world_size"], fmt)
    for ax in axes:
        log_ticks(ax, "y")
    _labels(axes, ncols, rank_label(st_df), "time per call (ms)")
    _legend(fig, axes, width)
    return fig


def _vs_seq(d0: pd.DataFrame, label: str, width: str, draw):
    """A metric vs sequence length, one panel per (grouping keys, ranks): ``draw(ax, rows, style)`` per candidate."""
    panels = _panels(d0, "world_size")
    fig, axes, ncols = _fig(len(panels), width, sharex=True, sharey=kind_of(d0).share_y,
                            ncols=_mask_rows(panels, width))
    for ax, (title, d) in zip(axes, panels):
        for a in _algos(d):
            draw(ax, _rows(d, a).sort_values("seq"), style(a))
        ax.set_title(title)
        x_at(ax, d0["seq"])
    _labels(axes, ncols, "sequence length (tokens)", label)
    _legend(fig, axes, width)
    return fig


def _line(col: str, scale: float = 1.0, x: str = "seq"):
    return lambda ax, g, st: ax.plot(g[x], g[col] * scale, **st)


@styled
def mfu_vs_seq(summary: pd.DataFrame, width: str = "two", *, baseline: str = "ring",
               records: pd.DataFrame | None = None):
    """MFU vs sequence length (TFLOP/s per rank when the device peak is unknown, as on CPUs), of any kind."""
    mfu, per_rank = kind_of(summary).mfu_label
    if summary["mfu"].notna().any():
        fig = _vs_seq(summary, mfu, width, _line("mfu"))
    else:
        fig = _vs_seq(summary, per_rank, width, _line("tflops_per_rank"))
    for ax in fig.axes:
        ax.set_ylim(bottom=0)
    return fig


@styled
def fastest_map(summary: pd.DataFrame, baseline: str = "ring", width: str = "two", records: pd.DataFrame | None = None):
    """Which algorithm is fastest at each (sequence length, ranks), shaded by its speedup over the baseline."""
    sp = speedup(summary, baseline)
    masks = sorted(set(sp["mask"]), key=mask_order)
    fig, axes, ncols = _fig(len(masks), width, height=PANEL_H[width] * 1.15)
    im = None
    vmax = max(1.5, float(np.nanmax(sp.groupby(["mask", "seq", "world_size"])["speedup"].max())))
    for ax, mask in zip(axes, masks):
        d = sp[sp["mask"] == mask]
        seqs, worlds = sorted(d["seq"].unique()), sorted(d["world_size"].unique())
        grid = np.full((len(worlds), len(seqs)), np.nan)
        for i, w in enumerate(worlds):
            for j, s in enumerate(seqs):
                cell = d[(d["world_size"] == w) & (d["seq"] == s)]
                if cell.empty:
                    continue
                best = cell.loc[cell["median_s"].idxmin()]
                grid[i, j] = best["speedup"]
                mark = "~" if best["within_noise"] else ""
                ax.text(j, i, f"{best[kind_of(sp).candidate]}\n{mark}{best['speedup']:.2f}x", ha="center", va="center",
                        fontsize=6)
        im = ax.imshow(grid, cmap="Greys", vmin=1.0, vmax=vmax, origin="lower", aspect="auto", alpha=0.6)
        ax.set_xticks(range(len(seqs)), [tokens(s) for s in seqs])
        ax.set_yticks(range(len(worlds)), [str(int(w)) for w in worlds])
        ax.grid(False)
        ax.set_title(mask)
    _labels(axes, ncols, "sequence length (tokens)", rank_label(sp))
    fig.colorbar(im, ax=axes, shrink=0.9, label=f"speedup over {baseline}")
    return fig


def _collective_series(ok: pd.DataFrame) -> list[tuple[int, str, int, str]]:
    """(world_size, level, group_size, label) of each line of the collectives figure: one per rank count and
    level, so intra- and inter-node measurements never share a line with each other or with the world's."""
    keys = {(int(w), str(lv), int(g)) for w, lv, g in zip(ok["world_size"], ok["level"], ok["group_size"])}
    out = []
    for w, lv, g in sorted(keys, key=lambda k: (k[0], LEVEL_ORDER.get(k[1], 3), k[1], k[2])):
        label = plural(w, "rank") if lv == "world" else f"{plural(w, 'rank')}, {lv}-node groups of {g}"
        out.append((w, lv, g, label))
    return out


@styled
def collectives_busbw(coll: pd.DataFrame, width: str = "two"):
    """Bus bandwidth vs message size per operation, one line per rank count and level (nccl-tests convention)."""
    ok = coll[(coll["kind"] == "collective") & (coll["status"] == "ok")]
    if ok.empty:
        raise NoData("no collective records (run `ringx-bench collectives`)")
    # frames not from analysis.load (which fills these in) may predate the fields: such records ran over all ranks
    ok = ok.assign(level=ok["level"].fillna("world") if "level" in ok else "world",
                   group_size=ok["group_size"].fillna(ok["world_size"]) if "group_size" in ok else ok["world_size"])
    ops = list(dict.fromkeys(ok["op"]))
    fig, axes, ncols = _fig(len(ops), width, sharex=True, sharey=True)
    series = _collective_series(ok)
    for ax, op in zip(axes, ops):
        d = ok[ok["op"] == op]
        for i, (w, lv, gs, label) in enumerate(series):
            g = d[(d["world_size"] == w) & (d["level"] == lv) & (d["group_size"] == gs)].sort_values("bytes")
            if g.empty:
                continue
            ax.plot(g["bytes"], g["busbw_GBps"], marker=MARKERS[i % len(MARKERS)], linestyle=DASHES[i % len(DASHES)],
                    color=COLORS[i % len(COLORS)], label=label)
        ax.set_yscale("log")
        ax.set_title(op.replace("_", " "))
    sizes = sorted(ok["bytes"].unique())
    for ax in axes:
        x_at(ax, sizes[:: max(1, len(sizes) // 4)] if len(sizes) > 5 else sizes, lambda v: tokens(v) + "B")
        ax.set_xlim(sizes[0] / 1.5, sizes[-1] * 1.5)
        log_ticks(ax, "y")
    _labels(axes, ncols, "message size", "busbw (GB/s)")
    _legend(fig, axes, width, order=[label for *_, label in series])
    return fig


@styled
def kernels_tflops(df: pd.DataFrame, width: str = "two"):
    """Kernel TFLOP/s against block length (`bench kernels`): one panel per direction and masking, one line per
    (kernel, dtype, GQA ratio); markers at the median, bars p10-p90 of the timed iterations."""
    ok = df[(df["kind"] == "kernel") & (df["status"] == "ok")] if "kind" in df else df.iloc[0:0]
    if ok.empty:
        raise NoData("no kernel records (run `ringx-bench kernels`)")
    ok = ok.assign(tf_lo=ok["flops"] / ok["p90_s"] / 1e12, tf_hi=ok["flops"] / ok["p10_s"] / 1e12,
                   series=[f"{k} {dt} {h // kv}:1" if h != kv else f"{k} {dt}"
                           for k, dt, h, kv in zip(ok["kernel"], ok["dtype"], ok["heads"], ok["kv_heads"])])
    ok = ok.assign(mask=mask_names(ok))
    masks = sorted(set(ok["mask"]), key=lambda m: (m != "non-causal", mask_order(m)))  # full attention first
    panels = [(d, m) for d in ("fwd", "bwd") for m in masks if not ok[(ok["direction"] == d) & (ok["mask"] == m)].empty]
    fig, axes, ncols = _fig(len(panels), width, sharex=True, sharey=True)
    series = sorted(dict.fromkeys(ok["series"]))
    for ax, (direction, mask) in zip(axes, panels):
        d = ok[(ok["direction"] == direction) & (ok["mask"] == mask)]
        for i, name in enumerate(series):
            g = d[d["series"] == name].sort_values("seq")
            if g.empty:
                continue
            ax.errorbar(g["seq"], g["tflops"], yerr=[g["tflops"] - g["tf_lo"], g["tf_hi"] - g["tflops"]], capsize=1.5,
                        elinewidth=0.6, marker=MARKERS[i % len(MARKERS)], linestyle=DASHES[i % len(DASHES)],
                        color=COLORS[i % len(COLORS)], label=name)
        ax.set_title(f"{'forward' if direction == 'fwd' else 'backward'}, {mask}")
        x_at(ax, ok["seq"])
    for ax in axes:
        ax.set_ylim(bottom=0)
    _labels(axes, ncols, "block length (tokens)", "TFLOP/s")
    _legend(fig, axes, width)
    return fig


def _bytes_unit(top: float) -> tuple[str, float]:
    return ("GiB", 1 / 2**30) if top >= 2**31 else ("MiB", 1 / 2**20)


def memory_column(summary: pd.DataFrame) -> str:
    """What the memory figure draws: the attention call's own allocations where the records measured them
    (call_peak_bytes), else the process's or device's peak (mem_peak_bytes)."""
    if "call_peak_bytes" in summary and summary["call_peak_bytes"].notna().any():
        return "call_peak_bytes"
    return "mem_peak_bytes"


@styled
def memory_per_rank(summary: pd.DataFrame, width: str = "two", *, baseline: str = "ring",
                    records: pd.DataFrame | None = None):
    """Peak memory per rank against ranks (nodes), one line per algorithm, one panel per sequence length and
    masking: what one attention call allocates where measured, else device memory on GPUs, process RSS on CPU."""
    col = memory_column(summary)
    d0 = summary[summary[col].notna()]
    d0 = d0[d0["scaling"] == "strong"] if "scaling" in d0 else d0
    if d0.empty:
        raise NoData("no memory measurements in this campaign")
    unit, scale = _bytes_unit(d0[col].max())
    panels = _panels(d0, "seq")
    fig, axes, ncols = _fig(len(panels), width, sharex=True, sharey=True,
                            ncols=_mask_rows(panels, width))
    fmt = _rank_ticks(d0)
    for ax, (title, d) in zip(axes, panels):
        for a in _algos(d):
            g = _rows(d, a).sort_values("world_size")
            ax.plot(g["world_size"], g[col] * scale, **style(a))
        ax.set_title(title)
        x_at(ax, d0["world_size"], fmt)
    for ax in axes:  # after every panel is drawn: the shared top is the largest
        ax.set_ylim(bottom=0)
    what = "allocated by one call" if col == "call_peak_bytes" else "peak memory"
    _labels(axes, ncols, rank_label(d0), f"{what} per rank ({unit})")
    _legend(fig, axes, width)
    return fig


# The attention kind's figures in a report (kinds.py): each takes kinds.Draw's keywords, those it ignores too.
FIGURES = {"speedup": speedup_vs_seq, "speedup-ranks": speedup_vs_ranks, "scaling": scaling, "mfu": mfu_vs_seq,
           "fastest": fastest_map, "memory": memory_per_rank}
TITLES = {"speedup": "Speedup over {baseline} against sequence length",
          "speedup-ranks": "Speedup over {baseline} against ranks", "scaling": "Strong scaling",
          "mfu": "Throughput per rank", "fastest": "Fastest algorithm per configuration",
          "memory": "Peak memory per rank", "collectives": "Collectives: bus bandwidth",
          "kernels": "Local kernels"}
CAPTIONS = {
    "speedup": "Speedup over {baseline} (above 1: faster) against the global sequence length, one panel per rank "
               "count and masking; each line is one algorithm. Markers: the ratio of median times; error bars: its "
               "95% bootstrap interval (timing rounds resampled together when the algorithms were timed side by "
               "side; no bar where a single sample gives no interval); " + NOISE + ". Dotted line: 1 ({baseline}).",
    "speedup-ranks": "Speedup over {baseline} (above 1: faster) against the number of ranks (nodes in parentheses "
                     "when the runs span several), one line per algorithm, one panel per sequence length and "
                     "masking (strong scaling: the global sequence is fixed). Markers, error bars and " + NOISE
                     + " as in the speedup figure; dotted line: 1 ({baseline}).",
    "scaling": "Median time per call (the slowest rank's, per iteration) against ranks, log-log, at a fixed global "
               "sequence length per panel; one line per algorithm. Band: p10-p90 of the timed iterations; dashed "
               "grey: ideal scaling from the fastest algorithm at the smallest rank count.",
    "mfu": "Model FLOPs utilisation (flash-attention's FLOP convention) against the device's published peak where "
           "the records name one; otherwise TFLOP/s per rank, as for CPU runs, which have no published peak. Lines: "
           "median over the timed iterations, one per algorithm.",
    "fastest": "The fastest algorithm at each (sequence length, ranks) cell and its speedup over {baseline}; the shade "
               "grows with the speedup; '~': within noise (the speedup's 95% interval contains 1).",
    "memory": "Peak memory per rank (the largest over ranks) against ranks, one line per algorithm, one panel per "
              "sequence length and masking. Where the records measured it (call_peak_bytes_per_rank): the peak "
              "bytes of the tensors one attention call allocates, outputs and gradients included, inputs not "
              "(ringx.memory.measure; docs/rings.md gives each algorithm's formula: O(S/P) for the rings and "
              "ringX1/2/4, O(S) for ringX3's gathered K/V). In older campaigns: the device allocator's peak for "
              "GPU ranks, the peak resident set size of the process for CPU ranks (which includes the Python "
              "runtime).",
    "collectives": "Bus bandwidth (nccl-tests convention: algorithm bandwidth x the operation's factor for the "
                   "size of its group) against message size, one panel per operation, one line per rank count and "
                   "level: all ranks in one group, or (intra-node) each node's ranks in their own group, or "
                   "(inter-node) the ranks of each local rank across the nodes in their own group, every group at "
                   "once; markers: median of the timed iterations.",
    "kernels": "Local kernel throughput against block length (queries = keys), forward and backward (given the "
               "forward's output), by flash-attention's FLOP convention; markers: median, bars: p10-p90.",
}


@styled
def predicted_vs_measured(v: pd.DataFrame, width: str | None = None):
    """Predicted vs measured time per call (model validation), log-log, with the y = x line: one panel per
    rank count, so in-sample one-rank points and out-of-sample multi-rank ones are told apart."""
    ranks = sorted(int(p) for p in v["world_size"].unique()) if "world_size" in v else [None]
    width = width or ("one" if len(ranks) == 1 else "two")
    fig, axes, _ = _fig(len(ranks), width, height=2.3, sharex=True, sharey=True)
    lo = min(v["measured_s"].min(), v["predicted_s"].min()) * 1e3 * 0.8
    hi = max(v["measured_s"].max(), v["predicted_s"].max()) * 1e3 * 1.25
    for ax, p in zip(axes, ranks):
        d = v if p is None else v[v["world_size"] == p]
        for a in _algos(d):
            g = d[d["algorithm"] == a]
            s = style(a)
            ax.plot(g["measured_s"] * 1e3, g["predicted_s"] * 1e3, linestyle="none", marker=s["marker"],
                    color=s["color"], label=a)
        ax.plot([lo, hi], [lo, hi], color="0.5", linewidth=0.8, linestyle=(0, (4, 2)), label="y = x")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log(ax, "both")
        ax.set_xlabel("measured (ms)")
        if p is not None:
            ax.set_title(f"{p} rank{'s' if p > 1 else ''}")
    axes[0].set_ylabel("predicted (ms)")
    _legend(fig, axes, width)
    return fig


@styled
def predicted_speedup_curve(curve: pd.DataFrame, measured: pd.DataFrame | None = None, title: str = "",
                            width: str = "one"):
    """Predicted speedup over the baseline vs ranks (log2 x); measured points where they exist."""
    fig, axes, _ = _fig(1, width, height=2.3)
    ax = axes[0]
    for a in _algos(curve):
        g = curve[curve["algorithm"] == a].sort_values("ranks")
        ax.plot(g["ranks"], g["speedup"], **style(a))
        if measured is not None and not measured.empty:
            m = measured[measured["algorithm"] == a]
            ax.plot(m["ranks"], m["speedup"], linestyle="none", marker=style(a)["marker"], markerfacecolor="none",
                    color=style(a)["color"], markersize=6)
    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=(0, (1, 1)))
    x_at(ax, curve["ranks"], lambda v: f"{int(v)}")
    ax.set_xlabel("GPUs (one rank each)")
    has_measured = measured is not None and not measured.empty
    ax.set_ylabel("speedup over ring\n(lines predicted, open markers measured)" if has_measured
                  else "predicted speedup over ring")
    if title:
        ax.set_title(title)
    _legend(fig, axes, width)
    return fig
