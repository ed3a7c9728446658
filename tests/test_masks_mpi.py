"""Every algorithm x every mask of tests/mask_cases.py (fixed ones, and fresh random ones of every kind) x 1-4 ranks
(and 2 simulated nodes x 2) against a dense masked float64 softmax, forward and backward, every rank's shard; the
ledgers against the traced schedule; what a window saves under ring; bad masks raise alike on every rank.

One ``mpiexec`` launch per (ranks, ranks per node) runs its whole matrix; each case is asserted here.
"""

from __future__ import annotations

import os

import pytest
import torch

from ringx import ALGORITHMS
from ringx.schedule import trace
from tests.mask_cases import QUANTITIES, SEQ_LOCAL, TOL, MaskCase, all_cases
from tests.mpi import matrix_launcher, rows_of

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
ALL = all_cases(SEED)  # the fixed masks, and random ones drawn from the seed


@pytest.fixture(scope="session")
def launched(tmp_path_factory):
    """(ranks, ranks per node) -> (case id -> per-rank rows, per-rank extras or None off one node)."""
    return matrix_launcher(tmp_path_factory, "tests/workers/mask_cases.py", SEED, extras="flat")


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_exact_against_dense_masked_float64(launched, case: MaskCase):
    for row in rows_of(launched, case):
        for q in QUANTITIES:
            assert row["errors"][q] <= TOL, f"rank {row['rank']} {q}: {row['errors'][q]:.3e} (seed {row['seed']})"
        assert row["mask"] == str(case.mask), "the worker drew another mask"


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_traced_schedule_moves_what_the_run_moved(launched, case: MaskCase):
    for row in rows_of(launched, case):
        tr = trace(case.algorithm, None, case.world, row["rank"], batch=case.batch, seq=SEQ_LOCAL * case.world,
                   heads=case.heads, kv_heads=case.kv_heads, head_dim=case.head_dim, dtype=torch.float64,
                   ranks_per_node=case.rpn or None, mask=case.mask)
        assert tr.ledger_forward.as_dict() == row["forward"], f"rank {row['rank']} forward"
        assert tr.ledger_backward.as_dict() == row["backward"], f"rank {row['rank']} backward"


def _sent(ledger: dict) -> int:
    return sum(op["sent"] for op in ledger.values())


def test_ring_with_a_window_of_a_third_of_a_shard_moves_at_most_half_the_causal_bytes(launched):
    """The issue's done-criterion, on the real ledgers of 4 ranks: only the neighbour's K/V travel (1 of 3 steps)."""
    case = next(c for c in ALL if (c.world, c.rpn, c.algorithm, c.mask_name) == (4, 0, "ring", "window-third"))
    causal = [trace("ring", True, 4, r, batch=case.batch, seq=SEQ_LOCAL * 4, heads=case.heads,
                    kv_heads=case.kv_heads, head_dim=case.head_dim, dtype=torch.float64) for r in range(4)]
    kv = 2 * case.batch * SEQ_LOCAL * case.kv_heads * case.head_dim * 8
    for row in rows_of(launched, case):
        full = causal[row["rank"]].ledger_forward.sent
        assert full == 3 * kv
        assert _sent(row["forward"]) == kv <= full / 2
        # backward: one K/V shift, one dK/dV hop on and one straight home (causal: 3 K/V + 4 dK/dV)
        assert _sent(row["backward"]) == 3 * kv < causal[row["rank"]].ledger_backward.sent == 7 * kv


def test_broadcast_rounds_nobody_else_needs_move_nothing(launched):
    """ringx1 (contiguous) under a causal window of a third of a shard, 4 ranks: rank 0's queries see only its own
    keys, so its Q round moves nothing (3 of 4 rounds); in the backward the last rank's keys are seen by it alone,
    so its K/V round moves nothing (3 of 4). (ringx4's zigzag layout needs every round: chunk P of the last rank
    is seen by chunk P+1 of rank P-2.)"""
    case = next(c for c in ALL if (c.world, c.rpn, c.algorithm, c.mask_name) == (4, 0, "ringx1", "window-third"))
    kv = 2 * case.batch * SEQ_LOCAL * case.kv_heads * case.head_dim * 8
    for row in rows_of(launched, case):
        assert row["forward"]["broadcast"]["calls"] == 3  # Q of roots 1..3
        assert row["backward"]["broadcast"]["calls"] == 3 * 2  # K and V of roots 0..2
        assert row["backward"]["broadcast"]["sent"] == (kv if row["rank"] < 3 else 0)
        assert row["backward"]["reduce"]["calls"] == 3
    case = next(c for c in ALL if (c.world, c.rpn, c.algorithm, c.mask_name) == (4, 0, "ringx4", "window-third"))
    for row in rows_of(launched, case):
        assert row["forward"]["broadcast"]["calls"] == 4 * 2


@pytest.mark.parametrize("world", [2, 3, 4])
def test_bad_masks_raise_the_same_one_line_error_on_every_rank(launched, world):
    bad = launched(world, 0)[1]
    for name in bad[0]["raised"]:
        msgs = {b["raised"][name] for b in bad}
        assert len(msgs) == 1 and None not in msgs, (name, msgs)
        assert "\n" not in msgs.pop()
    raised = bad[0]["raised"]
    assert "mask differs across ranks" in raised["differs"]
    assert "document lengths sum to 12" in raised["lengths_sum"]
    assert "exactly one of mask=" in raised["both"] and "exactly one of mask=" in raised["neither"]
    assert "cannot read mask 'window:-1'" in raised["text"]
    assert all(b["good"] for b in bad)


def test_every_algorithm_is_in_the_matrix():
    assert {c.algorithm for c in ALL} == set(ALGORITHMS)
    assert {c.algorithm for c in ALL if c.rpn} == {a for a, x in ALGORITHMS.items() if x.topology}
