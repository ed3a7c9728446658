"""Memory of a rank: its peak (the device's allocator peak on GPUs, the process's peak RSS on CPUs) and what
it has (a GPU's memory, or its share of the node's)."""

from __future__ import annotations

import re
from pathlib import Path

import torch


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> int:
    """Peak bytes since the last reset: device max allocated on GPU, peak RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
        return int(m.group(1)) * 1024 if m else 0
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_memory(device: torch.device, local_ranks: int = 1) -> int:
    """Bytes one rank may use: its GPU's memory, or the node's physical memory over the ranks sharing it
    (0 when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    except OSError:
        return 0
    total = int(m.group(1)) * 1024 if m else 0
    try:  # a job's cgroup (Slurm, containers) may allow less than the node has
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit)) if total else int(limit)
    except OSError:
        pass
    return total // max(1, local_ranks)


def call_peak(fn, device: torch.device) -> tuple[object, int]:
    """(fn's result, peak bytes of the tensors fn allocates): what one attention call costs, not the process's
    resident size (``ringx.memory.measure``: a dispatch-mode count on CPU, the allocator's peak on CUDA)."""
    from ringx.memory import measure

    return measure(fn, device)
