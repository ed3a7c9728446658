"""``flash-attn`` (the ``flash_attn`` package, 2.x; also its ROCm build) and ``flash-attn3`` (flash-attention's
Hopper build, ``flash_attn_interface``): GQA native, a band block that is a bottom-right window run natively.

Neither has run here (no flash-attn): tests/test_kernels.py checks them against fakes of each interface version."""

from __future__ import annotations

import torch

from . import machine
from .bands import blank_rows, flash_window
from .base import HALF, BandFallback, check_square, head_dim_ok, is_sm80
from .flash_call import call_flash, lse_of
from .varlen import varlen_backward, varlen_calls, varlen_forward


class FlashAttnKernel(BandFallback):
    """The ``flash_attn`` package (2.x; GPU, half types); GQA is native.

    The same package name and interface serve NVIDIA and AMD's ROCm build
    (ROCm/flash-attention); the ROCm path is written from that interface and has not run here.
    """

    name = "flash-attn"

    def runs_on(self, info, dtype, head_dim):
        return ((is_sm80(info) or info.vendor == "amd") and dtype in HALF and head_dim_ok(head_dim)
                and machine.optional_module("flash_attn") is not None)

    def describe(self) -> str:
        rocm = " (ROCm)" if torch.version.hip is not None else ""
        return f"flash_attn {getattr(machine.optional_module('flash_attn'), '__version__', '?')}{rocm}"

    def forward_plan(self, q, k, v, plan, scale):
        """One varlen call per (causal, window_size) group of the plan's blocks (:func:`varlen_calls`)."""
        calls, rest = varlen_calls(plan)
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        res = [(by_rows[blk], *ol) for c in calls for blk, ol in zip(c.blocks, varlen_forward(q, k, v, c, scale))]
        return res + super().forward_plan(q, k, v, rest, scale)

    def backward_plan(self, dout, q, k, v, out, lse, plan, scale):
        calls, rest = varlen_calls(plan)
        by_rows = {(b.q0, b.q1, b.k0, b.k1): b for b in plan}
        res = [(by_rows[blk], *g) for c in calls
               for blk, g in zip(c.blocks, varlen_backward(dout, q, k, v, out, lse, c, scale))]
        return res + super().backward_plan(dout, q, k, v, out, lse, rest, scale)

    def native_forward(self, q, k, v, causal, scale, *, band=None):
        from flash_attn.flash_attn_interface import _flash_attn_forward

        check_square(q, k, causal)
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        res = call_flash(_flash_attn_forward, win, q=q, k=k, v=v, dropout_p=0.0, softmax_scale=scale,
                         causal=causal, alibi_slopes=None, return_softmax=False)
        if band is not None:  # flash-attn gives a row that sees no key LSE +inf: make it -inf
            return blank_rows(res[0], lse_of(res), k.shape[1], band)
        return res[0], lse_of(res)

    def native_backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        from flash_attn.flash_attn_interface import _flash_attn_backward

        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        call_flash(_flash_attn_backward, win, dout=dout.contiguous(), q=q, k=k, v=v, out=out,
                   softmax_lse=lse.contiguous(), dq=dq, dk=dk, dv=dv, dropout_p=0.0, softmax_scale=scale,
                   causal=causal, alibi_slopes=None, deterministic=False, rng_state=None)
        return dq, dk, dv


class FlashAttn3Kernel(BandFallback):
    """flash-attention 3 (the ``flash_attn_interface`` module of flash-attention's Hopper build); GQA is native.

    Its private ``_flash_attn_forward``/``_flash_attn_backward`` changed between
    releases (positional varlen/paged-KV arguments, ``window_size`` tuple vs
    ``window_size_left/right``, ``causal`` vs ``is_causal``, 7 vs 4 return
    values); they are called by keyword after reading the installed signature.
    Chosen automatically on Hopper (sm90) only. Not yet run inside ringx on a GPU.
    """

    name = "flash-attn3"

    def runs_on(self, info, dtype, head_dim):
        return (is_sm80(info) and dtype in HALF and head_dim_ok(head_dim)
                and machine.optional_module("flash_attn_interface") is not None)

    def describe(self) -> str:
        v = machine.dist_version("flash_attn_3", "flash-attn-3", "flashattn-hopper")
        return f"flash_attn_3 {v}" if v else "flash_attn_interface (version unknown)"

    def native_forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        fa3 = machine.optional_module("flash_attn_interface")
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        res = call_flash(fa3._flash_attn_forward, win, q=q, k=k, v=v, softmax_scale=scale, causal=causal)
        if band is not None:  # a row that sees no key: LSE +inf from flash-attn, -inf here
            return blank_rows(res[0], lse_of(res), k.shape[1], band)
        return res[0], lse_of(res)

    def native_backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        fa3 = machine.optional_module("flash_attn_interface")
        win = (-1, -1) if band is None else flash_window(q.shape[1], k.shape[1], band)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        call_flash(fa3._flash_attn_backward, win, dout=dout.contiguous(), q=q, k=k, v=v, out=out,
                   softmax_lse=lse.contiguous(), dq=dq, dk=dk, dv=dv, softmax_scale=scale, causal=causal,
                   deterministic=False)
        return dq, dk, dv
