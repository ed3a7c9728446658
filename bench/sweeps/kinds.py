"""What a sweep's points are: one entry per driver (``driver = "..."`` in the sweep file).

Each kind says which ``[params]`` it takes, how a point is made and checked, how much memory and compute it
needs (for the plan's checks and estimates), the key of the record its driver writes, and the ``bench``
command lines that run a job's points. Spec, plan, state and commands ask the kind; none of them branches
on the driver's name. A new driver (``infer``: serving) is one more class and one entry in ``KINDS``.
"""

from __future__ import annotations

from ringx.flops import mask_flops
from ringx_drivers import options
from ringx_drivers.points import attention as points
from ringx_drivers.points import infer as infer_points
from ringx_drivers.points import step as step_points
from ringx_suite.store import config_key


class PointKind:
    """The attention points of ``bench run`` (the default kind)."""

    name = "run"
    what = "attention points, bench run"
    params: frozenset[str] = frozenset(options.PARAMS) | {"masks"}  # masks = [...]: the jobs' --mask
    defaults: dict = {}  # [bench] settings this driver defaults differently from bench/options.py
    predicts = True  # the cost model covers these points (bench sweep predict)
    takes_plugins = True  # its points may name plugins (its driver takes --plugin)

    def check_params(self, params: dict, dicts: list[dict], where: str, external: dict | None = None) -> None:
        """Problems of [params] as a whole, before any point is made (none for attention points); ``external``:
        the sweep's plugins by name."""

    def make(self, d: dict, ranks: int, gpu: bool, external: dict | None = None):
        """A point of ``d``; ``external``: the sweep's plugins by name (spec.py refuses them for kinds other than
        attention and training steps)."""
        return points.make_point(d, ranks, external)

    def memory_bytes(self, pt, ranks: int, gpu: bool, bench: dict, external: dict | None = None) -> int:
        like = external[pt.algorithm].memory_like if pt.algorithm in (external or {}) else "ring"
        return points.memory_bytes(pt, ranks, bench["check_max_seq"] if bench["check"] else 0, like)

    def flops(self, pt) -> float:
        """One call's FLOPs, all ranks together (compute-bound estimates)."""
        return mask_flops(pt.batch, pt.seq, pt.heads, pt.head_dim, pt.the_mask(), pt.mode)

    def key(self, pt, ranks: int, nodes: int, repeat: int, bench: dict) -> str:
        return config_key(points.record_config(pt, ranks, nodes, repeat, bench["kernel"], bench["warmup"],
                                               bench["iters"]))

    def commands(self, pts: list, points_file: str) -> list[list[str]]:
        """The bench command lines (before output flags and settings) that run exactly these points."""
        return [["run", "--points", points_file]]

    def describe(self, p) -> str:
        return (f"{p.algorithm:8s} seq={p.seq:<8d} {p.mask_text():6s} {p.mode:8s} {p.dtype} "
                f"b{p.batch} h{p.heads}/{p.kv_heads} d{p.head_dim}")


class StepKind(PointKind):
    """The training steps of ``bench model``: the model's options, the algorithms, seq or seq_per_rank, batch."""

    name = "model"
    what = "training steps, bench model"
    params = frozenset(step_points.SWEEP_PARAMS) | {"masks"}
    defaults = {"check_max_seq": step_points.CHECK_MAX_SEQ}
    predicts = False  # the cost model knows attention only

    def check_params(self, params: dict, dicts: list[dict], where: str, external: dict | None = None) -> None:
        """Said in one line whatever the ranks: values against their definitions, then every model configuration
        with the algorithms asked of it (preset, fields that do not divide, masking). Raises ValueError."""
        where = f"[params] of {where}"
        if "algorithms" not in params:
            raise ValueError(f"{where} needs algorithms, e.g. algorithms = ['ring', 'ringx4']")
        if "seq" not in params and "seq_per_rank" not in params:
            raise ValueError(f"{where} needs seq (global tokens) or seq_per_rank (weak scaling)")
        step_points.check_values(params, where)
        models: dict[tuple, list[str]] = {}  # each model configuration (scalars by now) -> its algorithms
        for d in dicts:
            models.setdefault(tuple((k, v) for k, v in d.items() if k in step_points.MODEL_KEYS), []).append(
                d["algorithm"])
        for key, algos in models.items():
            step_points.check_model(dict(key), list(dict.fromkeys(algos)), where, external)

    def make(self, d: dict, ranks: int, gpu: bool, external: dict | None = None):
        return step_points.make_step_point(d, ranks, "cuda" if gpu else "cpu", external)

    def memory_bytes(self, pt, ranks: int, gpu: bool, bench: dict, external: dict | None = None) -> int:
        return step_points.memory_bytes(pt, ranks, gpu, bench["check"])

    def flops(self, pt) -> float:
        return step_points.step_flops(pt)

    def key(self, pt, ranks: int, nodes: int, repeat: int, bench: dict) -> str:
        return config_key(step_points.record_config(pt, ranks, nodes, repeat, bench))

    def commands(self, pts: list, points_file: str) -> list[list[str]]:
        return step_points.commands(pts)  # one bench model per model configuration, its sequences listed

    def describe(self, p) -> str:
        return p.describe()


class InferKind(PointKind):
    """The serving points of ``bench infer``: the decoder's options, the algorithms (and ``tp``), prompt_len,
    batch, new_tokens, dtype."""

    name = "infer"
    what = "serving, bench infer"
    params = frozenset(infer_points.SWEEP_PARAMS)
    defaults = {"check_max_seq": infer_points.CHECK_MAX_SEQ}
    predicts = False  # the attention cost model does not cost a generation (analysis serving does)
    takes_plugins = False  # serving calls ringx's prefill and decode, which a plugin's contract does not cover

    def check_params(self, params: dict, dicts: list[dict], where: str, external: dict | None = None) -> None:
        if "algorithms" not in params:
            raise ValueError(f"[params] of {where} needs algorithms, e.g. algorithms = ['ring', 'ringx1', 'tp']")
        if "prompt_len" not in params:
            raise ValueError(f"[params] of {where} needs prompt_len")

    def make(self, d: dict, ranks: int, gpu: bool, external: dict | None = None):
        return infer_points.make_infer_point(d, ranks, "cuda" if gpu else "cpu")

    def memory_bytes(self, pt, ranks: int, gpu: bool, bench: dict, external: dict | None = None) -> int:
        return infer_points.memory_bytes(pt, ranks, bench["check_max_seq"] if bench["check"] else 0)

    def flops(self, pt) -> float:
        return infer_points.flops(pt)

    def key(self, pt, ranks: int, nodes: int, repeat: int, bench: dict) -> str:
        return config_key(infer_points.record_config(pt, ranks, nodes, repeat, bench))

    def commands(self, pts: list, points_file: str) -> list[list[str]]:
        return infer_points.commands(pts)  # one bench infer per model and generation, its prompt lengths listed

    def describe(self, p) -> str:
        return p.describe()


KINDS: dict[str, PointKind] = {k.name: k for k in (PointKind(), StepKind(), InferKind())}


def kind(name: object) -> PointKind:
    """The kind a sweep file's ``driver`` names; ValueError (one line, every choice) otherwise."""
    if not isinstance(name, str) or name not in KINDS:
        raise ValueError(f"driver {name!r}: choose " + " or ".join(f"{k.name} ({k.what})" for k in KINDS.values()))
    return KINDS[name]
