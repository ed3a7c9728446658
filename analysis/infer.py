"""Serving's own views (``bench infer`` records, kind "infer"; summarized and compared by metrics.py as
kinds.KINDS["infer"] says): time to first token against prompt length, time per output token against ranks, and
a table of both with every candidate's speedup over ring and over tensor parallelism (``tp``).

TTFT is the prefill (the prompt in, the first generated ids out), TPOT one decode step (one token per sequence
in, the next out); each sample is the slowest rank's, pooled over repeats. Speedups are of one phase
(metrics.speedup's ``phase``) with ringx_suite/stats.py's bootstrap interval, paired when the candidates were
timed side by side, as ``bench summary`` computes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ringx_suite.stats import METHOD

from . import figures
from .figures import NoData, plural, tokens
from .metrics import MissingBaseline, speedup
from .tables import EMPTY, Table, _ms

# Configuration columns beside the figure's own axes: a panel (and a table column) where they vary.
VARY = (("batch", lambda v: f"batch {int(v)}", "batch"), ("new_tokens", lambda v: f"{int(v)} new tokens", "new"),
        ("dtype", str, "dtype"))
BASELINES = ("ring", "tp")


def _varying(d: pd.DataFrame) -> list[str]:
    return [c for c, _, _ in VARY if c in d and d[c].nunique(dropna=False) > 1]


def _panels(d0: pd.DataFrame, across: str) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per model, per varying batch / new tokens / dtype, and per value of ``across``:
    'tiny, 2 ranks' or 'tiny, 128-token prompt'."""
    vary = _varying(d0)
    by = ["model", *vary, across]
    out = []
    for key, g in sorted(d0.groupby(by, sort=False), key=lambda kv: tuple(str(v) if isinstance(v, str) else v
                                                                             for v in kv[0])):
        named = dict(zip(by, key))
        fmt = {c: f for c, f, _ in VARY}
        parts = [str(named["model"]), *(fmt[c](named[c]) for c in vary), figures.ACROSS[across](named[across])]
        out.append((", ".join(parts), g))
    return out


DODGE = 0.018  # neighbouring candidates' markers this fraction of the x range apart: bars side by side, not on top


def _times(ax, g: pd.DataFrame, x: str, phase: str, st: dict, shift: float) -> None:
    """Median ms with a p10-p90 bar, ``shift`` (log2 units) beside the measured x."""
    med, lo, hi = (g[f"{phase}{s}"] * 1e3 for s in ("_s", "_p10_s", "_p90_s"))
    ax.errorbar(g[x] * 2.0**shift, med, yerr=[(med - lo).clip(lower=0), (hi - med).clip(lower=0)], capsize=1.5,
                elinewidth=0.6, **st)


def _figure(summary: pd.DataFrame, phase: str, x: str, across: str, width: str, xlabel: str, ylabel: str,
            need: str, xfmt=tokens):
    d0 = summary[summary[f"{phase}_s"].notna()]
    if d0.empty or d0[x].nunique() < 2:
        raise NoData(need)
    panels = _panels(d0, across)
    algos = figures._algos(d0)  # each candidate keeps its place beside the measured x in every panel
    span = max(np.log2(d0[x].max() / d0[x].min()), 1.0)  # log2 units
    shift = {a: (i - (len(algos) - 1) / 2) * DODGE * span for i, a in enumerate(algos)}
    fig, axes, ncols = figures._fig(len(panels), width, sharex=True, sharey=False)
    for ax, (title, d) in zip(axes, panels):
        for a in figures._algos(d):
            _times(ax, figures._rows(d, a).sort_values(x), x, phase, figures.style(a), shift[a])
        ax.set_yscale("log")
        ax.set_title(title)
        figures.x_at(ax, d0[x], xfmt)
    for ax in axes:
        figures.log_ticks(ax, "y")
    figures._labels(axes, ncols, xlabel, ylabel)
    figures._legend(fig, axes, width)
    return fig


