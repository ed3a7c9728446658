"""``reference``: plain torch math, any device and float dtype; slow, O(Sq*Sk) memory, exact."""

from __future__ import annotations

import torch

from .base import KernelBase, Tensor, acc_dtype, check_square


class ReferenceKernel(KernelBase):
    """Plain torch math; any device and dtype. Slow, memory O(Sq*Sk), exact."""

    name = "reference"

    def runs_on(self, info, dtype, head_dim):
        return dtype.is_floating_point

    def _scores(self, q: Tensor, k: Tensor, causal: bool, scale: float, band=None) -> Tensor:
        b, sq, h, d = q.shape
        hk = k.shape[2]
        qg = q.to(acc_dtype(q.dtype)).view(b, sq, hk, h // hk, d)
        s = torch.einsum("bqhgd,bkhd->bhgqk", qg, k.to(qg.dtype)) * scale
        if causal:
            mask = torch.ones(sq, k.shape[1], dtype=torch.bool, device=q.device).triu_(1)
            s = s.masked_fill(mask, float("-inf"))
        if band is not None:
            from ..slices import band_visible

            s = s.masked_fill(~band_visible(*band, sq, k.shape[1], q.device), float("-inf"))
        return s  # (b, hk, g, sq, sk)

    def forward(self, q, k, v, causal, scale, *, band=None):
        check_square(q, k, causal)
        b, sq, h, d = q.shape
        s = self._scores(q, k, causal, scale, band)
        lse = torch.logsumexp(s, dim=-1)
        p = torch.exp(s - lse.masked_fill(torch.isneginf(lse), 0.0).unsqueeze(-1))  # a row that sees nothing: 0
        out = torch.einsum("bhgqk,bkhd->bqhgd", p, v.to(p.dtype)).reshape(b, sq, h, d)
        return out.to(q.dtype), lse.reshape(b, h, sq)

    def backward(self, dout, q, k, v, out, lse, causal, scale, *, band=None):
        b, sq, h, d = q.shape
        hk = k.shape[2]
        g = h // hk
        s = self._scores(q, k, causal, scale, band)
        lse = lse.masked_fill(torch.isneginf(lse), 0.0) if band is not None else lse
        p = torch.exp(s - lse.reshape(b, hk, g, sq).unsqueeze(-1).to(s.dtype))
        do = dout.to(s.dtype).reshape(b, sq, hk, g, d)
        o = out.to(s.dtype).reshape(b, sq, hk, g, d)
        dv = torch.einsum("bhgqk,bqhgd->bkhd", p, do)
        dp = torch.einsum("bqhgd,bkhd->bhgqk", do, v.to(s.dtype))
        delta = (do * o).sum(-1).permute(0, 2, 3, 1).unsqueeze(-1)  # (b, hk, g, sq, 1)
        ds = p * (dp - delta) * scale
        dq = torch.einsum("bhgqk,bkhd->bqhgd", ds, k.to(s.dtype)).reshape(b, sq, h, d)
        dk = torch.einsum("bhgqk,bqhgd->bkhd", ds, q.to(s.dtype).reshape(b, sq, hk, g, d))
        return dq, dk, dv
