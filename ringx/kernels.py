"""Local attention kernels behind one interface.

Every kernel works on (batch, seq, heads, head_dim) tensors, lets K/V have
fewer heads than Q (GQA), and returns ``(out, lse)`` with ``lse`` shaped
(batch, heads, seq) in the accumulation dtype. ``causal`` always means a
square block whose row i sees keys 0..i: the masking plan never asks for
anything else, so top-left and bottom-right alignment cannot disagree.

The backward takes the *global* ``out`` and ``lse`` of the query rows, which
makes each block's gradient exact on its own (as flash-attention does).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from typing import Protocol

import torch

Tensor = torch.Tensor
HALF = (torch.float16, torch.bfloat16)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float32 for half types, the input dtype otherwise."""
    return torch.float32 if dtype in HALF else dtype


class Kernel(Protocol):
    name: str

    def supports(self, device: torch.device, dtype: torch.dtype) -> bool: ...

    def forward(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float) -> tuple[Tensor, Tensor]: ...

    def backward(self, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                 causal: bool, scale: float) -> tuple[Tensor, Tensor, Tensor]: ...


def _square(q: Tensor, k: Tensor, causal: bool) -> None:
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal blocks must be square, got {q.shape[1]} queries x {k.shape[1]} keys")


def _bhsd(x: Tensor) -> Tensor:
    return x.transpose(1, 2)


class ReferenceKernel:
    """Plain torch math; any device and dtype. Slow, memory O(Sq*Sk), exact."""

    name = "reference"

    def supports(self, device: torch.device, dtype: torch.dtype) -> bool:
        return dtype.is_floating_point

    def _scores(self, q: Tensor, k: Tensor, causal: bool, scale: float) -> Tensor:
        b, sq, h, d = q.shape
        hk = k.shape[2]
        qg = q.to(acc_dtype(q.dtype)).view(b, sq, hk, h // hk, d)
        s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.to(qg.dtype)) * scale
        if causal:
            mask = torch.ones(sq, k.shape[1], dtype=torch.bool, device=q.device).triu_(1)
            s = s.masked_fill(mask, float("-inf"))
        return s  # (b, hk, g, sq, sk)

    def forward(self, q, k, v, causal, scale):
        _square(q, k, causal)
        b, sq, h, d = q.shape
        s = self._scores(q, k, causal, scale)
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse.unsqueeze(-1))
        out = torch.einsum("bhgqk,bkhd->bqhgd", p, v.to(p.dtype)).reshape(b, sq, h, d)
        return out.to(q.dtype), lse.reshape(b, h, sq)

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        b, sq, h, d = q.shape
        hk = k.shape[2]
        g = h // hk
        s = self._scores(q, k, causal, scale)
        p = torch.exp(s - lse.view(b, hk, g, sq).unsqueeze(-1).to(s.dtype))
        do = dout.to(s.dtype).view(b, sq, hk, g, d)
        o = out.to(s.dtype).view(b, sq, hk, g, d)
        dv = torch.einsum("bhgqk,bqhgd->bkhd", p, do)
        dp = torch.einsum("bqhgd,bkhd->bhgqk", do, v.to(s.dtype))
        delta = (do * o).sum(-1).permute(0, 2, 3, 1).unsqueeze(-1)  # (b, hk, g, sq, 1)
        ds = p * (dp - delta) * scale
        dq = torch.einsum("bhgqk,bkhd->bqhgd", ds, k.to(s.dtype)).reshape(b, sq, h, d)
        dk = torch.einsum("bhgqk,bqhgd->bkhd", ds, q.to(s.dtype).view(b, sq, hk, g, d))
        return dq, dk, dv


class TorchCpuKernel:
    """torch's fused flash-attention for CPU (``aten._scaled_dot_product_flash_attention_for_cpu``)."""

    name = "torch-cpu"

    def supports(self, device: torch.device, dtype: torch.dtype) -> bool:
        return device.type == "cpu" and dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def forward(self, q, k, v, causal, scale):
        _square(q, k, causal)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            _bhsd(q), _bhsd(k), _bhsd(v), 0.0, causal, scale=scale)
        return _bhsd(out), lse

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            _bhsd(dout), _bhsd(q), _bhsd(k), _bhsd(v), _bhsd(out), lse.contiguous(), 0.0, causal, scale=scale)
        return _bhsd(dq), _bhsd(dk), _bhsd(dv)


