"""Drop-in replacements with the signature of ring-flash-attention and the ringX code.

A training script switches by changing its import, e.g.::

    from ringx.dropin import zigzag_ring_flash_attn_func   # was: from ring_flash_attn import ...
    from ringx.dropin import ringX4_attn_func              # was: from ringX_attn import ...

Arguments those libraries accept but ringx does not implement (dropout,
sliding windows, ALiBi) raise ValueError instead of being ignored.
``deterministic`` is accepted: ringx's schedules fix the order of every sum.
"""

from __future__ import annotations

import torch

from .api import attention


def _make(algorithm: str, public_name: str):
    def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
           softmax_scale: float | None = None, causal: bool = False, window_size: tuple[int, int] = (-1, -1),
           alibi_slopes: torch.Tensor | None = None, deterministic: bool = False, return_attn_probs: bool = False,
           group=None):
        if dropout_p:
            raise ValueError(f"{public_name}: dropout_p={dropout_p} is not supported by ringx (use 0.0)")
        if tuple(window_size) != (-1, -1):
            raise ValueError(f"{public_name}: sliding-window attention (window_size={window_size}) is not supported")
        if alibi_slopes is not None:
            raise ValueError(f"{public_name}: alibi_slopes are not supported")
        res = attention(q, k, v, algorithm=algorithm, causal=causal, softmax_scale=softmax_scale, group=group,
                        return_lse=return_attn_probs)
        if return_attn_probs:
            out, lse = res
            return out, lse, None  # ring-flash-attn returns (out, softmax_lse, None)
        return res

    fn.__name__ = fn.__qualname__ = public_name
    fn.__doc__ = f"``ringx.attention(..., algorithm={algorithm!r})`` with the flash-attn style signature."
    return fn


ring_flash_attn_func = _make("ring", "ring_flash_attn_func")
zigzag_ring_flash_attn_func = _make("zigzag", "zigzag_ring_flash_attn_func")
stripe_flash_attn_func = _make("stripe", "stripe_flash_attn_func")
ringX1_attn_func = _make("ringx1", "ringX1_attn_func")
ringX1o_attn_func = _make("ringx1o", "ringX1o_attn_func")
ringX2_attn_func = _make("ringx2", "ringX2_attn_func")
ringX2o_attn_func = _make("ringx2o", "ringX2o_attn_func")
ringX3_attn_func = _make("ringx3", "ringX3_attn_func")
ringX4_attn_func = _make("ringx4", "ringX4_attn_func")
ringX4o_attn_func = _make("ringx4o", "ringX4o_attn_func")
