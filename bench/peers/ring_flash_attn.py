"""ring-flash-attention (PyPI ``ring-flash-attn``, written against 0.1.8): its ring, zigzag and stripe functions, and
its llama3 varlen function for packed documents, called as installed. They need flash-attn's block and varlen
functions (a CUDA build; CI answers them with a CPU stand-in, tests/standins/): where those cannot be imported, each
says so and is recorded skipped.

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
from itertools import accumulate

import torch

MODULES = {"ring": "ring_flash_attn", "zigzag": "zigzag_ring_flash_attn", "stripe": "stripe_flash_attn",
           "llama3": "llama3_flash_attn_varlen"}


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


def llama3(q, k, v, *, group, causal: bool | None = None, mask=None):
    """Its llama3 varlen function (all-gathers K/V per head group; each rank's queries see their documents' keys):
    full, causal, and packed documents without a window, on contiguous shards, one call per batch row (varlen
    packs a row's tokens; a row of documents is what it is written for)."""
    import ringx

    m = ringx.mask.as_mask(mask, causal)
    if m.kind == "docs" and m.left is not None:
        raise ValueError("rfa-llama3 is run without a window here (the flash-attn stand-in has none)")
    world, rank = torch.distributed.get_world_size(group), torch.distributed.get_rank(group)
    lengths = m.documents_lengths or (q.shape[1] * world,)
    cu = torch.tensor([0, *accumulate(lengths)], dtype=torch.int32, device=q.device)
    mod = _module("llama3")[0]
    cu_q, cu_k, max_q, max_k, k_slice = mod.llama3_flash_attn_prepare_cu_seqlens(cu, m.is_causal, rank, world)
    rows = [mod.llama3_flash_attn_varlen_func(q[b], k[b], v[b], cu_q, cu_k, max_q, max_k, k.shape[2], k_slice,
                                              causal=m.is_causal, group=group) for b in range(q.shape[0])]
    return torch.stack(rows)


llama3.layout, llama3.masks = "contiguous", ("docs",)
llama3.unavailable = lambda device_type: _module("llama3")[1]
