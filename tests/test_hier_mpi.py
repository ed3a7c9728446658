"""ringx3b, ulysses, usp, usp-ringx x masking x 1-4 ranks (and 2 simulated nodes x 2) x (MHA, GQA, MQA)
against float64 full attention; their ledgers against each schedule's formula and the traced schedule;
clear errors for heads and degrees that do not fit; process groups built once.

One ``mpiexec`` launch per (ranks, ranks per node) runs the whole matrix (importing torch costs
seconds per rank); each case is then asserted here on every rank's shard.
"""

from __future__ import annotations

import os

import pytest

from tests.hier_cases import GROUPS_BUILT, LAUNCHES, QUANTITIES, TOL, HierCase, expected_ledger, hier_cases
from tests.mpi import matrix_launcher, rows_of

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="session")
def launched(tmp_path_factory):
    """(ranks, ranks per node) -> (case id -> per-rank rows, per-rank extras)."""
    return matrix_launcher(tmp_path_factory, "tests/workers/hier_cases.py", SEED)


ALL = [c for w, rpn in LAUNCHES for c in hier_cases(w, rpn)]


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_matches_float64_reference(launched, case: HierCase):
    for row in rows_of(launched, case):
        for q in QUANTITIES:
            err = row["errors"][q]
            assert err <= TOL[case.dtype], (
                f"rank {row['rank']} {q}: error {err:.3e} > {TOL[case.dtype]:.0e} (seed {row['seed']})")
        assert row["dtypes"] == [f"torch.{case.dtype}"] * 4
        assert row["kernel"] == "torch-cpu"
        # the call used the degree and layout the inputs were sharded in
        assert row["degree"] == (case.ulysses_degree or 0) and row["stats_layout"] == row["layout"]


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_ledger_matches_formula(launched, case: HierCase):
    fwd, bwd = expected_ledger(case)
    for row in rows_of(launched, case):
        for name, expected, got in (("forward", fwd, row["forward"]), ("backward", bwd, row["backward"])):
            moved = {op: (s["calls"], s["sent"], s["received"]) for op, s in got.items()}
            assert moved == expected, f"rank {row['rank']} {name} ledger {moved} != formula {expected}"


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_traced_schedule_matches_the_real_ledger(launched, case: HierCase):
    """The schedule traced on meta tensors (nodes of ranks_per_node ranks) moves what the real run moved."""
    import torch

    from ringx.schedule import trace

    for row in rows_of(launched, case):
        tr = trace(case.algorithm, case.causal, case.world, row["rank"], batch=case.batch,
                   seq=case.seq_local * case.world, heads=case.heads, kv_heads=case.kv_heads,
                   head_dim=case.head_dim, dtype=getattr(torch, case.dtype), ranks_per_node=case.ranks_per_node,
                   ulysses_degree=case.degree)
        assert tr.ledger_forward.as_dict() == row["forward"], f"rank {row['rank']} forward"
        assert tr.ledger_backward.as_dict() == row["backward"], f"rank {row['rank']} backward"


BAD = {  # heads P+1 on P ranks
    "ulysses_heads": "ulysses: {h} query heads do not divide by the Ulysses degree {P}; use usp/usp-ringx",
    "usp_default_heads": "usp: {h} query heads do not divide by the Ulysses degree {rpn}",
    "degree_not_dividing": "ulysses_degree={h} must be a positive integer dividing the {P} ranks",
    "degree_on_flat": "ulysses_degree applies to usp, usp-ringx, not to ringx3b",
    "simulated_topology": "topology must be made for this group, with process groups",
}


@pytest.mark.parametrize("world,rpn", LAUNCHES)
@pytest.mark.parametrize("call", BAD)
def test_bad_degrees_raise_one_clear_error_on_every_rank(launched, world, rpn, call):
    extras = launched(world, rpn)[1]
    expect = BAD[call].format(h=world + 1, P=world, rpn=rpn or world)
    if world == 1 and call in ("ulysses_heads", "usp_default_heads"):
        expect = None  # a degree of 1 splits nothing
    for rank, ex in enumerate(extras):
        got = ex["raised"][call]
        assert (got is None) if expect is None else (got is not None and expect in got), f"rank {rank}: {got}"
        assert ex["healthy_after"], f"rank {rank}: the group broke after the rejected calls"


@pytest.mark.parametrize("world,rpn", LAUNCHES)
def test_topology_and_groups_are_built_once(launched, world, rpn):
    for ex in launched(world, rpn)[1]:
        assert ex["topologies"] == 1  # the default group's topology, made once
        assert (ex["nodes"], ex["ranks_per_node"]) == ((world // rpn, rpn) if rpn else (1, world))
        assert ex["groups_built"] == GROUPS_BUILT[world, rpn]
        assert ex["groups_built_again"] == 0  # repeated calls reuse every group
