"""The ``torch-flex`` kernel (PyTorch's FlexAttention with a BlockMask per block) on CPU, where it runs eagerly.

Blocks against a dense float64 softmax (full, causal, band blocks with and without rows that see nothing; MHA
and GQA; float64 and float32), the reweighted backward that the CUDA path uses (checked here with a
differentiable float64 forward, since torch 2.13 has no FlexAttention backward on CPU), the selection rule,
and whole algorithms at 2 ranks with ``kernel="torch-flex"`` (tests/workers/flex_cases.py).
"""

from __future__ import annotations

import os

import pytest
import torch

from ringx.kernels import KERNELS, DeviceInfo, ReferenceKernel, preference, reweighted_backward, select_kernel
from ringx.slices import band_visible
from tests.mpi import FULL, run_cases
from tests.reference import masked_block_attention as dense
from tests.reference import rel
from tests.workers.flex_cases import PER_ALGORITHM

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # flex's "called without torch.compile" note
SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
FLEX = KERNELS["torch-flex"]
CPU = torch.device("cpu")




BLOCKS = [  # (sq, sk, causal, band): the kinds a plan hands a kernel, and bands with rows that see nothing
    (48, 40, False, None),
    (40, 40, True, None),
    (40, 32, False, (-3, 4)),
    (40, 32, False, (0, 39)),
    (40, 32, False, (2, 9)),  # rows 0-1 see nothing
    (40, 32, False, (-31, -20)),  # rows 12.. see nothing
    (24, 64, False, (-50, 0)),
]


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)], ids=["f64", "f32"])
def test_flex_blocks_match_dense_float64(kv_heads, dtype, tol):
    g = torch.Generator().manual_seed(SEED)
    for sq, sk, causal, band in BLOCKS:
        q = torch.randn(2, sq, 4, 16, generator=g, dtype=torch.float64)
        k, v = (torch.randn(2, sk, kv_heads, 16, generator=g, dtype=torch.float64) for _ in range(2))
        dout = torch.randn_like(q)
        vis = (torch.ones(sq, sk, dtype=torch.bool).tril_() if causal
               else band_visible(*band, sq, sk) if band else torch.ones(sq, sk, dtype=torch.bool))
        ref = dense(q, k, v, dout, vis, 0.25)
        args = [t.to(dtype) for t in (q, k, v)]
        out, lse = FLEX.forward(*args, causal, 0.25, band=band)
        assert out.dtype == dtype and lse.dtype == dtype and lse.shape == (2, 4, sq)
        assert not out.isnan().any() and not lse.isnan().any()
        empty = ~vis.any(1)
        assert torch.equal(lse.isneginf(), empty.expand_as(lse)), (sq, sk, band)  # -inf exactly where nothing seen
        assert (out[:, empty] == 0).all()
        assert rel(out, ref[0]) <= tol, (sq, sk, causal, band)
        assert rel(lse[..., ~empty], ref[1][..., ~empty]) <= tol  # natural log, as the other kernels
        glob = torch.where(lse.isneginf(), torch.zeros_like(lse), lse)  # a blank row's global LSE is finite
        grads = FLEX.backward(dout.to(dtype), *args, out, glob, causal, 0.25, band=band)
        for got, want in zip(grads, ref[2:]):
            assert got.shape == want.shape and not got.isnan().any()
            assert rel(got, want) <= tol * 10, (sq, sk, causal, band)
        assert (grads[0][:, empty] == 0).all()


