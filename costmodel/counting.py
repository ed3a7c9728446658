"""What a plugin's trace runs under (costmodel/traced.py): its communication calls, each marked with the FLOPs
counted before it.

:class:`Reference` is torch's ``FlopCounterMode`` with ``ringx.traffic.Traffic`` above it: every op passes two
Python modes and runs its meta kernel (most are Python decompositions). :class:`Tracer` counts the same in one
mode, with torch's own FLOP formulas and its counter's rules (size and stride queries count nothing; an op torch
can decompose is counted as its parts), and runs a meta kernel once per distinct call: on meta tensors an op that
neither mutates nor aliases its inputs gives outputs that depend only on its inputs' shapes, strides and dtypes and
its other arguments, so a call seen before gets fresh empty tensors of the outputs it gave then (a ring's every
step repeats its first). What it does not mirror (a higher-order op) raises :class:`Unusual`, and the caller
traces again under :class:`Reference`. ``tests/test_traced.py`` holds the two equal, call for call.
"""

from __future__ import annotations

import torch
from torch._C import DispatchKey
from torch._ops import HigherOrderOperator
from torch.utils.flop_counter import FlopCounterMode

from ringx.traffic import Traffic


class Unusual(Exception):
    """An op the fast tracer does not mirror torch's counter for."""


def _cpu_attention_flops() -> dict:
    """FLOP formulas torch's counter lacks: its CPU flash-attention op (PyTorch CP's CPU path) counts as SDPA."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def fwd(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    def bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)

    return {aten._scaled_dot_product_flash_attention_for_cpu: fwd,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd}


class _Marking(Traffic):
    """Traffic that notes, at every call it counts, the FLOPs ``flops_now()`` gives (``marked``), and the attention
    ops torch has no formula for (``uncounted``)."""

    def __init__(self, registry: dict, flops_now=None):  # flops_now: for __torch_dispatch__ (Tracer has its own)
        super().__init__(calls=[])
        self.marked: list = []
        self.uncounted: set[str] = set()
        self._registry, self._flops_now = registry, flops_now

    def _note_uncounted(self, func) -> None:
        if "attention" in func.__name__ and func.overloadpacket not in self._registry:
            self.uncounted.add(str(func.overloadpacket))  # its FLOPs would be missing from the compute

    def _communicate(self, func, types, args, kwargs, flops: int):
        before = len(self.calls)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if len(self.calls) > before:
            self.marked.append((flops, *self.calls[-1]))
        return out

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._note_uncounted(func)
        return self._communicate(func, types, args, kwargs, self._flops_now())


class Reference:
    """torch's FlopCounterMode, with Traffic above it marking each call: every op through both, run."""

    def __init__(self):
        self._flops = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
        self._marking = _Marking(self._flops.flop_registry, self._flops.get_total_flops)
        self.marked, self.unknown, self.uncounted = (self._marking.marked, self._marking.unknown,
                                                     self._marking.uncounted)

    def total(self) -> int:
        return self._flops.get_total_flops()

    def __enter__(self):
        self._flops.__enter__()
        self._marking.__enter__()
        return self

    def __exit__(self, *exc):
        self._marking.__exit__(*exc)
        return self._flops.__exit__(*exc)


# FlopCounterMode passes these on uncounted (sizes and strides of non-standard tensors)
_QUERIES = {getattr(torch.ops.aten, n).default for n in (
    "sym_is_contiguous", "is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense", "size",
    "sym_size", "stride", "sym_stride", "storage_offset", "sym_storage_offset", "numel", "sym_numel", "dim")} | {
    torch.ops.aten.is_contiguous.memory_format, torch.ops.prim.layout.default}
_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format, torch.layout)
_OTHER, _COMM, _QUERY, _PURE = 0, 1, 2, 3  # _PURE: its outputs may be reused


