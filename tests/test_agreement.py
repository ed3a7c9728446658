"""Every rank issues the same collectives in the same order, and every send meets its receive: each algorithm's
forward and backward traced for every rank in this process (``ringx.schedule.world_calls``, no ranks started), on
fresh random masks, at 2-16 ranks, on one node and on two-level topologies; and the decode merges.

The bug this holds: the overlapped broadcast schedules (ringx1o, ringx2o, ringx4o) posted the next broadcast before
the current round's reductions, except on a rank whose own round nobody else needed (packed documents), which
issued them in the other order: the collectives never met (docs/masks.md). ``RINGX_TEST_SEED`` replays a run;
``RINGX_AGREEMENT_MASKS=N`` draws N masks per (ranks, topology) instead of CI's few (1-2).
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from ringx import ALGORITHMS, Mask, schedule
from ringx.algorithms import bcast
from ringx.comm import Ledger
from ringx.decode import _MERGES
from ringx.schedule import Call, TraceComm, disagreements, world_calls
from tests.mask_cases import random_mask

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
MASKS = int(os.environ.get("RINGX_AGREEMENT_MASKS", 0))


def topologies(world: int) -> list[int]:
    """Ranks per node: one node, then every split into two or more nodes."""
    return [world] + [d for d in range(1, world) if world % d == 0]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def problems_of(world: int, rpn: int, rng: random.Random, masks: int, names=tuple(ALGORITHMS)) -> list[str]:
    found = []
    for _ in range(masks):
        seq_local = rng.choice((2, 4, 6, 8))
        mask = random_mask(rng, seq_local * world)
        for name in names:
            algo = ALGORITHMS[name]
            if rpn != world and not algo.topology:
                continue  # a flat algorithm's schedule does not depend on the nodes
            kw = dict(batch=1, seq=seq_local * world, heads=2 * world, kv_heads=rng.choice((2 * world, world, 1)),
                      head_dim=4, dtype=torch.float64, mask=mask, ranks_per_node=rpn)
            if algo.ulysses == "node":
                kw["ulysses_degree"] = rng.choice([None, *_divisors(world)])
            if algo.inner_ring:
                kw["inner_ring"] = rng.choice([None, *(d for d in _divisors(world) if rpn % d == 0)])
            try:
                found += [f"{name}, {world} ranks ({world // rpn} nodes x {rpn}), {mask.short()}, {kw}: {p}"
                          for p in disagreements(world_calls(name, None, world, **kw))[:1]]
            except ValueError:  # an inner ring the nodes cannot hold: nothing to trace
                assert algo.inner_ring and kw["inner_ring"], f"{name} {kw}"
    return found


@pytest.mark.parametrize("world", range(2, 17))
def test_every_rank_issues_the_same_calls(world):
    """Every algorithm, random masks, every topology of ``world`` ranks (CI: ~800 cases over all worlds)."""
    rng = random.Random(SEED * 100 + world)
    found = []
    for rpn in topologies(world):
        masks = MASKS or (2 if world <= 8 and rpn == world else 1)
        found += problems_of(world, rpn, rng, masks)
    assert not found, f"seed {SEED}:\n" + "\n".join(found[:10])


# The issue's three cases: 4 ranks, causal documents.
ISSUE_CASES = [("ringx1o", [30, 18, 48]), ("ringx2o", [30, 18, 48]), ("ringx4o", [7, 8, 21, 36, 10, 14])]


def _old_rounds(c, mine, shared):
    """bcast._rounds before the fix: a rank's own unshared round taken in root order."""
    order = [r for r in range(c.world) if shared[r] or r == c.rank]

    def fetch(root):
        if not shared[root]:
            return None
        bufs = mine if root == c.rank else [torch.empty_like(t) for t in mine]
        return [c.comm.broadcast(b, root, async_op=c.overlap) for b in bufs]

    nxt = fetch(order[0])
    for i, root in enumerate(order):
        got = mine if nxt is None else [p.wait()[0] for p in nxt]
        if c.overlap and i + 1 < len(order):
            nxt = fetch(order[i + 1])
        yield root, got
        if not c.overlap and i + 1 < len(order):
            nxt = fetch(order[i + 1])


