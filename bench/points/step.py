"""A ``bench model`` point: one training-step configuration (model, batch, dtype, checkpointing) with its
sequence and algorithm, as a sweep plans it into jobs (a sweep file with ``driver = "model"``).

A point is validated by ``bench model``'s own :func:`bench.drivers.step.make_plan` and keyed by its
:func:`bench.drivers.step.record_config`, so a sweep and the runs it renders agree on what is valid and on
what is done. Every value is read through the definitions of bench/options.py (``MODEL``, and ``PARAMS``
for the point's algorithm, sequence and batch).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ringx_drivers import options
from ringx_drivers.drivers import step as step_driver
from ringx_suite.cli import UserError

# A sweep file's [params] of a model sweep: the model options (not the learning rate, which is not part of a
# record's key, nor a profile, which is the sweep's machine) and the point's algorithm, sequence and batch.
MODEL_KEYS = tuple(n for n in options.MODEL if n not in ("lr", "machine"))
SWEEP_PARAMS = MODEL_KEYS + step_driver.POINT


def definition(name: str) -> options.Option:
    """The option behind a model sweep's [params] key (the model's heads and dtype, not attention's)."""
    name = "mask" if name == "masks" else name  # masks = [...]: the points' --mask
    return options.MODEL[name] if name in options.MODEL else options.PARAMS[name]


@dataclass(frozen=True)
class StepPoint:
    algorithm: str
    seq: int  # global tokens
    seq_per_rank: int
    scaling: str  # "strong" (seq given) or "weak" (seq_per_rank given)
    batch: int
    preset: str
    dtype: str  # resolved for the device the job runs on: float32, float64 or bfloat16
    checkpoint: bool
    overrides: tuple[tuple[str, object], ...]  # the model fields given over the preset, in options.MODEL order
    config: object  # models.ModelConfig, the preset with the overrides
    mask: str | None = None  # --mask (a spec other than the architecture's own)
    mask_seed: int = 0  # of a drawn --mask or --layer-masks

    @property
    def group(self) -> tuple:
        """What the points of one ``bench model`` launch share: all but the sequence and the algorithm."""
        return self.preset, self.overrides, self.dtype, self.checkpoint, self.batch, self.mask, self.mask_seed, \
            self.scaling

    def spec(self) -> dict:
        """The point as it is specified (the global length for strong scaling, per rank for weak)."""
        seq = {"seq": self.seq} if self.scaling == "strong" else {"seq_per_rank": self.seq_per_rank}
        masked = {"mask": self.mask} if self.mask else {}
        return {"algorithm": self.algorithm, **seq, "batch": self.batch, "preset": self.preset, **dict(self.overrides),
                "dtype": self.dtype, "checkpoint": self.checkpoint, **masked}

    def describe(self) -> str:
        """One line for plan and status: the model, its step and the point."""
        c = self.config
        over = "".join(f" {k}={v}" for k, v in self.overrides)
        return (f"{self.algorithm:8s} seq={self.seq:<8d} model {self.preset}{over} ({c.layers} layers, d {c.d_model}, "
                f"{c.heads}/{c.kv_heads} heads) {self.dtype} b{self.batch}{' checkpointed' if self.checkpoint else ''}")

    def model_flags(self) -> list[str]:
        """``bench model``'s flags for the model and step of this point (everything spelled out)."""
        M = options.MODEL
        flags = ["--preset", self.preset]
        for k, v in self.overrides:
            flags += [M[k].flag, str(v)]
        masked = ["--mask", self.mask] if self.mask else []  # its seed: the job's [bench] mask_seed
        return flags + ["--dtype", self.dtype, *(["--checkpoint"] if self.checkpoint else []),
                        "--batch", str(self.batch), *masked]


def check_values(params: dict, where: str) -> None:
    """Every [params] value of a model sweep against its definition (one line for the first bad one)."""
    for k, v in params.items():
        options.value(definition(k), v, where, many=True)


def check_model(d: dict, algorithms: list[str], where: str) -> None:
    """The model options of a point (preset, fields, dtype) and the algorithms asked of it, whatever the
    ranks: an unknown preset, heads that do not divide or an algorithm the masking lacks, said once."""
    given = {k: v for k, v in d.items() if k in MODEL_KEYS}
    try:
        step_driver.make_plan(given | {"algorithms": algorithms}, world=1)  # at one rank any length splits
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def make_step_point(d: dict, world: int, device_type: str) -> StepPoint:
    """A validated point for ``world`` ranks from a dict of [params] keys (``algorithm`` for ``algorithms``).

    ``device_type`` (cuda or cpu: where the job runs) resolves dtype auto. Raises UserError with bench
    model's own message."""
    given = {k: v for k, v in d.items() if k != "algorithm"}
    given |= {"algorithms": [d.get("algorithm")]}
    for k in ("seq", "seq_per_rank"):
        if given.get(k) is not None:
            given[k] = [given[k]]
    if given.get("seq") is None and given.get("seq_per_rank") is None:
        raise UserError("give seq (global, strong scaling) or seq_per_rank (weak scaling)")
    _, model, plan = step_driver.make_plan(given, world)
    dtype = step_driver.compute_dtype(model.dtype, device_type)
    overrides = tuple((k, getattr(model, k)) for k in MODEL_KEYS
                      if k in d and k not in ("preset", "dtype", "checkpoint"))
    seq = plan.seqs[0]
    return StepPoint(plan.algorithms[0], seq, seq // world, plan.scaling, plan.batch, plan.preset, dtype,
                     bool(model.checkpoint), overrides, plan.config, plan.mask, plan.mask_seed)


