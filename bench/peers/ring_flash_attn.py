"""ring-flash-attention (PyPI ``ring-flash-attn``): its ring, zigzag and stripe functions, called as installed. They
need flash-attn (a CUDA build): where it cannot be imported, each says so and is recorded skipped."""

from __future__ import annotations

import functools


@functools.cache
def _module():
    """(ring_flash_attn, None) or (None, why it cannot be imported)."""
    try:
        import ring_flash_attn
    except Exception as e:  # noqa: BLE001 - it imports flash_attn, which may be absent or broken
        return None, f"ring_flash_attn not importable: {type(e).__name__}: {e}"
    return ring_flash_attn, None


def _make(attr: str, layout: str):
    def attend(q, k, v, *, causal: bool, group):
        return getattr(_module()[0], attr)(q, k, v, causal=causal, group=group)

    attend.layout, attend.unavailable = layout, lambda device_type: _module()[1]
    return attend


ring = _make("ring_flash_attn_func", "contiguous")
zigzag = _make("zigzag_ring_flash_attn_func", "zigzag")
stripe = _make("stripe_flash_attn_func", "stripe")