def _issue_case(name: str, lengths: list[int]) -> list[str]:
    return disagreements(world_calls(name, None, 4, batch=1, seq=96, heads=2, kv_heads=2, head_dim=8,
                                     dtype=torch.float64, mask=Mask.documents(lengths)))


@pytest.mark.parametrize("name,lengths", ISSUE_CASES)
def test_the_issue_cases_agree_now_and_did_not_before(name, lengths, monkeypatch):
    assert _issue_case(name, lengths) == []
    monkeypatch.setattr(bcast, "_rounds", _old_rounds)
    found = _issue_case(name, lengths)
    assert found and "collective" in found[0], found


def test_the_check_finds_the_old_schedule_on_random_masks(monkeypatch):
    """The sequence test is what would have caught the bug: on the old schedule, random masks at 4-8 ranks find it."""
    monkeypatch.setattr(bcast, "_rounds", _old_rounds)
    rng = random.Random(SEED)
    overlapped = [name for name, a in ALGORITHMS.items() if a.overlap and a.family == "ringx"]
    found = next((p for world in range(4, 9) for _ in range(12)  # one mask at a time: the first find is enough
                  for p in problems_of(world, world, rng, 1, overlapped)), None)
    assert found, f"seed {SEED}: no mismatch found in the old broadcast schedule"


def C(op, group=(0, 1, 2), root=-1, n=8):  # noqa: N802 - a collective call, for the hand-made sequences below
    return Call(op, tuple(group), root, n)


def S(*msgs):  # noqa: N802 - a point-to-point call
    return Call("sendrecv", p2p=tuple(msgs))


@pytest.mark.parametrize("seqs,expect", [
    ([[C("broadcast", root=0), C("reduce", root=1)]] * 3, ""),
    ([[C("broadcast", root=0), C("reduce", root=1)]] * 2 + [[C("reduce", root=1), C("broadcast", root=0)]],
     "collective 1: rank 0 issues broadcast"),
    ([[C("broadcast", root=0)]] * 2 + [[C("broadcast", root=2)]], "root 2"),
    ([[C("all_gather", n=8)]] * 2 + [[C("all_gather", n=16)]], "16 B"),
    ([[C("all_reduce")]] * 2 + [[]], "rank 2 nothing more"),
    ([[S(("send", 1, 4), ("recv", 1, 4))], [S(("send", 0, 4), ("recv", 0, 4))], []], ""),
    ([[S(("send", 1, 4))], [S(("recv", 0, 8))], []], "rank 0 sends [4] B to rank 1, which receives [8] B"),
    # every group's sequence agrees, but rank 0 waits on {0, 1} while rank 1 waits on {0, 1, 2}: stuck
    ([[C("all_reduce", (0, 1)), C("broadcast", root=0)], [C("broadcast", root=0), C("all_reduce", (0, 1))],
      [C("broadcast", root=0)]], "stuck: rank 0 waits in call 1"),
    # a send whose receiver first waits in a collective the sender has not reached
    ([[S(("send", 1, 4)), C("all_reduce", (0, 1))], [C("all_reduce", (0, 1)), S(("recv", 0, 4))], []], "stuck"),
])
def test_disagreements_finds_what_it_must(seqs, expect):
    found = disagreements(seqs)
    assert (not found) if not expect else any(expect in p for p in found), found


@pytest.mark.parametrize("merge", sorted(set(_MERGES) - {"none"}))
@pytest.mark.parametrize("world", [2, 3, 5, 8, 16])
def test_decode_merges_agree(merge, world):
    """The decode schedules' merges (ringx.decode): a chain of point-to-point hops, or collectives."""
    seqs = []
    for rank in range(world):
        events: list[schedule.Event] = []
        out = torch.empty(2, 1, 4, 8, dtype=torch.float64, device="meta")
        lse = torch.empty(2, 4, 1, dtype=torch.float64, device="meta")
        _MERGES[merge](TraceComm(rank, world, Ledger(), events), out, lse)
        seqs.append(schedule.calls(events, world))
    assert seqs[0], "the merge communicates"
    assert disagreements(seqs) == []
