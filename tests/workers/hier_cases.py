"""MPI worker: the hierarchical algorithms' matrix for this launch, then bad calls and group counts.

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/hier_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl (per case: the error of each quantity of its own shard
against float64, its ledgers, layout and Ulysses degree) and OUT_DIR/rank{r}.json (what each
bad call raised, whether the group still works, how many process groups were built).
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import ringx
from ringx import launch
from ringx.topology import Topology
from tests.hier_cases import MAPPING, hier_cases
from tests.reference import full_attention
from tests.workers.attention_cases import error

BUILT = [0]
_new_group = dist.new_group


def counting_new_group(*args, **kwargs):
    BUILT[0] += 1
    return _new_group(*args, **kwargs)


dist.new_group = counting_new_group  # ringx.topology calls it through the module


def run_case(i, case, seed, P, r, mapped_topo) -> dict:
    gen = torch.Generator().manual_seed(seed + i)  # same global tensors on every rank
    dt = getattr(torch, case.dtype)
    S = case.seq_local * P
    shapes = [(case.batch, S, h, case.head_dim) for h in (case.heads, case.kv_heads, case.kv_heads, case.heads)]
    Q, K, V, dO = (torch.randn(*s, generator=gen, dtype=torch.float64).to(dt).double() for s in shapes)
    ref = full_attention(Q, K, V, dO, case.causal)
    algo = ringx.ALGORITHMS[case.algorithm]
    # the default degree's layout comes from the registry alone (what bench and verify do)
    layout = algo.layout(case.causal, case.ulysses_degree if case.mapped else case.degree)
    q, k, v = (ringx.shard(t, layout, r, P).to(dt).requires_grad_() for t in (Q, K, V))
    stats = ringx.CallStats()
    out, lse = ringx.attention(q, k, v, algorithm=case.algorithm, causal=case.causal, return_lse=True, stats=stats,
                               ulysses_degree=case.degree, topology=mapped_topo if case.mapped else None)
    out.backward(ringx.shard(dO, layout, r, P).to(dt))
    mine = [ringx.shard(t, layout, r, P, dim=2 if j == 1 else 1) for j, t in enumerate(ref)]
    got = (out, lse, q.grad, k.grad, v.grad)
    return {
        "case": case.id, "rank": r, "seed": seed + i, "kernel": stats.kernel, "layout": layout,
        "stats_layout": stats.layout, "degree": stats.ulysses_degree,
        "dtypes": [str(t.dtype) for t in (out, q.grad, k.grad, v.grad)],
        "errors": {name: error(g, m) for name, g, m in zip(("out", "lse", "dq", "dk", "dv"), got, mine)},
        "forward": stats.forward.as_dict(), "backward": stats.backward.as_dict(),
    }


def bad_calls(P: int, r: int) -> dict:
    """Calls every rank makes alike that must raise; heads P+1 never divide a degree above 1."""
    t = torch.randn(1, 4, P + 1, 8)
    one = torch.randn(1, 4, 1, 8)
    calls = {
        "ulysses_heads": dict(algorithm="ulysses"),
        "usp_default_heads": dict(algorithm="usp"),
        "degree_not_dividing": dict(algorithm="usp", ulysses_degree=P + 1),
        "degree_on_flat": dict(algorithm="ringx3b", ulysses_degree=1),
        "simulated_topology": dict(algorithm="ringx3b", topology=Topology.simulated(P, r, 1)),
    }
    raised = {}
    for name, kw in calls.items():
        try:
            ringx.attention(t, one, one, causal=True, **kw)
            raised[name] = None
        except ringx.RingxInputError as e:
            raised[name] = str(e)
    return raised


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(backend="gloo", timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    rpn = int(os.environ.get("RINGX_RANKS_PER_NODE") or 0)
    cases = hier_cases(P, rpn)
    mapped_topo = Topology(MAPPING, r) if P == len(MAPPING) and not rpn else None
    rows = [run_case(i, c, seed, P, r, mapped_topo) for i, c in enumerate(cases)]
    built_first = BUILT[0]
    for i, c in enumerate(cases[:8]):  # the same calls again: every group they use already exists
        run_case(i, c, seed, P, r, mapped_topo)
    topo = launch.topology()
    extra = {
        "groups_built": built_first, "groups_built_again": BUILT[0] - built_first,
        "topologies": len(launch._TOPOLOGIES), "nodes": topo.nodes,
        "ranks_per_node": topo.ranks_per_node, "local_rank": topo.local_rank,
        "raised": bad_calls(P, r),
    }
    x = torch.randn(1, 4, 4 * P, 8)
    extra["healthy_after"] = bool(torch.isfinite(ringx.attention(x, x, x, algorithm="usp", causal=False)).all())
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    (out_dir / f"rank{r}.json").write_text(json.dumps(extra))
    launch.finalize()


if __name__ == "__main__":
    main()
