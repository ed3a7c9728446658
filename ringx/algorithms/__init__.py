"""The registry of algorithms: name -> layout, schedules and metadata.

The benchmark suite reads this table instead of hard-coding names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import bcast, gather, ring


@dataclass(frozen=True)
class Algorithm:
    name: str
    family: str  # "ring" (baseline) or "ringx"
    noncausal_layout: str | None  # None: non-causal not supported
    causal_layout: str | None  # None: causal not supported
    forward: Callable
    backward: Callable
    overlap: bool
    pattern: str  # communication, forward; backward
    summary: str

    def supports(self, causal: bool) -> bool:
        return self.layout(causal) is not None

    def layout(self, causal: bool) -> str | None:
        return self.causal_layout if causal else self.noncausal_layout


def _x(name, nc, c, fwd, bwd, overlap, pattern, summary):
    return Algorithm(name, "ringx", nc, c, fwd, bwd, overlap, pattern, summary)


_RING = "p2p ring(k,v); p2p ring(k,v) + ring(dk,dv)"
_BQ = "broadcast(q) + all_reduce(max lse) + reduce(num,den); broadcast(k,v) + reduce(dk,dv)"
_BKV = "broadcast(k,v); broadcast(k,v) + reduce(dk,dv)"
_AG = "all_gather(k,v); all_gather(k,v) + reduce_scatter(dk,dv)"

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("ring", "ring", "contiguous", "contiguous", ring.forward, ring.backward, True, _RING,
              "ring attention, contiguous layout, next K/V block prefetched (unbalanced when causal)"),
    Algorithm("zigzag", "ring", "zigzag", "zigzag", ring.forward, ring.backward, True, _RING,
              "ring attention on the zigzag layout (balanced when causal)"),
    Algorithm("stripe", "ring", "stripe", "stripe", ring.forward, ring.backward, True, _RING,
              "ring attention on the stripe layout (balanced when causal)"),
    _x("ringx1", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, False, _BQ,
       "ringX1: broadcast Q in turn, reduce numerator/denominator to its owner"),
    _x("ringx2", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, False, _BQ,
       "ringX2: the ringX1 schedule run causal; masked blocks are skipped (unbalanced)"),
    _x("ringx3", "contiguous", "zigzag", gather.forward, gather.backward, False, _AG,
       "ringX3: all-gather K/V (zigzag when causal), reduce-scatter dK/dV"),
    _x("ringx4", "zigzag", "zigzag", bcast.kv_forward, bcast.kv_backward, False, _BKV,
       "ringX4: broadcast K/V in turn, reduce dK/dV, zigzag layout"),
    _x("ringx1o", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, True, _BQ,
       "ringX1 with double-buffered async collectives"),
    _x("ringx2o", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, True, _BQ,
       "ringX2 with double-buffered async collectives"),
    _x("ringx4o", "zigzag", "zigzag", bcast.kv_forward, bcast.kv_backward, True, _BKV,
       "ringX4 with double-buffered async collectives"),
)}


def get(name: str, causal: bool) -> Algorithm:
    """The named algorithm, or ValueError naming what is available."""
    algo = ALGORITHMS.get(name)
    if algo is None:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    if not algo.supports(causal):
        mask = "causal" if causal else "non-causal"
        alts = [a for a, x in ALGORITHMS.items() if x.supports(causal)]
        raise ValueError(f"algorithm {name!r} does not support {mask} attention; use one of {', '.join(alts)}")
    return algo


def names(causal: bool | None = None) -> list[str]:
    """Algorithm names, optionally only those supporting the given masking."""
    return [n for n, a in ALGORITHMS.items() if causal is None or a.supports(causal)]
