"""Check an algorithm on this machine against float64 full attention (``bench run --check``)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from .algorithms import ALGORITHMS
from .api import attention
from .kernels import ReferenceKernel
from .layouts import shard

# Max |x - ref| / max(1, max|ref|) allowed per dtype.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 5e-2, torch.float16: 1e-2}


def max_error(algorithm: str, causal: bool, batch: int, seq: int, heads: int, kv_heads: int, head_dim: int,
              dtype: torch.dtype, device: torch.device, kernel: str | None = None,
              group: dist.ProcessGroup | None = None, seed: int = 0, fn=None, layout: str | None = None) -> float:
    """Largest relative error of out, dQ, dK, dV over all ranks' shards (the same on every rank).

    ``fn(q, k, v)`` with its ``layout`` replaces ``ringx.attention`` to check an outside implementation.
    """
    P, r = dist.get_world_size(group), dist.get_rank(group)
    layout = layout or ALGORITHMS[algorithm].layout(causal)
    g = torch.Generator().manual_seed(seed)
    full = [torch.randn(batch, seq, h, head_dim, generator=g, dtype=torch.float64)
            for h in (heads, kv_heads, kv_heads, heads)]
    full = [t.to(dtype).double() for t in full]  # the reference sees the rounded inputs
    Q, K, V, dO = full
    ref = ReferenceKernel()
    scale = head_dim**-0.5
    ref_out, ref_lse = ref.forward(Q, K, V, causal, scale)
    ref_grads = ref.backward(dO, Q, K, V, ref_out, ref_lse, causal, scale)
    q, k, v = (shard(t, layout, r, P).to(dtype=dtype, device=device).requires_grad_() for t in (Q, K, V))
    out = fn(q, k, v) if fn else attention(q, k, v, algorithm=algorithm, causal=causal, kernel=kernel, group=group)
    out.backward(shard(dO, layout, r, P).to(dtype=dtype, device=device))
    err = 0.0
    for got, want in zip((out, q.grad, k.grad, v.grad), (ref_out, *ref_grads)):
        want = shard(want, layout, r, P)
        e = (got.detach().double().cpu() - want).abs().max() / max(1.0, want.abs().max().item())
        err = max(err, e.item())
    worst = torch.tensor([err], dtype=torch.float64, device=device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
    return worst.item()
