"""A machine description: per-rank attention throughput and a link per operation, within and across nodes.

Published descriptions live in the ``[model]`` table of a machine profile (jobs/profiles/NAME.toml);
fitted ones come from a campaign's microbenchmarks (analysis/calibrate.py).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .network import Link, busbw_factor, hops


def _jobs() -> Path:
    """The suite's data (profiles, sweeps, checks): jobs/ of the checkout this code runs from, else the copy an
    installed suite carries (the package ringx_jobs, which is jobs/ installed under a name of its own)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "jobs").is_dir():
        return root / "jobs"
    from importlib.resources import files

    return Path(str(files("ringx_jobs")))


JOBS = _jobs()
PROFILES = JOBS / "profiles"


def profile_path(name: str) -> Path:
    """A profile by name (jobs/profiles/NAME.toml) or, when it ends in .toml, by path."""
    return Path(name) if name.endswith(".toml") else PROFILES / f"{name}.toml"


@dataclass
class Machine:
    name: str
    source: str  # "published" or "fitted from ..."
    flops_per_s: float  # attention throughput of one rank alone on its device (or core)
    intra: dict[str, Link]  # op (or "default") -> link within a node
    inter: dict[str, Link] = field(default_factory=dict)  # across nodes
    cores_per_node: int | None = None  # CPU ranks share cores: throughput x min(1, cores / ranks per node)
    # Measured kernel throughput (bench kernels): (direction, causal) -> [(block length, FLOP/s)], ascending.
    kernel_rates: dict[tuple[str, bool], list[tuple[int, float]]] = field(default_factory=dict)
    # CPU ranks confined to cores of their own (a launcher's binding, jobs/checks/cpu-scale.sh): the cores each
    # has. Takes precedence over cores_per_node.
    cores_per_rank: int | None = None
    # The same, measured with k ranks of a node computing at once (k -> table): what a rank gets when its
    # neighbours load the memory system too (bench kernels under mpiexec -n k). Empty: kernel_rates for all.
    loaded_rates: dict[int, dict[tuple[str, bool], list[tuple[int, float]]]] = field(default_factory=dict)
    # Device memory bandwidth (GB/s, published peak): what bounds decode (the KV cache and weights read per token).
    hbm_GBps: float | None = None

    def rates_for(self, busy: int | None) -> dict[tuple[str, bool], list[tuple[int, float]]]:
        """The kernel table measured with the nearest number of busy ranks per node (ties: the larger)."""
        if not self.loaded_rates or not busy:
            return self.kernel_rates
        k = min(self.loaded_rates, key=lambda n: (abs(math.log(n / busy)), -n))
        return self.loaded_rates[k]

    def block_rate(self, direction: str, causal: bool, seq_q: int, seq_k: int, busy: int | None = None) -> float:
        """FLOP/s of one block: interpolated in log(block length) from the kernel measurements (with ``busy``
        ranks of the node computing at once, when measured so), else the machine's one number. Small blocks
        run below a kernel's peak; this is where it shows."""
        rates = self.rates_for(busy)
        table = rates.get((direction, bool(causal))) or rates.get((direction, False))
        if not table or not seq_q or not seq_k:
            return self.flops_per_s
        n = math.sqrt(seq_q * seq_k)
        if n <= table[0][0]:
            return table[0][1] * n / table[0][0]  # below the smallest measured block: fixed cost per call
        for (n0, r0), (n1, r1) in zip(table, table[1:]):
            if n <= n1:
                w = math.log(n / n0) / math.log(n1 / n0)
                return r0 + w * (r1 - r0)
        return table[-1][1]

    def link(self, op: str, nodes: int, p: int | None = None) -> Link:
        """The link of ``op``: fitted at this rank count (key "op@P") when it was measured there, else the
        op's fit over all rank counts, else the level's default."""
        table = self.inter if nodes > 1 and self.inter else self.intra
        return table.get(f"{op}@{p}") or table.get(op) or table["default"]

    def comm_s(self, op: str, nbytes: int, p: int, nodes: int = 1) -> float:
        if p == 1:
            return 0.0
        lk = self.link(op, nodes, p)
        return hops(op, p) * lk.alpha_s + nbytes * busbw_factor(op, p) / (lk.bw_GBps * 1e9)

    def overlaps(self, p: int, nodes: int) -> bool:
        """Whether asynchronous communication can run beside compute. CPU ranks bound to one core each
        (cores_per_rank 1) progress their transfers on that core (gloo's threads), so a transfer over a fast
        link (loopback: CPU-bound copies) and a block take turns. Elsewhere transfers are taken to overlap:
        GPUs have copy engines and NCCL's own kernels, and over a slow link a transfer is mostly waiting."""
        return self.cores_per_rank is None or self.cores_per_rank >= 2

    def core_share(self, p: int, nodes: int) -> float:
        """The fraction of its device a rank gets: CPU ranks beyond a node's cores share them."""
        if self.cores_per_rank is not None:
            return 1.0
        return 1.0 if not self.cores_per_node else min(1.0, self.cores_per_node / max(1, p // max(1, nodes)))


def from_table(name: str, m: dict) -> Machine:
    """The machine of a profile's [model] table."""
    if not m:
        raise ValueError(f"profile {name} has no [model] table")
    intra = {"default": Link(**m["intra"])}
    inter = {"default": Link(**m["inter"])} if "inter" in m else {}
    return Machine(name, m.get("source", "published"), float(m["flops_per_s"]), intra, inter,
                   m.get("cores_per_node"), hbm_GBps=m.get("hbm_GBps"))


def load(name: str) -> tuple[Machine, int]:
    """(machine, GPUs per node) of a profile with a [model] table."""
    path = profile_path(name)
    if not path.exists():
        names = ", ".join(sorted(p.stem for p in PROFILES.glob("*.toml")))
        raise ValueError(f"unknown machine {name!r}; profiles: {names}")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read profile {path}: {e}") from None
    return from_table(path.stem, data.get("model") or {}), int(data.get("gpus_per_node") or 1)
