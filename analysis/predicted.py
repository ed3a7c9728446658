"""What the cost model predicts fastest, over sequence lengths and rank counts, on a machine description.

``fastest(machine, ...)`` predicts every algorithm at every (sequence, ranks) cell, usp and
usp-ringx at their best Ulysses degree, and ``map_figure`` draws one panel per machine: each
cell names the predicted fastest algorithm (with its Ulysses x ring degrees) and its speedup over
ring. These are predictions from published machine figures, not measurements.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from ringx.algorithms import ALGORITHMS
from ringx_costmodel.machine import Machine
from ringx_costmodel.predict import best_degree

from .figures import COLORS, WIDTH_IN, _legend, order_key, style, styled


def fastest(machines: list[tuple[Machine, int]], seqs: list[int], ranks: list[int], algorithms: list[str], *,
            causal: bool = True, mode: str = "fwd+bwd", heads: int = 32, kv_heads: int = 8, head_dim: int = 128,
            progress=None, mask: str | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per (machine, seq, ranks, algorithm) that can run there: predicted seconds, best degree,
    speedup over ring. ``machines``: (description, GPUs per node). The machines are the inner loop so that
    each schedule is traced once for all of them (tracing, not simulating, is the cost at thousands of ranks).
    ``mask``: a --mask spec (ringx_suite/masks.py; drawn once per sequence length with ``seed``) in place of
    ``causal``; masked schedules skip blocks and ring steps as the real plans do."""
    from ringx_suite import masks

    rows = []
    for seq in seqs:
        m = None if mask is None else masks.parse(mask, seq, seed)
        for p in ranks:
            for machine, gpus_per_node in machines:
                nodes = max(1, p // gpus_per_node)
                cell = {}
                for a in algorithms:
                    try:
                        cell[a] = best_degree(a, causal, mode, p, machine, nodes=nodes, seq=seq, heads=heads,
                                              kv_heads=kv_heads, head_dim=head_dim, exact_ranks=16, mask=m)
                    except ValueError as e:  # cannot run there (heads, divisibility): no row
                        if progress and a not in ALGORITHMS:  # a plugin that cannot be traced: said, once a cell
                            progress(f"{a} not predicted at seq {seq}, {p} ranks: {e}")
                        continue
                ring = cell["ring"][1].total_s if "ring" in cell else np.nan
                best = min(cell, key=lambda n: cell[n][1].total_s)
                said = mask or ("causal" if causal else "full")
                rows += [{"machine": machine.name, "mask": said, "seq": seq, "ranks": p, "nodes": nodes, "algorithm": a,
                          "ulysses_degree": u, "predicted_s": pr.total_s, "speedup": ring / pr.total_s,
                          "fastest": a == best} for a, (u, pr) in cell.items()]
                if progress:
                    progress(f"{machine.name}: seq {seq}, {p} ranks: fastest {best}")
    return pd.DataFrame(rows)


def beats(table: pd.DataFrame, algorithm: str, others: list[str]) -> pd.DataFrame:
    """Per (machine, seq, ranks): whether ``algorithm`` is predicted faster than each of ``others`` (columns
    ``beats_<name>``, and ``vs_<name>``: its time over ``algorithm``'s; cells where one cannot run are left out)."""
    t = table.pivot_table(index=["machine", "seq", "ranks"], columns="algorithm", values="predicted_s")
    if algorithm not in t or any(o not in t for o in others):
        return pd.DataFrame()
    t = t.dropna(subset=[algorithm, *others])
    out = pd.DataFrame({f"beats_{o}": t[algorithm] < t[o] for o in others}, index=t.index)
    out = out.assign(**{f"vs_{o}": t[o] / t[algorithm] for o in others}).reset_index()
    return out.assign(algorithm=algorithm)[["algorithm", *out.columns]]


def _label(r) -> str:
    u = r["ulysses_degree"]
    deg = f"\n{int(u)}x{int(r['ranks']) // int(u)}" if pd.notna(u) else ""
    return f"{r['algorithm']}{deg}\n{r['speedup']:.2f}x"


@styled
def map_figure(table: pd.DataFrame, width: str = "two"):
    """One panel per machine: rows sequence lengths, columns rank counts; each cell the fastest algorithm."""
    machines = list(dict.fromkeys(table["machine"]))
    best = table[table["fastest"]]
    algos = sorted(best["algorithm"].unique(), key=order_key)
    colour = {a: COLORS[(i + 1) % len(COLORS)] for i, a in enumerate(algos)}
    fig, axes = plt.subplots(1, len(machines), figsize=(WIDTH_IN[width], 2.4), squeeze=False)
    for ax, m in zip(axes[0], machines):
        d = best[best["machine"] == m]
        seqs, ranks = sorted(d["seq"].unique()), sorted(d["ranks"].unique())
        for _, r in d.iterrows():
            x, y = ranks.index(r["ranks"]), seqs.index(r["seq"])
            ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, color=colour[r["algorithm"]], alpha=0.35))
            ax.text(x, y, _label(r), ha="center", va="center", fontsize=min(5.5, 33 / len(ranks)))  # fits the cell
        ax.set_xlim(-0.5, len(ranks) - 0.5)
        ax.set_ylim(-0.5, len(seqs) - 0.5)
        ax.set_xticks(range(len(ranks)), [str(p) for p in ranks])
        ax.set_yticks(range(len(seqs)), [f"{s >> 20}M" if s % (1 << 20) == 0 else f"{s >> 10}K" for s in seqs])
        ax.set_xlabel("ranks (GPUs)")
        masks = set(table.get("mask", []))
        ax.set_title(m if masks <= {"causal"} else f"{m}, {', '.join(sorted(masks))}")
        ax.grid(False)
    axes[0][0].set_ylabel("sequence length")
    fig.tight_layout()
    return fig


