"""MPI worker: every algorithm under every mask of tests/mask_cases.py, then bad masks.

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/mask_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl (per case: the error of each quantity of its own shard
against a dense masked float64 softmax, and its ledgers) and OUT_DIR/rank{r}.json (what each
bad call raised, and whether a good call still ran after them).
"""

import json
import os
import sys
from pathlib import Path

import torch

import ringx
from ringx import Mask, launch
from tests.mask_cases import SEQ_LOCAL, mask_cases
from tests.workers.attention_cases import error


def dense(Q, K, V, dO, mask: Mask, sinks=None):
    """out, lse, dq, dk, dv of softmax attention under ``mask``, float64, autograd (no ringx code but the mask's
    own rule, which tests/test_masks.py checks against its definition). With ``sinks`` (H,), each row's softmax has
    one more column of logit sinks[h] and value 0, dropped after the softmax; then also the sinks' gradient of each
    row, (H, S) summed over the batch (a rank's share is the sum over its rows)."""
    q, k, v = (t.detach().double().requires_grad_() for t in (Q, K, V))
    b, s, h = q.shape[:3]
    g = h // k.shape[2]
    kk, vv = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, kk) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~mask.visible(torch.arange(s), torch.arange(s)), float("-inf"))
    per_row = None
    if sinks is not None:  # one sink logit per (head, row), so autograd gives each row's part of its gradient
        per_row = sinks.detach().double().view(h, 1).repeat(1, s).requires_grad_()
        scores = torch.cat([scores, per_row.view(1, h, s, 1).expand(b, h, s, 1)], dim=-1)
    p = scores.softmax(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", p[..., :s], vv)
    out.backward(dO.double())
    grads = (q.grad, k.grad, v.grad) + ((per_row.grad,) if sinks is not None else ())
    return (out.detach(), scores.logsumexp(-1).detach(), *grads)


def run_case(i, case, seed, P, r) -> dict:
    gen = torch.Generator().manual_seed(seed + i)
    S = SEQ_LOCAL * P
    shapes = [(case.batch, S, h, case.head_dim) for h in (case.heads, case.kv_heads, case.kv_heads, case.heads)]
    Q, K, V, dO = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes)
    sinks = torch.randn(case.heads, generator=gen, dtype=torch.float64) if case.sinks else None
    m = case.mask
    ref = dense(Q, K, V, dO, m, sinks)
    layout = ringx.ALGORITHMS[case.algorithm].layout(mask=m)
    q, k, v = (ringx.shard(t, layout, r, P, mask=m).requires_grad_() for t in (Q, K, V))
    s = sinks.clone().requires_grad_() if case.sinks else None
    stats = ringx.CallStats()
    out, lse = ringx.attention(q, k, v, algorithm=case.algorithm, mask=m, return_lse=True, stats=stats, sinks=s)
    out.backward(ringx.shard(dO, layout, r, P))
    mine = [ringx.shard(t, layout, r, P, dim=2 if j == 1 else 1) for j, t in enumerate(ref[:5])]
    got = [out, lse, q.grad, k.grad, v.grad]
    names = ["out", "lse", "dq", "dk", "dv"]
    row = {"case": case.id, "rank": r, "seed": seed + i, "layout": stats.layout, "mask": stats.mask,
           "forward": stats.forward.as_dict(), "backward": stats.backward.as_dict()}
    if case.sinks:  # this rank's share: the sinks' gradient of its own rows
        share = ringx.shard(ref[5], layout, r, P, dim=1).sum(1)
        mine.append(share)
        got.append(s.grad)
        names.append("dsinks")
        row |= {"dsinks": s.grad.tolist(), "dsinks_whole": ref[5].sum(1).tolist()}
    return row | {"errors": {name: error(g, x) for name, g, x in zip(names, got, mine)}}


def bad_calls(P: int, r: int) -> dict:
    t = torch.randn(1, SEQ_LOCAL, 2, 8, dtype=torch.float64)
    calls = {
        "differs": dict(mask=Mask.window(3 if r == 0 else 4)),
        "lengths_sum": dict(mask=Mask.documents([5, 7])),
        "both": dict(mask=Mask.causal(), causal=True),
        "neither": dict(),
        "text": dict(mask="window:-1"),
    }
    raised = {}
    for name, kw in calls.items():
        try:
            ringx.attention(t, t, t, algorithm="ring", **kw)
            raised[name] = None
        except ringx.RingxInputError as e:
            raised[name] = str(e)
    good = ringx.attention(t, t, t, algorithm="ring", mask="window:4")  # the group still works
    return {"raised": raised, "good": bool(torch.isfinite(good).all())}


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=60)  # a rank that waits for ever (a schedule's calls not meeting) fails the test
    P, r = ctx.world_size, ctx.rank
    rpn = int(os.environ.get("RINGX_RANKS_PER_NODE", "0") or 0)
    rows = [run_case(i, c, seed, P, r) for i, c in enumerate(mask_cases(P, rpn if rpn and rpn < P else 0, seed))]
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    if not rpn:
        (out_dir / f"rank{r}.json").write_text(json.dumps(bad_calls(P, r)))
    launch.finalize()


if __name__ == "__main__":
    main()
