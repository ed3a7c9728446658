"""Every algorithm x every mask of tests/mask_cases.py (fixed ones, and fresh random ones of every kind) x 1-4 ranks
(and 2 simulated nodes x 2), with and without attention sinks, against a dense masked float64 softmax, forward and
backward, every rank's shard and its share of the sinks' gradient; the ledgers against the traced schedule (sinks
move nothing); what a window and the new masks save; bad masks raise alike on every rank.

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
    """out, LSE, dQ, dK, dV of every rank's shard; with sinks also the rank's share of the sinks' gradient."""
    for row in rows_of(launched, case):
        assert set(row["errors"]) == set(QUANTITIES) | ({"dsinks"} if case.sinks else set())
        for q, err in row["errors"].items():
            assert err <= TOL, f"rank {row['rank']} {q}: {err:.3e} (seed {row['seed']})"
        assert row["mask"] == str(case.mask), "the worker drew another mask"


SINKS = [c for c in ALL if c.sinks]


def test_the_ranks_shares_of_the_sinks_gradient_sum_to_the_whole(launched):
    """A replicated parameter's gradient under CP: each rank holds its rows' share, and the all-reduce a training
    framework makes of it gives the dense float64 gradient of the sinks."""
    for case in SINKS:
        rows = rows_of(launched, case)
        whole = torch.tensor(rows[0]["dsinks_whole"], dtype=torch.float64)
        summed = sum(torch.tensor(r["dsinks"], dtype=torch.float64) for r in rows)
        assert (summed - whole).abs().max() <= TOL * max(1.0, whole.abs().max().item()), case.id


def test_sinks_move_nothing(launched):
    """The sink is the last merge of each row's final result: every case run with sinks moved exactly what the traced
    schedule without sinks moves (which the cases without sinks equal, test_traced_schedule_moves_what_the_run_moved).
    Every algorithm runs with sinks, MHA and GQA, at every launch."""
    for case in SINKS:
        for row in rows_of(launched, case):
            tr = trace(case.algorithm, None, case.world, row["rank"], batch=case.batch, seq=SEQ_LOCAL * case.world,
                       heads=case.heads, kv_heads=case.kv_heads, head_dim=case.head_dim, dtype=torch.float64,
                       ranks_per_node=case.rpn or None, mask=case.mask)
            assert (tr.ledger_forward.as_dict(), tr.ledger_backward.as_dict()) == (row["forward"], row["backward"])
    assert {(c.world, c.rpn, c.algorithm, c.kv_heads < c.heads) for c in SINKS} == {
        (c.world, c.rpn, c.algorithm, gqa) for c in ALL for gqa in (False, True)}


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


def test_the_new_masks_move_less_where_they_allow_it(launched):
    """Measured bytes at 4 ranks (the real ledgers, every rank): shared prefixes packed one group per contiguous
    shard move nothing under the contiguous-layout algorithms, where causal attention moves every block; prefix-LM
    with a prefix reaching a little into the second shard lets ringx1's backward skip the last rank's K/V round,
    which no other rank sees (3 of 4 rounds; causal broadcasts all 4)."""
    for algo in ("ring", "ringx1", "ringx2o"):
        case = next(c for c in ALL if (c.world, c.rpn, c.algorithm, c.mask_name) == (4, 0, algo, "shared-per-shard"))
        for row in rows_of(launched, case):
            causal = trace(algo, True, 4, row["rank"], batch=case.batch, seq=SEQ_LOCAL * 4, heads=case.heads,
                           kv_heads=case.kv_heads, head_dim=case.head_dim, dtype=torch.float64)
            assert _sent(row["forward"]) == _sent(row["backward"]) == 0, (algo, row["rank"])
            assert causal.ledger_forward.sent > 0 and causal.ledger_backward.sent > 0
    case = next(c for c in ALL if (c.world, c.rpn, c.algorithm, c.mask_name) == (4, 0, "ringx1", "prefix"))
    kv = 2 * case.batch * SEQ_LOCAL * case.kv_heads * case.head_dim * 8
    moved = causal_moved = 0
    for row in rows_of(launched, case):
        assert row["backward"]["broadcast"]["calls"] == 3 * 2  # K and V of roots 0..2
        assert row["backward"]["broadcast"]["sent"] == (kv if row["rank"] < 3 else 0)
        causal = trace("ringx1", True, 4, row["rank"], batch=case.batch, seq=SEQ_LOCAL * 4, heads=case.heads,
                       kv_heads=case.kv_heads, head_dim=case.head_dim, dtype=torch.float64)
        assert causal.ledger_backward.ops["broadcast"].calls == 4 * 2
        moved, causal_moved = moved + _sent(row["backward"]), causal_moved + causal.ledger_backward.sent
    assert moved < causal_moved


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
