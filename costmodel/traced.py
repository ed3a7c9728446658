"""An implementation the cost model has no schedule for (a user's plugin, the field's peers), predicted from a trace
of its own calls.

The plugin runs in this process as rank ``r`` of ``P`` under PyTorch's fake process group (``FakeStore``: every
collective and point-to-point call returns at once and moves nothing), on meta tensors of the configuration's
shapes (no memory, no arithmetic), forward and then backward. One dispatch mode (``counting.Tracer``) records each
communication call in issue order as ``ringx.traffic.Traffic`` counts it (op, payload by the ledger's conventions,
group size, peer) and the FLOPs between calls by torch's ``FlopCounterMode`` formulas and rules. It runs a meta op
once per distinct call: a later call of an op that neither mutates nor aliases its inputs, with the same shapes,
strides, dtypes and other arguments, gets fresh empty outputs of the shapes it gave (a ring's steps repeat their
first; the meta kernels, mostly Python, were most of a trace's time). ``trace_calls(..., reference=True)`` traces
under ``FlopCounterMode`` itself with ``Traffic`` above it, every op run; the tests hold the two equal, call for
call, and a higher-order op sends the fast tracer back to it.

Across sequence lengths (``lengths.py``): for one configuration (plugin, causal, P, the traced ranks, batch, heads,
kv heads, head dim, dtype, passes), the first two lengths asked are traced and fitted in exact fractions (each
call's bytes ``a n + c`` and the FLOPs before it ``a n^2 + b n``, ``n`` the local length), and the third asked is
traced and compared with the derived one, integer for integer. Equal: every later length is derived, with no trace.
Not equal, or the first two differ in their calls (count, ops, groups, peers): every length is traced, and a
``UserWarning`` says so once per plugin. Assumed beyond that check: a plugin that follows the forms at three
lengths follows them at all (a schedule that switches at a length threshold outside those three would be derived
wrong). A length whose derived values are not integers (one the schedule cannot split) is traced.

Not reused: rank counts. A trace still grows with the ops a schedule dispatches (a ring's P steps), and with what
the plugin's own Python does per step (PyTorch CP's all-to-all rotation builds split lists of P at every step: P^2).

That sequence becomes the simulator's events (simulate.py):

- the FLOPs between two calls: one compute block of the local sequence (torch counts matrix products and SDPA as
  dense, so a causal block its kernel computes whole counts whole, as the kernel spends it);
- a collective: the op at its nccl-tests size (all_gather: the gathered output; reduce_scatter and all_to_all: the
  input), on its group (of consecutive ranks when it is a sub-group);
- point-to-point calls with nothing computed between them: one exchange, sized by the bytes sent to the busiest
  peer (ringx's convention for a ring step: the two directions of a link carry traffic at once). Two exchanges
  posted back to back (ringx's ring backward: K/V on, dK/dV home) are one here, one latency less per step. An
  exchange is costed on the rank that posts it, without waiting for its peer.

Assumed, and said where it matters: every call blocks where it is issued (the dispatcher sees when a call is posted,
not when it is waited for, so no overlap of communication with compute is credited); the traced ranks (default
the first and the last) stand for the others, exact for a schedule that is the same on every rank and
for the ring's balanced shifts; the compute is the FLOPs torch sees, at the machine's rate for a block of the local
sequence. A plugin that cannot run like this (it reads values it received: meta tensors hold none; it calls an op
the fake group or meta tensors lack) raises :class:`CannotTrace` with one line.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
from collections.abc import Callable
from contextlib import contextmanager

from .machine import Machine
from .simulate import Prediction, simulate_call

_P2P = ("send", "recv")


class CannotTrace(ValueError):
    """Why a plugin cannot be predicted from a trace of its calls: one line."""


def trace_calls(fn: Callable, causal: bool, world: int, rank: int, *, batch: int, seq: int, heads: int,
                kv_heads: int, head_dim: int, dtype: str = "bfloat16", backward: bool = True,
                reference: bool = False) -> tuple[list, list]:
    """(forward, backward) of rank ``rank`` of ``world``: each a list of ``(flops_before, op, sent, received,
    group_size, peer)`` per communication call, then ``(flops_after, None, ...)`` closing the pass.

    ``reference``: count with torch's ``FlopCounterMode`` under ``Traffic``, every op run (slower; the default
    tracer is held equal to it, see the module doc)."""
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    if dist.is_initialized():
        raise CannotTrace("a process group exists in this process; trace a plugin in a process of its own")
    if seq % world:
        raise CannotTrace(f"sequence {seq} does not split over {world} ranks")
    n = seq // world
    dt = getattr(torch, dtype)

    def inputs() -> list:  # fresh ones for a second try: the first may have left gradients on them
        return [torch.empty(batch, n, h, head_dim, dtype=dt, device="meta", requires_grad=True)
                for h in (heads, kv_heads, kv_heads)]

    # meta tensors need a backend of their own: batched point-to-point asks the group for the tensors' device's
    dist.init_process_group("cpu:fake,meta:fake", rank=rank, world_size=world, store=FakeStore())
    try:
        from .counting import Unusual

        try:
            return _run(fn, *inputs(), causal, dist.group.WORLD, backward, reference)
        except Unusual:  # an op the fast tracer does not mirror: torch's counter, op by op
            return _run(fn, *inputs(), causal, dist.group.WORLD, backward, True)
    except CannotTrace:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the plugin met on meta tensors or the fake group: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CannotTrace(f"it does not run on meta tensors under the fake process group: {type(e).__name__}: "
                          f"{msg[:200]}") from None
    finally:
        from ringx import launch

        with _muted_stderr():  # torch's C++ logger warns at every fake group's teardown ("No backend of type 0")
            launch.finalize()  # and ringx's caches of the fake group (a plugin may call ringx) go with it


def _run(fn: Callable, q, k, v, causal: bool, group, backward: bool, reference: bool) -> tuple[list, list]:
    """The two passes under one counter: the fast tracer, or torch's counter under Traffic (``reference``)."""
    import torch

    from .counting import Reference, Tracer

    counter = Reference() if reference else Tracer()
    passes: list[list] = [[], []]
    with counter:
        got, passes[0] = _pass(counter, lambda: fn(q, k, v, causal=causal, group=group))
        out = got[0] if isinstance(got, tuple) else got
        if not isinstance(out, torch.Tensor) or out.shape != q.shape:
            raise CannotTrace(f"it returned {getattr(out, 'shape', type(out).__name__)}, expected q's shape "
                              f"{tuple(q.shape)}")
        if backward:
            if not out.requires_grad:
                raise CannotTrace("its output does not require grad: no backward to trace")
            _, passes[1] = _pass(counter, lambda: out.backward(torch.zeros_like(out)))
    return passes[0], passes[1]


