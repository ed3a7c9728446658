"""What a timing is worth: FLOPs by flash-attention's convention, and peak memory."""

from __future__ import annotations

import re
from pathlib import Path

import torch

FLOPS_CONVENTION = ("flash-attn: forward 4*B*S^2*H*D (H = query heads, S global), halved when causal; "
                    "backward 2.5x forward; fwd+bwd 3.5x forward")


def attention_flops(batch: int, seq: int, heads: int, head_dim: int, causal: bool, mode: str) -> float:
    """Total FLOPs of one call over all ranks."""
    fwd = 4.0 * batch * seq * seq * heads * head_dim / (2 if causal else 1)
    return fwd * {"fwd": 1.0, "fwd+bwd": 3.5}[mode]


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
