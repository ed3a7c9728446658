"""yunchang (PyPI ``yunchang``, written against 0.6.4): DeepSpeed-Ulysses (``UlyssesAttention``) and USP
(``LongContextAttention``: Ulysses within groups x a ring across them), with its PyTorch kernel
(``AttnType.TORCH_MATH``), called as installed. USP runs Ulysses groups of 2 consecutive ranks (yunchang's
``use_ulysses_low``) and a ring over the groups from 4 ranks up; at 2 ranks a ring of 2. Its basic ring keeps
contiguous shards, our ``contiguous`` layout."""

from __future__ import annotations

import functools


@functools.cache
def _module():
    try:
        import yunchang
    except Exception as e:  # noqa: BLE001 - any import failure is the reason it cannot run
        return None, f"yunchang not importable: {type(e).__name__}: {e}"
    return yunchang, None


@functools.cache
def _usp(group):
    """yunchang's process groups (made once per world group: a collective on every rank) and its USP layer."""
    import torch.distributed as dist

    yc = _module()[0]
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    u = 2 if world >= 4 and world % 2 == 0 else 1
    yc.set_seq_parallel_pg(u, world // u, rank, world)
    return yc.LongContextAttention(ring_impl_type="basic", attn_type=yc.kernels.AttnType.TORCH_MATH)


def _why(device_type: str) -> str | None:
    return _module()[1]


def ulysses(q, k, v, *, causal: bool, group):
    yc = _module()[0]
    layer = yc.UlyssesAttention(sequence_process_group=group, attn_type=yc.kernels.AttnType.TORCH_MATH)
    return layer(q, k, v, causal=causal)


def usp(q, k, v, *, causal: bool, group):
    return _usp(group)(q, k, v, causal=causal)


ulysses.unavailable = usp.unavailable = _why