def _pass(counter, run: Callable) -> tuple[object, list]:
    """(what ``run`` returned, its calls: ``(flops before, op, sent, received, group size, peer)`` each, then the
    pass's closing ``(flops, None, 0, 0, 0, -1)``), FLOPs counted from the pass's start."""
    start, first = counter.total(), len(counter.marked)
    got = run()
    if counter.unknown:
        raise CannotTrace(f"it calls communication ops the counter does not know: {sorted(counter.unknown)}")
    if counter.uncounted:
        raise CannotTrace(f"torch counts no FLOPs for its attention op(s) {sorted(counter.uncounted)}")
    end = counter.total()
    return got, [(f - start, *rest) for f, *rest in counter.marked[first:]] + [(end - start, None, 0, 0, 0, -1)]


@contextmanager
def _muted_stderr():
    """File descriptor 2 to /dev/null for the block: a C++ warning that says nothing to the user (the fake group
    has no default backend by design) is not printed once per trace."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def events(calls: list, world: int, rank: int, nodes: int, direction: str, seq_local: int) -> list:
    """The simulator's events (ringx.schedule.Event) of one traced pass (see the module doc)."""
    from ringx.schedule import Event

    out, index, done = [], 0, 0
    rpn = max(1, world // max(1, nodes))
    # an exchange's group: this rank and world-1 stand-ins no traced rank is (so it waits for no other traced rank,
    # yet is costed on the link of a world of P, as ours are); one tuple shared by the pass's exchanges
    alone = (rank, *range(-1, -world, -1))
    i = 0
    while i < len(calls):
        f, op, sent, received, size, peer = calls[i]
        if f > done:
            out.append(Event("compute", op=direction, flops=float(f - done), seq_q=seq_local, seq_k=seq_local))
            done = f
        if op is None:
            break
        if op in _P2P:  # consecutive point-to-point calls: one exchange
            to_peer: dict[int, int] = {}
            got = 0
            while i < len(calls) and calls[i][1] in _P2P and calls[i][0] == f:  # no compute between them
                _, o, s, r, _, p = calls[i]
                if o == "send":
                    to_peer[p] = to_peer.get(p, 0) + s
                got = max(got, r)
                i += 1
            # costed on this rank alone: traced ranks may split their exchanges differently, so they are not
            # matched up as collectives are
            out.append(Event("comm", op="sendrecv", nbytes=max(to_peer.values(), default=got), index=index,
                             group=alone, nodes=max(1, nodes)))
            index += 1
            continue
        size = size or world
        nbytes = {"all_gather": sent * size, "reduce_scatter": sent + received,
                  "all_to_all": round(sent * size / (size - 1)) if size > 1 else sent,
                  "broadcast": max(sent, received), "reduce": max(sent, received)}.get(op, sent)
        group, span = (), 0
        if size < world:  # a sub-group: taken to be consecutive ranks
            first = rank - rank % size
            group, span = tuple(range(first, first + size)), max(1, math.ceil(size / rpn))
        out.append(Event("comm", op=op, nbytes=nbytes, index=index, group=group, nodes=span))
        index += 1
        i += 1
    return out


def default_ranks(world: int) -> tuple[int, ...]:
    """The ranks traced: the first and the last (the extremes of a contiguous causal layout's work)."""
    return tuple(sorted({0, world - 1}))


@functools.lru_cache(maxsize=256)
def _traced(name: str, causal: bool, world: int, ranks: tuple[int, ...], batch: int, seq: int, heads: int,
            kv_heads: int, head_dim: int, dtype: str, backward: bool) -> tuple:
    """Per traced rank, (forward, backward) at ``seq``: derived from the configuration's traces at other lengths
    where they were found to follow the forms (costmodel/lengths.py), else traced."""
    if seq % world:
        raise CannotTrace(f"sequence {seq} does not split over {world} ranks")
    _check_split(name, causal, world, seq)  # a derived length must be one the plugin's layout can split
    config = (name, causal, world, ranks, batch, heads, kv_heads, head_dim, dtype, backward)
    n = seq // world
    known = _LENGTHS.setdefault(config, _Lengths())
    if known.form:
        got = known.form.at(n)
        if got is not None:
            return got
    fn = _REGISTERED[name]
    got = tuple(trace_calls(fn, causal, world, r, batch=batch, seq=seq, heads=heads, kv_heads=kv_heads,
                            head_dim=head_dim, dtype=dtype, backward=backward) for r in ranks)
    if known.form is None:
        known.traced[n] = got
        if len(known.traced) == 3:
            known.form = _checked(name, world, known.traced)
            known.traced.clear()  # the form, or every length traced: not needed again
    return got


def _check_split(name: str, causal: bool, world: int, seq: int) -> None:
    """CannotTrace where the plugin's layout (its ``layout`` attribute) does not take this masking or cannot split
    ``seq`` over ``world`` ranks (zigzag: two chunks a rank)."""
    from ringx.layouts import global_divisor
    from ringx_suite import plugins

    p = plugins.of(name, _REGISTERED[name], "registered")
    if p.failure:
        raise CannotTrace(p.failure)
    layout = p.layout(causal)
    if layout is None:
        raise CannotTrace(f"{name} takes no {'causal' if causal else 'full'} attention (its layout attribute)")
    if seq % global_divisor(layout, world):
        raise CannotTrace(f"sequence {seq} cannot be split in {name}'s {layout} layout over {world} ranks")


class _Lengths:
    """One configuration's form across lengths: None while fewer than three lengths are traced (``traced``, by
    local length), then the form fitted to the first two (found to give the third), or False (each length
    traced)."""

    def __init__(self):
        self.traced: dict[int, tuple] = {}
        self.form = None


_LENGTHS: dict[tuple, _Lengths] = {}
_SAID: set[str] = set()  # the plugins whose lengths are each traced, said once


def _checked(name: str, world: int, traced: dict[int, tuple]):
    """The form fitted to the first two lengths if it gives the third exactly; else False, said once."""
    from .lengths import Mismatch, fit

    (n1, t1), (n2, t2), (n3, t3) = traced.items()
    try:
        form = fit(n1, t1, n2, t2)
        if form.at(n3) == t3:
            return form
        why = f"its calls at {n3} tokens a rank are not those derived from {n1} and {n2}"
    except Mismatch as e:
        why = str(e)
    if name not in _SAID:
        _SAID.add(name)
        warnings.warn(f"{name} at {world} ranks: {why}; each sequence length is traced (slower)", stacklevel=3)
    return False


_REGISTERED: dict[str, Callable] = {}


def register(name: str, fn: Callable) -> None:
    """Make ``name`` predictable (``predict`` of a name that is not built in looks here, then at installed
    plugins)."""
    if _REGISTERED.get(name) is not fn:
        _REGISTERED[name] = fn
        _traced.cache_clear()
        _LENGTHS.clear()
        _SAID.discard(name)


def _resolve(name: str) -> None:
    if name in _REGISTERED:
        return
    from ringx_suite import plugins

    found = plugins.load([name]).get(name)
    if found is None:
        raise CannotTrace(f"unknown algorithm {name!r}: neither built in nor an installed or given plugin")
    why = found.failure or found.why_not("cpu")  # the trace runs here, whatever machine it predicts
    if why:
        raise CannotTrace(f"{name} cannot be traced in this process: {why}")
    register(name, found.fn)


def traces(name: str, causal: bool, world: int, ranks: tuple[int, ...], *, batch: int, seq: int, heads: int,
           kv_heads: int, head_dim: int, dtype: str = "bfloat16", backward: bool = True) -> tuple:
    """Per rank of ``ranks``, :func:`trace_calls`'s (forward, backward) of the plugin ``name`` (registered, or
    installed) at ``seq``: traced, or derived from its traces at other lengths (see the module doc)."""
    _resolve(name)
    return _traced(name, bool(causal), world, tuple(ranks), batch, seq, heads, kv_heads, head_dim, dtype,
                   bool(backward))


def predict_plugin(name: str, causal: bool, mode: str, p: int, machine: Machine, *, nodes: int = 1, batch: int = 1,
                   seq: int, heads: int, kv_heads: int, head_dim: int, dtype: str = "bfloat16",
                   mask=None) -> Prediction:
    """Predicted time of one call of the plugin ``name`` (registered, or installed) on ``p`` ranks, from the traces
    of :func:`default_ranks`. Raises CannotTrace (one line) where that cannot work."""
    if mask is not None and getattr(mask, "plain", None) is None:
        raise CannotTrace(f"{name}: a trace covers full and causal attention; mask {mask} is not predicted")
    ranks = default_ranks(p)
    got = traces(name, causal, p, ranks, batch=batch, seq=seq, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                 dtype=dtype, backward=mode == "fwd+bwd")
    local = seq // p
    fwd = [events(f, p, r, nodes, "fwd", local) for (f, _), r in zip(got, ranks)]
    bwd = [events(b, p, r, nodes, "bwd", local) for (_, b), r in zip(got, ranks)] if mode == "fwd+bwd" else None
    return simulate_call(fwd, bwd, machine, p, nodes, list(ranks))


__all__ = ["CannotTrace", "default_ranks", "events", "predict_plugin", "register", "trace_calls", "traces"]
