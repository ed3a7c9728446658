"""A user's own context-parallel attention, as a ringx-bench plugin: gather every rank's K/V, attend locally.

The contract (docs/plugins.md): ``fn(q, k, v, *, causal, group) -> out`` on this rank's shard (batch, seq_local,
heads, head_dim), differentiable. This one keeps the contiguous layout (rank r holds tokens r*n .. r*n+n-1).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _GatherSequence(torch.autograd.Function):
    """All ranks' shards concatenated along the sequence; the gradient goes home by reduce-scatter."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)  # (batch, world * n, heads, head_dim)

    @staticmethod
    def backward(ctx, grad):
        parts = [p.contiguous() for p in grad.chunk(dist.get_world_size(ctx.group), dim=1)]
        mine = torch.empty_like(parts[0])
        dist.reduce_scatter(mine, parts, group=ctx.group)
        return mine, None


def attention(q, k, v, *, causal, group):
    rank, n = dist.get_rank(group), q.shape[1]
    keys, values = _GatherSequence.apply(k, group), _GatherSequence.apply(v, group)
    mask = None
    if causal:  # my queries are tokens rank*n ..: each sees the keys up to itself
        mine = torch.arange(rank * n, rank * n + n, device=q.device)
        mask = mine[:, None] >= torch.arange(keys.shape[1], device=q.device)[None, :]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                         attn_mask=mask, enable_gqa=q.shape[2] != k.shape[2])
    return out.transpose(1, 2)


attention.layout = "contiguous"  # optional: a ringx layout, or {"full": ..., "causal": ...}


def almost(q, k, v, *, causal, group):
    """A wrong answer on purpose (1% off): --check fails it and it is not timed."""
    return attention(q, k, v, causal=causal, group=group) * 1.01
