"""MPI worker: one traced call per algorithm (after a warm-up call), written as a Chrome trace per rank.

Usage: mpiexec -n P python tests/workers/trace_cases.py OUT_DIR SEED
Writes OUT_DIR/trace/ALGO-fwd-bwd-rank{r}.json (the call's description in otherData) and OUT_DIR/rank{r}.json
(each algorithm's overlap_fraction as this rank measured it, to compare with what analysis reads back).
"""

import json
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch, timeline

ALGORITHMS = ("ring", "ringx4o")


def main() -> None:
    out, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(backend="gloo", timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    gen = torch.Generator().manual_seed(seed + r)
    q, k, v = (torch.randn(1, 64, 4, 16, generator=gen) for _ in range(3))
    measured = {}
    (out / "trace").mkdir(parents=True, exist_ok=True)
    for algo in ALGORITHMS:
        for recording in (False, True):  # a warm-up call, then the traced one
            x = [t.detach().requires_grad_() for t in (q, k, v)]
            torch.distributed.barrier()
            if recording:
                with timeline.record() as rec:
                    o = ringx.attention(*x, algorithm=algo, causal=True)
                    o.backward(torch.ones_like(o))
            else:
                o = ringx.attention(*x, algorithm=algo, causal=True)
                o.backward(torch.ones_like(o))
        meta = {"algorithm": algo, "world_size": P, "rank": r, "mode": "fwd+bwd", "seq": 64 * P, "causal": True}
        timeline.write_chrome_trace(out / "trace" / f"{algo}-fwd-bwd-rank{r}.json", {r: rec.marks}, meta)
        measured[algo] = {"overlap": timeline.overlap_fraction(rec.marks), "marks": len(rec.marks)}
    (out / f"rank{r}.json").write_text(json.dumps(measured))
    launch.finalize()  # a process group left to the interpreter's exit can abort the process (gloo)


if __name__ == "__main__":
    main()
