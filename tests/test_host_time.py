"""What keeps a call's host time small may not change what it computes or what it refuses (one rank, in this process).

The one-rank direct path gives every algorithm's bits, forward and backward; a plan kept for a configuration is the
plan a fresh call makes; a kept plan never lets through what a fresh call refuses; the caches are dropped when what
they hold is. Multi-rank: tests/test_host_check_mpi.py.
"""

from __future__ import annotations

import os

import pytest
import torch

import ringx
from ringx import api, kernels, timeline
from ringx.comm import NO_LEDGER

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


def _inputs(dtype, h=4, hk=2, n=24, d=16):
    g = torch.Generator().manual_seed(SEED)
    return [torch.randn(2, n, x, d, generator=g).to(dtype) for x in (h, hk, hk, h)]


def _call(name, causal, q, k, v, do):
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    out, lse = ringx.attention(qg, kg, vg, algorithm=name, causal=causal, return_lse=True)
    return (out, lse, *torch.autograd.grad(out, (qg, kg, vg), do))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", list(ringx.ALGORITHMS))
def test_the_direct_path_gives_the_schedules_bits(group, name, causal, dtype):
    """At one rank, full or causal: out, LSE, dQ, dK, dV equal, bit for bit, what the algorithm's own schedule
    gives (it runs while the timeline records)."""
    q, k, v, do = _inputs(dtype)
    direct = _call(name, causal, q, k, v, do)
    with timeline.record() as rec:
        scheduled = _call(name, causal, q, k, v, do)
    assert any(m.cat == "compute" for m in rec.marks)  # the schedule ran, and marked its blocks
    for a, b in zip(direct, scheduled, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)
    plain = ringx.attention(q, k, v, algorithm=name, causal=causal)  # no autograd: the kernel alone
    assert torch.equal(plain, direct[0])


def test_the_direct_path_is_the_one_taken_and_only_for_full_and_causal(group, monkeypatch):
    def scheduled(*a, **kw):
        raise AssertionError("the schedule ran at one rank")

    monkeypatch.setattr(api._Attention, "apply", scheduled)
    q, k, v, do = _inputs(torch.float32)
    for name in ringx.ALGORITHMS:
        _call(name, True, q, k, v, do)
    with pytest.raises(AssertionError, match="the schedule ran"):
        ringx.attention(q, k, v, algorithm="ring", mask="window:4")  # several blocks: the schedule's business
    with pytest.raises(AssertionError, match="the schedule ran"):  # a sink is merged after the schedule
        ringx.attention(q, k, v, algorithm="ring", causal=True, sinks=torch.zeros(q.shape[2]))


def _slots(p: api._Plan) -> dict:
    return {s: getattr(p, s) for s in api._Plan.__slots__ if hasattr(p, s)}


@pytest.mark.parametrize("name,mask", [("ring", "causal"), ("usp", "full"), ("double-ring", "window:6"),
                                       ("ringx3", "docs:10,14")])
def test_a_kept_plan_is_the_plan_a_fresh_call_makes(group, name, mask):
    q, k, v, _ = _inputs(torch.float64)
    api._PLANS.clear()
    for _ in range(3):
        ringx.attention(q, k, v, algorithm=name, mask=mask)
    (kept,) = api._PLANS.values()
    fresh = api._Plan(q, k, v, name, mask, None, None, None, None, None, None, None)
    fresh.prepare(None, None, None, None)
    assert _slots(kept) == _slots(fresh) and kept.ready and not kept.problem


@pytest.mark.parametrize("good,bad,message", [
    (dict(causal=True), dict(causal=1), "causal must be True or False"),
    (dict(causal=True, ulysses_degree=1), dict(causal=True, ulysses_degree=True), "ulysses_degree=True must be"),
    (dict(causal=True, inner_ring=1), dict(causal=True, inner_ring=True), "inner_ring=True must be"),
])
def test_a_kept_plan_never_answers_for_a_call_a_fresh_one_refuses(group, good, bad, message):
    q, k, v, _ = _inputs(torch.float32)
    name = "usp" if "ulysses_degree" in good else "double-ring" if "inner_ring" in good else "ring"
    ringx.attention(q, k, v, algorithm=name, **good)  # equal to `bad` as a dict key: 1 == True
    with pytest.raises(ringx.RingxInputError, match=message):
        ringx.attention(q, k, v, algorithm=name, **bad)


def test_a_kept_plan_checks_the_sinks_of_every_call(group):
    q, k, v, _ = _inputs(torch.float32)
    ringx.attention(q, k, v, algorithm="ringx4", causal=True, sinks=torch.zeros(q.shape[2]))
    with pytest.raises(ringx.RingxInputError, match="sinks must hold one logit per query head"):
        ringx.attention(q, k, v, algorithm="ringx4", causal=True, sinks=torch.zeros(q.shape[2] + 1))


def test_plans_go_with_the_kernel_choice_and_the_process_group(group):
    q, k, v, _ = _inputs(torch.float32)
    ringx.attention(q, k, v, algorithm="ring", causal=True)
    assert api._PLANS
    kernels.clear_cache()
    assert not api._PLANS
    ringx.attention(q, k, v, algorithm="ring", causal=True)
    for fn in ringx.launch.ON_FINALIZE:  # what launch.finalize() runs, without ending this module's group
        fn()
    assert not api._PLANS


def test_stats_are_filled_as_before_and_a_call_without_them_counts_nothing(group):
    q, k, v, _ = _inputs(torch.float32)
    for _ in range(2):  # the second call from the kept plan
        stats = ringx.CallStats()
        ringx.attention(q, k, v, algorithm="usp", causal=True, stats=stats)
        assert (stats.algorithm, stats.layout, stats.kernel, stats.mask, stats.ulysses_degree) == (
            "usp", "zigzag-u1", "torch-cpu", "causal", 1)
        assert stats.kernel_version.startswith("torch ")
    NO_LEDGER.record("send", 8, 0)
    assert not NO_LEDGER.ops and NO_LEDGER.sent == 0
