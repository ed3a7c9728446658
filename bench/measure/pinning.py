"""Pin each local CPU rank to its own cores, so that one-rank ratios are not noise from migration.

Opt-in (``RINGX_PIN_CPU=1``, set by the local profile): on a cluster the
launcher binds ranks itself. The node's cores are split evenly over its ranks;
with more ranks than cores, ranks share cores one each, round robin, and the
run says so.
"""

from __future__ import annotations

import os


def cores_for(local_rank: int, local_size: int, cores: list[int]) -> list[int]:
    """The cores of one rank: an even, disjoint share when there are enough, else one shared core."""
    per = len(cores) // local_size
    if per >= 1:
        return cores[local_rank * per:(local_rank + 1) * per]
    return [cores[local_rank % len(cores)]]


def pin(ctx) -> list[int] | None:
    """Pin this CPU rank (a ``ringx.launch`` context) and size torch's thread pool to its share of the node's
    cores; None on other devices, or when not asked to or not possible. Every driver calls this, so a
    run, its kernels and its collectives are measured with the cores bound alike."""
    if ctx.device.type != "cpu" or os.environ.get("RINGX_PIN_CPU") != "1" or not hasattr(os, "sched_setaffinity"):
        return None
    local_rank, local_size = ctx.local_rank, ctx.local_world_size
    import torch

    mine = cores_for(local_rank, local_size, sorted(os.sched_getaffinity(0)))
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))
    return mine
