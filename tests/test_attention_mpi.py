"""Every algorithm x masking x world size 1-4 x (MHA, GQA, MQA) against float64 full attention.

One ``mpiexec`` launch per world size runs the whole matrix (importing torch
costs seconds per rank); each case is then asserted here on every rank's shard.
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.cases import QUANTITIES, TOL, WORLDS, Case, cases
from tests.mpi import run_cases

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="session")
def results(tmp_path_factory):
    """world size -> case id -> list of per-rank result rows."""
    cache: dict[int, dict[str, list[dict]]] = {}

    def get(world: int) -> dict[str, list[dict]]:
        if world not in cache:
            out = tmp_path_factory.mktemp(f"attn{world}")
            cache[world] = run_cases(world, "tests/workers/attention_cases.py", out, SEED)
        return cache[world]

    return get


ALL = [c for w in WORLDS for c in cases(w)]


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_matches_float64_reference(results, case: Case):
    rows = results(case.world)[case.id]
    assert sorted(r["rank"] for r in rows) == list(range(case.world)), "a rank reported nothing"
    for row in rows:
        for q in QUANTITIES:
            err = row["errors"][q]
            assert err <= TOL[case.dtype], (
                f"rank {row['rank']} {q}: error {err:.3e} > {TOL[case.dtype]:.0e} (seed {row['seed']})")
        # outputs and gradients come back in the input dtype
        assert row["dtypes"] == [f"torch.{case.dtype}"] * 4
        assert row["kernel"] == "torch-cpu"
        assert row["kernel_version"] == f"torch {torch.__version__}"


def _expected_ledger(case: Case) -> tuple[dict, dict]:
    """Payload bytes (sent, received) per rank, forward and backward, from each schedule's formula.

    With P ranks, e = element size, and per-rank sizes Q = |q|, KV = |k| + |v|
    (input dtype), O = |out| and L = |lse| (accumulation dtype, = input dtype here):
      ring/zigzag/stripe  fwd: send (P-1) KV            bwd: (P-1) KV + P dKV (dK, dV travel home)
      bidir-ring          fwd: send (P-1) KV (R = P//2 hops rightward, L = (P-1)//2 leftward)
                          bwd: (P-1) KV + (2R-1 + 2L-1) dKV (out with the block, back home; a stream of
                          0 hops sends nothing)
      ringx1/2(o)         fwd: bcast Q once, recv (P-1) Q; all_reduce P x L; reduce (P-1) x (O + L)
                          bwd: bcast KV once, recv (P-1) KV; reduce (P-1) x dKV, recv dKV
      ringx4(o)           fwd: bcast KV once, recv (P-1) KV     bwd: as ringx1
      ringx3              fwd: all_gather KV: send KV, recv (P-1) KV
                          bwd: all_gather again; reduce_scatter: send (P-1) dKV, recv dKV
    With one rank nothing moves.
    """
    P = case.world
    e = 8 if case.dtype == "float64" else 4
    n, b = case.seq_local, case.batch
    Q = O = b * n * case.heads * case.head_dim * e  # noqa: E741 (the formula's names)
    KV = 2 * b * n * case.kv_heads * case.head_dim * e
    L = b * case.heads * n * e
    if P == 1:
        return {}, {}
    a = case.algorithm
    if a in ("ring", "zigzag", "stripe"):
        f = {"send": (P - 1) * KV, "recv": (P - 1) * KV}
        return {k: (v, 0) if k == "send" else (0, v) for k, v in f.items()}, {
            "send": ((P - 1) * KV + P * KV, 0), "recv": (0, (P - 1) * KV + P * KV)}
    if a == "bidir-ring":
        hops = sum(2 * h - 1 for h in (P // 2, (P - 1) // 2) if h)
        return {"send": ((P - 1) * KV, 0), "recv": (0, (P - 1) * KV)}, {
            "send": ((P - 1) * KV + hops * KV, 0), "recv": (0, (P - 1) * KV + hops * KV)}
    bwd_bcast = {"broadcast": (KV, (P - 1) * KV), "reduce": ((P - 1) * KV, KV)}
    if a.startswith(("ringx1", "ringx2")):
        return {"broadcast": (Q, (P - 1) * Q), "all_reduce": (P * L, P * L),
                "reduce": ((P - 1) * (O + L), O + L)}, bwd_bcast
    if a.startswith("ringx4"):
        return {"broadcast": (KV, (P - 1) * KV)}, bwd_bcast
    assert a == "ringx3"
    gather = {"all_gather": (KV, (P - 1) * KV)}
    return gather, {**gather, "reduce_scatter": ((P - 1) * KV, KV)}


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_ledger_matches_formula(results, case: Case):
    fwd, bwd = _expected_ledger(case)
    for row in results(case.world)[case.id]:
        for name, expected, got in (("forward", fwd, row["forward"]), ("backward", bwd, row["backward"])):
            moved = {op: (s["sent"], s["received"]) for op, s in got.items()}
            assert moved == expected, f"rank {row['rank']} {name} ledger {moved} != formula {expected}"


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_traced_schedule_matches_the_real_ledger(results, case: Case):
    """The schedule traced on meta tensors moves exactly what the real run moved: calls and bytes per op."""
    from ringx.schedule import trace

    for row in results(case.world)[case.id]:
        tr = trace(case.algorithm, case.causal, case.world, row["rank"], batch=case.batch,
                   seq=case.seq_local * case.world, heads=case.heads, kv_heads=case.kv_heads,
                   head_dim=case.head_dim, dtype=getattr(torch, case.dtype))
        assert tr.ledger_forward.as_dict() == row["forward"], f"rank {row['rank']} forward"
        assert tr.ledger_backward.as_dict() == row["backward"], f"rank {row['rank']} backward"
