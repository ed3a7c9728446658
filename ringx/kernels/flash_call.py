"""Calling flash-attn's private functions (2.x and 3) whichever version is installed: they renamed and added
arguments and return values between releases, so they are called by keyword after reading the signature."""

from __future__ import annotations

import functools
import inspect

from .base import Tensor


@functools.cache
def _signature(fn) -> inspect.Signature:
    # flash-attn 3 wraps its functions in torch.library.custom_op objects: read the function inside.
    return inspect.signature(getattr(fn, "_init_fn", fn))


def call_flash(fn, window: tuple[int, int] = (-1, -1), **kw):
    """Call a flash-attn private function of whichever installed version by keyword.

    Versions renamed and added arguments (``window_size`` tuple vs ``window_size_left/right``,
    ``causal`` vs ``is_causal``, ``softcap``, varlen/paged-KV options): pass what this version
    names, and None for any other argument it requires.
    """
    params = _signature(fn).parameters
    if "window_size" in params:
        kw["window_size"] = tuple(window)
    else:
        kw.update(window_size_left=window[0], window_size_right=window[1])
    kw.setdefault("softcap", 0.0)
    kw["is_causal"] = kw["causal"]
    args = {}
    for name, p in params.items():
        if name in kw:
            args[name] = kw[name]
        elif p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            args[name] = None
    return fn(**args)


def lse_of(res) -> Tensor:
    """The LSE among the values a flash-attn forward returned."""
    # flash-attn 2.6- returned (out, q, k, v, out_padded, lse, S_dmask, rng_state), 2.7+ (out, lse, ...);
    # flash-attn 3's first releases (out, q, k, v, out_padded, lse, S_dmask), later ones (out, lse, ...).
    return res[5] if len(res) >= 7 else res[1]