@figures.styled
def ttft_vs_prompt(summary: pd.DataFrame, width: str = "two", *, baseline: str = "ring",
                   records: pd.DataFrame | None = None):
    """Time to first token against prompt length, log-log, one line per candidate (algorithms and tp), one panel
    per rank count (and model); markers: median, bars: p10-p90, the candidates set slightly apart along x."""
    return _figure(summary, "ttft", "prompt_len", "world_size", width, "prompt length (tokens per sequence)",
                   "time to first token (ms)", "TTFT against prompt length needs two or more prompt lengths")


@figures.styled
def tpot_vs_ranks(summary: pd.DataFrame, width: str = "two", *, baseline: str = "ring",
                  records: pd.DataFrame | None = None):
    """Time per output token against ranks, one line per candidate, one panel per prompt length (and model);
    markers: median decode step, bars: p10-p90."""
    d = summary[summary["tpot_s"].notna()]
    return _figure(summary, "tpot", "world_size", "prompt_len", width, figures.rank_label(d) if len(d) else "ranks",
                   "time per output token (ms)", "TPOT against ranks needs decode steps at two or more rank counts",
                   figures._rank_ticks(d) if len(d) else tokens)


# The infer kind's figures and tables (kinds.py): each takes kinds.Draw's or kinds.MakeTable's keywords.
FIGURES = {"infer-ttft": ttft_vs_prompt, "infer-tpot": tpot_vs_ranks}
TITLES = {"infer-ttft": "Serving: time to first token against prompt length",
          "infer-tpot": "Serving: time per output token against ranks"}
CAPTIONS = {
    "infer-ttft": "Time to first token (TTFT: the prefill, prompt in and first generated token out) against the "
                  "prompt length, log-log, one panel per rank count, one line per candidate (ringx algorithms and "
                  "tp, Megatron-style tensor parallelism over the same ranks). Markers: median of the timed "
                  "prefills (each the slowest rank's, pooled over repeats); bars: p10-p90. The candidates' markers "
                  "are set slightly apart along x so that their bars do not hide each other.",
    "infer-tpot": "Time per output token (TPOT: one greedy decode step, one token per sequence) against the number of "
                  "ranks, one panel per prompt length, one line per candidate. Markers: median of every timed decode "
                  "step (each the slowest rank's, pooled over repeats); bars: p10-p90; markers set slightly apart "
                  "along x.",
}


def _speedups(summary: pd.DataFrame, phase: str, baselines: tuple[str, ...]) -> dict[str, pd.Series]:
    """baseline -> the speedup rows of ``phase``, indexed by the summary's row (absent: baseline not measured)."""
    out = {}
    for b in baselines:
        try:
            sp = speedup(summary.assign(_row=range(len(summary))), b, phase)
        except MissingBaseline:
            continue
        out[b] = sp.set_index("_row")
    return out


def _cell(r, baseline: str, algorithm: str) -> tuple[str, str]:
    """(text, LaTeX) of one speedup cell: '~1.03x [0.97-1.10]'; '' for the baseline itself; EMPTY unmeasured."""
    if algorithm == baseline:
        return "", ""
    if r is None or pd.isna(r["speedup"]):
        return EMPTY, "--"
    noise = "~" if r["within_noise"] else ""
    finite = pd.notna(r["speedup_hi"]) and r["speedup_hi"] < 1e9
    hi = f"{r['speedup_hi']:.2f}" if finite else "inf"
    text = f"{noise}{r['speedup']:.2f}x [{r['speedup_lo']:.2f}-{hi}]"
    sim, top = (r"\sim " if noise else ""), (hi if finite else r"\infty")
    latex = f"${sim}{r['speedup']:.2f}" + r"\times" + f"_{{{r['speedup_lo']:.2f}}}^{{{top}}}$"
    return text, latex


def _bytes(v: float) -> str:
    return f"{v / 2**20:.2f} MiB" if v >= 2**20 else f"{v / 2**10:.1f} KiB"


