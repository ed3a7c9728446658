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
from ..layouts import Block, block_plan, gathered_plan, ring_steps, shared_rounds
from ..mask import Mask
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
    mask: Mask | None = None  # None: Mask.causal() or Mask.full() after ``causal``
    inner_ring: int | None = None  # double-ring: ranks of each inner ring
    sinks: Tensor | None = None  # per-head sink logits, merged into the final result (schedules that keep their
    # own copy of it for the backward, Ulysses, merge them into that copy too)

    def __post_init__(self):
        if self.mask is None:
            self.mask = Mask.causal() if self.causal else Mask.full()
        # what the plans are asked with: the bool for full/causal (their plans and caches as ever), else the mask
        self._masking = self.mask if self.mask.plain is None else self.mask.plain

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
        return block_plan(self.layout, self.world, q_rank, kv_rank, seq_local, self._masking)

    def gathered_plan(self, seq_local: int) -> tuple[Block, ...]:
        """Visible sub-blocks of this rank's queries against the whole sequence."""
        return gathered_plan(self.layout, self.world, self.rank, seq_local, self._masking)

    def ring_steps(self, seq_local: int) -> int:
        """How many ring steps (K/V blocks held, one's own included) some rank needs: P unless the mask lets
        every rank stop earlier (a window narrower than a shard, short documents)."""
        return ring_steps(self.layout, self.world, seq_local, self._masking)

    def shared_rounds(self, seq_local: int, queries: bool) -> tuple[bool, ...]:
        """Per root rank: does any other rank see something of the root's keys (of its queries, ``queries``)?
        A round nobody else needs moves nothing."""
        return shared_rounds(self.layout, self.world, seq_local, self._masking, queries)


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
