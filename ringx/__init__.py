"""ringx: exact ring and ringX context-parallel attention."""

from . import memory, timeline, verify
from .algorithms import ALGORITHMS, Algorithm
from .api import CallStats, RingxInputError, attention
from .comm import Ledger
from .kernels import KERNELS, select_kernel
from .layouts import LAYOUTS, shard, unshard
from .topology import Topology

__all__ = [
    "ALGORITHMS", "Algorithm", "CallStats", "KERNELS", "LAYOUTS", "Ledger", "RingxInputError",
    "Topology", "attention", "memory", "select_kernel", "shard", "timeline", "unshard", "verify",
]
__version__ = "0.1.0"
