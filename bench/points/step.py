"""A ``bench model`` point: one training-step configuration (model, batch, dtype, checkpointing) with its
sequence and algorithm, as a sweep plans it into jobs (a sweep file with ``driver = "model"``).

A point is validated by :func:`model_plan`, which ``bench model`` runs too, and keyed by :func:`plan_config`,
the fields of the records ``bench model`` writes, so a sweep and the runs it renders agree on what is valid and
on what is done. Every value is read through the definitions of bench/options.py (``MODEL``, and ``PARAMS``
for the point's algorithm, sequence and batch).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from ringx_drivers import options
from ringx_drivers.points import compute_dtype, model_config
from ringx_suite.cli import UserError
from ringx_suite.dtypes import element_bytes

# A sweep file's [params] of a model sweep: the model options (not the learning rate, which is not part of a
# record's key, nor a profile, which is the sweep's machine) and the point's algorithm, sequence and batch.
MODEL_KEYS = tuple(n for n in options.MODEL if n not in ("lr", "machine"))
CHECK_MAX_SEQ = 512  # bench model's default length of the check (the reference's S x S scores live on one CPU)
POINT = ("algorithms", "seq", "seq_per_rank", "batch", "mask")  # bench model's point options (PARAMS)
SWEEP_PARAMS = MODEL_KEYS + POINT


def _is_hf(cfg) -> bool:
    from ringx_drivers.models.hf import is_hf  # here: the models import torch, which planning a sweep may not need

    return is_hf(cfg)


@dataclass(frozen=True)
class ModelPlan:
    """What ``bench model`` runs: the model, the points (global seq, algorithm) and how to measure them."""

    preset: str
    config: object  # models.ModelConfig
    batch: int
    scaling: str  # "strong" or "weak"
    seqs: tuple[int, ...]  # global lengths
    algorithms: tuple[str, ...]
    mask: str | None = None  # --mask (every layer), other than the architecture's own
    layer_masks: tuple[str, ...] = ()  # --layer-masks (the layers cycle through them)
    mask_seed: int = 0  # of drawn document masks

    def masks_at(self, seq: int) -> tuple | None:
        """The layers' masks (cycled) at ``seq`` tokens, or None for the architecture's causal / full."""
        from ringx_suite import masks

        specs = self.layer_masks or ((self.mask,) if self.mask else ())
        return tuple(masks.parse(x, seq, self.mask_seed) for x in specs) or None

    def layout_mask(self, seq: int):
        """What the sequence is sharded for: the first layer's mask (every layer's gives the same layout), or
        the architecture's causal flag."""
        masks = self.masks_at(seq)
        return masks[0] if masks else self.config.causal

    def mask_fields(self, seq: int) -> dict:
        """The record's mask fields (none without --mask or --layer-masks): --mask's as bench run's; a layer
        pattern's ``mask`` is ``layers:A/B/...`` and ``layer_masks`` each layer pattern's text."""
        from ringx_suite import masks as suite_masks

        if _is_hf(self.config):  # a transformers model: its layers' own masks
            return self.config.mask_fields(seq)
        if self.mask:
            return suite_masks.record_fields(self.mask, self.masks_at(seq)[0], self.mask_seed)
        if self.layer_masks:
            texts = [m.short() for m in self.masks_at(seq)]
            drawn = [x for x in self.layer_masks if suite_masks.is_distribution(x)]
            return {"mask": "layers:" + "/".join(texts), "layer_masks": texts,
                    **({"mask_seed": self.mask_seed} if drawn else {})}
        return {}