def _expand_heads(x: Tensor, heads: int) -> Tensor:
    return x if x.shape[2] == heads else x.repeat_interleave(heads // x.shape[2], dim=2)


def _fold_heads(dx: Tensor, heads: int) -> Tensor:
    b, s, h, d = dx.shape
    return dx if h == heads else dx.view(b, s, heads, h // heads, d).sum(3)


class TorchCudaKernel:
    """torch's fused flash-attention op on CUDA/ROCm (half types only).

    K/V heads are expanded locally for GQA (after communication, never before).
    """

    name = "torch-cuda"

    def supports(self, device: torch.device, dtype: torch.dtype) -> bool:
        return device.type == "cuda" and dtype in HALF

    def forward(self, q, k, v, causal, scale):
        _square(q, k, causal)
        h = q.shape[2]
        res = torch.ops.aten._scaled_dot_product_flash_attention(
            _bhsd(q), _bhsd(_expand_heads(k, h)), _bhsd(_expand_heads(v, h)), 0.0, causal, False, scale=scale)
        return _bhsd(res[0]), res[1]

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        h, hk = q.shape[2], k.shape[2]
        ke, ve = _expand_heads(k, h), _expand_heads(v, h)
        sq, sk = q.shape[1], k.shape[1]
        zero = torch.zeros((), dtype=torch.int64, device=q.device)
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            _bhsd(dout), _bhsd(q), _bhsd(ke), _bhsd(ve), _bhsd(out), lse.contiguous(),
            None, None, sq, sk, 0.0, causal, zero, zero, scale=scale)
        return _bhsd(dq), _fold_heads(_bhsd(dk), hk), _fold_heads(_bhsd(dv), hk)


@functools.cache
def _have_flash_attn() -> bool:  # asked at every attention call: search sys.path once
    return importlib.util.find_spec("flash_attn") is not None


@functools.cache
def _param_names(fn) -> frozenset[str]:  # asked per block: read the installed version's signature once
    return frozenset(inspect.signature(fn).parameters)


class FlashAttnKernel:
    """The ``flash_attn`` package (GPU, half types); GQA is native.

    Its private forward/backward changed between 2.6 (``window_size`` tuple,
    8 return values) and 2.7 (``window_size_left/right``, 4 return values).
    """

    name = "flash-attn"

    def supports(self, device: torch.device, dtype: torch.dtype) -> bool:
        return device.type == "cuda" and dtype in HALF and _have_flash_attn()

    @staticmethod
    def _call(fn, **kw):
        params = _param_names(fn)
        if "window_size" in params:
            kw["window_size"] = (-1, -1)
        else:
            kw.update(window_size_left=-1, window_size_right=-1)
        if "softcap" in params:
            kw["softcap"] = 0.0
        return fn(**{k: v for k, v in kw.items() if k in params})

    def forward(self, q, k, v, causal, scale):
        from flash_attn.flash_attn_interface import _flash_attn_forward

        _square(q, k, causal)
        res = self._call(_flash_attn_forward, q=q, k=k, v=v, dropout_p=0.0, softmax_scale=scale, causal=causal,
                         alibi_slopes=None, return_softmax=False)
        return (res[0], res[5]) if len(res) == 8 else (res[0], res[1])

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        from flash_attn.flash_attn_interface import _flash_attn_backward

        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        self._call(_flash_attn_backward, dout=dout.contiguous(), q=q, k=k, v=v, out=out, softmax_lse=lse.contiguous(),
                   dq=dq, dk=dk, dv=dv, dropout_p=0.0, softmax_scale=scale, causal=causal, alibi_slopes=None,
                   deterministic=False, rng_state=None)
        return dq, dk, dv


KERNELS: dict[str, Kernel] = {
    k.name: k for k in (FlashAttnKernel(), TorchCudaKernel(), TorchCpuKernel(), ReferenceKernel())
}


def select_kernel(device: torch.device, dtype: torch.dtype, name: str | None = None) -> Kernel:
    """The named kernel, or the first of flash-attn, torch-cuda, torch-cpu, reference that runs here."""
    if name is not None:
        if name not in KERNELS:
            raise ValueError(f"unknown kernel {name!r}; choose one of {', '.join(KERNELS)}")
        kern = KERNELS[name]
        if not kern.supports(device, dtype):
            usable = [k for k, v in KERNELS.items() if v.supports(device, dtype)]
            raise ValueError(f"kernel {name!r} does not run {dtype} on {device.type}; usable here: {', '.join(usable)}")
        return kern
    return next(k for k in KERNELS.values() if k.supports(device, dtype))
