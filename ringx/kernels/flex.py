"""``torch-flex``: PyTorch's FlexAttention with a ``BlockMask`` per block; chosen only when named.

Compiled on CUDA (has not run); on CPU the unfused eager path, for checking. Its backward runs through autograd,
reweighted by the rows' global LSE (:func:`reweighted_backward`)."""

from __future__ import annotations

import functools

import torch

from . import machine
from .bands import blank_rows
from .base import HALF, KernelBase, Tensor, acc_dtype, bhsd, check_square, head_dim_ok, is_sm80


@functools.cache
def _flex_api():
    """``(flex_attention, create_block_mask, AuxRequest)``, or None when this torch has no FlexAttention."""
    mod = machine.optional_module("torch.nn.attention.flex_attention")
    if mod is None or not hasattr(mod, "AuxRequest"):
        return None
    return mod.flex_attention, mod.create_block_mask, mod.AuxRequest


@functools.cache
def _flex_fn(device_type: str):
    """FlexAttention compiled on CUDA (the fused Triton kernel); as it is elsewhere (on CPU the unfused math
    path: torch 2.13 refuses ``torch.compile`` with an LSE on CPU, and any backward on CPU)."""
    flex = _flex_api()[0]
    return torch.compile(flex) if device_type == "cuda" else flex


def flex_mask_mod(kind: str, lo: Tensor | None = None, hi: Tensor | None = None):
    """The ``mask_mod`` of a block: ``"causal"`` (row a sees keys b <= a) or ``"band"`` (lo <= a - b <= hi).
    lo/hi are 0-d tensors captured by the closure, so one compiled kernel serves every band."""
    if kind == "causal":
        return lambda b, h, qi, ki: qi >= ki
    return lambda b, h, qi, ki: ((qi - ki) >= lo) & ((qi - ki) <= hi)


@functools.lru_cache(maxsize=256)
def flex_block_mask(sq: int, sk: int, causal: bool, band: tuple[int, int] | None, device: torch.device):
    """The FlexAttention ``BlockMask`` of a block (None for a fully visible one), made once per shape and band."""
    if band is None and not causal:
        return None
    if band is None:
        mod = flex_mask_mod("causal")
    else:
        lo, hi = (torch.tensor(x, dtype=torch.int64, device=device) for x in band)
        mod = flex_mask_mod("band", lo, hi)
    return _flex_api()[1](mod, None, None, sq, sk, device=device)


def reweighted_backward(fwd, dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                        lse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A block's exact gradients from a *differentiable* block forward ``fwd(q, k, v) -> (o_b, lse_b)`` and the
    rows' global ``out``/``lse`` (for kernels whose backward only runs through autograd, as FlexAttention's).

    With w = exp(lse_b - lse), the global out is a sum of w * o_b over blocks, so the block's share of the loss
    gradient is grad_out = w * dout and grad_lse = w * (dout . o_b - dout . out): autograd then gives
    P_global = w * P_local in every term, which is what a flash-style backward with the global LSE computes.
    The block's forward is recomputed once (a flash backward recomputes only the scores)."""
    acc = acc_dtype(q.dtype)
    with torch.enable_grad():
        qd, kd, vd = (x.detach().requires_grad_() for x in (q, k, v))
        ob, lb = fwd(qd, kd, vd)  # (B, S, H, D), (B, H, S)
        lb_ = lb.detach().to(acc)
        w = torch.where(torch.isneginf(lb_), 0.0, torch.exp(lb_ - lse.to(acc)))  # a row that sees nothing: 0
        do = dout.to(acc)
        g_out = (w.transpose(1, 2).unsqueeze(-1) * do).to(ob.dtype)
        dots = ((do * ob.detach().to(acc)).sum(-1) - (do * out.to(acc)).sum(-1)).transpose(1, 2)  # (B, H, S)
        g_lse = (w * dots).to(lb.dtype)
        dq, dk, dv = torch.autograd.grad((ob, lb), (qd, kd, vd), (g_out, g_lse))
    return dq, dk, dv


class TorchFlexKernel(KernelBase):
    """PyTorch's FlexAttention (``torch.nn.attention.flex_attention``) with a ``BlockMask`` per block.

    Compiled on CUDA (Triton; fp16/bf16/fp32); on CPU the unfused eager path (float32/float64,
    slow: for checking). LSE comes back as the natural log (``return_aux=AuxRequest(lse=True)``;
    the log2 of the fused kernel is converted by torch), a row that sees nothing as out 0 and LSE
    -inf. GQA is native (``enable_gqa``). The backward recomputes the block under autograd and
    reweights it by the global LSE (:func:`reweighted_backward`); torch 2.13 has no FlexAttention
    backward on CPU, so there the backward falls back to ``torch-cpu`` (same band, same global
    out/LSE). Chosen only when named (``kernel="torch-flex"``): the CUDA path has not run.
    """

    name = "torch-flex"
    # By name only, everywhere: on CPU it is the unfused math path (for checking); on CUDA it has never run, so no
    # selftest or bench kernels sweep picks it up until a GPU session has measured it.
    named_only_on = ("cpu", "cuda")

    def runs_on(self, info, dtype, head_dim):
        if _flex_api() is None:
            return False
        if info.type == "cpu":
            return dtype in (torch.float32, torch.float64)
        return is_sm80(info) and dtype in (*HALF, torch.float32) and head_dim_ok(head_dim, multiple=16)

    def _attend(self, q, k, v, causal, scale, band):
        _, _, aux_request = _flex_api()
        sq, sk = q.shape[1], k.shape[1]
        bm = flex_block_mask(sq, sk, causal, band, q.device)
        out, aux = _flex_fn(q.device.type)(bhsd(q), bhsd(k), bhsd(v), block_mask=bm, scale=scale,
                                           enable_gqa=q.shape[2] != k.shape[2], return_aux=aux_request(lse=True))
        return bhsd(out), aux.lse.to(acc_dtype(q.dtype))

    def forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        with torch.no_grad():  # some algorithms call kernels on tensors that require grad; the CPU path refuses them
            out, lse = self._attend(q.detach(), k.detach(), v.detach(), causal, scale, band)
        return (out, lse) if band is None else blank_rows(out, lse, k.shape[1], band)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        if q.device.type == "cpu":  # no FlexAttention backward on CPU (torch 2.13)
            return self.kernel_named("torch-cpu").backward(dout, q, k, v, out, lse, causal, scale, band=band)
        return reweighted_backward(lambda q_, k_, v_: self._attend(q_, k_, v_, causal, scale, band),
                                   dout, q, k, v, out, lse)