def model_plan(given: dict, world: int, external: dict | None = None) -> tuple[options.ModelOptions, ModelPlan]:
    """The model options and plan of ``bench model``'s options as a dict (option name -> a flag's string, a TOML
    value or a list), checked for ``world`` ranks: what the driver runs and what a sweep validates a point with,
    so both agree. ``external``: plugins by name (ringx_suite.plugins.Plugin), which the algorithms may name and
    which join them (after the built-ins when none are named). Every mistake (an unknown preset, heads that do not
    divide, a sequence the layouts cannot split over ``world`` ranks) raises UserError, on every rank alike, before
    any process group exists."""
    import ringx
    from ringx_drivers import models

    external = external or {}  # plugins named like a built-in were left out by their loader

    if isinstance(given.get("layer_masks"), list):  # a TOML list: the option's text form
        given = given | {"layer_masks": ",".join(map(str, given["layer_masks"]))}
    mo = options.ModelOptions.of(given)
    if mo.hf or mo.hf_config:
        if external:
            raise UserError(f"--hf runs a transformers model through ringx.integrations.transformers, which takes "
                            f"ringx's algorithms only; plugins ({', '.join(external)}) train --preset models")
        return _hf_plan(given, mo, world)
    cfg = model_config(mo.preset, {k: getattr(mo, k) for k in models.FIELDS if k in options.MODEL})

    P = options.PARAMS
    seq = options.value(P["seq"], given.get("seq"), "", many=True)
    per_rank = options.value(P["seq_per_rank"], given.get("seq_per_rank"), "", many=True)
    if seq and per_rank:
        raise UserError("give --seq (strong scaling) or --seq-per-rank (weak scaling), not both")
    seqs = tuple(s * world for s in per_rank) if per_rank else tuple(seq or [2048])
    batch = options.value(P["batch"], given.get("batch", 1), "")
    mask, layer_masks = _masks(given, mo, cfg)
    seed = options.value(options.SETTINGS["mask_seed"], given.get("mask_seed"), "") or 0
    probe = ModelPlan(mo.preset, cfg, batch, "strong", seqs, (), mask, layer_masks, seed)
    masks_of = {s: probe.masks_at(s) for s in seqs}  # every spec drawn and checked at every length
    for m in {m for ms in masks_of.values() for m in ms or ()}:
        if cfg.causal and not m.is_causal:
            raise UserError(f"mask {m.short()}: a decoder's layers must not see later tokens (they are its labels); "
                            "use causal, window:W or docs:... masks")
    kinds = {m.causal_layout for ms in masks_of.values() for m in ms or ()} or {cfg.causal}
    if len(kinds) > 1:
        raise UserError("--layer-masks: full and masked layers need two layouts of one sequence; give masked "
                        "layers only (e.g. window:W,causal) or full layers only")
    family = kinds.pop()
    asked = options.value(P["algorithms"], given.get("algorithms"), "", many=True)
    names = [*(asked or ringx.algorithms.names(family)), *(n for n in external if n not in (asked or ()))]
    for n in names:
        if n in external:  # its layout splits the sequence; what it cannot run is recorded when the run meets it
            div = ringx.layouts.global_divisor(external[n].layout(family) or "contiguous", world)
        else:
            if n not in ringx.ALGORITHMS:
                raise UserError(f"unknown algorithm {n!r}; choose from {', '.join(ringx.ALGORITHMS)}, or a plugin "
                                "(--plugin, or installed: ringx-bench plugins lists them)")
            try:
                ringx.algorithms.get(n, family)
            except ValueError as e:
                raise UserError(str(e)) from None
            algo = ringx.ALGORITHMS[n]
            if algo.ulysses == "all" and cfg.heads % world:
                raise UserError(f"{n}: {cfg.heads} query heads do not divide over {world} ranks (Ulysses splits "
                                "heads); choose other --heads or drop it from --algorithms")
            div = algo.local_divisor(family) * world
        for s in seqs:
            if s % div:
                raise UserError(f"sequence length {s} cannot be split for {n} "
                                f"({'causal' if family else 'non-causal'}) over {world} ranks: it must be a "
                                f"multiple of {div}")
            if cfg.causal and s < 2:
                raise UserError("a causal LM needs at least 2 tokens (one label)")
    return mo, replace(probe, scaling="weak" if per_rank else "strong", algorithms=tuple(dict.fromkeys(names)))


