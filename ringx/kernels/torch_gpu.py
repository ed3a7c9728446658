"""torch's fused GPU attention ops: ``torch-cuda`` (the flash op; AOTriton on ROCm), ``torch-cudnn`` and
``torch-efficient`` (O(S) memory, fp32), and the GQA and LSE-padding adapters around them.

None of these has run here (no GPU): tests/test_kernels.py checks the adapters against fake ops bound by the
real ops' schemas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import machine
from .bands import attn_bias, blank_rows
from .base import HALF, BandFallback, KernelBase, Tensor, bhsd, check_square, head_dim_ok, is_sm80, philox_zero


def expand_heads(x: Tensor, heads: int) -> Tensor:
    """K/V with their heads repeated up to ``heads`` (each K/V head serves heads/kv_heads Q heads in turn)."""
    return x if x.shape[2] == heads else x.repeat_interleave(heads // x.shape[2], dim=2)


def fold_heads(dx: Tensor, heads: int) -> Tensor:
    """The gradient of :func:`expand_heads`: sum each group of repeated heads back to one of ``heads``."""
    b, s, h, d = dx.shape
    return dx if h == heads else dx.reshape(b, s, heads, h // heads, d).sum(3)


class TorchCudaKernel(BandFallback):
    """torch's fused flash-attention op on CUDA, and on ROCm (where torch builds it with AOTriton).

    K/V heads are expanded locally for GQA (after communication, never before). It has no band path: every
    band block falls back (:class:`BandFallback`). The ROCm path is written from the documented op and has
    not run here.
    """

    name = "torch-cuda"

    def runs_on(self, info, dtype, head_dim):
        return (is_sm80(info) or info.vendor == "amd") and dtype in HALF and head_dim_ok(head_dim)

    def describe(self) -> str:
        aot = " (AOTriton)" if torch.version.hip is not None else ""
        return f"{machine.torch_version()}, {machine.gpu_runtime()}{aot}"

    def native_forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        h = q.shape[2]
        res = torch.ops.aten._scaled_dot_product_flash_attention(
            bhsd(q), bhsd(expand_heads(k, h)), bhsd(expand_heads(v, h)), 0.0, causal, False, scale=scale)
        return bhsd(res[0]), res[1]

    def native_backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        h, hk = q.shape[2], k.shape[2]
        ke, ve = expand_heads(k, h), expand_heads(v, h)
        sq, sk = q.shape[1], k.shape[1]
        zero = philox_zero(q.device)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            bhsd(dout), bhsd(q), bhsd(ke), bhsd(ve), bhsd(out), lse.contiguous(),
            None, None, sq, sk, 0.0, causal, zero, zero, scale=scale)
        return bhsd(dq), fold_heads(bhsd(dk), hk), fold_heads(bhsd(dv), hk)


class TorchCudnnKernel(KernelBase):
    """torch's cuDNN attention op (``aten._scaled_dot_product_cudnn_attention``) and its backward.

    Measured as a bare op on one H100 (torch 2.11, cuDNN 9.19): ~2x the flash op's
    throughput in bf16, native GQA (K/V keep their head count, dK/dV come back with
    it), LSE float32 shaped (B, H, S, 1), transposed (B, S, H, D) views accepted.
    Not yet run inside ringx on a GPU.
    """

    name = "torch-cudnn"

    def runs_on(self, info, dtype, head_dim):
        # cuDNN 9 on Ampere and newer; head_dim up to 128, up to 256 from Hopper on (measured 64-256 on H100).
        most = 256 if info.capability >= (9, 0) else 128
        return (is_sm80(info) and info.cudnn >= 90000 and dtype in HALF and head_dim_ok(head_dim, most)
                and hasattr(torch.ops.aten, "_scaled_dot_product_cudnn_attention"))

    def describe(self) -> str:
        return f"{machine.torch_version()}, cuDNN {torch.backends.cudnn.version()}"

    def forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        bias = None if band is None else attn_bias(q, k, band)
        res = torch.ops.aten._scaled_dot_product_cudnn_attention(
            bhsd(q), bhsd(k), bhsd(v), bias, True, 0.0, causal, False, scale=scale)
        lse = res[1]
        out, lse = bhsd(res[0]), (lse[..., 0] if lse.dim() == 4 else lse)  # (B, H, S, 1) -> (B, H, S), a view
        return (out, lse) if band is None else blank_rows(out.clone(), lse.clone(), k.shape[1], band)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        o, do = bhsd(out), bhsd(dout)
        if do.stride() != o.stride():  # older cuDNN assumes dO laid out like O
            do = torch.empty_like(o).copy_(do)
        zero = philox_zero(q.device)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_cudnn_attention_backward(
            do, bhsd(q), bhsd(k), bhsd(v), o, lse.contiguous().unsqueeze(-1), zero, zero,
            None if band is None else attn_bias(q, k, band), None, None, q.shape[1], k.shape[1], 0.0, causal,
            scale=scale)
        return bhsd(dq), bhsd(dk), bhsd(dv)


LSE_ALIGN = 32  # the efficient-attention op pads its LSE's sequence axis to a multiple of this


class TorchEfficientKernel(KernelBase):
    """torch's memory-efficient attention op (``aten._scaled_dot_product_efficient_attention``).

    The fp32 kernel on CUDA: O(S) memory, float32 accuracy (measured as a bare op on
    an H100: out 5-7e-7, grads 6e-7 to 1e-6 relative to float64). Its LSE comes back
    padded to a multiple of 32 columns (sliced off here, padded again for the
    backward); it refuses fewer K/V heads, so K/V are expanded locally per block and
    dK/dV folded back. Not yet run inside ringx on a GPU; on ROCm only when forced.
    """

    name = "torch-efficient"

    def runs_on(self, info, dtype, head_dim):
        if dtype not in (torch.float32, *HALF) or info.type != "cuda" or info.vendor not in ("nvidia", "amd"):
            return False
        if info.vendor == "nvidia" and dtype == torch.bfloat16 and info.capability < (8, 0):
            return False
        # The op wants head_dim aligned to 16 bytes.
        return head_dim_ok(head_dim, most=1 << 16, multiple=16 // dtype.itemsize)

    def describe(self) -> str:
        return f"{machine.torch_version()}, {machine.gpu_runtime()}"

    def forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        h = q.shape[2]
        bias = None if band is None else attn_bias(q, k, band, align=16)
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(
            bhsd(q), bhsd(expand_heads(k, h)), bhsd(expand_heads(v, h)), bias, True, 0.0, causal,
            scale=scale)[:2]
        out, lse = bhsd(out), unpad_lse(lse, q.shape[1])
        return (out, lse) if band is None else blank_rows(out.clone(), lse.clone(), k.shape[1], band)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        h, hk = q.shape[2], k.shape[2]
        ke, ve = expand_heads(k, h), expand_heads(v, h)
        zero = philox_zero(q.device)
        bias = None if band is None else attn_bias(q, k, band, align=16)
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            bhsd(dout), bhsd(q), bhsd(ke), bhsd(ve), bias, bhsd(out), pad_lse(lse), zero, zero, 0.0,
            [True, True, True, False], causal, scale=scale)
        return bhsd(dq), fold_heads(bhsd(dk), hk), fold_heads(bhsd(dv), hk)


def unpad_lse(lse: Tensor, seq: int) -> Tensor:
    """The (B, H, seq) LSE from one padded along its last axis (a view, no copy)."""
    return lse if lse.shape[-1] == seq else lse[..., :seq]


def pad_lse(lse: Tensor) -> Tensor:
    """``lse`` (B, H, S) padded with zeros to a multiple of LSE_ALIGN columns, the layout the
    efficient-attention backward reads (its rows past S are never used)."""
    pad = -lse.shape[-1] % LSE_ALIGN
    return F.pad(lse, (0, pad)) if pad else lse
