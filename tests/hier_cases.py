"""The hierarchical algorithms' multi-rank matrix, shared by pytest and the MPI worker.

Launches: 1-4 ranks on one node, and 4 ranks as 2 simulated nodes x 2 ranks
(RINGX_RANKS_PER_NODE=2). Every algorithm runs with its default Ulysses degree;
usp/usp-ringx also with every other degree dividing the ranks; on 4 ranks of one
node, every algorithm also runs on an explicit Topology whose nodes are not
blocks of consecutive ranks (node of rank r: MAPPING[r]).
12 query heads divide every degree up to 4; 4 K/V heads need replicas at degree 3
and 1 K/V head at every degree above 1. Tolerances as in tests/cases.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tests.cases import QUANTITIES, TOL  # noqa: F401 (re-exported for the test module)

HIER_ALGOS = ("ringx3b", "ulysses", "usp", "usp-ringx")
LAUNCHES = ((1, 0), (2, 0), (3, 0), (4, 0), (4, 2))  # (ranks, simulated ranks per node; 0: MPI's own)
MAPPING = (0, 1, 1, 0)  # an explicit rank -> node map for 4 ranks: nodes {0, 3} and {1, 2}
SHAPES = (
    ("float64", 1, 12, 12, 32, 8),  # MHA
    ("float64", 2, 12, 4, 16, 8),  # GQA (groups of 3), batch 2
    ("float32", 1, 12, 1, 32, 8),  # MQA in float32
)
# new_group calls per rank over a whole launch: only the groups that are not the parent group or single ranks.
# 4 ranks, one node: grid(2) for usp with ulysses_degree=2 (4), and MAPPING's levels (4) and grid(2) (4);
# 2 x 2 simulated: intra (2) and inter (2), which grid(2) reuses.
GROUPS_BUILT = {(1, 0): 0, (2, 0): 0, (3, 0): 0, (4, 0): 12, (4, 2): 4}


@dataclass(frozen=True)
class HierCase:
    world: int
    rpn: int  # simulated ranks per node (0: one node, as MPI sees this machine)
    algorithm: str
    causal: bool
    dtype: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    seq_local: int
    degree: int | None  # ulysses_degree passed to the call (None: the default)
    mapped: bool = False  # run on the explicit Topology from MAPPING

    @property
    def id(self) -> str:
        mask = "causal" if self.causal else "full"
        where = f"P{self.world}" + (f"n{self.world // self.rpn}x{self.rpn}" if self.rpn else "")
        deg = "" if self.degree is None else f"-u{self.degree}"
        mapped = "-mapped" if self.mapped else ""
        return (f"{where}-{self.algorithm}{deg}{mapped}-{mask}-{self.dtype}-b{self.batch}h{self.heads}"
                f"kv{self.kv_heads}d{self.head_dim}n{self.seq_local}")

    @property
    def ranks_per_node(self) -> int:
        """Of the topology the call runs on."""
        return 2 if self.mapped else (self.rpn or self.world)

    @property
    def ulysses_degree(self) -> int | None:
        """The degree the call must use."""
        if self.algorithm == "ulysses":
            return self.world
        if self.algorithm.startswith("usp"):
            return self.degree or self.ranks_per_node
        return None


def hier_cases(world: int, rpn: int) -> list[HierCase]:
    default = rpn or world
    runs = [(a, None, False) for a in HIER_ALGOS]
    runs += [(a, u, False) for a in ("usp", "usp-ringx") for u in range(1, world + 1)
             if world % u == 0 and u != default]
    if world == len(MAPPING) and not rpn:
        runs += [(a, None, True) for a in HIER_ALGOS]
    return [HierCase(world, rpn, a, c, dt, b, h, hk, d, n, u, m)
            for a, u, m in runs for c in (False, True) for (dt, b, h, hk, d, n) in SHAPES]


def expected_ledger(case: HierCase) -> tuple[dict, dict]:
    """(calls, sent, received) per op, forward and backward, from each schedule's formula.

    With P ranks on N nodes of L, e = element size, per-rank Q = |q| = O = |out|, KV = |k| + |v|,
    LSE = |lse| (the accumulation dtype is the input dtype here):
      ringx3b   fwd: all_gather across nodes (send KV, recv (N-1) KV), then within (send N KV,
                     recv (L-1) N KV)
                bwd: the same gathers; reduce_scatter within (send (L-1) N dKV, recv N dKV), then
                     across (send (N-1) dKV, recv dKV)
      Ulysses degree u, ring R = P/u, a = (u-1)/u, K/V replicated f = u / gcd(kv_heads, u) times:
      ulysses/usp/usp-ringx  fwd: 4 all_to_all (q, kv, out, lse): a (Q + f KV + O + LSE) each way
                             bwd: 3 all_to_all (dout, dq, dkv): a (O + Q + f KV)
                and across the R groups, on head-sharded K/V of the same f KV bytes:
      usp       fwd: 2(R-1) sends of K or V: (R-1) f KV     bwd: (R-1) f KV + R f dKV (dK/dV travel home)
      usp-ringx fwd: all_gather (f KV, (R-1) f KV)           bwd: again + reduce_scatter ((R-1) f dKV, f dKV)
    A level with one rank moves (and records) nothing.
    """
    P, e, b, n, d = case.world, (8 if case.dtype == "float64" else 4), case.batch, case.seq_local, case.head_dim
    Q = O = b * n * case.heads * d * e  # noqa: E741 (the formula's names)
    KV = 2 * b * n * case.kv_heads * d * e
    LSE = b * case.heads * n * e
    fwd: dict[str, list[int]] = {}
    bwd: dict[str, list[int]] = {}

    def add(ledger, op, sent, received, calls=1):
        c = ledger.setdefault(op, [0, 0, 0])
        c[0] += calls
        c[1] += sent
        c[2] += received

    if case.algorithm == "ringx3b":
        L = case.ranks_per_node
        N = P // L
        for ledger in (fwd, bwd):
            if N > 1:
                add(ledger, "all_gather", KV, (N - 1) * KV)
            if L > 1:
                add(ledger, "all_gather", N * KV, (L - 1) * N * KV)
        if L > 1:
            add(bwd, "reduce_scatter", (L - 1) * N * KV, N * KV)
        if N > 1:
            add(bwd, "reduce_scatter", (N - 1) * KV, KV)
    else:
        u = case.ulysses_degree
        R, f = P // u, u // math.gcd(case.kv_heads, u)
        if u > 1:
            for size in (Q, f * KV, O, LSE):
                add(fwd, "all_to_all", size - size // u, size - size // u)
            for size in (O, Q, f * KV):
                add(bwd, "all_to_all", size - size // u, size - size // u)
        if R > 1 and case.algorithm == "usp":
            add(fwd, "send", (R - 1) * f * KV, 0, 2 * (R - 1))
            add(fwd, "recv", 0, (R - 1) * f * KV, 2 * (R - 1))
            add(bwd, "send", (2 * R - 1) * f * KV, 0, 2 * (2 * R - 1))
            add(bwd, "recv", 0, (2 * R - 1) * f * KV, 2 * (2 * R - 1))
        if R > 1 and case.algorithm == "usp-ringx":
            for ledger in (fwd, bwd):
                add(ledger, "all_gather", f * KV, (R - 1) * f * KV)
            add(bwd, "reduce_scatter", (R - 1) * f * KV, f * KV)
    return ({op: tuple(v) for op, v in fwd.items()}, {op: tuple(v) for op, v in bwd.items()})
