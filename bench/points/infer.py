"""A ``bench infer`` point as a sweep plans it (``driver = "infer"``): one candidate (a ringx algorithm or
``tp``) serving one prompt length, its record key, the command lines running a job's points, and bounds on its
memory and compute."""

from __future__ import annotations

from dataclasses import dataclass

from ringx_drivers import options
from ringx_drivers.points import compute_dtype, model_config, run_config
from ringx_suite.cli import UserError
from ringx_suite.dtypes import element_bytes

MODEL_KEYS = options.INFER_MODEL
SWEEP_PARAMS = MODEL_KEYS + tuple(options.INFER)
CHECK_MAX_SEQ = 8192  # bench infer's longest prompt --check verifies: the reference recomputes it per token, on one CPU
DEFAULT_ALGORITHMS = ("ring", "zigzag", "ringx1", "ringx3", "ringx4", "ulysses", "tp")
DEFAULT_PROMPT = 256


@dataclass(frozen=True)
class ServingPlan:
    """What ``bench infer`` serves: the model, the prompt lengths, the candidates."""

    preset: str
    config: object  # models.ModelConfig
    batch: int
    new_tokens: int
    prompts: tuple[int, ...]
    algorithms: tuple[str, ...]
    dtype: str  # as asked ("auto" resolved on the device)


def serving_plan(given: dict, world: int) -> ServingPlan:
    """The plan of ``bench infer``'s options as a dict, checked for ``world`` ranks (what the driver runs and what a
    sweep validates a point with): every user mistake (an unknown preset or algorithm, a prompt the layout cannot
    split, ``--new-tokens 0``, heads TP cannot split) raises UserError, on every rank alike."""
    from ringx_drivers.models import serving

    overrides = {n: options.value(options.MODEL[n], given.get(n), "") for n in options.INFER_MODEL if n != "preset"}
    preset = options.value(options.MODEL["preset"], given.get("preset", "tiny"), "")
    cfg = model_config(preset, overrides)
    opt = options.INFER
    prompts = tuple(options.value(opt["prompt_len"], given.get("prompt_len"), "", many=True) or [DEFAULT_PROMPT])
    batch = options.value(opt["batch"], given.get("batch", opt["batch"].default), "")
    new_tokens = options.value(opt["new_tokens"], given.get("new_tokens", opt["new_tokens"].default), "")
    dtype = options.value(opt["dtype"], given.get("dtype", "auto"), "")
    names = tuple(dict.fromkeys(options.value(opt["algorithms"], given.get("algorithms"), "", many=True)
                                or DEFAULT_ALGORITHMS))
    for n in names:
        for s in prompts:
            why = serving.problem(cfg, n, s, new_tokens, world)
            if why:
                raise UserError(why)
    return ServingPlan(preset, cfg, batch, new_tokens, prompts, names, dtype)


def plan_config(plan: ServingPlan, algorithm: str, prompt_len: int, *, world: int, nodes: int, repeat: int, dtype: str,
                  kernel: str | None, warmup: int, iters: int) -> dict:
    """The configuration fields of an infer record; their hash is its key."""
    cfg = plan.config.as_dict()
    return run_config(world, nodes, repeat, kernel, warmup, iters) | {
        "algorithm": algorithm, "model": plan.preset, **{k: cfg[k] for k in MODEL_FIELDS},
        "prompt_len": prompt_len, "batch": plan.batch, "new_tokens": plan.new_tokens, "dtype": dtype}


MODEL_FIELDS = ("layers", "d_model", "heads", "kv_heads", "mlp", "vocab", "rope_theta", "norm_eps")


