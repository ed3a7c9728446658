"""A benchmark point: one attention configuration with its algorithm.

Shared by ``bench run`` (which measures points) and ``bench sweep`` (which
plans them into jobs), so both validate points alike and compute the same
record key for "is this point done?".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ringx_drivers.options import PARAMS, SETTINGS, value
from ringx_drivers.points import run_config
from ringx_suite.cli import UserError
from ringx_suite.dtypes import element_bytes

FIELDS = ("algorithm", "seq", "seq_per_rank", "batch", "heads", "kv_heads", "head_dim", "dtype", "causal", "mode",
          "mask", "mask_seed")


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
    causal: bool  # with a mask: whether it is causal (no query sees a later key)
    mode: str
    mask: str | None = None  # a --mask spec other than full/causal (those are `causal`), else None
    mask_seed: int | None = None  # the seed of a drawn document mask (None: not drawn)

    def as_dict(self) -> dict:
        """The point's fields; ``mask``/``mask_seed`` only when set (a point without a mask keeps the record key it
        had before masks existed)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("mask", "mask_seed")}

    def spec(self) -> dict:
        """The point as it is specified: the global length for strong scaling, per rank for weak."""
        d = self.as_dict()
        del d["scaling"], d["seq_per_rank" if self.scaling == "strong" else "seq"]
        if self.mask is not None:
            del d["causal"]  # the mask says it
        return d

    def the_mask(self, seq: int | None = None):
        """The ringx.Mask of the point (full/causal from ``causal``, else the drawn or literal --mask), at ``seq``
        tokens (default the point's)."""
        from ringx_suite import masks

        spec = self.mask or ("causal" if self.causal else "full")
        return masks.parse(spec, seq or self.seq, self.mask_seed or 0)

    def mask_text(self) -> str:
        if self.mask is None:
            return "causal" if self.causal else "full"
        return self.the_mask().short()

    def mask_fields(self) -> dict:
        """The record's mask fields (ringx_suite.masks.record_fields; none for a point without --mask)."""
        from ringx_suite import masks

        return masks.record_fields(self.mask, self.the_mask(), self.mask_seed or 0) if self.mask is not None else {}


def masking(d: dict, glob: int, seed: int | None) -> tuple[str | None, int | None, bool]:
    """(spec, seed, causal) of a point dict's ``mask`` and ``causal`` (ringx_suite.masks.reconcile: the mask
    replaces causal, and given both they agree): (None, None, the bool) for full/causal. A bad one: one-line
    UserError (every rank raises alike, before any collective)."""
    from ringx_suite import masks

    spec = value(PARAMS["mask"], d.get("mask"), "point")
    causal = value(PARAMS["causal"], d.get("causal"), "point") if d.get("causal") is not None else None
    (spec,) = masks.reconcile(None if spec is None else [spec], None if causal is None else [causal],
                              [PARAMS["causal"].default])
    seed = value(SETTINGS["mask_seed"], d.get("mask_seed", seed), "point") or 0
    m = masks.parse(spec, glob, seed)
    if m.plain is not None:
        return None, None, m.plain
    return spec, (seed if masks.is_distribution(spec) else None), m.is_causal


