"""MPI worker: run the correctness matrix for this world size and write per-rank results.

Usage: mpiexec -n P python tests/workers/attention_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: for each case, the error of every
quantity of its own shard against the float64 reference, and its ledgers.
"""

import json
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch
from tests.cases import cases
from tests.reference import full_attention


def error(x: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((x.double() - ref).abs().max() / max(1.0, ref.abs().max().item())).item()


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    rows = []
    for i, case in enumerate(cases(P)):
        gen = torch.Generator().manual_seed(seed + i)  # same global tensors on every rank
        dt = getattr(torch, case.dtype)
        S = case.seq_local * P
        Q = torch.randn(case.batch, S, case.heads, case.head_dim, generator=gen, dtype=torch.float64)
        K = torch.randn(case.batch, S, case.kv_heads, case.head_dim, generator=gen, dtype=torch.float64)
        V = torch.randn(case.batch, S, case.kv_heads, case.head_dim, generator=gen, dtype=torch.float64)
        dO = torch.randn(case.batch, S, case.heads, case.head_dim, generator=gen, dtype=torch.float64)
        # The reference sees the inputs rounded to the tested dtype, so only the algorithm's error remains.
        Q, K, V, dO = (t.to(dt).double() for t in (Q, K, V, dO))
        ref = full_attention(Q, K, V, dO, case.causal)
        layout = ringx.ALGORITHMS[case.algorithm].layout(case.causal)
        q, k, v = (ringx.shard(t, layout, r, P).to(dt).requires_grad_() for t in (Q, K, V))
        stats = ringx.CallStats()
        out, lse = ringx.attention(q, k, v, algorithm=case.algorithm, causal=case.causal, return_lse=True,
                                   stats=stats)
        out.backward(ringx.shard(dO, layout, r, P).to(dt))
        mine = [ringx.shard(t, layout, r, P, dim=2 if j == 1 else 1) for j, t in enumerate(ref)]
        got = (out, lse, q.grad, k.grad, v.grad)
        rows.append({
            "case": case.id, "rank": r, "seed": seed + i, "layout": layout,
            "kernel": stats.kernel, "kernel_version": stats.kernel_version,
            "dtypes": [str(t.dtype) for t in (out, q.grad, k.grad, v.grad)],
            "errors": {name: error(g, m) for name, g, m in zip(("out", "lse", "dq", "dk", "dv"), got, mine)},
            "forward": stats.forward.as_dict(), "backward": stats.backward.as_dict(),
        })
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    launch.finalize()


if __name__ == "__main__":
    main()
