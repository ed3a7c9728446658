"""The hierarchical pieces that need no process group: USP's layout, Topology, the registry, and the
traced schedules at sizes the MPI tests cannot launch here (8 and 12 ranks on 2-4 simulated nodes)."""

from __future__ import annotations

import pytest
import torch

import ringx
from ringx.layouts import global_divisor, local_divisor, shard, unshard
from ringx.schedule import trace
from ringx.topology import Topology
from tests.hier_cases import HIER_ALGOS, HierCase, expected_ledger


def positions(layout: str, rank: int, world: int, seq: int) -> list[int]:
    return shard(torch.arange(seq).view(1, seq), layout, rank, world)[0].tolist()


@pytest.mark.parametrize("world,u", [(1, 1), (2, 1), (2, 2), (4, 2), (6, 2), (6, 3), (8, 4)])
def test_ulysses_zigzag_gives_each_group_a_zigzag_pair(world, u):
    seq = 4 * world
    layout = f"zigzag-u{u}"
    for g in range(world // u):  # the tokens Ulysses group g holds, in rank order, are ring rank g's zigzag pair
        held = [t for r in range(g * u, (g + 1) * u) for t in positions(layout, r, world, seq)]
        assert held == positions("zigzag", g, world // u, seq)
    x = torch.randn(2, seq, 3, 5)
    assert torch.equal(unshard([shard(x, layout, r, world) for r in range(world)], layout), x)
    assert local_divisor(layout) == 2 and global_divisor(layout, world) == 2 * world


def test_ulysses_zigzag_ends_are_zigzag_and_contiguous():
    for r in range(4):
        assert positions("zigzag-u1", r, 4, 16) == positions("zigzag", r, 4, 16)
        assert positions("zigzag-u4", r, 4, 16) == positions("contiguous", r, 4, 16)


def test_ulysses_zigzag_rejects_bad_degrees_and_the_template():
    with pytest.raises(ValueError, match="Ulysses degree 3 must divide the 4 ranks"):
        shard(torch.zeros(1, 16, 1, 1), "zigzag-u3", 0, 4)
    with pytest.raises(ValueError, match="needs the Ulysses degree"):
        shard(torch.zeros(1, 16, 1, 1), "zigzag-u{u}", 0, 4)
    assert global_divisor("zigzag-u{u}", 4) == 8  # planning works before the degree is known


def test_layout_follows_the_degree(monkeypatch):
    usp = ringx.ALGORITHMS["usp"]
    assert usp.layout(True, 2) == "zigzag-u2" and usp.layout(False, 2) == "contiguous"
    monkeypatch.delenv("RINGX_RANKS_PER_NODE", raising=False)
    assert usp.layout(True) == "zigzag-u{u}"  # no process group, nothing known: the template
    monkeypatch.setenv("RINGX_RANKS_PER_NODE", "4")
    assert usp.layout(True) == "zigzag-u4"
    assert ringx.ALGORITHMS["ringx3b"].layout(True) == "zigzag"


def test_topology_from_any_mapping():
    t = Topology(["b", "a", "a", "b"], 2, build=False)  # labels: nodes numbered by their lowest rank
    assert t.node_of == (0, 1, 1, 0) and t.node_members == ((0, 3), (1, 2))
    assert (t.nodes, t.ranks_per_node, t.node, t.local_rank) == (2, 2, 1, 1)
    assert t.inter_members(0) == (0, 1) and t.inter_members(1) == (2, 3)
    assert t.intra.ranks == (1, 2) and t.intra.nodes == 1 and t.intra.pg is None
    assert t.inter.ranks == (2, 3) and t.inter.nodes == 2
    uly, ring = t.grid(2)
    assert uly.ranks == (2, 3) and uly.nodes == 2 and ring.ranks == (0, 2)
    with pytest.raises(ValueError, match="Ulysses degree 3 must divide the 4 ranks"):
        t.grid(3)


def test_topology_grid_reuses_the_node_groups_and_rejects_uneven_nodes():
    t = Topology.simulated(8, 5, 4)
    assert t.grid(4) is t.grid(4) and t.grid(4) == (t.intra, t.inter)
    assert t.grid(8)[0].ranks == tuple(range(8)) and t.grid(8)[1].ranks == (5,)
    with pytest.raises(ValueError, match="nodes hold different numbers of ranks"):
        _ = Topology([0, 0, 0, 1], 0, build=False).ranks_per_node
    with pytest.raises(ValueError, match="must divide the 6 ranks"):
        Topology.simulated(6, 0, 4)


def test_registry_knows_the_hierarchical_algorithms():
    for name in HIER_ALGOS:
        a = ringx.algorithms.get(name, True)
        assert a.topology and a.supports(False) and a.supports(True) and a.pattern and a.summary
    assert ringx.algorithms.ulysses_names() == ["usp", "usp-ringx"]
    assert ringx.ALGORITHMS["ulysses"].degree(8, None, 4) == 8 and ringx.ALGORITHMS["usp"].degree(8, None, 4) == 4
    assert ringx.ALGORITHMS["usp"].degree(8, 2, 4) == 2 and ringx.ALGORITHMS["ringx3b"].degree(8, None, 4) is None


# (algorithm, ranks, ranks per node, Ulysses degree) beyond what 2 cores launch
SCALE = [(a, w, rpn, None) for a in HIER_ALGOS for w, rpn in ((8, 4), (8, 2), (12, 4), (12, 3))]
SCALE += [(a, w, rpn, u) for a in ("usp", "usp-ringx") for w, rpn, u in ((8, 4, 2), (8, 2, 8), (12, 3, 6))]


@pytest.mark.parametrize("algorithm,world,rpn,degree", SCALE)
@pytest.mark.parametrize("causal", [False, True])
def test_traced_ledgers_follow_the_formula_at_scale(algorithm, world, rpn, degree, causal):
    case = HierCase(world, rpn, algorithm, causal, "float32", 1, 24, 2, 16, 8, degree)
    for rank in range(world):
        tr = trace(algorithm, causal, world, rank, batch=1, seq=8 * world, heads=24, kv_heads=2, head_dim=16,
                   dtype=torch.float32, ranks_per_node=rpn, ulysses_degree=degree)
        fwd, bwd = expected_ledger(case)
        for got, want in ((tr.ledger_forward, fwd), (tr.ledger_backward, bwd)):
            assert {op: (s["calls"], s["sent"], s["received"]) for op, s in got.as_dict().items()} == want


@pytest.mark.parametrize("algorithm", HIER_ALGOS)
def test_traced_sub_group_collectives_match_across_their_members(algorithm):
    """What a cost model needs: each (group, index) is one collective, the same op and size on all its
    members, and the events say whether it stays within a node."""
    world, rpn = 8, 4
    traces = [trace(algorithm, True, world, r, batch=1, seq=64, heads=8, kv_heads=8, head_dim=16, ranks_per_node=rpn)
              for r in range(world)]
    for pass_ in ("forward", "backward"):
        seen: dict[tuple, set] = {}
        for r, t in enumerate(traces):
            for e in getattr(t, pass_):
                if e.kind == "comm":
                    assert not e.group or r in e.group
                    seen.setdefault((e.group, e.index), set()).add((r, e.op, e.nbytes, e.nodes))
        for (group, _), got in seen.items():
            assert {r for r, *_ in got} == set(group or range(world)), "a member skipped the collective"
            (what,) = {tuple(rest) for _, *rest in got}  # one op and size on every member
            assert what[2] == (len({m // rpn for m in group}) if group else 0)
    ops = {(e.op, e.nodes) for t in traces for e in t.forward + t.backward if e.kind == "comm"}
    if algorithm == "usp":
        assert ops == {("all_to_all", 1), ("sendrecv", 2)}  # Ulysses within the node, the ring across
    if algorithm == "ringx3b":
        assert ops == {("all_gather", 1), ("all_gather", 2), ("reduce_scatter", 1), ("reduce_scatter", 2)}
