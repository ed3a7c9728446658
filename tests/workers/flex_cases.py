"""MPI worker: algorithms under every mask of tests/mask_cases.py with the ``torch-flex`` kernel (FlexAttention,
eager on CPU), against a dense masked float64 softmax, plus full and causal; half the cases with attention sinks.

Usage: mpiexec -n P python tests/workers/flex_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: per case, the error of each quantity of its own shard.
"""

import json
import os
import random
import sys
from pathlib import Path

import torch

import ringx
from ringx import Mask, launch
from tests.mask_cases import SEQ_LOCAL, SHAPES, masks
from tests.mpi import FULL
from tests.workers.attention_cases import error
from tests.workers.mask_cases import dense

ALGOS = ("ring", "zigzag", "ringx2", "ulysses")  # a ring, the zigzag ring, a broadcast schedule, all-to-all


PER_ALGORITHM = 4  # masks per algorithm in CI, drawn afresh each run (RINGX_TEST_FULL=1: all of them)


def cases(P: int, seed: int) -> list[tuple[str, str, Mask, tuple, bool]]:
    """(algorithm, mask name, mask, shape, sinks): shapes and sinks alternate as in tests/mask_cases.py."""
    named = {"full": Mask.full(), "causal": Mask.causal(), **masks(SEQ_LOCAL * P)}
    every = [(a, n, m, SHAPES[(i + j) % 2], (i + j) // 2 % 2 == 1)
             for i, a in enumerate(ALGOS) for j, (n, m) in enumerate(named.items())]
    if FULL:
        return every
    rng = random.Random(seed)
    return [c for a in ALGOS for c in rng.sample([c for c in every if c[0] == a], PER_ALGORITHM)]


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    rows = []
    for i, (algo, name, m, (batch, heads, kv, hd), with_sinks) in enumerate(cases(P, seed)):
        gen = torch.Generator().manual_seed(seed + i)
        S = SEQ_LOCAL * P
        Q, K, V, dO = (torch.randn(batch, S, h, hd, generator=gen, dtype=torch.float64) for h in (heads, kv, kv, heads))
        sinks = torch.randn(heads, generator=gen, dtype=torch.float64).requires_grad_() if with_sinks else None
        ref = dense(Q, K, V, dO, m, sinks)
        layout = ringx.ALGORITHMS[algo].layout(mask=m)
        q, k, v = (ringx.shard(t, layout, r, P, mask=m).requires_grad_() for t in (Q, K, V))
        stats = ringx.CallStats()
        out, lse = ringx.attention(q, k, v, algorithm=algo, mask=m, return_lse=True, stats=stats, kernel="torch-flex",
                                   sinks=sinks)
        out.backward(ringx.shard(dO, layout, r, P))
        mine = [ringx.shard(t, layout, r, P, dim=2 if j == 1 else 1) for j, t in enumerate(ref[:5])]
        got = [out, lse, q.grad, k.grad, v.grad]
        if with_sinks:  # this rank's share of the sinks' gradient
            mine.append(ringx.shard(ref[5], layout, r, P, dim=1).sum(1))
            got.append(sinks.grad)
        names = ("out", "lse", "dq", "dk", "dv", "dsinks")
        rows.append({"case": f"P{P}-{algo}-{name}-b{batch}h{heads}kv{kv}" + ("-sinks" if with_sinks else ""),
                     "rank": r, "seed": seed + i, "kernel": stats.kernel,
                     "nan": any(bool(g.isnan().any()) for g in got),
                     "errors": {n: error(g, x) for n, g, x in zip(names, got, mine)}})
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
