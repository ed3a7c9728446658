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


def time_iterations(fn: Callable[[], object], warmup: int, iters: int, device: torch.device,
                    group: dist.ProcessGroup | None = None) -> list[float]:
    """Seconds per iteration, each the slowest rank's, after ``warmup`` untimed runs.

    Every iteration starts after a barrier and ends after the device is idle,
    so a rank's time covers its whole share; per-rank times are exchanged once
    at the end so the exchange itself is never timed.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    mine = []
    for _ in range(iters):
        dist.barrier(group)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        mine.append(time.perf_counter() - t0)
    local = torch.tensor(mine, dtype=torch.float64)
    if device.type == "cuda":
        local = local.to(device)
    dist.all_reduce(local, op=dist.ReduceOp.MAX, group=group)
    return local.cpu().tolist()


def summarize(samples: list[float]) -> dict[str, float]:
    """median, min, max, mean, std, p10, p90 of the samples (seconds)."""
    s = sorted(samples)

    def pct(p: float) -> float:  # linear interpolation between order statistics
        x = p * (len(s) - 1)
        lo = int(x)
        return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (x - lo)

    return {"median": statistics.median(s), "min": s[0], "max": s[-1], "mean": statistics.fmean(s),
            "std": statistics.stdev(s) if len(s) > 1 else 0.0, "p10": pct(0.1), "p90": pct(0.9), "n": len(s)}