def table(summary: pd.DataFrame, baseline: str = "ring", records: pd.DataFrame | None = None) -> Table:
    """One row per (configuration, candidate): TTFT and TPOT (median ms, [p10-p90]) and each one's speedup over
    ``baseline`` and over tp with its interval; the largest rank's KV cache. Constant configuration columns are
    named in the caption instead."""
    s = summary.reset_index(drop=True)
    baselines = tuple(dict.fromkeys((baseline, *BASELINES[1:])))
    sps = {ph: _speedups(s, ph, baselines) for ph in ("TTFT", "TPOT")}
    shown = [b for b in baselines if any(b in sps[ph] for ph in sps)]
    cols = [("model", "model"), *((c, name) for c, _, name in VARY)]
    keep = [(c, n) for c, n in cols if s[c].nunique(dropna=False) > 1]
    fixed = [f"{plural(int(s[c].iloc[0]), 'sequence')}" if c == "batch" else
             f"{int(s[c].iloc[0])} new tokens" if c == "new_tokens" else str(s[c].iloc[0])
             for c, n in cols if (c, n) not in keep]
    keys = [c for c, _ in keep[:1]] + ["world_size", "prompt_len"] + [c for c, _ in keep[1:]]
    names = [n for _, n in keep[:1]] + ["ranks", "prompt"] + [n for _, n in keep[1:]]
    order = s.assign(_order=[figures.order_key(a) for a in s["algorithm"]]).sort_values([*keys, "_order"])
    rows, latex, empty = [], {}, False
    for i, (idx, r) in enumerate(order.iterrows()):
        row = [int(r[c]) if isinstance(r[c], int | np.integer) else r[c] for c in keys] + [r["algorithm"]]
        for ph in ("TTFT", "TPOT"):
            p = ph.lower()
            if pd.isna(r[f"{p}_s"]):
                latex[i, len(row)] = "--"
                row.append(EMPTY)
                empty = True
            else:
                ms = [_ms(r[f"{p}{x}"] * 1e3) for x in ("_s", "_p10_s", "_p90_s")]
                latex[i, len(row)] = f"${ms[0]}_{{{ms[1]}}}^{{{ms[2]}}}$"
                row.append(f"{ms[0]} [{ms[1]}-{ms[2]}]")
            for b in shown:
                got = sps[ph].get(b)
                text, tex = _cell(got.loc[idx] if got is not None and idx in got.index else None, b, r["algorithm"])
                empty |= text == EMPTY
                latex[i, len(row)] = tex
                row.append(text)
        row.append(_bytes(r["kv_cache_bytes"]))
        rows.append(row)
    head = [*names, "algorithm", "TTFT ms", *(f"TTFT x {b}" for b in shown), "TPOT ms", *(f"TPOT x {b}" for b in shown),
            "KV cache"]

    def caption(spread: str, interval: str) -> str:
        text = ("Serving (bench infer): TTFT, the prefill (prompt in, first generated token out), and TPOT, one "
                "greedy decode step (one token per sequence), in ms: the median of the timed phases (each the "
                f"slowest rank's, pooled over repeats) with its p10 and p90 {spread}. Speedups over "
                f"{' and over '.join(shown) or baseline} (their median over the candidate's; above 1: faster) with "
                f"the {METHOD} {interval}; ~: the interval contains 1 (within noise). KV cache: the largest rank's "
                "cached K and V at the end of the generation, every layer.")
        if fixed:
            text += f" Every row: {', '.join(fixed)}."
        if empty:
            text += f" {EMPTY}: not measured (no decode step with one new token, or the baseline was not run)."
        return text

    return Table(head, rows, caption("as [p10-p90]", "as [low-high]"), label="tab:serving", latex_cells=latex,
                 numeric={"ranks", "prompt", "TTFT ms", "TPOT ms", "KV cache", *(h for h in head if " x " in h)},
                 latex_caption=caption("as subscript and superscript", "as subscript (low) and superscript (high)"),
                 wide=True)


TABLES = {"serving table": ("Serving: time to first token and per output token", table, False)}
