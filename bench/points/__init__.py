"""What a driver measures, as a sweep plans it: ``attention`` (a ``bench run`` point, its record key and memory
bound), ``step`` (a ``bench model`` training-step point and plan) and ``infer`` (a ``bench infer`` point and plan).

The drivers (bench/drivers/) use the points; points never import a driver (tests/test_docs.py holds it)."""


def model_config(preset: str, overrides: dict):
    """``bench.models.preset(preset)`` with the given fields over it (None: the preset's), checked: UserError in
    one line, alike on every rank, for an unknown preset or fields that do not fit together."""
    from ringx_drivers import models
    from ringx_suite.cli import UserError

    try:
        cfg = models.preset(preset, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise UserError(str(e)) from None
    problem = cfg.problem()
    if problem:
        raise UserError(f"model {preset}: {problem}")
    return cfg


def run_config(world: int, nodes: int, repeat: int, kernel: str | None, warmup: int, iters: int) -> dict:
    """The configuration fields every point's record starts with (how it was run); the point's own follow."""
    return {"world_size": world, "nodes": nodes, "repeat": repeat, "kernel_requested": kernel, "warmup": int(warmup),
            "iters": int(iters)}


def compute_dtype(dtype: str, device_type: str) -> str:
    """A model driver's dtype: the one asked, or for auto bfloat16 on GPUs and float32 on CPUs."""
    return dtype if dtype != "auto" else ("bfloat16" if device_type == "cuda" else "float32")
