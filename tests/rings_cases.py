"""double-ring's multi-rank matrix, and the memory and timeline checks, shared by pytest and the MPI worker.

Launches: 1-4 ranks on one node, and 4 ranks as 2 simulated nodes x 2 (RINGX_RANKS_PER_NODE=2). double-ring
runs with its default inner ring (the ranks per node) and every other inner size dividing the node; on 4 ranks
of one node also on an explicit Topology whose nodes are not blocks of consecutive ranks (MAPPING, nodes of 2).
Shapes and tolerances as in tests/hier_cases.py (MHA, GQA, MQA in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.hier_cases import MAPPING, SHAPES, TOL  # noqa: F401 (re-exported)

LAUNCHES = ((1, 0), (2, 0), (3, 0), (4, 0), (4, 2))
UNEVEN = (0, 0, 0, 1)  # a 4-rank rank -> node map with nodes of different sizes
MEMORY_SHAPE = (1, 64, 12, 4, 16)  # batch, seq_local, heads, kv_heads, head_dim (float32)


@dataclass(frozen=True)
class RingCase:
    world: int
    rpn: int  # simulated ranks per node (0: one node)
    causal: bool
    dtype: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    seq_local: int
    inner: int | None  # inner_ring passed (None: the default)
    mapped: bool = False
    algorithm: str = "double-ring"

    @property
    def id(self) -> str:
        where = f"P{self.world}" + (f"n{self.world // self.rpn}x{self.rpn}" if self.rpn else "")
        inner = "" if self.inner is None else f"-i{self.inner}"
        return (f"{where}-{self.algorithm}{inner}{'-mapped' if self.mapped else ''}-"
                f"{'causal' if self.causal else 'full'}-{self.dtype}-b{self.batch}h{self.heads}kv{self.kv_heads}"
                f"d{self.head_dim}n{self.seq_local}")

    @property
    def ranks_per_node(self) -> int:
        return 2 if self.mapped else (self.rpn or self.world)

    @property
    def inner_size(self) -> int:
        return self.inner or self.ranks_per_node


def ring_cases(world: int, rpn: int) -> list[RingCase]:
    node = rpn or world
    runs = [(None, False)] + [(i, False) for i in range(1, node) if node % i == 0]
    if world == len(MAPPING) and not rpn:
        runs += [(None, True), (1, True)]
    if rpn:  # the flat bidirectional ring on the simulated nodes too
        runs += [(None, False, "bidir-ring")]
    out = []
    for run in runs:
        inner, mapped, algo = (*run, "double-ring")[:3]
        out += [RingCase(world, rpn, c, dt, b, h, hk, d, n, inner, mapped, algo)
                for c in (False, True) for (dt, b, h, hk, d, n) in SHAPES]
    return out


def expected_ledger(case: RingCase) -> tuple[dict, dict]:
    """(calls, sent, received) per op, forward and backward.

    With I ranks per inner ring and O = P/I outer steps, KV = |k| + |v| (2 messages per hop):
      fwd: inner K/V hops O (I-1), outer K/V hops O-1
      bwd: the same K/V hops, inner dK/dV hops O I (I > 1), outer dK/dV hops O (O > 1)
    bidir-ring as in tests/test_attention_mpi.py.
    """
    P, e = case.world, 8 if case.dtype == "float64" else 4
    KV = 2 * case.batch * case.seq_local * case.kv_heads * case.head_dim * e
    if P == 1:
        return {}, {}
    if case.algorithm == "bidir-ring":
        fwd_hops = P - 1
        bwd_hops = fwd_hops + sum(2 * h - 1 for h in (P // 2, (P - 1) // 2) if h)
    else:
        inner, outer = case.inner_size, P // case.inner_size
        fwd_hops = outer * (inner - 1) + outer - 1
        bwd_hops = fwd_hops + (outer * inner if inner > 1 else 0) + (outer if outer > 1 else 0)

    def ledger(hops):
        return {"send": (2 * hops, hops * KV, 0), "recv": (2 * hops, 0, hops * KV)}

    return ledger(fwd_hops), ledger(bwd_hops)
