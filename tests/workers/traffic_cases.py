"""MPI worker: every built-in algorithm's communication counted at the dispatcher (ringx.traffic) beside its own
ledger, forward and backward, full, causal, a window and documents, MHA and GQA; plus torch.distributed calls of
every kind the counter knows, against their payloads by hand.

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/traffic_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: per case, the two ledgers (as_dict) and the ops no rule counted.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import ringx
from ringx import launch
from ringx.comm import Ledger
from ringx.traffic import Traffic

MASKS = ("full", "causal", "window:5", "docs:3,9,1,11")  # documents: the lengths sum to 24 at 4 ranks; else skipped


def merged(*ledgers: Ledger) -> dict:
    out = Ledger()
    for lg in ledgers:
        for op, s in lg.ops.items():
            for _ in range(s.calls):
                out.record(op, 0, 0)
            out.ops[op].sent += s.sent
            out.ops[op].received += s.received
    return out.as_dict()


def algorithm_case(name: str, mask: str, kv: int, P: int, r: int, gen) -> dict:
    m = ringx.Mask.parse(mask)
    n = 6  # tokens per rank: a multiple of every layout's divisor
    q = torch.randn(1, n, 4, 8, generator=gen, dtype=torch.float64).requires_grad_()
    k, v = (torch.randn(1, n, kv, 8, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2))
    stats = ringx.CallStats()
    with Traffic() as t:
        out = ringx.attention(q, k, v, algorithm=name, mask=m, stats=stats, validate=False)
        out.backward(torch.ones_like(out))
    return {"case": f"{name}-{mask}-kv{kv}", "algorithm": name, "rank": r,
            "ledger": merged(stats.forward, stats.backward), "traffic": t.ledger.as_dict(),
            "unknown": sorted(t.unknown)}


def raw_calls(P: int, r: int) -> dict:
    """torch.distributed's own calls (not ringx.comm): their payloads by the ledger's conventions, by hand."""
    import torch.distributed._functional_collectives as fc

    x = torch.ones(P * 3, dtype=torch.float32)  # 12 P bytes
    b = x.numel() * 4
    want = Ledger()
    with Traffic() as t:
        dist.broadcast(x.clone(), 0)
        want.record("broadcast", b if r == 0 else 0, 0 if r == 0 else b)
        dist.all_reduce(x.clone())
        want.record("all_reduce", b, b)
        dist.all_gather([torch.empty_like(x) for _ in range(P)], x)
        want.record("all_gather", b, b * (P - 1))
        dist.reduce_scatter_tensor(torch.empty(3), x.clone())
        want.record("reduce_scatter", b - b // P, b // P)
        dist.all_to_all_single(torch.empty_like(x), x)
        want.record("all_to_all", b - b // P, b - b // P)
        ops = [dist.P2POp(dist.isend, x, (r + 1) % P), dist.P2POp(dist.irecv, torch.empty_like(x), (r - 1) % P)]
        for w in dist.batch_isend_irecv(ops):
            w.wait()
        want.record("send", b, 0)
        want.record("recv", 0, b)
        y = fc.all_gather_tensor(x, 0, dist.group.WORLD) * 1
        want.record("all_gather", b, b * (P - 1))
        y = fc.all_reduce(x, "sum", dist.group.WORLD) * 1
        want.record("all_reduce", b, b)
        del y
    return {"case": "raw", "rank": r, "ledger": want.as_dict(), "traffic": t.ledger.as_dict(),
            "unknown": sorted(t.unknown)}


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=60)
    P, r = ctx.world_size, ctx.rank
    gen = torch.Generator().manual_seed(seed)
    rows = [raw_calls(P, r)] if P > 1 else []
    for i, name in enumerate(ringx.ALGORITHMS):
        for j, mask in enumerate(MASKS):
            if mask.startswith("docs") and P != 4:
                continue
            rows.append(algorithm_case(name, mask, (4, 2)[(i + j) % 2], P, r, gen))
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    launch.finalize()


if __name__ == "__main__":
    main()
