"""MPI worker: the input check's pieces at P ranks, and a wrong input on one rank at a later call.

Usage: mpiexec -n P python tests/workers/host_check.py OUT_DIR SEED
Writes rank{r}.json: comm.all_max's answers over the group and over its gloo twin (launch.cpu_group), which group
api.exchange_group picks for each backend, and what each rank raised when, at call i of a run of good calls
(i drawn from SEED, the same on every rank), only the last rank passed another sequence length or dtype, or
sinks of the wrong length.
"""

import json
import random
import sys
from pathlib import Path

import torch

import ringx
from ringx import api, launch
from ringx.comm import all_max


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=60)
    r, P = ctx.rank, ctx.world_size
    res = {"max": all_max([r, -r, 7, 10 * r + 3], None)}
    twin = launch.cpu_group(None)
    res["twin_max"] = all_max([-r, r], twin)
    res["twin_kept"] = launch.cpu_group(None) is twin
    cpu = torch.device("cpu")
    res["picks"] = {name: ("twin" if g is twin else "group" if g is None else "other", str(d))
                    for name, moves in (("gloo", frozenset({"cpu"})), ("nccl", frozenset({"cuda"})), ("unknown", None))
                    for g, d in [api.exchange_group(None, moves, cpu)]}
    rng = random.Random(seed)
    res["late"] = []
    for kind in ("seq", "dtype", "sinks", "seq", "dtype"):
        at = rng.randrange(1, 12)
        got = None
        for i in range(12):
            n, dt = (4 if kind == "seq" else 8), (torch.float64 if kind == "dtype" else torch.float32)
            bad = i == at and r == P - 1
            q, k, v = (torch.randn(1, n if bad and kind != "sinks" else 8, 2, 16,
                                   dtype=dt if bad else torch.float32) for _ in range(3))
            sinks = torch.zeros(3 if bad and kind == "sinks" else 2)
            try:
                ringx.attention(q, k, v, algorithm="ring", causal=True, sinks=sinks)
            except ringx.RingxInputError as e:
                got = [i, str(e)]
                break
        res["late"].append({"kind": kind, "at": at, "raised": got})
    q, k, v = (torch.randn(1, 8, 2, 16) for _ in range(3))
    res["healthy_after"] = bool(torch.isfinite(ringx.attention(q, k, v, algorithm="ringx4o", causal=True)).all())
    (out_dir / f"rank{r}.json").write_text(json.dumps(res))
    launch.finalize()


if __name__ == "__main__":
    main()