def _hf_plan(given: dict, mo: options.ModelOptions, world: int) -> tuple[options.ModelOptions, ModelPlan]:
    """``--hf``/``--hf-config``: a transformers causal LM (bench/models/hf.py), its own masks on every layer."""
    import ringx

    if options.value(options.PARAMS["mask"], given.get("mask"), "", many=True) or mo.layer_masks:
        raise UserError("--hf runs the model's own masks (its windows, sinks and packing): drop --mask/--layer-masks")
    if mo.arch or mo.patch_dim:
        raise UserError("--hf and --hf-config run causal LMs: drop --arch/--patch-dim")
    if given.get("preset") is not None:
        raise UserError("--hf/--hf-config take the place of --preset: give one of them")
    try:
        from ringx.integrations.transformers import check_version, config_problem
        from ringx_drivers.models import hf

        check_version()
        cfg = hf.model_of(mo.hf, mo.hf_config, {k: getattr(mo, k) for k in hf.FLAGS})
    except (ValueError, TypeError, ringx.RingxInputError) as e:
        raise UserError(str(e).splitlines()[0]) from None
    # the rest (sequences, algorithms, divisibility) as for a decoder of the same heads
    _, probe = model_plan({k: v for k, v in given.items() if k not in ("hf", "hf_config")} | {"preset": "tiny",
                          "heads": cfg.heads, "kv_heads": cfg.kv_heads, "d_model": cfg.heads * 2, "arch": "decoder"},
                          world)
    for n in probe.algorithms:
        problem = config_problem(cfg.hf, n, world)
        if problem:
            raise UserError(problem)
    return mo, replace(probe, preset=f"hf:{cfg.name}", config=cfg)


def _masks(given: dict, mo: options.ModelOptions, cfg) -> tuple[str | None, tuple[str, ...]]:
    """(--mask, --layer-masks) of a model, checked: one --mask per launch, not both, and a decoder's layers never
    see later tokens (a full mask would show the labels). full/causal as the architecture's own are dropped."""
    spec = options.value(options.PARAMS["mask"], given.get("mask"), "", many=True)
    if spec and len(spec) != 1:
        raise UserError("bench model takes one --mask per launch (a sweep file's masks = [...] crosses several)")
    layer = tuple(options.value(options.MODEL["layer_masks"], mo.layer_masks, "", many=True) or ())
    if spec and layer:
        raise UserError("give --mask (every layer) or --layer-masks (a per-layer pattern), not both")
    if not layer and spec and spec[0].strip() == ("causal" if cfg.causal else "full"):
        return None, ()  # the architecture's own mask: the records of a run without --mask
    return (spec[0] if spec and not layer else None), layer


def plan_config(plan: ModelPlan, algorithm: str, seq: int, *, world: int, nodes: int, repeat: int, dtype: str,
                  checkpoint: bool, kernel: str | None, warmup: int, iters: int) -> dict:
    """The configuration fields of a model record; their hash is the record's key (what a sweep's status and
    a rerun's resume look up)."""
    from ringx_drivers.points import run_config

    return run_config(world, nodes, repeat, kernel, warmup, iters) | {"algorithm": algorithm, "model": plan.preset,
            **plan.config.as_dict(), "seq": seq, "seq_per_rank": seq // world, "scaling": plan.scaling,
            "batch": plan.batch, "dtype": dtype, "causal": plan.config.causal, "checkpoint": bool(checkpoint)} \
        | plan.mask_fields(seq)


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
        flags = [] if self.preset.startswith("hf:") else ["--preset", self.preset]  # --hf/--hf-config: overrides
        for k, v in self.overrides:
            flags += [M[k].flag, str(v)]
        masked = ["--mask", self.mask] if self.mask else []  # its seed: the job's [bench] mask_seed
        return flags + ["--dtype", self.dtype, *(["--checkpoint"] if self.checkpoint else []),
                        "--batch", str(self.batch), *masked]


def check_values(params: dict, where: str) -> None:
    """Every [params] value of a model sweep against its definition (one line for the first bad one)."""
    for k, v in params.items():
        options.value(definition(k), v, where, many=True)


