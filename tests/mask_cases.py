"""The masks' multi-rank matrix, shared by pytest and the MPI worker (tests/workers/mask_cases.py).

Launches: 1-4 ranks on one node, every algorithm; 4 ranks as 2 simulated nodes x 2
(RINGX_RANKS_PER_NODE=2), the topology-aware algorithms. Every algorithm meets every
mask; MHA and GQA alternate along the matrix, so each algorithm and each mask runs both.
float64 against a dense masked float64 softmax, to 1e-10 (tests/cases.py's tolerance).
12 query heads divide every Ulysses degree up to 4; 4 K/V heads need replicas at degree 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ringx import ALGORITHMS, Mask

LAUNCHES = ((1, 0), (2, 0), (3, 0), (4, 0), (4, 2))  # (ranks, simulated ranks per node; 0: one node)
SEQ_LOCAL = 24  # a multiple of 2 (zigzag) for every layout
TOL = 1e-10
QUANTITIES = ("out", "lse", "dq", "dk", "dv")
SHAPES = ((1, 12, 12, 8), (2, 12, 4, 8))  # (batch, heads, kv_heads, head_dim): MHA, GQA


def doc_lengths(seq: int, seed: int = 7) -> list[int]:
    """Seeded lengths summing to ``seq``: a one-token document, odd lengths, documents crossing shards."""
    gen = torch.Generator().manual_seed(seed + seq)
    lengths, left = [1], seq - 1
    while left:
        n = min(left, int(torch.randint(1, max(2, seq // 2), (), generator=gen)))
        lengths.append(n)
        left -= n
    return lengths


def masks(seq: int) -> dict[str, Mask]:
    """name -> mask for a global length ``seq`` (= SEQ_LOCAL x ranks)."""
    n = SEQ_LOCAL
    docs = doc_lengths(seq)
    return {
        "window-third": Mask.window(n // 3),  # causal, a third of a shard: ring needs only the neighbour
        "window-wide": Mask.window(2 * n + 3, 5),  # two-sided, across several shards
        "docs": Mask.documents(docs),
        "docs-full-window": Mask.documents(docs, causal=False, window=7),
        "docs-window": Mask.documents(docs, window=10),
    }


@dataclass(frozen=True)
class MaskCase:
    world: int
    rpn: int
    algorithm: str
    mask_name: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def mask(self) -> Mask:
        return masks(SEQ_LOCAL * self.world)[self.mask_name]

    @property
    def id(self) -> str:
        where = f"P{self.world}" + (f"n{self.world // self.rpn}x{self.rpn}" if self.rpn else "")
        return f"{where}-{self.algorithm}-{self.mask_name}-b{self.batch}h{self.heads}kv{self.kv_heads}"


def mask_cases(world: int, rpn: int = 0) -> list[MaskCase]:
    algos = [a for a, x in ALGORITHMS.items() if x.topology or not rpn]
    names = list(masks(SEQ_LOCAL * world))
    return [MaskCase(world, rpn, a, m, *SHAPES[(i + j) % 2]) for i, a in enumerate(algos) for j, m in enumerate(names)]


ALL = [c for w, rpn in LAUNCHES for c in mask_cases(w, rpn)]
