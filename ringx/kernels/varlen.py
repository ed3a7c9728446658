"""flash-attn's varlen path: many blocks of one K/V buffer in one call.

A document mask's plan has one block per (query document piece, key document piece): many small blocks. flash-attn's
varlen functions take them in one call, each block a "sequence" of the packed batch (cu_seqlens), as long as they
share causal and window_size (flash-attn aligns both bottom-right, per sequence). Written from flash-attn 2.x's
documented ``flash_attn_varlen_func`` and its ``_flash_attn_varlen_backward``; NOT run (no flash-attn here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bands import flash_window
from .base import Tensor
from .flash_call import call_flash


def varlen_window(sq: int, sk: int, causal: bool, band: tuple[int, int] | None) -> tuple[bool, tuple[int, int]] | None:
    """``(causal, window_size)`` that makes flash-attn compute this block (bottom-right aligned), in a normal form so
    that blocks with the same visibility share a key: a side that reaches past the block is -1 (unbounded), and a
    window (-1, 0) is causal. None when the band is no window (the plans trim bands, so every band of theirs is one)."""
    if band is None:
        return (True, (-1, -1)) if causal else (False, (-1, -1))
    win = flash_window(sq, sk, band)
    if win is None:
        return None
    left, right = win
    left = -1 if left >= sk - 1 else left
    right = -1 if right >= sq - 1 else right
    if (left, right) == (-1, 0):
        return True, (-1, -1)
    return False, (left, right)


@dataclass(frozen=True)
class VarlenCall:
    """Blocks (q0, q1, k0, k1) of local rows computed by one varlen call with these ``causal``/``window``."""

    blocks: tuple[tuple[int, int, int, int], ...]
    causal: bool
    window: tuple[int, int]

    @property
    def max_q(self) -> int:
        return max(q1 - q0 for q0, q1, _, _ in self.blocks)

    @property
    def max_k(self) -> int:
        return max(k1 - k0 for _, _, k0, k1 in self.blocks)

    @property
    def total_q(self) -> int:
        return sum(q1 - q0 for q0, q1, _, _ in self.blocks)

    @property
    def total_k(self) -> int:
        return sum(k1 - k0 for _, _, k0, k1 in self.blocks)

    def cu_seqlens(self, batch: int = 1) -> tuple[list[int], list[int]]:
        """(cu_seqlens_q, cu_seqlens_k): offsets of every (batch element, block) sequence in the packed rows,
        batch element major (the packing of :func:`varlen_pack`)."""
        cq, ck = [0], [0]
        for _ in range(batch):
            for q0, q1, k0, k1 in self.blocks:
                cq.append(cq[-1] + q1 - q0)
                ck.append(ck[-1] + k1 - k0)
        return cq, ck


def varlen_calls(plan) -> tuple[tuple[VarlenCall, ...], tuple]:
    """The plan's blocks grouped into varlen calls (one per distinct causal/window, in first-seen order), and the
    blocks no window expresses (to compute one by one). ``plan``: blocks with q0, q1, k0, k1, causal, band."""
    groups: dict[tuple, list] = {}
    rest = []
    for b in plan:
        key = varlen_window(b.q1 - b.q0, b.k1 - b.k0, b.causal, b.band)
        if key is None:
            rest.append(b)
        else:
            groups.setdefault(key, []).append((b.q0, b.q1, b.k0, b.k1))
    return tuple(VarlenCall(tuple(bs), c, w) for (c, w), bs in groups.items()), tuple(rest)


def varlen_pack(x: Tensor, spans: list[tuple[int, int]]) -> Tensor:
    """Rows ``x[:, a:b]`` of every span, packed as flash-attn's varlen layout (batch * total, heads, dim)."""
    parts = torch.cat([x[:, a:b] for a, b in spans], dim=1)
    return parts.reshape(-1, *x.shape[2:])


def varlen_unpack(x: Tensor, batch: int, sizes: list[int]) -> list[Tensor]:
    """The inverse of :func:`varlen_pack`: one (batch, n, heads, dim) view per span."""
    return list(x.view(batch, -1, *x.shape[1:]).split(sizes, dim=1))


