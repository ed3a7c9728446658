"""Masked blocks on a GPU: ``torch-flex`` (compiled FlexAttention) and flash-attn's window and varlen paths
against float64. Skipped without CUDA; the flash-attn cases also without flash-attn. NOT run yet: no GPU has
been lent to this work (docs/status.md).

Tolerances as tests/test_gpu.py (about 4-6x plain SDPA's error against float64 in that dtype on an H100):
bf16 2e-2, fp16 4e-3, fp32 2e-5, relative to max(1, max |ref|), for out, LSE and every gradient.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from ringx import Mask, kernels
from ringx.kernels import KERNELS, ReferenceKernel, varlen_calls
from ringx.layouts import block_plan
from ringx.slices import band_visible
from tests.reference import masked_block_attention as dense
from tests.reference import rel

CUDA = torch.cuda.is_available()
FLASH = importlib.util.find_spec("flash_attn") is not None
pytestmark = pytest.mark.skipif(not CUDA, reason="no CUDA device visible: masked GPU kernels not checked here")
TOL = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 2e-5}
SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
BLOCKS = [  # (sq, sk, causal, band)
    (256, 256, False, None),
    (256, 256, True, None),
    (256, 192, False, (-40, 100)),
    (192, 256, False, (30, 160)),  # rows 0-29 see nothing
]




def visible(sq, sk, causal, band, device):
    if band is not None:
        return band_visible(*band, sq, sk, device)
    if causal:
        return torch.ones(sq, sk, dtype=torch.bool, device=device).tril_()
    return torch.ones(sq, sk, dtype=torch.bool, device=device)


def check_block(kern, dtype, sq, sk, causal, band, kv_heads, g):
    dev = torch.device("cuda")
    q = torch.randn(1, sq, 8, 64, generator=g, dtype=torch.float64, device=dev)
    k, v = (torch.randn(1, sk, kv_heads, 64, generator=g, dtype=torch.float64, device=dev) for _ in range(2))
    dout = torch.randn_like(q)
    vis = visible(sq, sk, causal, band, dev)
    ref = dense(q, k, v, dout, vis, 0.125)
    args = [t.to(dtype) for t in (q, k, v)]
    out, lse = kern.forward(*args, causal, 0.125, band=band)
    empty = ~vis.any(1)
    assert not out.isnan().any() and not lse.isnan().any()
    assert torch.equal(lse.isneginf(), empty.expand_as(lse)) and (out[:, empty] == 0).all()
    tol = TOL[dtype]
    assert rel(out, ref[0]) <= tol and rel(lse[..., ~empty], ref[1][..., ~empty]) <= tol
    glob = torch.where(ref[1].isneginf(), torch.zeros_like(ref[1]), ref[1]).float()  # global LSE of the rows
    grads = kern.backward(dout.to(dtype), *args, ref[0].to(dtype), glob, causal, 0.125, band=band)
    for got, want in zip(grads, ref[2:]):
        assert got.shape == want.shape and not got.isnan().any()
        assert rel(got, want) <= tol, (kern.name, dtype, sq, sk, causal, band)


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
def test_flex_blocks_on_cuda_match_float64(dtype):
    kern = KERNELS["torch-flex"]
    if not kern.supports(torch.device("cuda"), dtype, 64):
        pytest.skip(f"torch-flex does not run {dtype} here")
    g = torch.Generator(device="cuda").manual_seed(SEED)
    for i, blk in enumerate(BLOCKS):
        check_block(kern, dtype, *blk, kv_heads=8 if i % 2 else 2, g=g)


@pytest.mark.skipif(not FLASH, reason="flash-attn is not installed")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_flash_window_blocks_on_cuda_match_float64(dtype):
    kern = KERNELS["flash-attn"]
    g = torch.Generator(device="cuda").manual_seed(SEED)
    for i, (sq, sk, causal, band) in enumerate(BLOCKS):
        if band is None or kernels.flash_window(sq, sk, band) is not None:
            check_block(kern, dtype, sq, sk, causal, band, kv_heads=8 if i % 2 else 2, g=g)


@pytest.mark.skipif(not FLASH, reason="flash-attn is not installed")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mask", ["docs", "docs-window"])
def test_flash_varlen_on_cuda_matches_float64_per_block(dtype, mask):
    P, n = 4, 512
    lengths = [1, 100, 700, 33, 400, P * n - 1234]
    m = Mask.documents(lengths, window=64 if mask == "docs-window" else None)
    dev = torch.device("cuda")
    g = torch.Generator(device="cuda").manual_seed(SEED)
    q = torch.randn(2, n, 8, 64, generator=g, dtype=torch.float64, device=dev)
    k, v = (torch.randn(2, n, 2, 64, generator=g, dtype=torch.float64, device=dev) for _ in range(2))
    dout = torch.randn_like(q)
    ref = ReferenceKernel()
    tol = TOL[dtype]
    checked = 0
    glob_out = torch.randn_like(q)  # any rows' global out/LSE: the backward must use them, not its own
    glob_lse = torch.randn(2, 8, n, generator=g, dtype=torch.float64, device=dev) + 3.0
    args = [t.to(dtype) for t in (q, k, v)]
    for qr, kr in [(1, 0), (2, 2), (3, 1)]:
        plan = block_plan("stripe", P, qr, kr, n, m)
        calls, rest = varlen_calls(plan)
        assert rest == ()
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        for c in calls:
            fwd = kernels.varlen_forward(*args, c, 0.125)
            bwd = kernels.varlen_backward(dout.to(dtype), *args, glob_out.to(dtype), glob_lse.float(), c, 0.125)
            for blk, (out, lse), grads in zip(c.blocks, fwd, bwd):
                b = by_rows[blk]
                band = {"band": b.band} if b.band is not None else {}
                sl = (q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1])
                want_out, want_lse = ref.forward(*sl, b.causal, 0.125, **band)
                assert rel(out, want_out) <= tol and rel(lse, want_lse) <= tol
                want = ref.backward(dout[:, b.q0:b.q1], *sl, glob_out[:, b.q0:b.q1], glob_lse[:, :, b.q0:b.q1],
                                    b.causal, 0.125, **band)
                for x, y in zip(grads, want):
                    assert rel(x, y) <= tol
                checked += 1
    assert checked > 0
