"""What one call allocates: its measured peak, and the formula each algorithm's peak follows.

:func:`measure` runs a function and returns the peak live bytes of the tensors allocated while it
ran (tensors that existed before are not counted, those it returns are):

- CPU: a ``TorchDispatchMode`` sees every op's outputs; an output whose storage is none of the op's
  inputs' is a new allocation, tracked by a weak reference to its storage until it is freed. The
  peak is taken after every op (allocations happen there). Kernel-internal scratch that never
  leaves an op is not seen.
- CUDA: the caching allocator's ``max_memory_allocated`` minus what was allocated before
  (written from the documented torch.cuda API; not run on a GPU yet).

:func:`peak_formula` is the bound the docs give (docs/rings.md) and the tests hold each algorithm to.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _Allocations(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ in dynamo's disable, whose first call imports torch._dynamo
        # (~800 modules, ~2.4 s of CPU on the 2-core machine) in every rank that measures memory. Nothing run
        # under this mode is compiled (on CUDA, measure() reads the allocator instead), so there is nothing to skip.
        return False

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}  # storage address -> (weak ref, bytes)
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr in inputs or st.nbytes() == 0:
                continue  # in place, a view, or a collective writing into its buffer
            seen = self.live.get(ptr)
            if seen is None or seen[0].expired():  # a new storage (maybe at a freed one's address)
                self.live[ptr] = (StorageWeakRef(st), st.nbytes())
        now = 0
        for ptr in list(self.live):
            ref, n = self.live[ptr]
            if ref.expired():
                del self.live[ptr]
            else:
                now += n
        self.peak = max(self.peak, now)
        return out


def measure(fn: Callable[[], object], device: torch.device | str = "cpu") -> tuple[object, int]:
    """(fn's result, peak live bytes of the tensors allocated while it ran)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, max(0, int(torch.cuda.max_memory_allocated(device)) - base)
    # The cyclic collector would free some garbage early in one run and late in another: with it off during
    # the call, what is live depends on the call alone (reference counting), so peaks repeat run to run. No
    # collection first: only storages the call allocates are counted, and a full collection of a process that
    # has imported torch costs ~0.4 s (it was most of a short run's memory measurement).
    was = gc.isenabled()
    gc.disable()
    try:
        mode = _Allocations()
        with mode:
            result = fn()
    finally:
        if was:
            gc.enable()
    return result, mode.peak


@dataclass(frozen=True)
class Sizes:
    """Per-rank tensor sizes in bytes: Q = |q| = |out| in the input dtype; KV = |k| + |v|; A = |q| in the
    accumulation dtype (float32 for 16-bit inputs, else the input dtype); AKV = |k| + |v| in it; L = |lse|."""

    Q: int
    KV: int
    A: int
    AKV: int
    L: int


def sizes(batch: int, seq_local: int, heads: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> Sizes:
    from .kernels import acc_dtype

    e = torch.empty((), dtype=dtype).element_size()
    a = torch.empty((), dtype=acc_dtype(dtype)).element_size()
    q, kv = batch * seq_local * heads * head_dim, 2 * batch * seq_local * kv_heads * head_dim
    return Sizes(q * e, kv * e, q * a, kv * a, batch * heads * seq_local * a)


def peak_formula(algorithm: str, world: int, s: Sizes, *, backward: bool = False, kv_heads: int = 1,
                 ranks_per_node: int | None = None, ulysses_degree: int | None = None) -> int:
    """The most bytes one call of ``algorithm`` keeps allocated at once on a rank (forward, or forward and
    backward), on the torch-cpu kernel; outputs and gradients included, the inputs not.

    Every algorithm holds the result (out, lse) and, with ``backward``, the gradients (dq, dk, dv):
    ``base``. On top of that, what each schedule holds at its peak (docs/rings.md gives the reasoning):

    - rings (ring, zigzag, stripe, bidir-ring, double-ring): receive buffers allocated once, 2 sets of K/V
      per stream (bidir-ring: 2 streams; double-ring: 2 levels), and in the backward 2 sets of dK/dV per
      stream, plus the kernel's block results: O(S/P), independent of P.
    - ringx1/2, ringx4: a broadcast buffer per round in flight (2 with overlap), reduce buffers: O(S/P).
    - ringx3 / ringx3b / usp-ringx: the gathered K/V of the whole sequence (twice while it is put in
      order; ringx3b's two-level gather holds both levels), and in the backward its dK/dV: O(S).
    - ulysses / usp: the head-sharded q, k, v, out, lse kept for the backward (the same bytes as the
      shards, K/V replicated f = u / gcd(kv_heads, u) times for GQA), and the inner schedule's buffers on
      them: O(S/P) (ulysses: the whole sequence's attention on H/P heads, still O(S/P) bytes).
    Which applies is the registry's ``buffers`` (and ``streams``) of the algorithm. ``ranks_per_node`` (default:
    one node) and ``ulysses_degree`` as in ``ringx.attention``.
    """
    from .algorithms import ALGORITHMS

    algo = ALGORITHMS.get(algorithm)
    if algo is None:
        raise ValueError(f"no memory formula for {algorithm!r}")
    P = world
    base = s.A + s.L + (s.A + s.AKV if backward else 0)
    kernel = 2 * (s.A + s.L)  # a block's result and the merge's temporary
    grads = 2 * s.AKV + s.A  # a block's dq, dk, dv from the kernel
    if P == 1:
        return base + kernel + (grads if backward else 0)
    if algo.buffers == "ring":
        extra = kernel + 2 * algo.streams * s.KV
        if backward:
            extra += grads + 2 * algo.streams * s.AKV
        return base + extra
    if algo.buffers == "broadcast":
        extra = kernel + 2 * max(s.Q, s.KV) + 2 * (s.A + s.L)
        if backward:
            extra += grads + 3 * s.AKV
        return base + extra
    if algo.buffers == "gather":
        gathered = P * s.KV
        extra = kernel + 3 * gathered
        if backward:
            extra += grads + 3 * P * s.AKV
        return base + extra
    u = P if algo.ulysses == "all" else (ulysses_degree or ranks_per_node or P)
    f = u // math.gcd(kv_heads, u)
    kv = f * s.KV  # head-sharded K/V bytes
    shards = 2 * (s.Q + kv) + s.A + s.L  # head-sharded q, k, v, out, lse (and the all-to-all copies)
    ring = P // u  # ranks of the schedule across Ulysses groups
    gathers = algo.buffers == "ulysses-gather"
    inner = 3 * ring * kv if gathers else 2 * 2 * kv
    extra = shards + kernel + (inner if ring > 1 else 0)
    if backward:
        extra += grads + 2 * f * s.AKV + 2 * (s.Q + kv) + (3 * ring * f * s.AKV if gathers else 2 * f * s.AKV)
    return base + extra


__all__ = ["Sizes", "measure", "peak_formula", "sizes"]
