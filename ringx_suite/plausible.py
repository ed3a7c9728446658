"""Whether a timed record is physically possible: no rank computes faster than its device's peak, and no rank's
traffic passes through a link faster than the link goes. A misconfigured run (a wrong FLOP count, a sharding that
does not shard, ranks that skip work) shows up as exactly this; in the field a CP run reported 1,937 TFLOP/s per
GPU, twice the H200's peak (Megatron-Bridge #2665). Such a record is written with ``implausible`` and never shown
as a speedup unmarked (``ringx-bench summary``)."""

from __future__ import annotations

# Published dense bf16 TFLOP/s per device (MI250X: per GCD, as one rank sees it), by a name torch reports.
PEAK_TFLOPS = {"H200": 989.0, "GH200": 989.0, "H100": 989.0, "A100": 312.0, "MI250X": 191.5, "MI300X": 1307.4}
MARK = "!"  # after a cell whose record is implausible


def known_peak(device_name: str | None) -> float | None:
    """The published peak of a GPU by the name torch gives it (e.g. "NVIDIA H100 80GB HBM3"), else None."""
    name = (device_name or "").upper().replace(" ", "")
    for model in sorted(PEAK_TFLOPS, key=len, reverse=True):  # GH200 before H200
        if model in name:
            return PEAK_TFLOPS[model]
    return None


def problems(tflops_per_rank: float | None, peak_tflops: float | None, bytes_per_rank: list[int] | None = None,
             seconds: float | None = None, link_GBps: float | None = None) -> list[str]:
    """Why a measurement cannot be right (empty: nothing found). ``bytes_per_rank`` sent in ``seconds`` against
    a link of ``link_GBps``."""
    out = []
    if tflops_per_rank and peak_tflops and tflops_per_rank > peak_tflops:
        out.append(f"{tflops_per_rank:.4g} TFLOP/s per rank is above the device's peak of {peak_tflops:g}")
    if bytes_per_rank and seconds and link_GBps:
        rate = max(bytes_per_rank) / seconds / 1e9
        if rate > link_GBps:
            out.append(f"{rate:.4g} GB/s sent by one rank is above the link's {link_GBps:g} GB/s")
    return out
