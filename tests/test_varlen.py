"""flash-attn varlen for masked plans: the pure pieces (window normal form, grouping a plan's blocks into calls,
cu_seqlens, packing) and the whole varlen forward/backward against the reference kernel, with flash-attn's two
varlen functions replaced by float64 stand-ins written from flash-attn's documented semantics (bottom-right
aligned ``causal``/``window_size`` per sequence, LSE (heads, total_q), +inf LSE for a row that sees nothing).
flash-attn itself is not installed here: these stand-ins are our reading of its interface, and the real path has
not run (tests/test_gpu_masks.py runs it where flash-attn imports)."""

from __future__ import annotations

import math
import os
import random

import pytest
import torch

from ringx import Mask, kernels
from ringx.kernels import ReferenceKernel, varlen_calls, varlen_window
from ringx.layouts import block_plan
from ringx.slices import band_visible
from tests.mpi import FULL

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


def flash_visible(sq: int, sk: int, causal: bool, window: tuple[int, int]) -> torch.Tensor:
    """flash-attn's visibility of one sequence: bottom-right aligned; causal means window right = 0; -1 unbounded."""
    a, b = torch.arange(sq).unsqueeze(1), torch.arange(sk).unsqueeze(0)
    left, right = window
    if causal:
        right = 0
    ok = torch.ones(sq, sk, dtype=torch.bool)
    if left >= 0:
        ok &= b >= a + sk - sq - left
    if right >= 0:
        ok &= b <= a + sk - sq + right
    return ok


def block_visible(b) -> torch.Tensor:
    n, m = b.q1 - b.q0, b.k1 - b.k0
    if b.band is not None:
        return band_visible(*b.band, n, m)
    return torch.ones(n, m, dtype=torch.bool).tril_() if b.causal else torch.ones(n, m, dtype=torch.bool)


PLAN_MASKS = {
    "docs": lambda S: Mask.documents([1, 17, 40, 9, S - 67]),
    "docs-window": lambda S: Mask.documents([1, 17, 40, 9, S - 67], window=10),
    "docs-full-window": lambda S: Mask.documents([30, 50, S - 80], causal=False, window=7),
    "window": lambda S: Mask.window(20),
    "window-two-sided": lambda S: Mask.window(30, 5),
    "prefix": lambda S: Mask.prefix_lm(45),  # the new forms need no kernel path of their own: full, causal, windows
    "blocks-docs": lambda S: Mask.block_causal(5, [1, 17, 40, 9, S - 67]),
    "shared": lambda S: Mask.shared_prefix([(20, [10, 30, 5]), (S - 75, [10])]),
    "slices": lambda S: Mask.from_slices([(0, S, 0, 4), (0, S, 4, S, -3, 5)]),  # global keys and a window
    "later-keys": lambda S: Mask.from_slices([(0, S, 0, S, -S, 0)]),  # j >= i
}
LAYOUTS = ("contiguous", "zigzag", "stripe")
P, SEQ_LOCAL = 4, 32


def plans():
    for name, make in PLAN_MASKS.items():
        m = make(P * SEQ_LOCAL)
        for layout in LAYOUTS:
            for qr in range(P):
                for kr in range(P):
                    plan = block_plan(layout, P, qr, kr, SEQ_LOCAL, m)
                    if plan:
                        yield f"{name}-{layout}-{qr}{kr}", plan


def some_plans(n: int, salt: int = 0) -> list:
    """``n`` plans drawn afresh each run (every plan, shuffled, with RINGX_TEST_FULL=1)."""
    every = list(plans())
    random.Random(SEED + salt).shuffle(every)
    return every if FULL else every[:n]


def test_varlen_window_is_the_blocks_visibility_in_normal_form():
    cases = [(n, m, c, None) for n, m, c in [(8, 8, True), (8, 8, False), (6, 10, False)]]
    cases += [(n, m, False, (lo, hi)) for n in (5, 8) for m in (5, 8, 11) for lo in range(-m, n) for hi in range(lo, n)]
    seen = 0
    for sq, sk, causal, band in cases:
        key = varlen_window(sq, sk, causal, band)
        want = (torch.ones(sq, sk, dtype=torch.bool).tril_() if causal
                else band_visible(*band, sq, sk) if band else torch.ones(sq, sk, dtype=torch.bool))
        if key is None:
            assert kernels.flash_window(sq, sk, band) is None
            continue
        seen += 1
        c, (left, right) = key
        assert torch.equal(flash_visible(sq, sk, c, (left, right)), want), (sq, sk, causal, band, key)
        assert left == -1 or left < sk - 1  # normal form: a side that reaches past the block is -1
        assert right == -1 or right < sq - 1
        assert (left, right) != (-1, 0)  # that is causal
    assert seen > 100
    assert varlen_window(8, 8, False, (0, 7)) == (True, (-1, -1))  # a band that is the causal triangle
    assert varlen_window(8, 8, False, (-7, 7)) == (False, (-1, -1))  # one that is all of the block


