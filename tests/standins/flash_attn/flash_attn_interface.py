"""flash-attn 2.8.3's private block functions, as ring-flash-attention 0.1.8 calls them, in plain PyTorch on the CPU.

Shapes as flash-attn's: q (batch, seq_q, heads, head_dim), k and v (batch, seq_k, kv_heads, head_dim) with
heads % kv_heads == 0; the log-sum-exp (batch, heads, seq_q) in float32. ``causal`` is bottom-right aligned as
flash-attn's (query i sees key j iff j <= i + seq_k - seq_q). No dropout, softcap, ALiBi or window.
"""

from __future__ import annotations

import torch


def _scores(q, k, softmax_scale, causal):
    """(batch, heads, seq_q, seq_k) scores, masked, in the inputs' dtype; K repeated for GQA."""
    g = q.shape[2] // k.shape[2]
    kk = k.repeat_interleave(g, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, kk) * softmax_scale
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        seen = torch.arange(sk)[None, :] <= torch.arange(sq)[:, None] + (sk - sq)
        s = s.masked_fill(~seen, float("-inf"))
    return s


def _unsupported(dropout_p, window_size_left, window_size_right, softcap, alibi_slopes) -> None:
    if dropout_p or softcap or alibi_slopes is not None or (window_size_left, window_size_right) != (-1, -1):
        raise NotImplementedError("the flash-attn stand-in has no dropout, softcap, ALiBi or window")


def _flash_attn_forward(q, k, v, dropout_p, softmax_scale, causal, window_size_left=-1, window_size_right=-1,
                        softcap=0.0, alibi_slopes=None, return_softmax=False):
    """(out, softmax_lse, S_dmask, rng_state) as flash-attn 2.8.3 returns them."""
    _unsupported(dropout_p, window_size_left, window_size_right, softcap, alibi_slopes)
    s = _scores(q, k, softmax_scale, causal)
    lse = torch.logsumexp(s, dim=-1)
    g = q.shape[2] // k.shape[2]
    out = torch.einsum("bhqk,bkhd->bqhd", torch.exp(s - lse[..., None]), v.repeat_interleave(g, dim=2))
    return out.to(q.dtype), lse.float(), None, None


def _flash_attn_backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, dropout_p, softmax_scale, causal,
                         window_size_left=-1, window_size_right=-1, softcap=0.0, alibi_slopes=None,
                         deterministic=False, rng_state=None):
    """Writes dq, dk, dv (kv_heads as k's) from the forward's out and log-sum-exp; returns softmax_d."""
    _unsupported(dropout_p, window_size_left, window_size_right, softcap, alibi_slopes)
    g = q.shape[2] // k.shape[2]
    kk, vv = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
    p = torch.exp(_scores(q, k, softmax_scale, causal) - softmax_lse.to(q.dtype)[..., None])
    delta = (dout * out).sum(-1).transpose(1, 2)  # (batch, heads, seq_q): softmax_d
    dp = torch.einsum("bqhd,bkhd->bhqk", dout, vv)
    ds = p * (dp - delta[..., None])
    dq.copy_(torch.einsum("bhqk,bkhd->bqhd", ds, kk) * softmax_scale)
    b, sk, hk, d = k.shape
    dk.copy_((torch.einsum("bhqk,bqhd->bkhd", ds, q) * softmax_scale).reshape(b, sk, hk, g, d).sum(3))
    dv.copy_(torch.einsum("bhqk,bqhd->bkhd", p, dout).reshape(b, sk, hk, g, d).sum(3))
    return delta.float()


def _flash_attn_varlen_forward(*args, **kwargs):
    raise NotImplementedError("the flash-attn stand-in has no varlen functions")


def _flash_attn_varlen_backward(*args, **kwargs):
    raise NotImplementedError("the flash-attn stand-in has no varlen functions")