def plan_of(pt: StepPoint) -> step_driver.Plan:
    layer = dict(pt.overrides).get("layer_masks")
    return step_driver.Plan(pt.preset, pt.config, pt.batch, pt.scaling, (pt.seq,), (pt.algorithm,), pt.mask,
                            tuple(options.value(options.MODEL["layer_masks"], layer, "", many=True) or ()),
                            pt.mask_seed)


def record_config(pt: StepPoint, world: int, nodes: int, repeat: int, settings: dict) -> dict:
    """The configuration fields (the key) of the record ``bench model`` writes for this point."""
    return step_driver.record_config(plan_of(pt), pt.algorithm, pt.seq, world=world, nodes=nodes, repeat=repeat,
                                     dtype=pt.dtype, checkpoint=pt.checkpoint, kernel=settings["kernel"],
                                     warmup=settings["warmup"], iters=settings["iters"])


def commands(points: list[StepPoint]) -> list[list[str]]:
    """``bench model`` argument lists (without output and settings) running exactly these points: one launch
    per model configuration and set of algorithms, its sequences listed (``--seq a,b --algorithms x,y``)."""
    out = []
    for group in dict.fromkeys(p.group for p in points):
        pts = [p for p in points if p.group == group]
        algos: dict[int, list[str]] = {}  # sequence -> its algorithms, in the sweep's order
        for p in pts:
            algos.setdefault(p.seq_per_rank if p.scaling == "weak" else p.seq, []).append(p.algorithm)
        for names in dict.fromkeys(tuple(dict.fromkeys(a)) for a in algos.values()):
            seqs = [s for s, a in algos.items() if tuple(dict.fromkeys(a)) == names]
            out.append(["model", *pts[0].model_flags(),
                        "--seq-per-rank" if group[-1] == "weak" else "--seq", ",".join(map(str, seqs)),
                        "--algorithms", ",".join(names)])
    return out


def memory_bytes(pt: StepPoint, world: int, gpu: bool, check: bool) -> int:
    """A lower bound of the bytes one rank needs for a step: weights, gradients and AdamW's two moments (float32,
    float64 for a float64 step), what the backward keeps of each layer (its input only when checkpointed, plus
    one layer's), the logits and their gradient in float32 (decoder), or the float64 check's model and
    gradients (and on CPUs the unsharded reference beside it) if that is more. Allocator slack comes on top."""
    c = pt.config
    n = param_count(c)
    wbytes = 8 if pt.dtype == "float64" else 4
    abytes = {"bfloat16": 2, "float32": 4, "float64": 8}[pt.dtype]
    tokens = pt.batch * pt.seq_per_rank
    kv = c.kv_heads * c.head_dim
    layer = 4 * c.d_model + 2 * kv + 3 * c.mlp  # per token: the matmuls' inputs and the attention output
    kept = (c.layers * c.d_model + layer) if pt.checkpoint else c.layers * layer
    need = 4 * n * wbytes + tokens * kept * abytes + (tokens * c.vocab * 8 if c.causal else 0)
    reference = 0 if gpu else 16 * n  # rank 0's unsharded float64 model (on the CPU)
    return int(max(need, (16 * n + reference) if check else 0))


@functools.lru_cache(maxsize=64)
def param_count(c) -> int:
    """The model's parameters, from its shape (built on the meta device: no memory)."""
    import torch

    from ringx_drivers import models

    with torch.device("meta"):
        return models.count_params(models.Model(c))


def step_flops(pt: StepPoint) -> float:
    """One training step's FLOPs over all ranks (the model convention of bench model's records), with the
    recomputed forward when checkpointed."""
    from ringx.flops import model_flops_per_token
    from ringx_drivers import models

    c = pt.config
    masks = plan_of(pt).masks_at(pt.seq)
    if masks:  # each layer's visible area
        from ringx.flops import masked_model_flops_per_token

        per_token = masked_model_flops_per_token(models.flops_params(c), c.layers, pt.seq, c.heads, c.head_dim, masks)
    else:
        per_token = model_flops_per_token(models.flops_params(c), c.layers, pt.seq, c.heads, c.head_dim, c.causal)
    return per_token * pt.batch * pt.seq * (4 / 3 if pt.checkpoint else 1.0)