def test_varlen_calls_cover_every_plan_block_once_with_its_visibility():
    groups_seen = 0
    for where, plan in plans():
        calls, rest = varlen_calls(plan)
        assert rest == (), where  # the plans trim bands, so every block is a window
        flat = [blk for c in calls for blk in c.blocks]
        assert sorted(flat) == sorted((b.q0, b.q1, b.k0, b.k1) for b in plan), where
        assert len({(c.causal, c.window) for c in calls}) == len(calls)
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        for c in calls:
            for blk in c.blocks:
                b = by_rows[blk]
                assert torch.equal(flash_visible(b.q1 - b.q0, b.k1 - b.k0, c.causal, c.window), block_visible(b))
            for batch in (1, 3):
                cq, ck = c.cu_seqlens(batch)
                assert len(cq) == len(ck) == batch * len(c.blocks) + 1 and cq[0] == ck[0] == 0
                assert cq[-1] == batch * c.total_q and ck[-1] == batch * c.total_k
                assert max(b - a for a, b in zip(cq, cq[1:])) == c.max_q
                assert max(b - a for a, b in zip(ck, ck[1:])) == c.max_k
        groups_seen += len(calls)
    assert groups_seen > 50


def test_causal_documents_need_at_most_two_calls_per_buffer():
    m = PLAN_MASKS["docs"](P * SEQ_LOCAL)
    most = 0
    for layout in LAYOUTS:
        for qr in range(P):
            for kr in range(P):
                plan = block_plan(layout, P, qr, kr, SEQ_LOCAL, m)
                calls, _ = varlen_calls(plan)
                assert len(calls) <= 2 and {c.window for c in calls} <= {(-1, -1)}  # full and causal pieces
                most = max(most, len(plan))
    assert most >= 4  # ... while a plan has one block per document piece


# --- flash-attn's varlen functions, as its documentation describes them, in float64 ---------------------------------

def fake_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                     softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                     deterministic=False, return_attn_probs=False, block_table=None):
    assert q.dim() == 3 and cu_seqlens_q.dtype == torch.int32 and dropout_p == 0.0 and softcap == 0.0
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    assert max_seqlen_q == max(b - a for a, b in zip(cq, cq[1:]))
    out = torch.zeros_like(q)
    lse = torch.empty(q.shape[1], q.shape[0], dtype=torch.float32 if q.dtype != torch.float64 else q.dtype)
    for i in range(len(cq) - 1):
        qs, ks = slice(cq[i], cq[i + 1]), slice(ck[i], ck[i + 1])
        s, vv = _scores(q[qs], k[ks], v[ks], softmax_scale, causal, window_size)
        ls = s.logsumexp(-1)  # (h, n)
        p = torch.exp(s - ls.masked_fill(ls.isneginf(), 0).unsqueeze(-1))
        out[qs] = torch.einsum("hqk,khd->qhd", p, vv)
        lse[:, qs] = ls.masked_fill(ls.isneginf(), math.inf)  # flash-attn: +inf for a row that sees nothing
    return (out, lse, None) if return_attn_probs else out


def _scores(q, k, v, scale, causal, window):
    g = q.shape[1] // k.shape[1]
    kk, vv = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = torch.einsum("qhd,khd->hqk", q, kk) * scale
    return s.masked_fill(~flash_visible(q.shape[0], k.shape[0], causal, window), -math.inf), vv


