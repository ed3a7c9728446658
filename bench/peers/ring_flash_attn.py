"""ring-flash-attention (PyPI ``ring-flash-attn``, written against 0.1.8): its ring, zigzag and stripe functions,
called as installed. They need flash-attn's block functions (a CUDA build; CI answers them with a CPU stand-in,
tests/standins/): where those cannot be imported, each says so and is recorded skipped.

The package's ``__init__`` also imports its transformers adapter, which needs transformers and breaks with its
releases (0.1.8's fails on transformers 5.x: ``is_flash_attn_greater_or_equal_2_10`` is gone). The ring functions
do not use it: where the package does not import whole, the three modules are loaded without its ``__init__``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types

MODULES = {"ring": "ring_flash_attn", "zigzag": "zigzag_ring_flash_attn", "stripe": "stripe_flash_attn"}


@functools.cache
def _module(which: str):
    """(the module holding ring-flash-attention's ``which`` function, None) or (None, why it cannot be loaded)."""
    name = f"ring_flash_attn.{MODULES[which]}"
    try:
        try:
            import ring_flash_attn  # noqa: F401 - the whole package, where it imports
        except ImportError:
            spec = importlib.util.find_spec("ring_flash_attn")
            if spec is None:
                raise
            if not isinstance(sys.modules.get("ring_flash_attn"), types.ModuleType) or \
                    not hasattr(sys.modules["ring_flash_attn"], "__path__"):
                package = types.ModuleType("ring_flash_attn")  # its folder, without running its __init__
                package.__path__ = list(spec.submodule_search_locations)
                sys.modules["ring_flash_attn"] = package
        return importlib.import_module(name), None
    except Exception as e:  # noqa: BLE001 - it imports flash_attn, which may be absent or broken
        sys.modules.pop("ring_flash_attn", None)
        return None, f"ring_flash_attn not importable: {type(e).__name__}: {e}"


def _make(which: str, attr: str, layout: str):
    def attend(q, k, v, *, causal: bool, group):
        return getattr(_module(which)[0], attr)(q, k, v, causal=causal, group=group)

    attend.layout, attend.unavailable = layout, lambda device_type: _module(which)[1]
    return attend


ring = _make("ring", "ring_flash_attn_func", "contiguous")
zigzag = _make("zigzag", "zigzag_ring_flash_attn_func", {"full": None, "causal": "zigzag"})  # causal only (its assert)
stripe = _make("stripe", "stripe_flash_attn_func", {"full": None, "causal": "stripe"})
