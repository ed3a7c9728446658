"""What a driver measures, as a sweep plans it: ``attention`` (a ``bench run`` point, its record key and memory
bound) and ``step`` (a ``bench model`` training-step point)."""


def run_config(world: int, nodes: int, repeat: int, kernel: str | None, warmup: int, iters: int) -> dict:
    """The configuration fields every point's record starts with (how it was run); the point's own follow."""
    return {"world_size": world, "nodes": nodes, "repeat": repeat, "kernel_requested": kernel, "warmup": int(warmup),
            "iters": int(iters)}
