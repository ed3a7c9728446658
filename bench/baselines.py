"""Implementations from outside the project, timed under the same harness when importable."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class External:
    fn: Callable | None
    layout: str
    reason: str | None  # why it cannot run here (then fn is None)


def load(names: list[str]) -> dict[str, External]:
    """name -> External for each requested baseline family; absent ones carry the reason."""
    out: dict[str, External] = {}
    if "ring_flash_attn" in names:
        funcs = (("rfa-ring", "ring_flash_attn_func", "contiguous"),
                 ("rfa-zigzag", "zigzag_ring_flash_attn_func", "zigzag"),
                 ("rfa-stripe", "stripe_flash_attn_func", "stripe"))
        try:
            import ring_flash_attn as rfa
        except Exception as e:  # noqa: BLE001 - it imports flash_attn, which may be absent or broken
            for name, _, layout in funcs:
                out[name] = External(None, layout, f"ring_flash_attn not importable: {type(e).__name__}: {e}")
        else:
            for name, attr, layout in funcs:
                out[name] = External(getattr(rfa, attr), layout, None)
    return out
