"""flash-attn 2.8.3's private block and varlen functions, as ring-flash-attention 0.1.8 calls them, in plain PyTorch
on the CPU.

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


def _pieces(cu_seqlens_q, cu_seqlens_k):
    """Each packed sequence's (q0, q1, k0, k1) rows."""
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    return [(cq[i], cq[i + 1], ck[i], ck[i + 1]) for i in range(len(cq) - 1)]


def _flash_attn_varlen_forward(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
                               softmax_scale, causal, window_size_left=-1, window_size_right=-1, softcap=0.0,
                               alibi_slopes=None, return_softmax=False, block_table=None, leftpad_k=None,
                               seqused_k=None, zero_tensors=False):
    """Packed sequences: q (total_q, heads, head_dim), k and v (total_k, kv_heads, head_dim); each sequence is the
    block function on its own rows (causal bottom-right aligned per sequence). The log-sum-exp is
    (heads, total_q), as flash-attn's unpadded one. Returns (out, softmax_lse, S_dmask, rng_state)."""
    _unsupported(dropout_p, window_size_left, window_size_right, softcap, alibi_slopes)
    out = torch.zeros_like(q)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32, device=q.device)
    for q0, q1, k0, k1 in _pieces(cu_seqlens_q, cu_seqlens_k):
        o, lse_p, _, _ = _flash_attn_forward(q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], 0.0, softmax_scale,
                                             causal)
        out[q0:q1], lse[:, q0:q1] = o[0], lse_p[0]
    return out, lse, None, None


def _flash_attn_varlen_backward(dout, q, k, v, out, softmax_lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k,
                                max_seqlen_q, max_seqlen_k, dropout_p, softmax_scale, causal, window_size_left=-1,
                                window_size_right=-1, softcap=0.0, alibi_slopes=None, deterministic=False,
                                rng_state=None, zero_tensors=False):
    """Writes dq, dk, dv of the packed sequences' rows; returns softmax_d (heads, total_q)."""
    _unsupported(dropout_p, window_size_left, window_size_right, softcap, alibi_slopes)
    delta = torch.zeros((q.shape[1], q.shape[0]), dtype=torch.float32, device=q.device)
    for q0, q1, k0, k1 in _pieces(cu_seqlens_q, cu_seqlens_k):
        grads = [torch.empty_like(t[None, a:b]) for t, a, b in ((q, q0, q1), (k, k0, k1), (v, k0, k1))]
        d = _flash_attn_backward(dout[None, q0:q1], q[None, q0:q1], k[None, k0:k1], v[None, k0:k1],
                                 out[None, q0:q1], softmax_lse[None, :, q0:q1], *grads, 0.0, softmax_scale, causal)
        dq[q0:q1], dk[k0:k1], dv[k0:k1] = (g[0] for g in grads)
        delta[:, q0:q1] = d[0]
    return delta
