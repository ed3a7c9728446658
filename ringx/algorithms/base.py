"""What every schedule receives: the group, the kernel, the layout and masking.

The hierarchical schedules also get the group's topology (which ranks share
a node; flat schedules ignore it), the Ulysses degree, and a stash shared by
one call's forward and backward (what the forward keeps for the backward).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import timeline
from ..comm import Comm
from ..kernels import Kernel
from ..layouts import Block, block_plan, gathered_plan
from ..topology import Topology

Tensor = torch.Tensor


@dataclass
class Ctx:
    comm: Comm
    kernel: Kernel
    layout: str
    causal: bool
    scale: float
    overlap: bool
    topology: Topology | None = None
    ulysses_degree: int | None = None
    stash: dict = field(default_factory=dict)
    inner_ring: int | None = None  # double-ring: ranks of each inner ring

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def world(self) -> int:
        return self.comm.world

    def plan(self, q_rank: int, kv_rank: int, seq_local: int) -> tuple[Block, ...]:
        """Visible sub-blocks of ``q_rank``'s queries against ``kv_rank``'s keys."""
        if timeline.ON:
            timeline.pair(q_rank, kv_rank)
        return block_plan(self.layout, self.world, q_rank, kv_rank, seq_local, self.causal)

    def gathered_plan(self, seq_local: int) -> tuple[Block, ...]:
        """Visible sub-blocks of this rank's queries against the whole sequence."""
        return gathered_plan(self.layout, self.world, self.rank, seq_local, self.causal)


class InFlight:
    """Async reductions still running; at most ``depth`` are kept (double buffering)."""

    def __init__(self, depth: int = 2):
        self.depth = depth
        self.items: list = []

    def push(self, pending) -> None:
        self.items.append(pending)
        while len(self.items) > self.depth:
            self.items.pop(0).wait()

    def drain(self) -> None:
        for p in self.items:
            p.wait()
        self.items = []