@pytest.mark.parametrize("kv_heads", [4, 1], ids=["mha", "mqa"])
def test_reweighted_backward_gives_each_block_its_exact_share(kv_heads):
    """Keys split into two band blocks; the rows' global out/LSE come from merging both. Each block's gradients by
    reweighting an autograd recompute (what torch-flex does on CUDA) equal the flash-style backward with the
    global LSE, and their sum equals the dense gradients. Block 2 leaves rows that see none of its keys."""
    g = torch.Generator().manual_seed(SEED + 1)
    sq, sk, scale = 30, 40, 0.3
    q = torch.randn(2, sq, 4, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, sk, kv_heads, 8, generator=g, dtype=torch.float64) for _ in range(2))
    dout = torch.randn_like(q)
    band = (-5, 12)  # row a sees keys a-12..a+5 of the whole 40
    ref = dense(q, k, v, dout, band_visible(*band, sq, sk), scale)
    parts = [(0, 20, band), (20, 40, (band[0] + 20, band[1] + 20))]  # the same band seen from each key block
    ref_k = ReferenceKernel()
    fwd = [ref_k.forward(q, k[:, a:b], v[:, a:b], False, scale, band=bb) for a, b, bb in parts]
    lse = torch.logaddexp(fwd[0][1], fwd[1][1])
    out = sum(o * torch.exp(lb - lse).transpose(1, 2).unsqueeze(-1) for o, lb in fwd)
    assert rel(out, ref[0]) < 1e-12
    assert fwd[1][1].isneginf().any()  # a row that sees nothing of the second block
    dq = torch.zeros_like(q)
    dk, dv = torch.zeros_like(k), torch.zeros_like(v)
    for a, b, bb in parts:
        kb, vb = k[:, a:b], v[:, a:b]
        got = reweighted_backward(lambda q_, k_, v_, bb=bb: ref_k.forward(q_, k_, v_, False, scale, band=bb),
                                  dout, q, kb, vb, out, lse)
        want = ref_k.backward(dout, q, kb, vb, out, lse, False, scale, band=bb)
        for x, y in zip(got, want):
            assert not x.isnan().any() and rel(x, y) < 1e-12
        dq += got[0]
        dk[:, a:b] += got[1]
        dv[:, a:b] += got[2]
    for x, y in zip((dq, dk, dv), ref[2:]):
        assert rel(x, y) < 1e-12


def test_flex_is_chosen_only_by_name_on_cpu():
    assert select_kernel(CPU, torch.float64, "torch-flex") is FLEX
    assert select_kernel(CPU, torch.float32).name == "torch-cpu"  # never the automatic choice
    assert not FLEX.supports(CPU, torch.float32)  # so bench kernels/selftest leave out the unfused path
    assert FLEX.supports(CPU, torch.float32, named=True)
    with pytest.raises(ValueError, match="does not run"):
        select_kernel(CPU, torch.bfloat16, "torch-flex")
    h100 = DeviceInfo("cuda", "nvidia", (9, 0), "H100", 91900)
    assert FLEX.runs_on(h100, torch.bfloat16, 128) and FLEX.runs_on(h100, torch.float32, 64)
    assert not FLEX.runs_on(h100, torch.float64, 64) and not FLEX.runs_on(h100, torch.bfloat16, 8)
    assert not FLEX.runs_on(DeviceInfo("cuda", "nvidia", (7, 0), "V100"), torch.float16, 64)
    for dt in (torch.bfloat16, torch.float32):
        assert "torch-flex" not in preference(h100, dt)  # opt-in until it has run on a GPU


def test_algorithms_with_flex_at_two_ranks_match_dense_float64(tmp_path):
    by_case = run_cases(2, "tests/workers/flex_cases.py", tmp_path, SEED)
    assert len(by_case) == (40 if FULL else 4 * PER_ALGORITHM)  # 4 algorithms x 10 masks, or a part of them
    sinks = sum(c.endswith("-sinks") for c in by_case)
    assert sinks == 20 if FULL else sinks >= 1  # half the cases; a part of 16 lacks them with p ~ 3e-7
    for case, rows in by_case.items():
        assert sorted(r["rank"] for r in rows) == [0, 1], case
        for r in rows:
            assert r["kernel"] == "torch-flex" and not r["nan"], case
            assert ("dsinks" in r["errors"]) == case.endswith("-sinks")
            for q, e in r["errors"].items():
                assert e <= 1e-10, f"{case} rank {r['rank']} {q}: {e:.3e} (seed {r['seed']})"