def varlen_lse_pack(lse: Tensor, spans: list[tuple[int, int]]) -> Tensor:
    """(B, H, S) rows of every span as the varlen LSE layout (H, batch * total)."""
    parts = torch.cat([lse[:, :, a:b] for a, b in spans], dim=2)  # (B, H, T)
    return parts.permute(1, 0, 2).reshape(lse.shape[1], -1).contiguous()


def varlen_lse_unpack(lse: Tensor, batch: int, sizes: list[int]) -> list[Tensor]:
    """The varlen LSE (H, batch * total) as one (B, H, n) tensor per span."""
    if lse.dim() != 2:
        raise RuntimeError(f"flash-attn varlen returned an LSE of shape {tuple(lse.shape)}; this path expects "
                           "(heads, total_q) (flash-attn >= 2.1)")
    return list(lse.view(lse.shape[0], batch, -1).permute(1, 0, 2).split(sizes, dim=2))


def _varlen_ops():
    """flash-attn's public varlen forward and private varlen backward (the latter takes the global out/LSE)."""
    from flash_attn.flash_attn_interface import _flash_attn_varlen_backward, flash_attn_varlen_func

    return flash_attn_varlen_func, _flash_attn_varlen_backward


def _cu(offsets: list[int], device) -> Tensor:
    return torch.tensor(offsets, dtype=torch.int32, device=device)


def varlen_forward(q: Tensor, k: Tensor, v: Tensor, call: VarlenCall, scale: float) -> list[tuple[Tensor, Tensor]]:
    """``(out, lse)`` of every block of ``call`` (out (B, n, H, D), lse (B, H, n) float32) from one varlen call."""
    fwd, _ = _varlen_ops()
    batch = q.shape[0]
    qs, ks = [(a, b) for a, b, _, _ in call.blocks], [(a, b) for _, _, a, b in call.blocks]
    cq, ck = call.cu_seqlens(batch)
    res = call_flash(fwd, call.window, q=varlen_pack(q, qs), k=varlen_pack(k, ks), v=varlen_pack(v, ks),
                     cu_seqlens_q=_cu(cq, q.device), cu_seqlens_k=_cu(ck, q.device), max_seqlen_q=call.max_q,
                     max_seqlen_k=call.max_k, dropout_p=0.0, softmax_scale=scale, causal=call.causal,
                     alibi_slopes=None, deterministic=False, return_attn_probs=True)
    sizes = [b - a for a, b in qs]
    lse = res[1].masked_fill(res[1] == float("inf"), float("-inf"))  # flash-attn: +inf for a row that sees nothing
    return list(zip(varlen_unpack(res[0], batch, sizes), varlen_lse_unpack(lse, batch, sizes)))


def varlen_backward(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, call: VarlenCall,
                    scale: float) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(dq, dk, dv)`` of every block of ``call`` from one varlen backward with the rows' global out/LSE."""
    _, bwd = _varlen_ops()
    batch = q.shape[0]
    qs, ks = [(a, b) for a, b, _, _ in call.blocks], [(a, b) for _, _, a, b in call.blocks]
    cq, ck = call.cu_seqlens(batch)
    qp, kp, vp = varlen_pack(q, qs), varlen_pack(k, ks), varlen_pack(v, ks)
    dq, dk, dv = torch.empty_like(qp), torch.empty_like(kp), torch.empty_like(vp)
    call_flash(bwd, call.window, dout=varlen_pack(dout, qs).contiguous(), q=qp, k=kp, v=vp,
               out=varlen_pack(out, qs), softmax_lse=varlen_lse_pack(lse, qs), dq=dq, dk=dk, dv=dv,
               cu_seqlens_q=_cu(cq, q.device), cu_seqlens_k=_cu(ck, q.device), max_seqlen_q=call.max_q,
               max_seqlen_k=call.max_k, dropout_p=0.0, softmax_scale=scale, causal=call.causal,
               alibi_slopes=None, deterministic=False, rng_state=None)
    nq, nk = [b - a for a, b in qs], [b - a for a, b in ks]
    return list(zip(varlen_unpack(dq, batch, nq), varlen_unpack(dk, batch, nk), varlen_unpack(dv, batch, nk)))
