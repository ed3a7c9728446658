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

PROFILES = Path(__file__).resolve().parent.parent / "jobs" / "profiles"


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

    def block_rate(self, direction: str, causal: bool, seq_q: int, seq_k: int) -> float:
        """FLOP/s of one block: interpolated in log(block length) from the kernel measurements, else the
        machine's one number. Small blocks run below a kernel's peak; this is where it shows."""
        table = self.kernel_rates.get((direction, bool(causal))) or self.kernel_rates.get((direction, False))
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

    def link(self, op: str, nodes: int) -> Link:
        table = self.inter if nodes > 1 and self.inter else self.intra
        return table.get(op) or table["default"]

    def comm_s(self, op: str, nbytes: int, p: int, nodes: int = 1) -> float:
        if p == 1:
            return 0.0
        lk = self.link(op, nodes)
        return hops(op, p) * lk.alpha_s + nbytes * busbw_factor(op, p) / (lk.bw_GBps * 1e9)

    def core_share(self, p: int, nodes: int) -> float:
        """The fraction of its device a rank gets: CPU ranks beyond a node's cores share them."""
        return 1.0 if not self.cores_per_node else min(1.0, self.cores_per_node / max(1, p // max(1, nodes)))


def from_table(name: str, m: dict) -> Machine:
    """The machine of a profile's [model] table."""
    if not m:
        raise ValueError(f"profile {name} has no [model] table")
    intra = {"default": Link(**m["intra"])}
    inter = {"default": Link(**m["inter"])} if "inter" in m else {}
    return Machine(name, m.get("source", "published"), float(m["flops_per_s"]), intra, inter,
                   m.get("cores_per_node"))


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
