"""A picture of a mask for a layout: what each query sees, which rank owns what, which (query rank, key rank)
blocks are skipped, full, causal or a partial band, and how evenly the visible pairs fall on the ranks.

``mask_view(mask, seq, ranks, layout)`` draws three panels:

- the S x S visibility, downsampled to a grid of at most GRID cells a side (each cell the fraction of its
  sampled pairs that is visible), with each position's owning rank as a coloured strip on both axes;
- the P x P grid of rank blocks, rank r's queries against rank s's keys, coloured by kind (counted exactly,
  in O(S x P), from each query's visible key interval);
- each rank's visible (query, key) pairs (ringx.balance) with the imbalance max/mean.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap

from ringx import Mask
from ringx.balancing import balance
from ringx.layouts import shard

from .figures import COLORS, WIDTH_IN, styled

GRID = 256  # visibility cells a side
SUB = 4  # sampled positions per cell a side (a window thinner than a cell still shows)
MAX_BLOCK_RANKS = 64  # the block grid is drawn up to this many ranks
KINDS = ("skipped", "full", "causal", "partial band")
KIND_COLORS = ("#f0f0f0", COLORS[1], COLORS[2], COLORS[3])


def owners(seq: int, ranks: int, layout: str) -> np.ndarray:
    """(seq,) the rank holding each global position under ``layout``."""
    pos = torch.arange(seq).view(1, seq)
    out = np.empty(seq, dtype=np.int64)
    for r in range(ranks):
        out[shard(pos, layout, r, ranks)[0].numpy()] = r
    return out


def block_pairs(mask: Mask, seq: int, owner: np.ndarray, ranks: int) -> np.ndarray:
    """(P, P) visible pairs of rank r's queries against rank s's keys, exactly: each query's visible keys are one
    interval per slice of the mask over it (ringx.Mask.key_intervals), counted per key rank by prefix sums."""
    rows, first, last = mask.key_intervals(seq)
    own = torch.as_tensor(owner)
    q_rank = own[rows]
    out = np.zeros((ranks, ranks), dtype=np.int64)
    for s in range(ranks):
        held = torch.zeros(seq + 1, dtype=torch.int64)
        held[1:] = torch.cumsum(own == s, 0)
        n = (held[(last + 1).clamp(0, seq)] - held[first.clamp(0, seq)]).clamp(min=0)  # keys of s each query sees
        n = torch.where(last >= first, n, torch.zeros_like(n))
        out[:, s] = torch.zeros(ranks, dtype=torch.int64).index_add_(0, q_rank, n).numpy()
    return out


def block_kinds(pairs: np.ndarray, per_rank: int, causal: bool) -> np.ndarray:
    """(P, P) index into KINDS: skipped (nothing visible), full, causal (a rank's own diagonal block with each
    query seeing itself and its earlier keys) or partial band (anything else)."""
    full = per_rank * per_rank
    kinds = np.full(pairs.shape, 3)
    kinds[pairs == 0] = 0
    kinds[pairs == full] = 1
    diag = np.eye(len(pairs), dtype=bool) & (pairs == per_rank * (per_rank + 1) // 2)
    if causal:
        kinds[diag] = 2
    return kinds


def visibility(mask: Mask, seq: int, grid: int = GRID) -> np.ndarray:
    """(n, n) fraction of visible pairs in each cell of an n x n downsampling (n = min(grid, seq))."""
    n = min(grid, seq)
    m = min(seq, n * SUB)
    pos = (torch.arange(m, dtype=torch.float64) * seq / m + seq / m / 2).long().clamp(max=seq - 1)
    vis = mask.visible(pos, pos).double()
    k = m // n
    vis = vis[: n * k, : n * k].reshape(n, k, n, k).mean(dim=(1, 3))
    return vis.numpy()


@styled
def mask_view(mask: Mask, seq: int, ranks: int, layout: str, algorithm: str | None = None, width: str = "two"):
    """The figure of the module doc."""
    mask.check(seq)
    owner = owners(seq, ranks, layout)
    bal = balance(mask, layout, ranks, seq)
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH_IN[width], WIDTH_IN[width] * 0.36), layout="constrained",
                             gridspec_kw={"width_ratios": [1, 1, 1.15]})
    rank_cmap = plt.get_cmap("tab20" if ranks > 10 else "tab10", max(ranks, 2))

    ax = axes[0]
    vis = visibility(mask, seq)
    n = len(vis)
    ax.imshow(vis, cmap="Greys", vmin=0, vmax=1, extent=(0, seq, seq, 0), interpolation="nearest")
    cell = np.arange(n) * seq // n
    strip = owner[cell + np.arange(n) % max(1, seq // n)]  # a cell of several ranks (stripe) shows them in turn
    w = seq * 0.04
    ax.imshow(strip[None, :], cmap=rank_cmap, vmin=-0.5, vmax=max(ranks, 2) - 0.5, aspect="auto",
              extent=(0, seq, 0, -w), interpolation="nearest")
    ax.imshow(strip[:, None], cmap=rank_cmap, vmin=-0.5, vmax=max(ranks, 2) - 0.5, aspect="auto",
              extent=(-w, 0, seq, 0), interpolation="nearest")
    ax.set_xlim(-w, seq)
    ax.set_ylim(seq, -w)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title("visible (black), rank strips")
    ax.grid(False)

    ax = axes[1]
    if ranks <= MAX_BLOCK_RANKS:
        pairs = block_pairs(mask, seq, owner, ranks)
        kinds = block_kinds(pairs, seq // ranks, mask.is_causal)
        ax.imshow(kinds, cmap=ListedColormap(KIND_COLORS), vmin=-0.5, vmax=3.5, interpolation="nearest")
        counts = {k: int((kinds == i).sum()) for i, k in enumerate(KINDS)}
        handles = [plt.Rectangle((0, 0), 1, 1, color=c, ec="0.5", lw=0.4) for c in KIND_COLORS]
        ax.legend(handles, [f"{k} ({counts[k]})" for k in KINDS], loc="upper center", bbox_to_anchor=(0.5, -0.25),
                  ncol=2, fontsize="small", frameon=False)
        ticks = range(0, ranks, max(1, ranks // 8))
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xlabel("key rank")
        ax.set_ylabel("query rank")
        ax.set_title("rank blocks by kind")
    else:
        ax.text(0.5, 0.5, f"block grid drawn up to {MAX_BLOCK_RANKS} ranks", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
    ax.grid(False)

    ax = axes[2]
    ax.bar(range(ranks), bal.pairs, color=[rank_cmap(r) for r in range(ranks)], width=0.8)
    ax.axhline(sum(bal.pairs) / ranks, color="0.3", ls=":", lw=0.8, label="mean")
    ax.set_xlabel("rank")
    ax.set_ylabel("visible (query, key) pairs")
    ax.set_title(f"work per rank: max/mean {bal.imbalance:.2f}")
    ax.legend(loc="lower right", fontsize="small")
    fig.suptitle(f"{mask.short()}, {seq} tokens, {ranks} ranks, layout {layout}"
                 + (f" ({algorithm})" if algorithm else ""))
    return fig, bal


def slug(spec: str) -> str:
    """A file-name-safe form of a mask spec."""
    return "".join(c if c.isalnum() else "-" for c in spec).strip("-")[:60]
