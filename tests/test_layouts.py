"""Layouts and masking plans, checked against masks built from global token positions."""

from __future__ import annotations

import itertools

import pytest
import torch

from ringx.layouts import LAYOUTS, block_plan, gathered_plan, shard, unshard


def positions(layout: str, rank: int, world: int, seq: int) -> torch.Tensor:
    return shard(torch.arange(seq).view(1, seq), layout, rank, world)[0]


def covered(plan, nq: int, nk: int) -> torch.Tensor:
    """How many times each (query, key) pair is computed by the plan."""
    m = torch.zeros(nq, nk, dtype=torch.int64)
    for b in plan:
        sub = torch.ones(b.q1 - b.q0, b.k1 - b.k0, dtype=torch.int64)
        if b.causal:
            assert b.q1 - b.q0 == b.k1 - b.k0, "causal blocks must be square"
            sub = sub.tril()
        m[b.q0:b.q1, b.k0:b.k1] += sub
    return m


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("causal", [False, True])
def test_block_plan_covers_exactly_the_visible_pairs(layout, world, causal):
    seq = 4 * world
    n = seq // world
    for qr, kr in itertools.product(range(world), repeat=2):
        qp, kp = positions(layout, qr, world, seq), positions(layout, kr, world, seq)
        visible = (qp[:, None] >= kp[None, :]) if causal else torch.ones(n, n, dtype=torch.bool)
        got = covered(block_plan(layout, world, qr, kr, n, causal), n, n)
        assert torch.equal(got, visible.long()), (layout, world, qr, kr)


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_gathered_plan_covers_exactly_the_visible_pairs(layout, world, causal):
    seq = 4 * world
    for qr in range(world):
        qp = positions(layout, qr, world, seq)
        visible = (qp[:, None] >= torch.arange(seq)[None, :]) if causal else torch.ones(len(qp), seq, dtype=torch.bool)
        got = covered(gathered_plan(layout, world, qr, seq // world, causal), len(qp), seq)
        assert torch.equal(got, visible.long())


def test_zigzag_plans_are_few_and_balanced():
    # Causal zigzag: every (q rank, kv rank) pair but the diagonal costs half a block.
    world, n = 4, 8
    work = {(q, k): sum(b.flops_pairs for b in block_plan("zigzag", world, q, k, n, True))
            for q in range(world) for k in range(world)}
    assert all(work[q, k] == n * n // 2 for q in range(world) for k in range(world) if q != k)
    assert all(len(block_plan("zigzag", world, q, k, n, True)) == 1 for q in range(world) for k in range(world))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shard_unshard_roundtrip(layout, world):
    x = torch.randn(2, 8 * world, 3, 5)
    shards = [shard(x, layout, r, world) for r in range(world)]
    assert sum(s.shape[1] for s in shards) == x.shape[1]
    assert torch.equal(unshard(shards, layout), x)


def test_shard_rejects_indivisible_lengths():
    with pytest.raises(ValueError, match="not divisible by 6"):
        shard(torch.zeros(1, 10, 1, 1), "zigzag", 0, 3)
    with pytest.raises(ValueError, match="unknown layout"):
        shard(torch.zeros(1, 10, 1, 1), "spiral", 0, 2)


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_shard_all_is_every_rank_shard_at_once(world):
    from ringx.layouts import shard, shard_all

    layouts = ["contiguous", "zigzag", "stripe"] + [f"zigzag-u{u}" for u in (1, 2, 4) if world % u == 0]
    x = torch.randn(2, 3, world * 4 * 6, 5, dtype=torch.float64)
    for layout in layouts:
        for dim in (2, -2):
            got = shard_all(x, layout, world, dim=dim)
            want = torch.stack([shard(x, layout, r, world, dim=dim) for r in range(world)])
            assert got.shape == want.shape and torch.equal(got, want), (layout, dim)
