"""Bad input on one rank raises the same clear error on every rank; no rank hangs."""

from __future__ import annotations

import json
import time

import pytest

from tests.mpi import run_mpi

EXPECTED = {
    "seq_differs": "q shape differs across ranks: rank 0 has (1, 8, 4, 16), rank 1 has (1, 4, 4, 16)",
    "dtype_differs": "dtype differs across ranks",
    "qkv_dtypes": "q, k, v must share one dtype",
    "gqa_heads": "q has 4 heads and k/v have 3: the q heads must be a multiple of the k/v heads",
    "kv_shapes": "k and v must have the same shape",
    "odd_zigzag": "local sequence length 7 must be a multiple of 2 for the zigzag layout",
    "device": "q, k, v must be on one device",
    "backend_device": "q, k, v are on meta but this process group's backend moves cpu tensors",
    "unknown_algorithm": "unknown algorithm 'ringx7'",
    "bad_scale": "softmax_scale must be a positive finite number",
    "int_dtype": "dtype torch.int32 is not supported",
    "causal_differs": "causal differs across ranks",
}


@pytest.fixture(scope="module")
def raised(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad")
    proc = run_mpi(2, "tests/workers/bad_inputs.py", str(out), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("kept", [False, True])
@pytest.mark.parametrize("scenario", EXPECTED)
def test_every_rank_raises_the_documented_error(raised, scenario, kept):
    """Also at a later call, when every rank has kept a plan for every configuration (ringx.api's cache)."""
    for rank, res in enumerate(raised):
        got = res["kept"][scenario] if kept else res[scenario]
        assert got is not None, f"rank {rank} accepted {scenario}"
        assert EXPECTED[scenario] in got and "\n" not in got, f"rank {rank}: {got}"
    first = raised[0]["kept"] if kept else raised[0]
    if scenario not in ("seq_differs", "dtype_differs", "causal_differs"):
        assert "rank 1:" in first[scenario], "rank 0 should name the rank whose input is bad"


def test_group_is_healthy_after_rejections(raised):
    assert all(r["healthy_after"] for r in raised)


def test_uncaught_error_ends_every_rank_promptly(tmp_path):
    start = time.monotonic()
    proc = run_mpi(2, "tests/workers/bad_inputs.py", str(tmp_path), "uncaught", timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert proc.stderr.count("RingxInputError") >= 2, proc.stderr  # raised on both ranks
    assert elapsed < 60, f"took {elapsed:.0f}s: some rank waited for a peer"
