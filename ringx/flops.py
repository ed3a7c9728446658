"""The one FLOP convention of the project: flash-attention's benchmarks.

Forward: 4 x B x S^2 x H x D (H query heads, S the global length), halved when
causal; backward 2.5x forward (recompute included); forward+backward 3.5x.
Records name this convention next to every FLOP count; the cost model counts
each computed block by the same rule (``block_flops``), with a causal diagonal
block counting its S(S+1)/2 visible pairs.
"""

from __future__ import annotations

CONVENTION = ("flash-attn: forward 4*B*S^2*H*D (H = query heads, S global), halved when causal; "
              "backward 2.5x forward; fwd+bwd 3.5x forward")
MODE_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}


def attention_flops(batch: int, seq: int, heads: int, head_dim: int, causal: bool, mode: str = "fwd") -> float:
    """Total FLOPs of one call over all ranks."""
    return 4.0 * batch * seq * seq * heads * head_dim / (2 if causal else 1) * MODE_FACTOR[mode]


def block_flops(batch: int, heads: int, head_dim: int, pairs: float, mode: str = "fwd") -> float:
    """FLOPs of attention over ``pairs`` (query, key) pairs: the per-block form of the same convention."""
    return 4.0 * batch * heads * head_dim * pairs * MODE_FACTOR[mode]


def causal_pairs(seq: int) -> float:
    """Visible (query, key) pairs of a causal square block."""
    return seq * (seq + 1) / 2
