"""Timing that survives a referee: warm-up, barrier-bounded iterations,
the slowest rank per iteration, candidates side by side in rotating order,
and the samples kept (Hoefler & Belli, SC15). Statistics: ringx_suite/stats.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.distributed as dist


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotation(n: int, i: int) -> list[int]:
    """The order of ``n`` candidates in round ``i``: each starts a round in turn."""
    return [(i + j) % n for j in range(n)]


def time_round_robin(fns: list[Callable[[], object]], warmup: int, iters: int, device: torch.device,
                     group: dist.ProcessGroup | None = None) -> list[list[float]]:
    """Seconds per iteration of each function, each the slowest rank's.

    The functions take turns, one iteration each, in an order that rotates
    every round, so drift of the machine (clock, neighbours, thermals) and any
    advantage of going first or after a given neighbour fall on all of them
    alike: their ratios are measured side by side, and sample i of every
    function comes from the same round (paired). Every iteration starts after
    a barrier and ends when the device is idle; per-rank times are exchanged
    once at the end so the exchange is never timed.
    """
    n = len(fns)
    for i in range(warmup):
        for j in rotation(n, i):
            fns[j]()
    _sync(device)
    mine = [[0.0] * iters for _ in fns]
    for i in range(iters):
        for j in rotation(n, i):
            dist.barrier(group)
            t0 = time.perf_counter()
            fns[j]()
            _sync(device)
            mine[j][i] = time.perf_counter() - t0
    local = torch.tensor(mine, dtype=torch.float64)
    if dist.get_backend(group) == "nccl":
        local = local.to(device)
    dist.all_reduce(local, op=dist.ReduceOp.MAX, group=group)
    return local.cpu().tolist()


def time_iterations(fn: Callable[[], object], warmup: int, iters: int, device: torch.device,
                    group: dist.ProcessGroup | None = None) -> list[float]:
    """Seconds per iteration of one function (see :func:`time_round_robin`)."""
    return time_round_robin([fn], warmup, iters, device, group)[0]
