"""Publication figures from a campaign: one paper style, readable in grayscale.

Each function takes frames from :mod:`analysis.metrics` (or the collective
records), returns the matplotlib Figure, and saves it when ``out`` is given.
Algorithms keep one marker, line style and colour across every figure.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # headless machines fall back to Agg; Jupyter keeps its inline backend
import matplotlib.ticker
import numpy as np
import pandas as pd

from .metrics import speedup, strong_scaling

WIDTH_IN = {"one": 3.5, "two": 7.16}  # one and two columns of a two-column paper
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4, "axes.grid": True,
         "grid.linewidth": 0.4, "grid.alpha": 0.5, "savefig.bbox": "tight", "savefig.dpi": 200,
         "pdf.fonttype": 42, "ps.fonttype": 42}
MARKERS = "osD^v<>PX*hp"
DASHES = ["-", "--", "-.", ":"]
# Okabe-Ito: distinguishable with colour-vision deficiencies; markers and dashes carry it in grayscale.
COLORS = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#999999", "#882255",
          "#B8A000"]
ORDER = ["ring", "zigzag", "stripe", "ringx1", "ringx2", "ringx3", "ringx4", "ringx1o", "ringx2o", "ringx4o"]


class NoData(ValueError):
    """The campaign has nothing this figure can show."""


def style(algorithm: str) -> dict:
    i = ORDER.index(algorithm) if algorithm in ORDER else len(ORDER) + sum(map(ord, algorithm)) % 7
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": DASHES[i % len(DASHES)],
            "color": COLORS[i % len(COLORS)], "label": algorithm}


def order_key(algorithm: str) -> tuple:
    """Sort key putting algorithms in the paper's order (ORDER), unknown ones after it by name."""
    return (ORDER.index(algorithm) if algorithm in ORDER else len(ORDER), algorithm)


def _algos(df: pd.DataFrame) -> list[str]:
    return sorted(dict.fromkeys(df["algorithm"]), key=order_key)


