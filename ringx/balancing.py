"""How evenly a mask's work falls on the ranks of a layout.

Each rank computes attention for its own queries (ring, ringX3/X4, the Ulysses
family after their all-to-all regroup heads, not tokens), so its work is the
number of visible (query, key) pairs of the queries it holds. ``balance``
counts them exactly, in O(S) from the mask's rule, and reports the imbalance
max/mean (1.0: perfect), the convention of masked-attention benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .layouts import shard_all
from .mask import Mask


@dataclass(frozen=True)
class Balance:
    mask: str
    layout: str
    pairs: tuple[int, ...]  # visible (query, key) pairs of each rank's queries

    @property
    def imbalance(self) -> float:
        """max / mean of the per-rank pairs (1.0 when the mask sees nothing at all)."""
        mean = sum(self.pairs) / len(self.pairs)
        return max(self.pairs) / mean if mean else 1.0


def balance(mask: Mask, layout: str, world_size: int, seq: int) -> Balance:
    """Each rank's visible (query, key) pairs under ``mask`` for ``layout`` over ``world_size`` ranks."""
    per_query = mask.keys_per_query(seq)
    pairs = tuple(shard_all(per_query.view(1, seq), layout, world_size).sum(dim=(1, 2)).tolist())  # O(S), any P
    return Balance(str(mask), layout, pairs)


def lognormal_lengths(seq: int, mean: float, sigma: float = 1.0, seed: int = 0) -> list[int]:
    """Document lengths drawn log-normal (the given mean, ``sigma`` of the underlying normal) until they fill
    ``seq`` tokens exactly (the last document is cut to fit); seeded, the same on every machine."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.log(torch.tensor(float(mean))) - sigma * sigma / 2
    lengths: list[int] = []
    left = seq
    while left > 0:
        n = int(torch.exp(mu + sigma * torch.randn((), generator=gen, dtype=torch.float64)).round().clamp(min=1))
        lengths.append(min(n, left))
        left -= lengths[-1]
    return lengths
