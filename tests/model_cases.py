"""The end-to-end model matrix (``bench model``'s step), shared by pytest and the MPI worker.

Every algorithm of the registry x {tiny decoder (causal), tiny ViT (non-causal)} x 1-4 ranks, the Ulysses
algorithms at every degree that divides the ranks (the zigzag-u{U} layouts), a few steps with activation
checkpointing, and two deliberately wrong steps (local RoPE positions, labels shifted after sharding) that
the check must catch. Each is one float64 step: loss and every parameter gradient against the unsharded
float64 model. The 4-rank launch simulates 2 nodes of 2 ranks, so ringx3b's two-level gathers really run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringx_drivers.drivers.step import CHECK_TOLERANCE

WORLDS = (1, 2, 3, 4)
RANKS_PER_NODE = {4: 2}  # launches with simulated nodes (RINGX_RANKS_PER_NODE)
PRESETS = ("tiny", "tiny-vit")
SEQ = 48  # divisible by 2P for P = 1..4
BATCH = 2
TOL = CHECK_TOLERANCE
WRONG = ("local-positions", "shift-after-shard")  # steps the check must reject (P >= 2)


@dataclass(frozen=True)
class ModelCase:
    world: int
    preset: str
    algorithm: str
    degree: int | None = None  # explicit Ulysses degree (usp, usp-ringx)
    checkpoint: bool = False
    wrong: str = ""  # a deliberately wrong step

    @property
    def id(self) -> str:
        parts = [f"P{self.world}", self.preset, self.algorithm]
        if self.degree is not None:
            parts.append(f"u{self.degree}")
        if self.checkpoint:
            parts.append("ckpt")
        if self.wrong:
            parts.append(self.wrong)
        return "-".join(parts)


def model_cases(world: int) -> list[ModelCase]:
    import ringx

    out = []
    for preset in PRESETS:
        for name in ringx.algorithms.names():
            out.append(ModelCase(world, preset, name))
            if ringx.ALGORITHMS[name].ulysses == "node":
                out += [ModelCase(world, preset, name, u) for u in range(1, world + 1) if world % u == 0]
    out += [ModelCase(world, "tiny", "ringx4o", checkpoint=True), ModelCase(world, "tiny-vit", "ring", checkpoint=True),
            ModelCase(world, "tiny", "usp", degree=1 if world > 1 else None, checkpoint=True)]
    if world > 1:
        out += [ModelCase(world, "tiny", "zigzag", wrong=w) for w in WRONG]
    return out
