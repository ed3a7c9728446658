"""ringx: exact ring and ringX context-parallel attention."""

from . import decode, memory, timeline, verify
from .algorithms import ALGORITHMS, Algorithm
from .api import CallStats, attention
from .balancing import Balance, balance
from .comm import Ledger
from .decode import decode_attention
from .errors import RingxInputError
from .kernels import KERNELS, select_kernel
from .layouts import LAYOUTS, shard, unshard
from .mask import Mask
from .topology import Topology

__all__ = [
    "ALGORITHMS", "Algorithm", "Balance", "CallStats", "KERNELS", "LAYOUTS", "Ledger", "Mask", "RingxInputError",
    "Topology", "attention", "balance", "decode", "decode_attention", "memory", "select_kernel", "shard", "timeline",
    "unshard", "verify",
]
__version__ = "0.1.0"
