"""Helpers for band blocks (``band=(lo, hi)``: row a sees key b iff lo <= a - b <= hi; see :mod:`ringx.mask`):
the additive mask the torch ops take, flash-attn's window for a band, and the rows that see no key.

Which kernel runs which band is declared in :mod:`ringx.kernels.registry` (``BAND_NATIVE``, ``WINDOW_NATIVE``,
``band_route``)."""

from __future__ import annotations

import functools

import torch

from .base import Tensor


def flash_window(sq: int, sk: int, band: tuple[int, int]) -> tuple[int, int] | None:
    """flash-attn's ``window_size=(left, right)`` for a band block, or None when the band is not one.

    flash-attn aligns windows bottom-right: query a sees key b iff a + sk - sq - left <= b <= a + sk - sq + right;
    the band says a - hi <= b <= a - lo."""
    lo, hi = band
    left, right = hi + sk - sq, -lo - (sk - sq)
    return (left, right) if left >= 0 and right >= 0 else None


@functools.lru_cache(maxsize=256)
def band_bias(sq: int, sk: int, lo: int, hi: int, dtype: torch.dtype, device: torch.device,
              align: int = 1) -> Tensor:
    """Additive (sq, sk) mask of a band block, 0 where visible and -inf elsewhere, in ``dtype`` (the CPU op wants
    q's dtype). ``align``: the row stride is padded to a multiple of it (the efficient op's bias alignment)."""
    d = torch.arange(sq, device=device).unsqueeze(1) - torch.arange(sk, device=device).unsqueeze(0)
    width = -(-sk // align) * align
    bias = torch.full((sq, width), float("-inf"), dtype=dtype, device=device)
    bias[:, :sk].masked_fill_((d >= lo) & (d <= hi), 0.0)
    return bias[:, :sk]


def attn_bias(q: Tensor, k: Tensor, band: tuple[int, int], align: int = 1) -> Tensor:
    """The band's additive mask as the (B, H, Sq, Sk) ``attn_bias`` the CUDA ops take (a broadcast view)."""
    b, sq, h, _ = q.shape
    return band_bias(sq, k.shape[1], *band, q.dtype, q.device, align).expand(b, h, sq, k.shape[1])


def _seeing(sq: int, sk: int, band: tuple[int, int]) -> tuple[int, int]:
    """[a0, a1): the rows of a band block that see at least one key."""
    lo, hi = band
    return max(0, min(sq, lo)), max(0, min(sq, sk + hi))


def blank_rows(out: Tensor, lse: Tensor, sk: int, band: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Rows of a band block that see no key set to out 0 and LSE -inf (the CPU op gives LSE 0, others NaN)."""
    sq = out.shape[1]
    a0, a1 = _seeing(sq, sk, band)
    if a0 == 0 and a1 == sq:
        return out, lse
    for lo, hi in ((0, a0), (a1, sq)):
        if hi > lo:
            out[:, lo:hi] = 0
            lse[..., lo:hi] = float("-inf")
    return out, lse
