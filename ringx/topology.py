"""Which ranks of a process group share a node, and the sub-groups built on that.

A :class:`Topology` describes one process group (the *parent*: the default
group, or the ``group`` given to ``ringx.attention``): the node of each of its
ranks, this rank's node and local rank, and the sub-groups the hierarchical
algorithms communicate in:

- ``intra``: the ranks of my node;
- ``inter``: the ranks with my local rank, one on every node;
- ``rings(i)``: the inner and outer rings of ``double-ring``: inner rings of ``i``
  consecutive ranks of a node, outer rings of the ranks with the same position in
  their inner ring (with ``i`` = ranks per node, these are ``intra``/``inter``);
- ``grid(u)``: the Ulysses x ring split of ``ulysses``/``usp``/``usp-ringx``:
  Ulysses groups of ``u`` consecutive ranks, ring groups of the ranks ``u``
  apart (yunchang's USP does the same; with block placement, the default of
  srun and mpiexec, and ``u`` = ranks per node, these are ``intra``/``inter``).

Ranks are numbered within a node by their rank, nodes by their lowest rank.
Sub-groups are built once per topology and kept; building them is collective
(torch needs every rank of the default group to call ``new_group`` for every
group, in the same order), so it happens inside the first ``ringx.attention``
call that needs them, where every rank of the group takes part. The
hierarchical algorithms need the same number of ranks on every node.
:meth:`Topology.simulated` has the same shape without process groups: the
schedule tracer uses it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch.distributed as dist


@dataclass(frozen=True)
class SubGroup:
    """Some ranks of the parent group that communicate together."""

    ranks: tuple[int, ...]  # parent-group ranks, ascending: the sub-group's rank order
    nodes: int  # how many nodes its ranks live on (1: it stays within a node)
    pg: dist.ProcessGroup | None = None  # what torch.distributed calls take (None: the default group, or unbuilt)

    @property
    def size(self) -> int:
        return len(self.ranks)


class Topology:
    """The node layout of one process group, as seen from one of its ranks."""

    def __init__(self, node_of: Sequence[Hashable], rank: int, group: dist.ProcessGroup | None = None, *,
                 build: bool = True):
        """``node_of[r]``: any label of rank r's node. ``build=False`` makes no process groups (tracing)."""
        labels: dict[Hashable, int] = {}
        self.node_of = tuple(labels.setdefault(x, len(labels)) for x in node_of)  # nodes numbered by lowest rank
        self.world, self.rank, self.group, self._build = len(self.node_of), rank, group, build
        if not 0 <= rank < self.world:
            raise ValueError(f"rank {rank} is outside 0..{self.world - 1}")
        members: list[list[int]] = [[] for _ in labels]  # one pass over the ranks (thousands, when simulated)
        for r, n in enumerate(self.node_of):
            members[n].append(r)
        self.node_members = tuple(map(tuple, members))
        self.nodes = len(self.node_members)
        self.node = self.node_of[rank]
        self.local_rank = self.node_members[self.node].index(rank)
        self._groups: dict[object, tuple[SubGroup, SubGroup]] = {}

    @classmethod
    def simulated(cls, world: int, rank: int, ranks_per_node: int) -> Topology:
        """Nodes of ``ranks_per_node`` consecutive ranks, without process groups."""
        if ranks_per_node < 1 or world % ranks_per_node:
            raise ValueError(f"ranks_per_node={ranks_per_node} must divide the {world} ranks")
        return cls([r // ranks_per_node for r in range(world)], rank, build=False)

    @property
    def builds_groups(self) -> bool:
        """False for a simulated topology: its sub-groups have no process groups."""
        return self._build

    @property
    def ranks_per_node(self) -> int:
        sizes = sorted({len(m) for m in self.node_members})
        if len(sizes) > 1:
            raise ValueError(f"nodes hold different numbers of ranks ({', '.join(map(str, sizes))}); the "
                             "hierarchical algorithms need the same number on every node (RINGX_RANKS_PER_NODE "
                             "can declare a regular layout)")
        return sizes[0]

    def inter_members(self, local_rank: int) -> tuple[int, ...]:
        """The ranks with local rank ``local_rank``, one per node, ascending."""
        return tuple(sorted(m[local_rank] for m in self.node_members))

    @property
    def intra(self) -> SubGroup:
        """The ranks of my node."""
        return self._levels()[0]

    @property
    def inter(self) -> SubGroup:
        """The ranks with my local rank, one on every node."""
        return self._levels()[1]

    @property
    def intra_group(self) -> dist.ProcessGroup | None:
        return self.intra.pg

    @property
    def inter_group(self) -> dist.ProcessGroup | None:
        return self.inter.pg

    def _levels(self) -> tuple[SubGroup, SubGroup]:
        # intra and inter are built together, so every rank creates them in the same order
        if "levels" not in self._groups:
            rpn = self.ranks_per_node
            self._groups["levels"] = (self._partition(list(self.node_members)),
                                      self._partition([self.inter_members(j) for j in range(rpn)]))
        return self._groups["levels"]

    def grid(self, ulysses_degree: int) -> tuple[SubGroup, SubGroup]:
        """(my Ulysses group, my ring group) for Ulysses degree ``ulysses_degree``."""
        u = ulysses_degree
        if u < 1 or self.world % u:
            raise ValueError(f"Ulysses degree {u} must divide the {self.world} ranks")
        if u not in self._groups:
            uly = [tuple(range(i, i + u)) for i in range(0, self.world, u)]
            ring = [tuple(range(j, self.world, u)) for j in range(u)]
            reuse = (len({len(m) for m in self.node_members}) == 1 and set(uly) == set(self.node_members)
                     and set(ring) == {self.inter_members(j) for j in range(u)})
            self._groups[u] = self._levels() if reuse else (self._partition(uly), self._partition(ring))
        return self._groups[u]

    def ring_members(self, inner: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
        """(every inner ring, every outer ring) of double-ring with inner rings of ``inner`` ranks, each
        ascending; ValueError when ``inner`` does not divide the ranks per node (or the nodes differ)."""
        rpn = self.ranks_per_node
        if isinstance(inner, bool) or not isinstance(inner, int) or inner < 1 or rpn % inner:
            raise ValueError(f"double-ring: inner_ring={inner!r} must be a positive integer dividing the {rpn} "
                             f"ranks per node")
        inner_rings = [m[i:i + inner] for m in self.node_members for i in range(0, rpn, inner)]
        outer_rings = [tuple(sorted(ring[p] for ring in inner_rings)) for p in range(inner)]
        return inner_rings, outer_rings

    def rings(self, inner: int) -> tuple[SubGroup, SubGroup]:
        """(my inner ring, my outer ring) of double-ring (see :meth:`ring_members`), built once per size."""
        key = ("rings", inner)
        if key not in self._groups:
            inner_rings, outer_rings = self.ring_members(inner)
            if inner == self.ranks_per_node:  # the node and the ranks with my local rank: reuse those groups
                self._groups[key] = self._levels()
            else:
                self._groups[key] = (self._partition(inner_rings), self._partition(outer_rings))
        return self._groups[key]

    def _partition(self, parts: list[tuple[int, ...]]) -> SubGroup:
        """My part of a partition of the parent's ranks, with its process group (built collectively)."""
        mine = next(p for p in parts if self.rank in p)
        sub = SubGroup(mine, len({self.node_of[r] for r in mine}))
        if not self._build or len(mine) == 1:
            return sub  # single ranks never communicate: no group needed
        if len(parts) == 1:
            return SubGroup(mine, sub.nodes, self.group)

        def glob(r: int) -> int:
            return r if self.group is None else dist.get_global_rank(self.group, r)

        # torch wants every rank of the job in every new_group call, unless the parent is a
        # sub-group: then only members call, with a member-local barrier.
        whole = self.group is None or dist.get_world_size(self.group) == dist.get_world_size()
        pg = None
        for part in parts:
            if whole or part == mine:
                made = dist.new_group([glob(r) for r in part], use_local_synchronization=not whole)
                pg = made if part == mine else pg
        return SubGroup(mine, sub.nodes, pg)

    def __repr__(self) -> str:
        return (f"Topology(world={self.world}, nodes={self.nodes}, node={self.node}, local_rank={self.local_rank}, "
                f"node_members={self.node_members})")
