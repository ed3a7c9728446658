"""Where a measurement came from: code, software, machine, launcher and environment."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from ringx_suite.store import now

ENV_PREFIXES = ("NCCL_", "RCCL_", "FI_", "MPICH_", "OMPI_", "SLURM_", "OMP_", "TORCH_", "HSA_", "CUDA_")
REPO = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    """Git's answer about the checkout this code runs from; '' for an installed suite (site-packages may sit
    inside someone else's repository)."""
    if not (REPO / "pyproject.toml").is_file():
        return ""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, timeout=10).stdout.strip()
    except OSError:
        return ""


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # noqa: BLE001 - absent or broken both mean "not available"
        return None
    return getattr(mod, "__version__", "present")


def software() -> dict:
    """Versions of Python, torch, mpi4py, the MPI library, NCCL/RCCL and flash-attn."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "mpi4py": _version("mpi4py"),
            "flash_attn": _version("flash_attn"), "cuda": torch.version.cuda, "hip": torch.version.hip,
            "nccl": None, "mpi_library": None}
    try:
        if torch.cuda.is_available():
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    except Exception:  # noqa: BLE001
        pass
    try:
        from mpi4py import MPI

        info["mpi_library"] = MPI.Get_library_version().strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        pass
    return info


def local_host() -> dict:
    """This rank's host and devices (gathered from every rank by the driver)."""
    import torch

    devices = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
               if torch.cuda.is_available() else [])
    # Under Slurm the node is the slurmd's name: several simulated nodes can share one host.
    return {"hostname": platform.node(), "node": os.environ.get("SLURMD_NODENAME") or platform.node(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "devices": devices}


def environment() -> dict:
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(ENV_PREFIXES)}


def collect(hosts: list[dict], argv: list[str] | None = None) -> dict:
    """The provenance of one run, given every rank's :func:`local_host` (in rank order)."""
    names = [h["node"] for h in hosts]
    per_node: dict[str, int] = {}
    for n in names:
        per_node[n] = per_node.get(n, 0) + 1
    return {
        "git_commit": _git("rev-parse", "HEAD") or None,
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "command": [sys.executable, *(argv if argv is not None else sys.argv)],
        "date": now(),
        "software": software(),
        "hosts": sorted({h["hostname"] for h in hosts}),
        "node_names": sorted(per_node),
        "nodes": len(per_node),
        "ranks": len(names),
        "ranks_per_node": per_node,
        "cpus_per_node": {h["node"]: h.get("cpus") for h in hosts},  # do ranks share cores? (reports say)
        "rank_nodes": names,
        "devices": sorted({d for h in hosts for d in h["devices"]}),
        "slurm": {"job_id": os.environ.get("SLURM_JOB_ID"), "step_id": os.environ.get("SLURM_STEP_ID"),
                  "nodelist": os.environ.get("SLURM_JOB_NODELIST")},
        "env": environment(),
    }
