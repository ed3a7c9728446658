"""A benchmark point: one attention configuration with its algorithm.

Shared by ``bench run`` (which measures points) and ``bench sweep`` (which
plans them into jobs), so both validate points alike and compute the same
record key for "is this point done?".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DTYPES = ("float32", "float64", "bfloat16", "float16")
MODES = ("fwd", "fwd+bwd")
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

    Raises ValueError with a message meant for the user.
    """
    import ringx

    unknown = set(d) - set(FIELDS) - {"scaling"}
    if unknown:
        raise ValueError(f"unknown point field(s) {', '.join(sorted(unknown))}; known: {', '.join(FIELDS)}")
    name = d.get("algorithm")
    if name not in ringx.ALGORITHMS and name not in external:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ringx.ALGORITHMS)}")
    causal = d.get("causal", True)
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be true or false, got {causal!r}")
    ints = {}
    for k, default in (("batch", 1), ("heads", 8), ("head_dim", 64)):
        ints[k] = d.get(k, default)
    ints["kv_heads"] = d.get("kv_heads") or ints["heads"]
    for k, v in ints.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    if ints["heads"] % ints["kv_heads"]:
        raise ValueError(f"heads ({ints['heads']}) must be a multiple of kv_heads ({ints['kv_heads']})")
    dtype, mode = d.get("dtype", "float32"), d.get("mode", "fwd+bwd")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose fwd or fwd+bwd")
    seq, per_rank = d.get("seq"), d.get("seq_per_rank")
    if (seq is None) == (per_rank is None):
        raise ValueError("give seq (global, strong scaling) or seq_per_rank (weak scaling), exactly one")
    for v in (seq, per_rank):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"sequence lengths must be positive integers, got {v!r}")
    glob = seq if seq is not None else per_rank * world
    if name in ringx.ALGORITHMS:
        algo = ringx.ALGORITHMS[name]
        if not algo.supports(causal):
            raise ValueError(f"{name} does not support {'causal' if causal else 'non-causal'} attention")
        div = ringx.layouts.global_divisor(algo.layout(causal), world)
    else:
        div = 2 * world
    if glob % div:
        raise ValueError(f"sequence length {glob} cannot be split for {name} ({'causal' if causal else 'non-causal'}) "
                         f"over {world} ranks: it must be a multiple of {div}")
    return Point(name, glob, glob // world, "strong" if seq is not None else "weak", ints["batch"], ints["heads"],
                 ints["kv_heads"], ints["head_dim"], dtype, causal, mode)


def record_config(pt: Point, world: int, nodes: int, repeat: int, kernel: str | None, warmup: int,
                  iters: int) -> dict:
    """The configuration fields of a record; their hash is the record's key."""
    return {"world_size": world, "nodes": nodes, "repeat": repeat, "kernel_requested": kernel, "warmup": warmup,
            "iters": iters, **pt.as_dict()}
