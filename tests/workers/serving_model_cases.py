"""MPI worker: the ledgers of real decode schedules and of TP serving, for the cost model's messages
(tests/test_serving_model.py).

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/serving_model_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: per case this rank's ledger (``Ledger.as_dict()``) and its decode layout.
"""

import json
import os
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch
from ringx_drivers import models
from ringx_drivers.models import serving

DECODE = ("ring", "zigzag", "ringx1", "ringx4o", "ringx3", "ulysses", "usp", "usp-ringx")
B, H, KV, D = 2, 8, 2, 8  # batch, query heads, K/V heads, head_dim of the decode cases
TP_PROMPT, TP_NEW = 8, 3


def decode(name, g):
    dl = ringx.decode.layout(name)
    n = 5  # cached tokens per shard
    q = torch.randn(B, 1, H, D, generator=g, dtype=torch.float64)
    kn, vn = (torch.randn(B, 1, KV, D, generator=g, dtype=torch.float64) for _ in range(2))
    kc, vc = (dl._heads(torch.randn(B, n, KV, D, generator=g, dtype=torch.float64)) for _ in range(2))
    stats = ringx.CallStats()
    ringx.decode_attention(q, kc, vc, kn, vn, layout=dl, at=0, stats=stats)
    return {"case": f"decode-{name}", "ledger": stats.forward.as_dict(), "u": dl.u, "shards": dl.shards}


def tp(seed):
    cfg = models.preset("tiny")
    model = models.build(cfg, seed).double()
    server = serving.Server(model, "tp", batch=B, prompt_len=TP_PROMPT, new_tokens=TP_NEW)
    server.generate(serving.prompt_tokens(cfg, B, TP_PROMPT, seed))
    return {"case": "tp", "ledger": server.ledger.as_dict()}


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=120)
    g = torch.Generator().manual_seed(seed)
    rows = [decode(name, g) for name in DECODE] + [tp(seed)]
    (out_dir / f"rank{ctx.rank}.jsonl").write_text("".join(json.dumps({**x, "rank": ctx.rank}) + "\n" for x in rows))
    # every row is written; then no teardown at all: destroying the simulated nodes' sub-groups raced gloo and
    # got a rank killed (seen at 4 ranks as 2 x 2) after a complete matrix
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)  # as tests/workers/model_cases.py: a gloo teardown race must not fail a complete matrix


if __name__ == "__main__":
    main()