@dataclass(frozen=True)
class InferPoint:
    algorithm: str
    prompt_len: int
    batch: int
    new_tokens: int
    preset: str
    dtype: str  # resolved for the device the job runs on
    overrides: tuple[tuple[str, object], ...]  # the model fields given over the preset, in options.MODEL order
    config: object  # models.ModelConfig

    @property
    def group(self) -> tuple:
        """What the points of one ``bench infer`` launch share: all but the prompt length and the algorithm."""
        return self.preset, self.overrides, self.dtype, self.batch, self.new_tokens

    def spec(self) -> dict:
        return {"algorithm": self.algorithm, "prompt_len": self.prompt_len, "batch": self.batch,
                "new_tokens": self.new_tokens, "preset": self.preset, **dict(self.overrides), "dtype": self.dtype}

    def describe(self) -> str:
        c = self.config
        over = "".join(f" {k}={v}" for k, v in self.overrides)
        return (f"{self.algorithm:8s} prompt={self.prompt_len:<8d} +{self.new_tokens} tokens model {self.preset}{over} "
                f"({c.layers} layers, d {c.d_model}, {c.heads}/{c.kv_heads} heads) {self.dtype} b{self.batch}")

    def flags(self) -> list[str]:
        """``bench infer``'s flags for this point's model and generation (everything spelled out)."""
        flags = ["--preset", self.preset]
        for k, v in self.overrides:
            flags += [options.MODEL[k].flag, str(v)]
        return flags + ["--dtype", self.dtype, "--batch", str(self.batch), "--new-tokens", str(self.new_tokens)]


def make_infer_point(d: dict, world: int, device_type: str) -> InferPoint:
    """A validated point for ``world`` ranks from a dict of [params] keys (``algorithm`` for ``algorithms``);
    UserError with bench infer's own message."""
    given = {k: v for k, v in d.items() if k != "algorithm"} | {"algorithms": [d.get("algorithm")]}
    if given.get("prompt_len") is not None:
        given["prompt_len"] = [given["prompt_len"]]
    plan = serving_plan(given, world)
    overrides = tuple((k, d[k]) for k in MODEL_KEYS if k in d and k != "preset")
    return InferPoint(plan.algorithms[0], plan.prompts[0], plan.batch, plan.new_tokens, plan.preset,
                      compute_dtype(plan.dtype, device_type), overrides, plan.config)


def record_config(pt: InferPoint, world: int, nodes: int, repeat: int, settings: dict) -> dict:
    """The configuration fields (the key) of the record ``bench infer`` writes for this point."""
    plan = ServingPlan(pt.preset, pt.config, pt.batch, pt.new_tokens, (pt.prompt_len,), (pt.algorithm,), pt.dtype)
    return plan_config(plan, pt.algorithm, pt.prompt_len, world=world, nodes=nodes, repeat=repeat, dtype=pt.dtype,
                       kernel=settings["kernel"], warmup=settings["warmup"], iters=settings["iters"])


def commands(points: list[InferPoint]) -> list[list[str]]:
    """``bench infer`` argument lists running exactly these points: one launch per model and generation, each
    set of algorithms with its prompt lengths listed."""
    out = []
    for group in dict.fromkeys(p.group for p in points):
        pts = [p for p in points if p.group == group]
        algos: dict[int, list[str]] = {}
        for p in pts:
            algos.setdefault(p.prompt_len, []).append(p.algorithm)
        for names in dict.fromkeys(tuple(dict.fromkeys(a)) for a in algos.values()):
            lens = [s for s, a in algos.items() if tuple(dict.fromkeys(a)) == names]
            out.append(["infer", *pts[0].flags(), "--prompt-len", ",".join(map(str, lens)),
                        "--algorithms", ",".join(names)])
    return out


def memory_bytes(pt: InferPoint, world: int, check_max_seq: int = 0) -> int:
    """A lower bound of one rank's bytes: the weights (replicated; TP's slices beside them) and its share of the
    KV cache; where --check checks the point (``check_max_seq``: 0 without --check), the float64 reference model
    and one layer's float64 attention scores (rank 0; on the CPU, counted here all the same)."""
    from ringx_drivers import models

    c, e = pt.config, element_bytes(pt.dtype)
    weights = models.flops_params(c) + c.vocab * c.d_model  # the matrices and the embedding table (no build:
    # building llama3-8b's 1.9e9 weights to count them took ~50 s per point)
    cache = 2 * c.layers * pt.batch * (pt.prompt_len + pt.new_tokens) * c.kv_heads * c.head_dim * e // world
    ref = 0
    if pt.prompt_len <= check_max_seq:  # the driver's rule (Serving.checked)
        ref = weights * 8 + pt.batch * c.heads * (pt.prompt_len + pt.new_tokens) ** 2 * 8
    return weights * e + cache + ref


def flops(pt: InferPoint) -> float:
    """2N per generated or prompt token (the weights' multiply-adds; attention on top is left out)."""
    from ringx_drivers import models

    return 2.0 * models.flops_params(pt.config) * pt.batch * (pt.prompt_len + pt.new_tokens)