def check_model(d: dict, algorithms: list[str], where: str, external: dict | None = None) -> None:
    """The model options of a point (preset, fields, dtype) and the algorithms asked of it (``external``: the
    sweep's plugins by name), whatever the ranks: an unknown preset, heads that do not divide or an algorithm the
    masking lacks, said once."""
    given = {k: v for k, v in d.items() if k in MODEL_KEYS}
    external = {n: p for n, p in (external or {}).items() if n in algorithms}
    try:
        model_plan(given | {"algorithms": algorithms}, world=1, external=external)  # at one rank any length splits
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def make_step_point(d: dict, world: int, device_type: str, external: dict | None = None) -> StepPoint:
    """A validated point for ``world`` ranks from a dict of [params] keys (``algorithm`` for ``algorithms``), which
    may name one of ``external`` (the sweep's plugins by name).

    ``device_type`` (cuda or cpu: where the job runs) resolves dtype auto. Raises UserError with bench
    model's own message."""
    given = {k: v for k, v in d.items() if k != "algorithm"}
    given |= {"algorithms": [d.get("algorithm")]}
    for k in ("seq", "seq_per_rank"):
        if given.get(k) is not None:
            given[k] = [given[k]]
    if given.get("seq") is None and given.get("seq_per_rank") is None:
        raise UserError("give seq (global, strong scaling) or seq_per_rank (weak scaling)")
    mine = {n: p for n, p in (external or {}).items() if n == d.get("algorithm")}
    model, plan = model_plan(given, world, mine)
    dtype = compute_dtype(model.dtype, device_type)
    overrides = tuple((k, getattr(model, k)) for k in MODEL_KEYS
                      if k in d and k not in ("preset", "dtype", "checkpoint"))
    seq = plan.seqs[0]
    return StepPoint(plan.algorithms[0], seq, seq // world, plan.scaling, plan.batch, plan.preset, dtype,
                     bool(model.checkpoint), overrides, plan.config, plan.mask, plan.mask_seed)


def plan_of(pt: StepPoint) -> ModelPlan:
    layer = dict(pt.overrides).get("layer_masks")
    return ModelPlan(pt.preset, pt.config, pt.batch, pt.scaling, (pt.seq,), (pt.algorithm,), pt.mask,
                            tuple(options.value(options.MODEL["layer_masks"], layer, "", many=True) or ()),
                            pt.mask_seed)


def record_config(pt: StepPoint, world: int, nodes: int, repeat: int, settings: dict) -> dict:
    """The configuration fields (the key) of the record ``bench model`` writes for this point."""
    return plan_config(plan_of(pt), pt.algorithm, pt.seq, world=world, nodes=nodes, repeat=repeat, dtype=pt.dtype,
                       checkpoint=pt.checkpoint, kernel=settings["kernel"], warmup=settings["warmup"],
                       iters=settings["iters"])


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
    abytes = element_bytes(pt.dtype)
    tokens = pt.batch * pt.seq_per_rank
    kv = c.kv_heads * c.head_dim
    layer = 4 * c.d_model + 2 * kv + 3 * c.mlp  # per token: the matmuls' inputs and the attention output
    kept = (c.layers * c.d_model + layer) if pt.checkpoint else c.layers * layer
    need = 4 * n * wbytes + tokens * kept * abytes + (tokens * c.vocab * 8 if c.causal else 0)
    reference = 0 if gpu else 16 * n  # rank 0's unsharded float64 model (on the CPU)
    return int(max(need, (16 * n + reference) if check else 0))


@functools.lru_cache(maxsize=64)
def param_count(c) -> int:
    """The model's parameters, from its shape (built on the meta device: no memory); a transformers model's every
    expert counted (a mixture of experts holds them all)."""
    import torch

    from ringx_drivers import models

    if _is_hf(c):  # --hf, --hf-config (bench/models/hf.py)
        return c.counts()[0]

    with torch.device("meta"):
        return models.count_params(models.Model(c))


def flops_per_token(cfg, seq: int, masks) -> tuple[float, int]:
    """(model FLOPs per token of one step, the N it counts), as bench model's records count them: 6N plus each
    layer's attention over what its mask shows (``masks``: the layers' masks cycled, or None for the architecture's
    causal or full); a transformers model with its active experts only and its layers' own masks."""
    from ringx.flops import masked_model_flops_per_token, model_flops_per_token
    from ringx_drivers import models

    hf = _is_hf(cfg)
    n = cfg.counts()[1] if hf else models.flops_params(cfg)
    if hf:
        masks = tuple(cfg.layer_masks(seq))
    if masks:
        return masked_model_flops_per_token(n, cfg.layers, seq, cfg.heads, cfg.head_dim, masks), n
    return model_flops_per_token(n, cfg.layers, seq, cfg.heads, cfg.head_dim, cfg.causal), n


def step_flops(pt: StepPoint) -> float:
    """One training step's FLOPs over all ranks (the model convention of bench model's records), with the
    recomputed forward when checkpointed."""
    per_token, _ = flops_per_token(pt.config, pt.seq, plan_of(pt).masks_at(pt.seq))
    return per_token * pt.batch * pt.seq * (4 / 3 if pt.checkpoint else 1.0)