def make_point(d: dict, world: int, external: dict | None = None, seed: int | None = None) -> Point:
    """A validated point for ``world`` ranks from a dict with the FIELDS keys (seq or seq_per_rank); ``external``:
    plugins by name (ringx_suite.plugins.Plugin: their layouts), which points may name too.

    Values are read through the option definitions (bench/options.py). ``mask`` (a --mask spec) replaces
    ``causal``; a drawn one uses ``mask_seed`` (default ``seed``). Raises UserError with a message meant for the
    user.
    """
    import ringx
    from ringx_suite import masks

    external = external or {}
    unknown = set(d) - set(FIELDS) - {"scaling"}
    if unknown:
        raise UserError(f"unknown point field(s) {', '.join(sorted(unknown))}; known: {', '.join(FIELDS)}")
    name = d.get("algorithm")
    if name not in ringx.ALGORITHMS and name not in external:
        raise UserError(f"unknown algorithm {name!r}; choose from {', '.join(ringx.ALGORITHMS)}, or an installed "
                        "or --plugin one")
    v = {k: value(PARAMS[k], d.get(k, PARAMS[k].default), "point") for k in
         ("batch", "heads", "kv_heads", "head_dim", "dtype", "mode", "seq", "seq_per_rank")}
    v["kv_heads"] = v["kv_heads"] or v["heads"]
    if v["heads"] % v["kv_heads"]:
        raise UserError(f"heads ({v['heads']}) must be a multiple of kv_heads ({v['kv_heads']})")
    seq, per_rank = v["seq"], v["seq_per_rank"]
    if (seq is None) == (per_rank is None):
        raise UserError("give seq (global, strong scaling) or seq_per_rank (weak scaling), exactly one")
    glob = seq if seq is not None else per_rank * world
    spec, mseed, causal = masking(d, glob, seed)
    m = masks.parse(spec or ("causal" if causal else "full"), glob, mseed or 0)
    what = f"mask {spec}" if spec else "causal" if causal else "non-causal"
    if name in ringx.ALGORITHMS:
        algo = ringx.ALGORITHMS[name]
        if not algo.supports(m):
            raise UserError(f"{name} does not support {what} attention")
        div = ringx.layouts.global_divisor(algo.layout(mask=m), world)
    else:  # a plugin: the masks it does not take are recorded skipped when the run meets them
        div = ringx.layouts.global_divisor(external[name].layout(m.causal_layout) or "contiguous", world)
    if glob % div:
        raise UserError(f"sequence length {glob} cannot be split for {name} ({what}) "
                        f"over {world} ranks: it must be a multiple of {div}")
    return Point(name, glob, glob // world, "strong" if seq is not None else "weak", v["batch"], v["heads"],
                 v["kv_heads"], v["head_dim"], v["dtype"], causal, v["mode"], spec, mseed)


def memory_bytes(pt: Point, world: int, check_max_seq: int = 0, like: str = "ring") -> int:
    """The bytes one rank needs for a point: the inputs (q, k, v, dout) and what one call holds at its peak (the
    library's formula, ``ringx.memory.peak_formula``: the result, the gradients (fwd+bwd) and the algorithm's
    buffers), or the float64 check at up to ``check_max_seq`` tokens if that is more. Kernel workspace and
    allocator slack come on top, so a point above a device's memory cannot run there; one below may still run
    out (it is then recorded as ``oom``). A plugin counts as the built-in ``like`` (its ``memory_like``)."""
    import torch

    import ringx
    from ringx import memory
    e = element_bytes(pt.dtype)
    inputs = 2 * pt.batch * pt.seq_per_rank * (pt.heads + pt.kv_heads) * pt.head_dim * e  # q, dout; k, v
    s = memory.sizes(pt.batch, pt.seq_per_rank, pt.heads, pt.kv_heads, pt.head_dim, getattr(torch, pt.dtype))
    name = pt.algorithm if pt.algorithm in ringx.ALGORITHMS else like
    peak = memory.peak_formula(name, world, s, backward=pt.mode == "fwd+bwd", kv_heads=pt.kv_heads)
    cs = min(pt.seq, check_max_seq)
    check = 8 * cs * pt.head_dim * 2 * (pt.heads + pt.kv_heads) * 2  # float64 q, k, v, dout, out and grads
    return int(max(inputs + peak, check))


def record_config(pt: Point, world: int, nodes: int, repeat: int, kernel: str | None, warmup: int,
                  iters: int) -> dict:
    """The configuration fields of a record; their hash is the record's key. A masked point's are its mask's
    record fields (the exact mask, or its digest with the spec and seed), not the spec alone."""
    d = pt.as_dict()
    d.pop("mask", None), d.pop("mask_seed", None)
    return run_config(world, nodes, repeat, kernel, warmup, iters) | d | pt.mask_fields()
