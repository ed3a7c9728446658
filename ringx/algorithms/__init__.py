"""The registry of algorithms: name -> layout, schedules and metadata.

The benchmark suite reads this table instead of hard-coding names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..layouts import local_divisor
from ..mask import Mask, as_mask
from . import bcast, bidir, double, gather, hier, ring, ulysses


@dataclass(frozen=True)
class Algorithm:
    name: str
    family: str  # "ring" (baseline), "ringx" or "ulysses"
    # layouts; "zigzag-u{u}" is a template filled with the call's Ulysses degree
    noncausal_layout: str | None  # None: non-causal not supported
    causal_layout: str | None  # None: causal not supported
    forward: Callable
    backward: Callable
    overlap: bool
    pattern: str  # communication, forward; backward
    summary: str
    topology: bool = False  # needs to know which ranks share a node (ringx.topology)
    ulysses: str = ""  # Ulysses degree: "" none, "all" every rank, "node" per call, default ranks per node
    inner_ring: bool = False  # takes ``inner_ring`` (double-ring), default the ranks per node
    # what the schedule holds besides its result, for ringx.memory.peak_formula: "ring" (two receive sets of K/V
    # per stream), "broadcast", "gather" (the whole sequence's K/V), "ulysses" (head-sharded copies, an inner ring
    # across Ulysses groups) or "ulysses-gather" (the inner schedule a gather)
    buffers: str = "ring"
    streams: int = 1  # ring buffers: K/V streams in flight (both directions, or two levels)

    def supports(self, causal: bool | Mask) -> bool:
        return self._layout(causal) is not None

    def _layout(self, causal: bool | Mask) -> str | None:
        if isinstance(causal, Mask):
            causal = causal.causal_layout
        return self.causal_layout if causal else self.noncausal_layout

    def layout(self, causal: bool | None = None, ulysses_degree: int | None = None, *,
               mask: Mask | None = None) -> str | None:
        """The layout to shard inputs in, for ``causal`` (True/False) or a ``mask``. Where it depends on the Ulysses
        degree and none is given, the default group's ranks per node (the default degree), or the template if that
        is not known yet. Masks other than full take the causal layout (zigzag balances windows and documents
        less well than causal attention: see ``ringx.balance``)."""
        lay = self._layout(as_mask(mask, causal))
        if lay is None or "{u}" not in lay:
            return lay
        if ulysses_degree is None:
            from ..launch import known_ranks_per_node

            ulysses_degree = known_ranks_per_node()
        return lay if ulysses_degree is None else lay.format(u=ulysses_degree)

    def local_divisor(self, causal: bool | Mask) -> int:
        """The local sequence length must be a multiple of this (for any Ulysses degree)."""
        return local_divisor(self._layout(causal))

    def degree(self, world: int, requested: int | None, ranks_per_node: int | None) -> int | None:
        """The Ulysses degree of a call: ``requested``, else what this algorithm does by default."""
        if self.ulysses == "all":
            return world
        if self.ulysses == "node":
            return requested or ranks_per_node
        return None


def _x(name, nc, c, fwd, bwd, overlap, pattern, summary, buffers):
    return Algorithm(name, "ringx", nc, c, fwd, bwd, overlap, pattern, summary, buffers=buffers)


_RING = "p2p ring(k,v); p2p ring(k,v) + ring(dk,dv)"
_BQ = "broadcast(q) + all_reduce(max lse) + reduce(num,den); broadcast(k,v) + reduce(dk,dv)"
_BKV = "broadcast(k,v); broadcast(k,v) + reduce(dk,dv)"
_AG = "all_gather(k,v); all_gather(k,v) + reduce_scatter(dk,dv)"
_AG2 = ("all_gather(k,v) inter, then intra; all_gather(k,v) inter, then intra + reduce_scatter(dk,dv) intra, "
        "then inter")
_BIDIR = ("p2p both ways(k,v); p2p both ways(k,v) + (dk,dv) out with the blocks and back home the shorter way")
_DOUBLE = ("p2p inner ring(k,v) + outer ring(k,v) prefetched; p2p inner ring(k,v) + inner ring(dk,dv) + "
           "outer ring(k,v) + outer ring(dk,dv)")
_A2A = "all_to_all(q,k,v){f} + all_to_all(out,lse); all_to_all(dout){b} + all_to_all(dq,dk,dv)"
_usp_fwd, _usp_bwd = ulysses.schedule(ring.forward, ring.backward)
_uspx_fwd, _uspx_bwd = ulysses.schedule(gather.forward, gather.backward)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("ring", "ring", "contiguous", "contiguous", ring.forward, ring.backward, True, _RING,
              "ring attention, contiguous layout, next K/V block prefetched (unbalanced when causal)"),
    Algorithm("zigzag", "ring", "zigzag", "zigzag", ring.forward, ring.backward, True, _RING,
              "ring attention on the zigzag layout (balanced when causal)"),
    Algorithm("stripe", "ring", "stripe", "stripe", ring.forward, ring.backward, True, _RING,
              "ring attention on the stripe layout (balanced when causal)"),
    Algorithm("bidir-ring", "ring", "contiguous", "zigzag", bidir.forward, bidir.backward, True, _BIDIR,
              "bidirectional ring: K/V sent both ways, ceil((P-1)/2) steps, dK/dV home the shorter way (zigzag "
              "when causal)", streams=2),
    Algorithm("double-ring", "ring", "contiguous", "zigzag", double.forward, double.backward, True, _DOUBLE,
              "double ring: a ring within each node (inner_ring ranks) inside a ring across nodes, the next outer "
              "block prefetched during the inner round (zigzag when causal)", topology=True, inner_ring=True,
              streams=2),
    _x("ringx1", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, False, _BQ,
       "ringX1: broadcast Q in turn, reduce numerator/denominator to its owner", "broadcast"),
    _x("ringx2", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, False, _BQ,
       "ringX2: the ringX1 schedule run causal; masked blocks are skipped (unbalanced)", "broadcast"),
    _x("ringx3", "contiguous", "zigzag", gather.forward, gather.backward, False, _AG,
       "ringX3: all-gather K/V (zigzag when causal), reduce-scatter dK/dV", "gather"),
    _x("ringx4", "zigzag", "zigzag", bcast.kv_forward, bcast.kv_backward, False, _BKV,
       "ringX4: broadcast K/V in turn, reduce dK/dV, zigzag layout", "broadcast"),
    _x("ringx1o", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, True, _BQ,
       "ringX1 with double-buffered async collectives", "broadcast"),
    _x("ringx2o", "contiguous", "contiguous", bcast.q_forward, bcast.kv_backward, True, _BQ,
       "ringX2 with double-buffered async collectives", "broadcast"),
    _x("ringx4o", "zigzag", "zigzag", bcast.kv_forward, bcast.kv_backward, True, _BKV,
       "ringX4 with double-buffered async collectives", "broadcast"),
    Algorithm("ringx3b", "ringx", "contiguous", "zigzag", hier.forward, hier.backward, True, _AG2,
              "ringX3b: two-level all-gather of K/V (across nodes, then within), the local block computed "
              "meanwhile; two-level reduce-scatter of dK/dV", topology=True, buffers="gather"),
    Algorithm("ulysses", "ulysses", "contiguous", "contiguous", _usp_fwd, _usp_bwd, False,
              _A2A.format(f="", b=""),
              "DeepSpeed-Ulysses: all-to-all sequence -> heads over all ranks, local attention, all-to-all back",
              topology=True, ulysses="all", buffers="ulysses"),
    Algorithm("usp", "ulysses", "contiguous", "zigzag-u{u}", _usp_fwd, _usp_bwd, True,
              _A2A.format(f=" + p2p ring(k,v)", b=" + p2p ring(k,v) + ring(dk,dv)"),
              "USP: Ulysses within a node x zigzag ring across nodes", topology=True, ulysses="node",
              buffers="ulysses"),
    Algorithm("usp-ringx", "ulysses", "contiguous", "zigzag-u{u}", _uspx_fwd, _uspx_bwd, False,
              _A2A.format(f=" + all_gather(k,v)", b=" + all_gather(k,v) + reduce_scatter(dk,dv)"),
              "Ulysses within a node x ringX3 (all-gather K/V) across nodes", topology=True, ulysses="node",
              buffers="ulysses-gather"),
)}


def get(name: str, causal: bool | Mask) -> Algorithm:
    """The named algorithm, or ValueError naming what is available."""
    algo = ALGORITHMS.get(name)
    if algo is None:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    if not algo.supports(causal):
        mask = ("causal" if causal else "non-causal") if isinstance(causal, bool) else str(causal)
        alts = [a for a, x in ALGORITHMS.items() if x.supports(causal)]
        raise ValueError(f"algorithm {name!r} does not support {mask} attention; use one of {', '.join(alts)}")
    return algo


def inner_ring_names() -> list[str]:
    """The algorithms that take ``inner_ring``."""
    return [n for n, a in ALGORITHMS.items() if a.inner_ring]


def ulysses_names() -> list[str]:
    """The algorithms that take a per-call ``ulysses_degree``."""
    return [n for n, a in ALGORITHMS.items() if a.ulysses == "node"]


def names(causal: bool | None = None) -> list[str]:
    """Algorithm names, optionally only those supporting the given masking."""
    return [n for n, a in ALGORITHMS.items() if causal is None or a.supports(causal)]
