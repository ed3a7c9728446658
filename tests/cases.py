"""The multi-rank correctness matrix, shared by pytest and the MPI worker.

Tolerances: each quantity's error is max|x - ref| / max(1, max|ref|) against
the float64 reference. float64 runs must agree to 1e-10; float32 runs to
2e-5 (fp32 kernels accumulate in fp32 over at most a few hundred keys here).
"""

from __future__ import annotations

from dataclasses import dataclass

ALGOS = ("ring", "zigzag", "stripe", "bidir-ring", "ringx1", "ringx2", "ringx3", "ringx4", "ringx1o", "ringx2o",
         "ringx4o")
WORLDS = (1, 2, 3, 4)
TOL = {"float64": 1e-10, "float32": 2e-5}
QUANTITIES = ("out", "lse", "dq", "dk", "dv")


@dataclass(frozen=True)
class Case:
    world: int
    algorithm: str
    causal: bool
    dtype: str
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    seq_local: int

    @property
    def id(self) -> str:
        mask = "causal" if self.causal else "full"
        return (f"P{self.world}-{self.algorithm}-{mask}-{self.dtype}-b{self.batch}h{self.heads}"
                f"kv{self.kv_heads}d{self.head_dim}n{self.seq_local}")


SHAPES = (
    ("float64", 1, 4, 4, 64, 24),   # MHA
    ("float64", 2, 6, 2, 128, 16),  # GQA (groups of 3), batch 2, head_dim 128
    ("float32", 1, 4, 1, 64, 24),   # MQA in float32
)


def cases(world: int) -> list[Case]:
    return [Case(world, a, c, dt, b, h, hk, d, n)
            for a in ALGOS for c in (False, True) for (dt, b, h, hk, d, n) in SHAPES]
