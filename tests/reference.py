"""Float64 full attention with autograd: the ground truth every test compares with.

Written independently of ringx (no kernels, plans or merges from the library).
"""

from __future__ import annotations

import torch


def full_attention(q, k, v, dout, causal: bool, scale: float | None = None):
    """out, lse (B, H, S), dq, dk, dv of softmax attention over the whole sequence, in float64."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    b, s, h, d = q.shape
    g = h // k.shape[2]
    kk, vv = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, kk) * (scale if scale is not None else d**-0.5)
    if causal:
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    lse = scores.logsumexp(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), vv)
    out.backward(dout.double())
    return out.detach(), lse.detach(), q.grad, k.grad, v.grad


def masked_block_attention(q, k, v, dout, vis, scale: float):
    """out, lse, dq, dk, dv of one block's attention under the boolean visibility ``vis`` (queries x keys), in
    float64 by autograd; a row that sees nothing has out 0 and LSE -inf."""
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    g = q.shape[2] // k.shape[2]
    s = torch.einsum("bqhd,bkhd->bhqk", q, k.repeat_interleave(g, 2)) * scale
    s = s.masked_fill(~vis, float("-inf"))
    lse = s.logsumexp(-1)
    p = torch.exp(s - lse.masked_fill(lse.isneginf(), 0).unsqueeze(-1))
    out = torch.einsum("bhqk,bkhd->bqhd", p, v.repeat_interleave(g, 2))
    out.backward(dout.double())
    return out.detach(), lse.detach(), q.grad, k.grad, v.grad


def rel(x, ref) -> float:
    """max |x - ref| over max(1, max |ref|): the error relative to the reference's scale."""
    return ((x.double() - ref).abs().max() / max(1.0, ref.abs().max().item())).item()
