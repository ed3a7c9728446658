"""MPI worker: double-ring's matrix, its bad inputs, every algorithm's measured peak memory, and a traced call.

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/rings_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl (per case: errors against float64, ledgers) and OUT_DIR/rank{r}.json
(what each bad call raised, the measured peaks, the timeline check).
"""

import json
import os
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch, memory, timeline
from ringx.topology import Topology
from tests.reference import full_attention
from tests.rings_cases import MAPPING, MEMORY_SHAPE, UNEVEN, ring_cases
from tests.workers.attention_cases import error


def run_case(i, case, seed, P, r, mapped_topo) -> dict:
    gen = torch.Generator().manual_seed(seed + i)
    dt = getattr(torch, case.dtype)
    S = case.seq_local * P
    shapes = [(case.batch, S, h, case.head_dim) for h in (case.heads, case.kv_heads, case.kv_heads, case.heads)]
    Q, K, V, dO = (torch.randn(*s, generator=gen, dtype=torch.float64).to(dt).double() for s in shapes)
    ref = full_attention(Q, K, V, dO, case.causal)
    layout = ringx.ALGORITHMS[case.algorithm].layout(case.causal)
    q, k, v = (ringx.shard(t, layout, r, P).to(dt).requires_grad_() for t in (Q, K, V))
    stats = ringx.CallStats()
    kw = {} if case.algorithm == "bidir-ring" else {"inner_ring": case.inner,
                                                    "topology": mapped_topo if case.mapped else None}
    out, lse = ringx.attention(q, k, v, algorithm=case.algorithm, causal=case.causal, return_lse=True, stats=stats,
                               **kw)
    out.backward(ringx.shard(dO, layout, r, P).to(dt))
    mine = [ringx.shard(t, layout, r, P, dim=2 if j == 1 else 1) for j, t in enumerate(ref)]
    got = (out, lse, q.grad, k.grad, v.grad)
    return {
        "case": case.id, "rank": r, "seed": seed + i, "kernel": stats.kernel, "layout": stats.layout,
        "dtypes": [str(t.dtype) for t in (out, q.grad, k.grad, v.grad)],
        "errors": {name: error(g, m) for name, g, m in zip(("out", "lse", "dq", "dk", "dv"), got, mine)},
        "forward": stats.forward.as_dict(), "backward": stats.backward.as_dict(),
    }


def bad_calls(P: int, r: int) -> dict:
    t = torch.randn(1, 4, 2, 8)
    calls = {
        "inner_not_dividing": dict(algorithm="double-ring", inner_ring=P + 1),
        "inner_zero": dict(algorithm="double-ring", inner_ring=0),
        "inner_on_ring": dict(algorithm="ring", inner_ring=1),
    }
    if P == len(UNEVEN):
        calls["uneven_nodes"] = dict(algorithm="double-ring", topology=Topology(UNEVEN, r))
    raised = {}
    for name, kw in calls.items():
        try:
            ringx.attention(t, t, t, causal=True, **kw)
            raised[name] = None
        except ringx.RingxInputError as e:
            raised[name] = str(e)
    return raised


def peaks(P: int, r: int) -> dict:
    """algorithm -> [forward peak, forward+backward peak] of this rank (causal, float32)."""
    b, n, h, hk, d = MEMORY_SHAPE
    got = {}
    for name in ringx.ALGORITHMS:
        row = []
        for backward in (False, True):
            gen = torch.Generator().manual_seed(r)
            q, k, v = (torch.randn(b, n, x, d, generator=gen).requires_grad_() for x in (h, hk, hk))

            def call(q=q, k=k, v=v, name=name, backward=backward):
                out = ringx.attention(q, k, v, algorithm=name, causal=True)
                if backward:
                    out.backward(torch.ones_like(out))
                return out

            row.append(memory.measure(call)[1])
        got[name] = row
    return got


def traced(P: int, r: int) -> dict:
    """A call recorded on the timeline gives the same results as one that is not; its marks."""
    gen = torch.Generator().manual_seed(7 + r)
    q, k, v = (torch.randn(1, 32, 4, 16, generator=gen) for _ in range(3))
    result = {}
    for algo in ("ring", "bidir-ring", "ringx4o"):
        plain = [t.detach().requires_grad_() for t in (q, k, v)]
        out = ringx.attention(*plain, algorithm=algo, causal=True)
        out.backward(torch.ones_like(out))
        rec_in = [t.detach().requires_grad_() for t in (q, k, v)]
        with timeline.record() as rec:
            out2 = ringx.attention(*rec_in, algorithm=algo, causal=True)
            out2.backward(torch.ones_like(out2))
        same = bool(torch.equal(out, out2)) and all(torch.equal(a.grad, b.grad) for a, b in zip(plain, rec_in))
        result[algo] = {"same": same, "marks": [vars(m) for m in rec.marks],
                        "overlap": timeline.overlap_fraction(rec.marks), "after_on": timeline.ON}
    return result


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(backend="gloo", timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    rpn = int(os.environ.get("RINGX_RANKS_PER_NODE") or 0)
    mapped_topo = Topology(MAPPING, r) if P == len(MAPPING) and not rpn else None
    rows = [run_case(i, c, seed, P, r, mapped_topo) for i, c in enumerate(ring_cases(P, rpn))]
    extra = {"raised": bad_calls(P, r)}
    x = torch.randn(1, 4, 2, 8)
    extra["healthy_after"] = bool(torch.isfinite(ringx.attention(x, x, x, algorithm="double-ring", causal=True)).all())
    if not rpn:
        extra["peaks"] = peaks(P, r)
    if P == 2:
        extra["traced"] = traced(P, r)
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    (out_dir / f"rank{r}.json").write_text(json.dumps(extra))
    launch.finalize()


if __name__ == "__main__":
    main()
