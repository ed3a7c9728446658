"""A benchmark point: one attention configuration with its algorithm.

Shared by ``bench run`` (which measures points) and ``bench sweep`` (which
plans them into jobs), so both validate points alike and compute the same
record key for "is this point done?".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bench.options import PARAMS, value
from bench.points import run_config
from ringx_suite.cli import UserError

FIELDS = ("algorithm", "seq", "seq_per_rank", "batch", "heads", "kv_heads", "head_dim", "dtype", "causal", "mode")


@dataclass(frozen=True)
class Point:
    algorithm: str
    seq: int  # global tokens
    seq_per_rank: int
    scaling: str  # "strong" (seq given) or "weak" (seq_per_rank given)
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    causal: bool
    mode: str

    def as_dict(self) -> dict:
        return asdict(self)

    def spec(self) -> dict:
        """The point as it is specified: the global length for strong scaling, per rank for weak."""
        d = asdict(self)
        del d["scaling"], d["seq_per_rank" if self.scaling == "strong" else "seq"]
        return d


def make_point(d: dict, world: int, external: tuple[str, ...] = ()) -> Point:
    """A validated point for ``world`` ranks from a dict with the FIELDS keys (seq or seq_per_rank).

    Values are read through the option definitions (bench/options.py). Raises UserError with a message
    meant for the user.
    """
    import ringx

    unknown = set(d) - set(FIELDS) - {"scaling"}
    if unknown:
        raise UserError(f"unknown point field(s) {', '.join(sorted(unknown))}; known: {', '.join(FIELDS)}")
    name = d.get("algorithm")
    if name not in ringx.ALGORITHMS and name not in external:
        raise UserError(f"unknown algorithm {name!r}; choose from {', '.join(ringx.ALGORITHMS)}")
    v = {k: value(PARAMS[k], d.get(k, PARAMS[k].default), "point") for k in
         ("batch", "heads", "kv_heads", "head_dim", "dtype", "causal", "mode", "seq", "seq_per_rank")}
    v["kv_heads"] = v["kv_heads"] or v["heads"]
    if v["heads"] % v["kv_heads"]:
        raise UserError(f"heads ({v['heads']}) must be a multiple of kv_heads ({v['kv_heads']})")
    seq, per_rank, causal = v["seq"], v["seq_per_rank"], v["causal"]
    if (seq is None) == (per_rank is None):
        raise UserError("give seq (global, strong scaling) or seq_per_rank (weak scaling), exactly one")
    glob = seq if seq is not None else per_rank * world
    if name in ringx.ALGORITHMS:
        algo = ringx.ALGORITHMS[name]
        if not algo.supports(causal):
            raise UserError(f"{name} does not support {'causal' if causal else 'non-causal'} attention")
        div = ringx.layouts.global_divisor(algo.layout(causal), world)
    else:
        div = 2 * world
    if glob % div:
        raise UserError(f"sequence length {glob} cannot be split for {name} ({'causal' if causal else 'non-causal'}) "
                        f"over {world} ranks: it must be a multiple of {div}")
    return Point(name, glob, glob // world, "strong" if seq is not None else "weak", v["batch"], v["heads"],
                 v["kv_heads"], v["head_dim"], v["dtype"], causal, v["mode"])


ELEMENT_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}


def _buffers(algorithm: str, q: int, kv: int, world: int) -> int:
    """Bytes of an algorithm's own communication buffers in the forward (``q``, ``kv``: one local Q, K or V)."""
    if algorithm in ("ringx3", "ringx3b", "usp-ringx", "tcp-allgather"):
        return 2 * kv * world  # the gathered K and V: O(S), not O(S/P)
    if algorithm in ("ringx1", "ringx2", "ringx1o", "ringx2o"):
        return 3 * q * (2 if algorithm.endswith("o") else 1)  # a broadcast Q, its numerator and denominator
    if algorithm in ("ringx4", "ringx4o"):
        return 2 * kv * (2 if algorithm.endswith("o") else 1)  # a broadcast K/V block (two in flight: o)
    if algorithm == "ulysses":
        return 2 * q + 2 * kv  # q, k, v and out re-sharded by heads
    return 4 * kv  # ring family: the K/V block in use and the next one


def memory_bytes(pt: Point, world: int, check_max_seq: int = 0) -> int:
    """A lower bound of the bytes one rank needs for a point: the inputs (q, k, v, dout), output and LSE, the
    gradients (fwd+bwd) and the algorithm's buffers, or the float64 check at up to ``check_max_seq`` tokens
    if that is more. Kernel workspace and allocator slack come on top, so a point above a device's memory
    cannot run there; one below may still run out (it is then recorded as ``oom``)."""
    e = ELEMENT_BYTES[pt.dtype]
    q = pt.batch * pt.seq_per_rank * pt.heads * pt.head_dim * e
    kv = pt.batch * pt.seq_per_rank * pt.kv_heads * pt.head_dim * e
    lse = pt.batch * pt.heads * pt.seq_per_rank * 4
    backward = pt.mode == "fwd+bwd"
    need = 2 * q + 2 * kv + q + lse + _buffers(pt.algorithm, q, kv, world) * (2 if backward else 1)
    if backward:
        need += q + 2 * kv  # dq, dk, dv
    cs = min(pt.seq, check_max_seq)
    check = 8 * cs * pt.head_dim * 2 * (pt.heads + pt.kv_heads) * 2  # float64 q, k, v, dout, out and grads
    return int(max(need, check))


def record_config(pt: Point, world: int, nodes: int, repeat: int, kernel: str | None, warmup: int,
                  iters: int) -> dict:
    """The configuration fields of a record; their hash is the record's key."""
    return run_config(world, nodes, repeat, kernel, warmup, iters) | pt.as_dict()
