"""Bootstrap torch.distributed from MPI (``mpiexec`` or ``srun``).

torch wheels have no MPI backend, so MPI only supplies rank, size and the
rendezvous: rank 0 picks an address and a free port and broadcasts them; the
tensors then travel over NCCL/RCCL (GPUs) or gloo (CPU).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Local-rank variables set by the launchers we meet: Slurm, Open MPI, MPICH (hydra), Cray PALS, MVAPICH.
LOCAL_RANK_VARS = ("SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PALS_LOCAL_RANKID",
                   "MV2_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    nodes: int
    hostname: str
    device: torch.device
    backend: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _local_rank(comm) -> tuple[int, int]:
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        local, local_size = node.Get_rank(), node.Get_size()
    finally:
        node.Free()
    for var in LOCAL_RANK_VARS:
        if var in os.environ:
            return int(os.environ[var]), local_size
    return local, local_size


def init(backend: str | None = None, timeout_s: float = 300.0) -> DistContext:
    """Initialise torch.distributed's default group from MPI and return where this rank stands.

    ``backend`` defaults to nccl when CUDA/ROCm devices are present, gloo otherwise.
    The address is rank 0's (``RINGX_MASTER_ADDR`` or ``MASTER_ADDR`` override it);
    ``timeout_s`` bounds how long a rank waits on a peer that has gone.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    hostname = socket.gethostname()
    hosts = comm.allgather(hostname)
    local_rank, local_size = _local_rank(comm)

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")

    addr = port = None
    if rank == 0:
        addr = os.environ.get("RINGX_MASTER_ADDR") or os.environ.get("MASTER_ADDR")
        if addr is None:
            addr = "127.0.0.1" if len(set(hosts)) == 1 else socket.gethostbyname(hostname)
        port = _free_port()
    addr, port = comm.bcast((addr, port), root=0)

    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=size,
                            timeout=timedelta(seconds=timeout_s),
                            **({"device_id": device} if backend == "nccl" else {}))
    return DistContext(rank, size, local_rank, local_size, len(set(hosts)), hostname, device, backend)


def finalize() -> None:
    """Tear the process group down (safe to call twice)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def reinit(ctx: DistContext, timeout_s: float = 300.0) -> DistContext:
    """Replace a process group left unusable by a failed collective (all ranks call it together)."""
    finalize()
    return init(ctx.backend, timeout_s)
