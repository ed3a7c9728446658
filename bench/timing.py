"""Timing that survives a referee: warm-up, barrier-bounded iterations,
the slowest rank per iteration, and the samples kept (Hoefler & Belli, SC15).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_round_robin(fns: list[Callable[[], object]], warmup: int, iters: int, device: torch.device,
                     group: dist.ProcessGroup | None = None) -> list[list[float]]:
    """Seconds per iteration of each function, each the slowest rank's.

    The functions take turns, one iteration each, so drift of the machine
    (clock, neighbours, thermals) falls on all of them alike and their ratios
    are measured side by side. Every iteration starts after a barrier and ends
    when the device is idle; per-rank times are exchanged once at the end so
    the exchange is never timed.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    mine = [[0.0] * iters for _ in fns]
    for i in range(iters):
        for j, fn in enumerate(fns):
            dist.barrier(group)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            mine[j][i] = time.perf_counter() - t0
    local = torch.tensor(mine, dtype=torch.float64)
    if device.type == "cuda":
        local = local.to(device)
    dist.all_reduce(local, op=dist.ReduceOp.MAX, group=group)
    return local.cpu().tolist()


def time_iterations(fn: Callable[[], object], warmup: int, iters: int, device: torch.device,
                    group: dist.ProcessGroup | None = None) -> list[float]:
    """Seconds per iteration of one function (see :func:`time_round_robin`)."""
    return time_round_robin([fn], warmup, iters, device, group)[0]


def stat_fields(st: dict[str, float]) -> dict[str, float]:
    """A summary's statistics as record fields (median_s, min_s, ...), as the results schema names them."""
    return {f"{k}_s": st[k] for k in ("median", "min", "max", "mean", "std", "p10", "p90")}


def summarize(samples: list[float]) -> dict[str, float]:
    """median, min, max, mean, std, p10, p90 of the samples (seconds)."""
    s = sorted(samples)

    def pct(p: float) -> float:  # linear interpolation between order statistics
        x = p * (len(s) - 1)
        lo = int(x)
        return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (x - lo)

    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "mean": statistics.fmean(s),
            "std": statistics.stdev(s) if len(s) > 1 else 0.0, "p10": pct(0.1), "p90": pct(0.9), "n": len(s)}
