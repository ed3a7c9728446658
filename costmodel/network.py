"""The network as the model sees it: latency steps and bus-bandwidth factors per operation.

An operation of size n on P ranks costs hops(P) x alpha + n x busbw_factor(P) / bandwidth,
with nccl-tests' factors and size convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def busbw_factor(op: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor of ``op`` on ``n`` ranks: one definition for benchmark and model."""
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    if op in ("broadcast", "reduce", "sendrecv"):
        return 1.0
    raise ValueError(f"unknown op {op!r}")


def hops(op: str, p: int) -> float:
    """Latency steps of one operation on ``p`` ranks.

    all_gather/reduce_scatter are rings (P-1 steps); all_to_all is P-1 pairwise exchanges. all_reduce takes a tree's
    latency (2 log2 P: NCCL/RCCL switch small messages to trees, gloo to
    halving-doubling) with the ring's bandwidth term; a ring's 2(P-1) steps
    would make thousands of small LSE all-reduces cost seconds each.
    broadcast/reduce are trees (log2 P); NCCL runs them as a pipelined chain
    whose latency grows with P, so at thousands of ranks this is optimistic.
    """
    if op == "sendrecv":
        return 1.0
    log_p = math.ceil(math.log2(p))
    if op in ("broadcast", "reduce"):
        return log_p
    if op == "all_reduce":
        return 2 * log_p
    return p - 1


@dataclass
class Link:
    alpha_s: float  # latency per hop
    bw_GBps: float  # bus bandwidth