CAPTION = ("Predicted fastest algorithm per (sequence length, ranks) from each machine's published description "
           "(jobs/profiles [model]); under the name, the Ulysses x ring degrees where the algorithm has them, and "
           "the predicted speedup over ring. Causal, forward+backward, 32 query heads, 8 K/V heads, head_dim 128, "
           "bf16. Predictions, not measurements.")


@styled
def curves_figure(table: pd.DataFrame, width: str = "two"):
    """Predicted speedup over ring against ranks, every algorithm (usp/usp-ringx at their best degrees): one
    row of panels per machine, one column per sequence length."""
    machines, seqs = list(dict.fromkeys(table["machine"])), sorted(table["seq"].unique())
    algos = sorted(table["algorithm"].unique(), key=order_key)
    fig, axes = plt.subplots(len(machines), len(seqs), figsize=(WIDTH_IN[width], 1.5 * len(machines) + 0.9),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    for i, m in enumerate(machines):
        for j, seq in enumerate(seqs):
            ax, d = axes[i][j], table[(table["machine"] == m) & (table["seq"] == seq)]
            for a in algos:
                g = d[d["algorithm"] == a].sort_values("ranks")
                if len(g):
                    ax.plot(g["ranks"], g["speedup"], ms=2.5, lw=0.9, **style(a))
            ax.axhline(1.0, color="0.4", lw=0.6, ls=":")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.set_title(f"{m}, {seq >> 20}M tokens" if seq % (1 << 20) == 0 else f"{m}, {seq >> 10}K tokens")
            if i == len(machines) - 1:
                ax.set_xlabel("ranks (GPUs)")
            if j == 0:
                ax.set_ylabel("speedup over ring")
    _legend(fig, axes, width)
    return fig


CURVES_CAPTION = ("Predicted speedup over ring (above 1: faster) against the number of GPUs, every algorithm, from "
                  "each machine's published description; usp and usp-ringx at their fastest Ulysses x ring degrees. "
                  "Causal, forward+backward, 32 query heads, 8 K/V heads, head_dim 128, bf16. Predictions, not "
                  "measurements.")
