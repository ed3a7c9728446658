"""Bootstrap torch.distributed from MPI (``mpiexec`` or ``srun``).

torch wheels have no MPI backend, so MPI only supplies rank, size and the
rendezvous: rank 0 picks an address and a free port and broadcasts them; the
tensors then travel over NCCL/RCCL (GPUs) or gloo (CPU).

Which device and backend: ``init(device=..., backend=...)`` when given (gloo
means CPU, nccl means CUDA), else the ``RINGX_DEVICE`` environment variable ("cpu" or "cuda"; test workers and scripts
set it to force CPU ranks on a GPU node), else CUDA/ROCm with NCCL when a GPU is
visible and CPU with gloo otherwise. NCCL needs one GPU per rank: more ranks on a
node than GPUs is refused with a :class:`LaunchError` before any process group exists.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .topology import Topology

# Local-rank variables set by the launchers we meet: Slurm, Open MPI, MPICH (hydra), Cray PALS, MVAPICH.
LOCAL_RANK_VARS = ("SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "PALS_LOCAL_RANKID",
                   "MV2_COMM_WORLD_LOCAL_RANK", "LOCAL_RANK")
DEVICE_ENV = "RINGX_DEVICE"
DEVICES = ("cpu", "cuda")
BACKENDS = ("gloo", "nccl")


class LaunchError(RuntimeError):
    """The job cannot start as asked (raised on every rank alike, before any process group exists)."""


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


def plan(backend: str | None, device: str | None, env_device: str | None, gpus: int, local_ranks: int,
         host: str = "this node") -> tuple[str, str]:
    """(device type, backend) for this node, or LaunchError saying in one line what is wrong and how to fix it.

    ``backend``/``device`` are what the caller asked for (None: choose), ``env_device`` is
    ``RINGX_DEVICE``, ``gpus`` the GPUs visible here and ``local_ranks`` the ranks on this node.
    """
    if backend is not None and backend not in BACKENDS:
        raise LaunchError(f"ringx.launch: unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    # Precedence: the device asked for, then the one the backend asked for implies, then RINGX_DEVICE, then GPUs.
    if device is not None:
        chosen, source = device, "device"
    elif backend is not None:
        chosen, source = {"gloo": "cpu", "nccl": "cuda"}[backend], "backend"
    elif env_device:
        chosen, source = env_device, DEVICE_ENV
    else:
        chosen, source = ("cuda" if gpus else "cpu"), "auto"
    if chosen not in DEVICES:
        raise LaunchError(f"ringx.launch: {source}={chosen!r} is not a device type; use one of {', '.join(DEVICES)}")
    if backend is None:
        backend = "nccl" if chosen == "cuda" else "gloo"
    if chosen == "cpu" and backend != "gloo":
        raise LaunchError(f"ringx.launch: {backend} cannot move CPU tensors; use backend gloo with device cpu")
    if chosen == "cuda":
        if backend != "nccl":
            raise LaunchError(f"ringx.launch: {backend} with CUDA tensors is not supported (gloo aborts on them); "
                              "use backend nccl, or device cpu")
        if gpus == 0:
            raise LaunchError(f"ringx.launch: device cuda asked, but {host} has no visible GPU; "
                              f"run CPU ranks instead (--device cpu or {DEVICE_ENV}=cpu, gloo)")
        if local_ranks > gpus:
            g = "GPU is" if gpus == 1 else "GPUs are"
            raise LaunchError(f"ringx.launch: {local_ranks} ranks on {host} need {local_ranks} GPUs for NCCL (one "
                              f"each), but {gpus} {g} visible there; run at most {gpus} rank(s) per node, "
                              f"or run CPU ranks (--device cpu or {DEVICE_ENV}=cpu, gloo)")
    return chosen, backend


def init(backend: str | None = None, timeout_s: float = 300.0, device: str | None = None) -> DistContext:
    """Initialise torch.distributed's default group from MPI and return where this rank stands.

    ``device`` ("cpu" or "cuda") and ``backend`` ("gloo" or "nccl") choose explicitly;
    otherwise ``RINGX_DEVICE``, else NCCL on GPUs when any is visible, gloo on CPUs.
    A setup that cannot work (e.g. more ranks on a node than GPUs with NCCL) raises
    :class:`LaunchError` on every rank before the process group is created.
    The address is rank 0's (``RINGX_MASTER_ADDR`` or ``MASTER_ADDR`` override it);
    ``timeout_s`` bounds how long a rank waits on a peer that has gone.
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    hostname = socket.gethostname()
    hosts = comm.allgather(hostname)
    local_rank, local_size = _local_rank(comm)
    _NODES["world"] = _node_of(comm)

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        dev_type, backend = plan(backend, device, os.environ.get(DEVICE_ENV) or None, gpus, local_size, hostname)
        problem = ""
    except LaunchError as e:
        problem = str(e)
    # Every rank learns of any node's problem, so none is left waiting in the rendezvous.
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise LaunchError(problems[0])

    if dev_type == "cuda":
        dev = torch.device("cuda", local_rank % gpus)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")

    addr = port = None
    if rank == 0:
        addr = os.environ.get("RINGX_MASTER_ADDR") or os.environ.get("MASTER_ADDR")
        if addr is None:
            addr = "127.0.0.1" if len(set(hosts)) == 1 else socket.gethostbyname(hostname)
        port = _free_port()
    addr, port = comm.bcast((addr, port), root=0)

    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=size,
                            timeout=timedelta(seconds=timeout_s),
                            **({"device_id": dev} if backend == "nccl" else {}))
    return DistContext(rank, size, local_rank, local_size, len(set(hosts)), hostname, dev, backend)


