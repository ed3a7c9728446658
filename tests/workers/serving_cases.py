"""MPI worker: the serving matrix for this world size (tests/serving_cases.py).

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/serving_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: per case whether the ids equal the unsharded generation, the largest
relative logits error, the error text (one line) where one was raised, and the bytes the schedule moved.
"""

import json
import math
import os
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch
from ringx_drivers import models
from ringx_drivers.models import serving
from ringx_suite.cli import UserError
from tests.serving_cases import BATCH, HEADS, decode_cases, serve_cases


def config(case):
    over = {}
    if case.mlp:
        over["mlp"] = case.mlp
    if case.heads:
        over["heads"], over["kv_heads"] = case.heads
    if case.layers:
        over["layers"] = case.layers
    return models.preset("tiny", **over)


def serve(case, seed, refs, r):
    cfg = config(case)
    model = models.build(cfg, seed).double()
    prompt = serving.prompt_tokens(cfg, BATCH, case.prompt, seed)
    row = {"case": case.id, "rank": r}
    try:
        server = serving.Server(model, case.algorithm, batch=BATCH, prompt_len=case.prompt, new_tokens=case.new,
                                ulysses_degree=case.degree, keep_logits=True)
        got = server.generate(prompt)
    except (UserError, ringx.RingxInputError) as e:
        return {**row, "error": str(e)}
    key = (cfg, case.prompt, case.new)
    if key not in refs:
        refs[key] = serving.reference_generate(model, prompt, case.new)
    ref = refs[key]
    return {**row, "error": "", "ids_equal": bool(torch.equal(got.ids, ref.ids)), "ids": got.ids[0].tolist(),
            "logits_error": serving.logits_error(got.logits, ref.logits), "steps": len(got.logits),
            "cache_bytes": server.kv_cache_bytes, "attention_bytes": server.stats.forward.sent,
            "model_bytes": server.ledger.sent}


def reference_decode(q, k, v, kn, vn, sinks=None):
    """Float64 softmax attention of q over all cached keys plus the new ones (causal among themselves); with
    ``sinks`` (H,), one more softmax column per head of that logit and value 0."""
    kk, vv = torch.cat([k, kn], 1), torch.cat([v, vn], 1)
    g = q.shape[2] // k.shape[2]
    kk, vv = kk.repeat_interleave(g, 2), vv.repeat_interleave(g, 2)
    s = torch.einsum("bqhd,bkhd->bhqk", q, kk) / math.sqrt(q.shape[-1])
    t, n = q.shape[1], k.shape[1]
    mask = torch.zeros(t, n + t, dtype=torch.bool)
    mask[:, n:] = torch.ones(t, t, dtype=torch.bool).triu(1)
    s = s.masked_fill(mask, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.view(1, -1, 1, 1).expand(*s.shape[:3], 1)], -1)
    return torch.einsum("bhqk,bkhd->bqhd", s.softmax(-1)[..., :n + t], vv), torch.logsumexp(s, -1)


def decode(case, seed, r, P):
    g = torch.Generator().manual_seed(seed)
    dl = ringx.decode.layout(case.algorithm)
    lengths = [(7 * (j + 1)) % 11 for j in range(dl.shards)]  # unequal lengths
    if dl.shards > 1:
        lengths[dl.shards - 1] = 0  # one shard holds nothing yet
    b, d, t = 2, 16, case.new
    q = torch.randn(b, t, HEADS, d, generator=g, dtype=torch.float64)
    kn, vn = (torch.randn(b, t, case.kv_heads, d, generator=g, dtype=torch.float64) for _ in range(2))
    ks = [torch.randn(b, n, case.kv_heads, d, generator=g, dtype=torch.float64) for n in lengths]
    vs = [torch.randn(b, n, case.kv_heads, d, generator=g, dtype=torch.float64) for n in lengths]
    sinks = torch.randn(HEADS, generator=g, dtype=torch.float64) if case.sinks else None
    at = ringx.decode.owner(lengths)
    want, want_lse = reference_decode(q, torch.cat(ks, 1), torch.cat(vs, 1), kn, vn, sinks)
    kc, vc = dl._heads(ks[dl.shard]), dl._heads(vs[dl.shard])
    stats = ringx.CallStats()
    out, lse = ringx.decode_attention(q, kc, vc, kn, vn, layout=dl, at=at, stats=stats, return_lse=True, sinks=sinks)
    err = float((out - want).abs().max() / want.abs().max())
    lse_err = float((lse - want_lse).abs().max() / want_lse.abs().max())
    row = {"case": case.id, "rank": r, "error": "", "out_error": err, "lse_error": lse_err,
           "sent": stats.forward.sent, "ops": sorted(stats.forward.ops), "out_sum": float(out.sum())}
    # a bad cache on the last rank only: every rank must raise the same one-line error
    try:
        bad = kc[..., :d // 2] if r == P - 1 else kc  # the wrong head_dim
        badv = vc[..., :d // 2] if r == P - 1 else vc
        ringx.decode_attention(q, bad, badv, kn, vn, layout=dl, at=at)
        row["bad_error"] = ""
    except ringx.RingxInputError as e:
        row["bad_error"] = str(e)
    return row


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    refs, rows = {}, []
    for case in serve_cases(P):
        rows.append(serve(case, seed, refs, r))
    for case in decode_cases(P):
        rows.append(decode(case, seed, r, P))
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    # every row is written; no teardown: destroying the sub-groups raced gloo and got a rank killed at 4 ranks
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)  # as tests/workers/model_cases.py: a gloo teardown race must not fail a complete matrix


if __name__ == "__main__":
    main()
