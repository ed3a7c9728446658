"""double-ring x masking x 1-4 ranks (and 2 simulated nodes x 2) x (MHA, GQA, MQA), every inner ring size,
against float64; ledgers against the formula and the traced schedule; one-line errors for bad inner rings and
uneven nodes on every rank; each algorithm's measured peak memory against ``ringx.memory.peak_formula``; a
call recorded on the timeline gives identical results and well-formed marks. (bidir-ring's flat matrix is in
tests/test_attention_mpi.py; here it also runs on the simulated nodes.)
One ``mpiexec`` launch per (ranks, ranks per node).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

import ringx
from ringx import memory
from tests.hier_cases import QUANTITIES
from tests.mpi import matrix_launcher, rows_of
from tests.rings_cases import LAUNCHES, MEMORY_SHAPE, TOL, RingCase, expected_ledger, ring_cases

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="session")
def launched(tmp_path_factory):
    """(ranks, ranks per node) -> (case id -> per-rank rows, per-rank extras)."""
    return matrix_launcher(tmp_path_factory, "tests/workers/rings_cases.py", SEED)


ALL = [c for w, rpn in LAUNCHES for c in ring_cases(w, rpn)]


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_matches_float64_reference(launched, case: RingCase):
    for row in rows_of(launched, case):
        for q in QUANTITIES:
            assert row["errors"][q] <= TOL[case.dtype], (
                f"rank {row['rank']} {q}: error {row['errors'][q]:.3e} (seed {row['seed']})")
        assert row["dtypes"] == [f"torch.{case.dtype}"] * 4
        assert row["layout"] == ("zigzag" if case.causal else "contiguous")


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_ledger_matches_formula_and_trace(launched, case: RingCase):
    from ringx.schedule import trace

    fwd, bwd = expected_ledger(case)
    for row in rows_of(launched, case):
        for name, expected, got in (("forward", fwd, row["forward"]), ("backward", bwd, row["backward"])):
            moved = {op: (s["calls"], s["sent"], s["received"]) for op, s in got.items()}
            assert moved == expected, f"rank {row['rank']} {name} ledger {moved} != formula {expected}"
        tr = trace(case.algorithm, case.causal, case.world, row["rank"], batch=case.batch,
                   seq=case.seq_local * case.world, heads=case.heads, kv_heads=case.kv_heads,
                   head_dim=case.head_dim, dtype=getattr(torch, case.dtype), ranks_per_node=case.ranks_per_node,
                   inner_ring=case.inner)
        assert tr.ledger_forward.as_dict() == row["forward"], f"rank {row['rank']} forward"
        assert tr.ledger_backward.as_dict() == row["backward"], f"rank {row['rank']} backward"


@pytest.mark.parametrize("world,rpn", LAUNCHES)
def test_bad_inner_rings_and_uneven_nodes_raise_on_every_rank(launched, world, rpn):
    extras = launched(world, rpn)[1]
    for r, ex in enumerate(extras):
        raised = ex["raised"]
        assert "does not divide" in raised["inner_not_dividing"], raised
        assert "positive integer" in raised["inner_zero"]
        assert "inner_ring applies to double-ring, not to ring" in raised["inner_on_ring"]
        if world == 4:
            assert "different numbers of ranks" in raised["uneven_nodes"]
        assert all("\n" not in m for m in raised.values()), "errors are one line"
        assert ex["healthy_after"], f"rank {r}: the group is unusable after the bad calls"
    assert len({json.dumps(ex["raised"], sort_keys=True) for ex in extras}) == 1, "ranks raised differently"


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_peak_memory_within_formula(launched, world):
    """Every rank's measured peak (tensors a call allocates) is at most the formula, and the rings' peak does not
    grow with the ranks at a fixed local length, while ringx3's gathered buffers do."""
    b, n, h, hk, d = MEMORY_SHAPE
    s = memory.sizes(b, n, h, hk, d, torch.float32)
    extras = launched(world, 0)[1]
    for name in ringx.ALGORITHMS:
        for i, backward in enumerate((False, True)):
            bound = memory.peak_formula(name, world, s, backward=backward, kv_heads=hk)
            floor = s.A + s.L + (s.A + s.AKV if backward else 0)  # what it returns (out, lse, grads)
            peak = max(ex["peaks"][name][i] for ex in extras)
            assert floor <= peak <= bound, f"{name} {'fwd+bwd' if backward else 'fwd'}: {peak} not in [{floor}, " \
                                           f"{bound}]"


def test_ring_peaks_do_not_grow_with_ranks_but_gathers_do(launched):
    at = {w: {n: max(ex["peaks"][n][1] for ex in launched(w, 0)[1]) for n in ringx.ALGORITHMS} for w in (3, 4)}
    # from 3 ranks on a ring uses both its receive sets (bidir-ring's streams both need 5 ranks: its bound above)
    for name in ("ring", "zigzag", "stripe", "double-ring"):
        assert at[4][name] <= at[3][name] * 1.05, (name, at)
    # ringx3: the least any rank holds (a rank's peak can carry a few buffers more, from when its collectives end)
    low = {w: min(ex["peaks"]["ringx3"][1] for ex in launched(w, 0)[1]) for w in (3, 4)}
    assert low[4] > low[3] * 1.2, low


def test_traced_call_is_identical_and_marks_are_well_formed(launched):
    for r, ex in enumerate(launched(2, 0)[1]):
        for algo, t in ex["traced"].items():
            assert t["same"], f"rank {r} {algo}: recording changed the results"
            assert not t["after_on"]
            marks = t["marks"]
            cats = {m["cat"] for m in marks}
            assert {"compute", "post", "comm"} <= cats, (algo, cats)
            assert all(0 <= m["start_s"] <= m["end_s"] for m in marks)
            assert {m["op"] for m in marks if m["cat"] == "compute"} == {"fwd", "bwd"}
            assert all(m["step"] >= 0 and "of rank" in m["block"] for m in marks if m["cat"] == "compute")
            assert 0.0 <= t["overlap"] <= 1.0
            if algo in ("ring", "bidir-ring"):
                assert "wait" in cats and all(m["op"] == "sendrecv" for m in marks if m["cat"] == "comm")