def styled(fn):
    """Draw the whole figure under the paper style (fonts, lines, grid)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)
    return wrapper


def _fig(ncols: int, nrows: int = 1, width: str = "two", height: float = 2.2):
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_IN[width], height * nrows + 0.45), squeeze=False)
    return fig, axes


def _legend(fig, axes) -> None:
    """One legend for all panels, above them."""
    seen: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    labels = sorted(seen, key=lambda a: (a == "ideal", *order_key(a)))
    if seen:
        fig.legend([seen[k] for k in labels], labels, loc="upper center", ncol=min(len(seen), 6), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))
    rows = -(-len(seen) // 6) if seen else 0
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.07 * rows * 2.2 / fig.get_figheight()))


def save(fig, out: str | Path | None, name: str, formats=("pdf", "png")) -> list[Path]:
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


def _plain_log(ax, axis: str = "y") -> None:
    """Log scale with plain numbers (30, 100, 300) rather than 3x10^1 labels."""
    fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for a in ((ax.xaxis,) if axis == "x" else (ax.yaxis,) if axis == "y" else (ax.xaxis, ax.yaxis)):
        a.set_major_formatter(fmt)
        a.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _mask(c) -> str:
    return "causal" if c else "non-causal"


def _panels(d0: pd.DataFrame, key: str, width: str):
    """One panel per (masking, ``key``) of ``d0``: the figure, its axes and (ax, causal, value, rows) per panel."""
    keys = sorted({(bool(c), int(v)) for c, v in zip(d0["causal"], d0[key])})
    fig, axes = _fig(len(keys), width=width)
    return fig, axes, [(ax, c, v, d0[(d0["causal"] == c) & (d0[key] == v)]) for ax, (c, v) in zip(axes[0], keys)]


@styled
def speedup_vs_seq(summary: pd.DataFrame, baseline: str = "ring", width: str = "two"):
    """Speedup over the baseline vs global sequence length, one panel per (masking, rank count).

    Error bars: the speedup's 95% bootstrap interval; hollow markers: within noise (the interval contains 1).
    """
    def bars(ax, g, st):
        ax.errorbar(g["seq"], g["speedup"], yerr=[g["speedup"] - g["speedup_lo"], g["speedup_hi"] - g["speedup"]],
                    capsize=2, elinewidth=0.6, **st)
        noise = g[g["within_noise"].astype(bool)]
        ax.plot(noise["seq"], noise["speedup"], linestyle="none", marker=st["marker"], color=st["color"],
                markerfacecolor="white", zorder=3)

    return _vs_seq(speedup(summary, baseline), f"speedup over {baseline}", width, bars, skip=baseline, ref=1.0)


@styled
def scaling(summary: pd.DataFrame, width: str = "two"):
    """Strong scaling: time vs ranks on log-log axes, with the ideal line and a p10-p90 band."""
    st_df = strong_scaling(summary)
    if st_df.empty or st_df["world_size"].nunique() < 2:
        raise NoData("scaling needs strong-scaling records at two or more rank counts")
    fig, axes, panels = _panels(st_df, "seq", width)
    for ax, causal, seq, d in panels:
        for a in _algos(d):
            g = d[d["algorithm"] == a].sort_values("world_size")
            s = style(a)
            ax.plot(g["world_size"], g["median_s"] * 1e3, **s)
            ax.fill_between(g["world_size"], g["p10_s"] * 1e3, g["p90_s"] * 1e3, color=s["color"], alpha=0.15,
                            linewidth=0)
        w = np.array(sorted(d["world_size"].unique()), dtype=float)
        best0 = d[d["world_size"] == w[0]]["median_s"].min() * 1e3
        ax.plot(w, best0 * w[0] / w, color="0.5", linewidth=0.8, linestyle=(0, (4, 2)), label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log(ax)
        ax.set_xticks(w, [str(int(x)) for x in w])
        ax.set_title(f"seq {seq}, {_mask(causal)}")
        ax.set_xlabel("ranks (GPUs)")
    axes[0][0].set_ylabel("time per call (ms)")
    _legend(fig, axes)
    return fig


def _vs_seq(d0: pd.DataFrame, label: str, width: str, draw, skip: str | None = None, ref: float | None = None):
    """A metric vs sequence length, one panel per (masking, ranks): ``draw(ax, rows, style)`` per algorithm
    (but ``skip``), with a dotted line at ``ref``."""
    fig, axes, panels = _panels(d0, "world_size", width)
    for ax, causal, world, d in panels:
        for a in _algos(d):
            if a != skip:
                draw(ax, d[d["algorithm"] == a].sort_values("seq"), style(a))
        if ref is not None:
            ax.axhline(ref, color="0.4", linewidth=0.8, linestyle=(0, (1, 1)))
        ax.set_xscale("log", base=2)
        ax.set_title(f"{world} rank{'s' if world != 1 else ''}, {_mask(causal)}")
        ax.set_xlabel("sequence length (tokens)")
    axes[0][0].set_ylabel(label)
    _legend(fig, axes)
    return fig


def _line(col: str, scale: float = 1.0):
    return lambda ax, g, st: ax.plot(g["seq"], g[col] * scale, **st)


@styled
def mfu_vs_seq(summary: pd.DataFrame, width: str = "two"):
    """MFU vs sequence length (TFLOP/s per rank when the device peak is unknown)."""
    if summary["mfu"].notna().any():
        return _vs_seq(summary, "MFU", width, _line("mfu"))
    return _vs_seq(summary, "TFLOP/s per rank", width, _line("tflops_per_rank"))


@styled
def fastest_map(summary: pd.DataFrame, baseline: str = "ring", width: str = "two"):
    """Which algorithm is fastest at each (sequence length, ranks), shaded by its speedup over the baseline."""
    sp = speedup(summary, baseline)
    masks = sorted({bool(c) for c in sp["causal"]})
    fig, axes = _fig(len(masks), width=width, height=2.4)
    for ax, causal in zip(axes[0], masks):
        d = sp[sp["causal"] == causal]
        seqs, worlds = sorted(d["seq"].unique()), sorted(d["world_size"].unique())
        grid = np.full((len(worlds), len(seqs)), np.nan)
        for i, w in enumerate(worlds):
            for j, s in enumerate(seqs):
                cell = d[(d["world_size"] == w) & (d["seq"] == s)]
                if cell.empty:
                    continue
                best = cell.loc[cell["median_s"].idxmin()]
                grid[i, j] = best["speedup"]
                ax.text(j, i, f"{best['algorithm']}\n{best['speedup']:.2f}x", ha="center", va="center", fontsize=6)
        im = ax.imshow(grid, cmap="Greys", vmin=1.0, vmax=max(1.5, np.nanmax(grid)), origin="lower", aspect="auto",
                       alpha=0.6)
        ax.set_xticks(range(len(seqs)), [str(s) for s in seqs])
        ax.set_yticks(range(len(worlds)), [str(w) for w in worlds])
        ax.grid(False)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_title(f"{_mask(causal)}: fastest, x {baseline}")
    axes[0][0].set_ylabel("ranks (GPUs)")
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label=f"speedup over {baseline}")
    return fig


@styled
def collectives_busbw(coll: pd.DataFrame, width: str = "two"):
    """Bus bandwidth vs message size per operation, one line per rank count (nccl-tests convention)."""
    ok = coll[(coll["kind"] == "collective") & (coll["status"] == "ok")]
    if ok.empty:
        raise NoData("no collective records (run `python -m bench collectives`)")
    ops = list(dict.fromkeys(ok["op"]))
    ncols = min(3, len(ops))
    nrows = -(-len(ops) // ncols)
    fig, axes = _fig(ncols, nrows, width=width, height=1.9)
    for k, op in enumerate(ops):
        ax = axes[k // ncols][k % ncols]
        d = ok[ok["op"] == op]
        for i, (w, g) in enumerate(sorted(d.groupby("world_size"), key=lambda x: x[0])):
            g = g.sort_values("bytes")
            ax.plot(g["bytes"], g["busbw_GBps"], marker=MARKERS[i % len(MARKERS)], linestyle=DASHES[i % len(DASHES)],
                    color=COLORS[i % len(COLORS)], label=f"{w} ranks")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(op)
        ax.set_xlabel("message size (bytes)")
        if k % ncols == 0:
            ax.set_ylabel("busbw (GB/s)")
    for k in range(len(ops), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    _legend(fig, axes)
    return fig


@styled
def kernels_tflops(df: pd.DataFrame, width: str = "two"):
    """Kernel TFLOP/s against block length (`bench kernels`): one panel per direction and masking, one line per
    (kernel, dtype, GQA ratio); markers at the median, bars p10-p90 of the timed iterations."""
    ok = df[(df["kind"] == "kernel") & (df["status"] == "ok")] if "kind" in df else df.iloc[0:0]
    if ok.empty:
        raise NoData("no kernel records (run `python -m bench kernels`)")
    ok = ok.assign(tf_lo=ok["flops"] / ok["p90_s"] / 1e12, tf_hi=ok["flops"] / ok["p10_s"] / 1e12,
                   series=[f"{k} {dt} {h // kv}:1" if h != kv else f"{k} {dt}"
                           for k, dt, h, kv in zip(ok["kernel"], ok["dtype"], ok["heads"], ok["kv_heads"])])
    panels = [(d, c) for d in ("fwd", "bwd") for c in (False, True)
              if not ok[(ok["direction"] == d) & (ok["causal"] == c)].empty]
    fig, axes = _fig(len(panels), width=width)
    series = sorted(dict.fromkeys(ok["series"]))
    for ax, (direction, causal) in zip(axes[0], panels):
        d = ok[(ok["direction"] == direction) & (ok["causal"] == causal)]
        for i, name in enumerate(series):
            g = d[d["series"] == name].sort_values("seq")
            if g.empty:
                continue
            ax.errorbar(g["seq"], g["tflops"], yerr=[g["tflops"] - g["tf_lo"], g["tf_hi"] - g["tflops"]], capsize=2,
                        elinewidth=0.6, marker=MARKERS[i % len(MARKERS)], linestyle=DASHES[i % len(DASHES)],
                        color=COLORS[i % len(COLORS)], label=name)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(f"{'forward' if direction == 'fwd' else 'backward'}, {_mask(causal)}")
        ax.set_xlabel("block length (tokens)")
        ax.set_ylim(bottom=0)
    axes[0][0].set_ylabel("TFLOP/s")
    _legend(fig, axes)
    return fig


@styled
def memory_per_rank(summary: pd.DataFrame, width: str = "two"):
    """Peak memory per rank vs sequence length (device memory on GPUs, process RSS on CPU)."""
    d0 = summary[summary["mem_peak_bytes"].notna()]
    if d0.empty:
        raise NoData("no memory measurements in this campaign")
    return _vs_seq(d0, "peak memory per rank (MiB)", width, _line("mem_peak_bytes", 1 / 2**20))


FIGURES = {"speedup": speedup_vs_seq, "scaling": scaling, "mfu": mfu_vs_seq, "fastest": fastest_map,
           "memory": memory_per_rank}
TITLES = {"speedup": "Speedup over the baseline", "scaling": "Strong scaling", "mfu": "Throughput per rank",
          "fastest": "Fastest algorithm", "memory": "Peak memory per rank", "collectives": "Collectives",
          "kernels": "Local kernels"}
CAPTIONS = {
    "speedup": "Speedup over {baseline} (above 1: faster) against the global sequence length, one panel per rank "
               "count and masking. Markers: the ratio of median times; error bars: its 95% bootstrap interval "
               "(paired rounds when timed side by side); hollow markers: within noise (the interval contains 1).",
    "scaling": "Median time per call against ranks (log-log) at a fixed global sequence length; band: p10-p90 of "
               "the timed iterations (each the slowest rank's); dotted: ideal scaling from the smallest rank count.",
    "mfu": "Model FLOPs utilisation against the device's published peak where the records name one; otherwise "
           "TFLOP/s per rank (CPU runs have no published peak).",
    "fastest": "The fastest algorithm at each (sequence length, ranks); its speedup over {baseline} in each cell.",
    "memory": "Peak memory per rank (largest rank): device allocator peak on GPUs, peak resident set size on CPUs.",
    "collectives": "Bus bandwidth (nccl-tests convention) against message size, one panel per operation.",
    "kernels": "Local kernel throughput against block length (queries = keys), forward and backward (given the "
               "forward's output), by flash-attention's FLOP convention; markers: median, bars: p10-p90.",
}


@styled
def predicted_vs_measured(v: pd.DataFrame, width: str = "one"):
    """Predicted vs measured time per call (model validation), log-log, with the y = x line."""
    fig, axes = _fig(1, width=width, height=2.6)
    ax = axes[0][0]
    for a in _algos(v):
        g = v[v["algorithm"] == a]
        s = style(a)
        ax.plot(g["measured_s"] * 1e3, g["predicted_s"] * 1e3, linestyle="none", marker=s["marker"],
                color=s["color"], label=a)
    lo = min(v["measured_s"].min(), v["predicted_s"].min()) * 1e3 * 0.8
    hi = max(v["measured_s"].max(), v["predicted_s"].max()) * 1e3 * 1.25
    ax.plot([lo, hi], [lo, hi], color="0.5", linewidth=0.8, linestyle=(0, (4, 2)), label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log(ax, "both")
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    _legend(fig, axes)
    return fig


@styled
def predicted_speedup_curve(curve: pd.DataFrame, measured: pd.DataFrame | None = None, title: str = "",
                            width: str = "one"):
    """Predicted speedup over the baseline vs ranks (log2 x); measured points where they exist."""
    fig, axes = _fig(1, width=width, height=2.6)
    ax = axes[0][0]
    for a in _algos(curve):
        g = curve[curve["algorithm"] == a].sort_values("ranks")
        ax.plot(g["ranks"], g["speedup"], **style(a))
        if measured is not None and not measured.empty:
            m = measured[measured["algorithm"] == a]
            ax.plot(m["ranks"], m["speedup"], linestyle="none", marker=style(a)["marker"], markerfacecolor="none",
                    color=style(a)["color"], markersize=6)
    ax.axhline(1.0, color="0.4", linewidth=0.8, linestyle=(0, (1, 1)))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(curve["ranks"].unique()))
    _plain_log(ax, "x")
    ax.set_xlabel("ranks (GPUs)")
    has_measured = measured is not None and not measured.empty
    ax.set_ylabel("speedup over ring\n(lines predicted, open markers measured)" if has_measured
                  else "predicted speedup over ring")
    if title:
        ax.set_title(title)
    _legend(fig, axes)
    return fig