def fake_varlen_backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                         max_seqlen_k, dropout_p, softmax_scale, causal, window_size_left, window_size_right, softcap,
                         alibi_slopes, deterministic, rng_state=None, zero_tensors=False):
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    g = q.shape[1] // k.shape[1]
    for i in range(len(cq) - 1):
        qs, ks = slice(cq[i], cq[i + 1]), slice(ck[i], ck[i + 1])
        s, vv = _scores(q[qs], k[ks], v[ks], softmax_scale, causal, (window_size_left, window_size_right))
        p = torch.exp(s - softmax_lse[:, qs].unsqueeze(-1))
        do, o = dout[qs], out[qs]
        dvv = torch.einsum("hqk,qhd->khd", p, do)
        dp = torch.einsum("qhd,khd->hqk", do, vv)
        ds = p * (dp - (do * o).sum(-1).T.unsqueeze(-1)) * softmax_scale
        dq[qs] = torch.einsum("hqk,khd->qhd", ds, k[ks].repeat_interleave(g, 1))
        dkk = torch.einsum("hqk,qhd->khd", ds, q[qs])
        dk[ks] = dkk.view(dkk.shape[0], -1, g, dkk.shape[-1]).sum(2)
        dv[ks] = dvv.view(dvv.shape[0], -1, g, dvv.shape[-1]).sum(2)
    return dq, dk, dv, None


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_varlen_forward_and_backward_equal_the_reference_per_block(monkeypatch, kv_heads):
    """Every block of every plan of the masks above: the blocks of one varlen call (packed, batch 2) give the
    reference kernel's out/LSE and, with the rows' global out/LSE, its gradients."""
    monkeypatch.setattr(kernels.varlen, "_varlen_ops", lambda: (fake_varlen_func, fake_varlen_backward))
    g = torch.Generator().manual_seed(SEED)
    ref = ReferenceKernel()
    q = torch.randn(2, SEQ_LOCAL, 4, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, SEQ_LOCAL, kv_heads, 8, generator=g, dtype=torch.float64) for _ in range(2))
    dout = torch.randn_like(q)
    glob_out = torch.randn_like(q)  # any rows' global out/LSE: the backward must use them, not its own
    glob_lse = torch.randn(2, 4, SEQ_LOCAL, generator=g, dtype=torch.float64) + 3.0
    checked = 0
    for where, plan in some_plans(16):
        calls, _ = varlen_calls(plan)
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        for c in calls:
            fwd = kernels.varlen_forward(q, k, v, c, 0.3)
            bwd = kernels.varlen_backward(dout, q, k, v, glob_out, glob_lse, c, 0.3)
            for blk, (out, lse), grads in zip(c.blocks, fwd, bwd):
                b = by_rows[blk]
                args = (q[:, b.q0:b.q1], k[:, b.k0:b.k1], v[:, b.k0:b.k1])
                band = {"band": b.band} if b.band is not None else {}
                want_out, want_lse = ref.forward(*args, b.causal, 0.3, **band)
                assert (out - want_out).abs().max() < 1e-12 and (lse - want_lse).abs().max() < 1e-12, where
                want = ref.backward(dout[:, b.q0:b.q1], *args, glob_out[:, b.q0:b.q1], glob_lse[:, :, b.q0:b.q1],
                                    b.causal, 0.3, **band)
                for x, y in zip(grads, want):
                    assert x.shape == y.shape and (x - y).abs().max() < 1e-11, where
                checked += 1
    assert checked >= 16


def test_a_row_that_sees_nothing_comes_back_as_lse_minus_inf(monkeypatch):
    monkeypatch.setattr(kernels.varlen, "_varlen_ops", lambda: (fake_varlen_func, fake_varlen_backward))
    q, k = torch.randn(1, 6, 2, 4, dtype=torch.float64), torch.randn(1, 6, 2, 4, dtype=torch.float64)
    call = kernels.VarlenCall(((0, 6, 0, 3),), False, (0, 0))  # bottom-right: rows 0-2 see nothing of 3 keys
    ((out, lse),) = kernels.varlen_forward(q, k[:, :3], k[:, :3], call, 0.5)
    assert lse[..., :3].isneginf().all() and (out[:, :3] == 0).all() and lse[..., 3:].isfinite().all()


def test_flash_attn_forward_plan_equals_the_reference_block_by_block(monkeypatch):
    """``forward_plan``/``backward_plan`` (what ringx.blocks would call for a whole plan): flash-attn's varlen
    override gives every block what the reference kernel's block-by-block default gives."""
    monkeypatch.setattr(kernels.varlen, "_varlen_ops", lambda: (fake_varlen_func, fake_varlen_backward))
    flash, ref = kernels.KERNELS["flash-attn"], ReferenceKernel()
    g = torch.Generator().manual_seed(SEED + 2)
    q = torch.randn(1, SEQ_LOCAL, 4, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(1, SEQ_LOCAL, 2, 8, generator=g, dtype=torch.float64) for _ in range(2))
    dout, glob_out = torch.randn_like(q), torch.randn_like(q)
    glob_lse = torch.randn(1, 4, SEQ_LOCAL, generator=g, dtype=torch.float64) + 3.0
    n = 0
    for where, plan in some_plans(8, salt=2):
        got = {b: (o, lse) for b, o, lse in flash.forward_plan(q, k, v, plan, 0.3)}
        want = {b: (o, lse) for b, o, lse in ref.forward_plan(q, k, v, plan, 0.3)}
        assert set(got) == set(want) == set(plan), where
        for b in plan:
            assert all((x - y).abs().max() < 1e-12 for x, y in zip(got[b], want[b])), where
        got = {b: gr for b, *gr in flash.backward_plan(dout, q, k, v, glob_out, glob_lse, plan, 0.3)}
        want = {b: gr for b, *gr in ref.backward_plan(dout, q, k, v, glob_out, glob_lse, plan, 0.3)}
        assert set(got) == set(plan), where
        for b in plan:
            assert all((x - y).abs().max() < 1e-11 for x, y in zip(got[b], want[b])), where
        n += 1
    assert n >= 8