class Tracer(_Marking):
    """Traffic and FLOPs in one mode, a meta kernel run once per distinct call (see the module doc)."""

    supports_higher_order_operators = True  # to see them, and hand them to torch's counter

    def __init__(self):
        super().__init__({**FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops()).flop_registry})
        self.flops = 0
        self._kind: dict = {}  # op -> _OTHER, _COMM, _QUERY, _PURE
        self._decomposes: dict = {}  # op -> whether torch would count it as its parts
        self._seen: dict = {}  # (op, arguments' description) -> (outputs' description, FLOPs)

    def total(self) -> int:
        return self.flops

    def _classify(self, func) -> int:
        name = str(func.overloadpacket)
        kind = (_COMM if name.startswith(("c10d.", "_c10d_functional.")) else
                _QUERY if func in _QUERIES else _PURE if _pure(func) else _OTHER)
        self._kind[func] = kind
        return kind

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if isinstance(func, HigherOrderOperator):
            raise Unusual(str(func))
        kwargs = kwargs or {}
        kind = self._kind.get(func)
        if kind is None:
            kind = self._classify(func)
        if kind == _COMM:  # not counted by torch (no formula, nothing to decompose): marked as Traffic counts it
            return self._communicate(func, types, args, kwargs, self.flops)
        if kind == _QUERY:
            return func(*args, **kwargs)
        self._note_uncounted(func)
        if self._can_decompose(func):
            with self:  # as torch's counter: its parts are counted, each through this mode
                got = func.decompose(*args, **kwargs)
            if got is not NotImplemented:
                return got
        key = _described(func, args, kwargs) if kind == _PURE else None
        if key is not None:
            seen = self._seen.get(key)
            if seen is not None:
                outs, flops = seen
                self.flops += flops
                return _made(outs)
        out = func(*args, **kwargs)
        formula = self._registry.get(func._overloadpacket)
        flops = formula(*args, **kwargs, out_val=out) if formula is not None else 0
        self.flops += flops
        if key is not None:
            outs = _outputs(out)
            if outs is not None:
                self._seen[key] = (outs, flops)
        return out

    def _can_decompose(self, func) -> bool:
        can = self._decomposes.get(func)
        if can is None:
            can = self._decomposes[func] = func is not torch.ops.prim.device.default and (
                DispatchKey.CompositeImplicitAutograd in func.py_kernels
                or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), DispatchKey.CompositeImplicitAutograd))
        return can


def _pure(func) -> bool:
    """Neither mutates nor aliases an input: its outputs are new tensors whatever the call."""
    schema = func._schema
    return not schema.is_mutable and all(r.alias_info is None for r in schema.returns) and all(
        a.alias_info is None for a in schema.arguments)


def _described(func, args, kwargs) -> tuple | None:
    """A call's key, if every tensor in it is a plain meta tensor and everything else a plain value; else None."""
    try:
        return func, _describe(args), _describe(tuple(kwargs.items()))
    except _NotPlain:
        return None


class _NotPlain(Exception):
    pass


def _describe(x):
    if type(x) is torch.Tensor or type(x) is torch.nn.Parameter:
        if not x.is_meta:  # values it holds could steer the op
            raise _NotPlain
        return x.shape, x.stride(), x.storage_offset(), x.dtype
    if type(x) is list or type(x) is tuple:
        return type(x), *[_describe(y) for y in x]
    if isinstance(x, _PLAIN):
        return type(x), x  # the type: True and 1 are keys apart
    raise _NotPlain


def _outputs(out):
    """The outputs' shapes, strides and dtypes (None where one is neither a meta tensor at storage offset 0, which
    ``_made`` makes again, nor a plain value)."""
    if type(out) is torch.Tensor:
        if not out.is_meta or out.storage_offset():
            return None
        return (torch.Tensor, tuple(out.shape), out.stride(), out.dtype)
    if type(out) is list or type(out) is tuple:
        parts = [_outputs(o) for o in out]
        return None if any(p is None for p in parts) else (type(out), *parts)
    return (type(out), out) if isinstance(out, _PLAIN) else None


def _made(outs):
    kind = outs[0]
    if kind is torch.Tensor:
        return torch.empty_strided(outs[1], outs[2], dtype=outs[3], device="meta")
    if kind is list or kind is tuple:
        return kind(_made(o) for o in outs[1:])
    return outs[1]


__all__ = ["Reference", "Tracer", "Unusual"]