def finalize() -> None:
    """Tear the process group down (safe to call twice)."""
    _TOPOLOGIES.clear()  # their sub-groups die with the process group
    _CPU_GROUPS.clear()
    for fn in ON_FINALIZE:
        fn()
    if dist.is_initialized():
        dist.destroy_process_group()


def reinit(ctx: DistContext, timeout_s: float = 300.0) -> DistContext:
    """Replace a process group left unusable by a failed collective (all ranks call it together)."""
    finalize()
    return init(ctx.backend, timeout_s, device=ctx.device.type)


# Topology: which ranks share a node. ---------------------------------------------------------------
_NODES: dict[str, list[int]] = {}  # "world": each world rank's node (its lowest rank), from MPI at init
_TOPOLOGIES: list[tuple[dist.ProcessGroup | None, Topology]] = []  # built once per group, dropped by finalize


def _node_of(comm) -> list[int]:
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks that share memory: one node
    try:
        leader = node.bcast(comm.Get_rank(), root=0)
    finally:
        node.Free()
    return comm.allgather(leader)


def _env_ranks_per_node() -> int | None:
    v = os.environ.get("RINGX_RANKS_PER_NODE")
    if not v:
        return None
    if not v.isdigit() or int(v) < 1:
        raise ValueError(f"RINGX_RANKS_PER_NODE must be a positive integer, got {v!r}")
    return int(v)


def node_ids(group: dist.ProcessGroup | None = None) -> list:
    """A label of the node of every rank of ``group`` (equal labels: same node).

    ``RINGX_RANKS_PER_NODE=k`` simulates nodes of k consecutive ranks (tests, CPU runs); otherwise
    MPI's shared-memory split recorded by :func:`init`; otherwise (torch.distributed started by
    something else) the ranks' host names, exchanged over ``group`` (collective).
    """
    world = dist.get_world_size(group)
    rpn = _env_ranks_per_node()
    if rpn is not None:
        if world % rpn:
            raise ValueError(f"RINGX_RANKS_PER_NODE={rpn} does not divide the {world} ranks")
        return [r // rpn for r in range(world)]
    glob = [r if group is None else dist.get_global_rank(group, r) for r in range(world)]
    if "world" in _NODES and len(_NODES["world"]) == dist.get_world_size():
        return [_NODES["world"][g] for g in glob]
    hosts: list = [None] * world
    dist.all_gather_object(hosts, socket.gethostname(), group=group)
    return hosts


def topology(group: dist.ProcessGroup | None = None) -> Topology:
    """``group``'s :class:`~ringx.topology.Topology`, made on first use and kept until :func:`finalize`.

    Every rank of the group must call it the first time (it may exchange host names); its
    intra-/inter-node sub-groups are built later, once, by the first call that needs them.
    """
    for g, topo in _TOPOLOGIES:
        if g is group:
            return topo
    topo = Topology(node_ids(group), dist.get_rank(group), group)
    _TOPOLOGIES.append((group, topo))
    return topo


ON_FINALIZE: list = []  # caches elsewhere that hold groups or topologies (ringx.api's call plans)
_CPU_GROUPS: list[tuple[dist.ProcessGroup | None, dist.ProcessGroup]] = []  # gloo twins, dropped by finalize


def cpu_group(group: dist.ProcessGroup | None = None) -> dist.ProcessGroup:
    """A gloo group of ``group``'s ranks, made on first use and kept until :func:`finalize`: small host-side
    exchanges (ringx.attention's input check) over it need no device synchronisation, unlike over NCCL.

    Every rank of ``group`` must call it the first time, and only they (``use_local_synchronization``)."""
    for g, cpu in _CPU_GROUPS:
        if g is group:
            return cpu
    ranks = None if group is None else dist.get_process_group_ranks(group)
    cpu = dist.new_group(ranks, backend="gloo", use_local_synchronization=True)
    _CPU_GROUPS.append((group, cpu))
    return cpu


def known_ranks_per_node() -> int | None:
    """Ranks per node of the default group if known without communicating (else None)."""
    rpn = _env_ranks_per_node()
    if rpn is not None:
        return rpn
    if any(g is None for g, _ in _TOPOLOGIES) or ("world" in _NODES and dist.is_initialized()):
        return topology().ranks_per_node
    return None
