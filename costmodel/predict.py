"""Predicted time of one call of an algorithm, from its traced schedule on a machine description."""

from __future__ import annotations

import functools

from .machine import Machine
from .simulate import Prediction, sample_ranks, simulate_call


@functools.lru_cache(maxsize=512)
def _traces(algorithm, causal, p, ranks, batch, seq, heads, kv_heads, head_dim, dtype, backward,
            ranks_per_node=None, ulysses_degree=None, mask=None) -> tuple:
    """The sampled ranks' schedules; cached because tracing dominates and a schedule does not depend on the
    machine (the planner and `analysis predict` ask for the same configurations). ``mask``: a ringx.Mask (immutable
    and hashable, a cache key as it is) that replaces ``causal``; the masked plans skip blocks and ring steps when
    tracing exactly as when running."""
    import torch

    from ringx.schedule import trace

    return tuple(trace(algorithm, None if mask else causal, p, r, batch=batch, seq=seq, heads=heads,
                       kv_heads=kv_heads, head_dim=head_dim, dtype=getattr(torch, dtype), backward=backward,
                       ranks_per_node=ranks_per_node, ulysses_degree=ulysses_degree, mask=mask) for r in ranks)


def _mask(mask):
    """A ringx.Mask, or None; text (as the CLI and older callers give it) is read once."""
    if mask is None or not isinstance(mask, str):
        return mask
    from ringx.mask import Mask

    return Mask.parse(mask)


def predict(algorithm: str, causal: bool, mode: str, p: int, machine: Machine, *, nodes: int = 1, batch: int = 1,
            seq: int, heads: int, kv_heads: int, head_dim: int, dtype: str = "bfloat16",
            exact_ranks: int = 64, ulysses_degree: int | None = None, mask=None) -> Prediction:
    """Predicted time of one call of ``algorithm`` (mode "fwd" or "fwd+bwd") on ``p`` ranks.

    ``ulysses_degree`` (usp, usp-ringx): the Ulysses group size; default the ranks per node, as ringx does.
    ``mask``: a ringx.Mask (or its text form), in place of ``causal`` (skipped blocks and transfers are not costed).
    """
    from ringx.algorithms import ALGORITHMS

    if algorithm not in ALGORITHMS:  # a plugin: from a trace of its own calls under the fake group (traced.py)
        from .traced import predict_plugin

        return predict_plugin(algorithm, causal, mode, p, machine, nodes=nodes, batch=batch, seq=seq, heads=heads,
                              kv_heads=kv_heads, head_dim=head_dim, dtype=dtype, mask=_mask(mask))
    ranks = sample_ranks(p, exact_ranks)
    rpn = p // nodes if nodes > 1 and p % nodes == 0 else None  # hierarchical schedules follow the nodes
    traces = _traces(algorithm, bool(causal), p, tuple(ranks), batch, seq, heads, kv_heads, head_dim, dtype,
                     mode == "fwd+bwd", rpn, ulysses_degree, _mask(mask))
    return simulate_call([t.forward for t in traces], [t.backward for t in traces] if mode == "fwd+bwd" else None,
                         machine, p, nodes, ranks)


def speedup_curve(machine: Machine, algorithms: list[str], ranks: list[int], *, seq: int, gpus_per_node: int,
                  baseline: str = "ring", causal: bool = True, mode: str = "fwd+bwd", heads: int = 32,
                  kv_heads: int = 8, head_dim: int = 128, dtype: str = "bfloat16"):
    """Predicted speedup over the baseline at a fixed global sequence for growing rank counts."""
    import pandas as pd

    rows = []
    for p in ranks:
        nodes = max(1, p // gpus_per_node)
        times = {a: predict(a, causal, mode, p, machine, nodes=nodes, seq=seq, heads=heads, kv_heads=kv_heads,
                            head_dim=head_dim, dtype=dtype, exact_ranks=16)
                 for a in dict.fromkeys([baseline, *algorithms])}
        for a in algorithms:
            rows.append({"algorithm": a, "ranks": p, "nodes": nodes, "predicted_s": times[a].total_s,
                         "speedup": times[baseline].total_s / times[a].total_s})
    return pd.DataFrame(rows)


def degrees(algorithm: str, p: int, heads: int) -> list[int | None]:
    """The Ulysses degrees worth predicting for ``algorithm`` on ``p`` ranks: every one that divides both the
    ranks and the heads for usp/usp-ringx; [None] (its own) for the others."""
    from ringx.algorithms import ALGORITHMS

    if algorithm not in ALGORITHMS or ALGORITHMS[algorithm].ulysses != "node":  # a plugin has its own
        return [None]
    return [u for u in range(1, p + 1) if p % u == 0 and heads % u == 0] or [None]


def best_degree(algorithm: str, causal: bool, mode: str, p: int, machine: Machine, **kw) -> tuple[int | None,
                                                                                                  Prediction]:
    """(degree, prediction) of the fastest Ulysses degree of ``algorithm`` (the users' question: which degrees on
    my machine); for algorithms without a degree, (None, its prediction)."""
    options, why = {}, None
    for u in degrees(algorithm, p, kw["heads"]):
        try:
            options[u] = predict(algorithm, causal, mode, p, machine, ulysses_degree=u, **kw)
        except ValueError as e:  # a degree the layout cannot split the sequence for
            why = e
    if not options:
        raise why
    u = min(options, key=lambda d: options[d].total_s)
    return u, options[u]
