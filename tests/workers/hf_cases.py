"""MPI worker: transformers models under ringx at this world size (tests/hf_cases.py), then bad input.

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/hf_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: per case the loss error, the largest gradient error (relative, per parameter)
and this rank's logits' error against the unsharded float64 model's logits at its tokens; then per bad input the
one-line message this rank got (and a good step after them all: no rank was left waiting).
"""

import json
import os
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch
from ringx.integrations import transformers as rxt
from ringx_drivers.drivers.step import compare
from ringx_drivers.models import hf
from tests.hf_cases import BATCH, SEQ, case_id, cases, documents


def bad_inputs(seed: int) -> list[dict]:
    """Mistakes, each refused on every rank in one line (ringx.RingxInputError) before any collective."""
    cfg = hf.make_config("llama")
    ids, pos, labels = hf.global_batch(cfg, BATCH, SEQ, seed)
    odd = hf.make_config("llama", overrides={"heads": 3, "kv_heads": 1, "d_model": 24})
    capped = hf.make_config("llama")
    capped.attn_logit_softcapping = 30.0
    two = pos.clone()
    two[1] = torch.cat([torch.arange(SEQ // 2), torch.arange(SEQ // 2)])  # row 1 packs two documents, row 0 one
    tries = {
        "indivisible": lambda: rxt.parallelize(hf.build(cfg, seed), "zigzag").shard(ids[:, :SEQ - 1]),
        "rows-pack-differently": lambda: rxt.parallelize(hf.build(cfg, seed), "ring").shard(ids, two, labels),
        "ulysses-heads": lambda: rxt.parallelize(hf.build(odd, seed), "ulysses"),
        "softcap": lambda: rxt.parallelize(hf.build(capped, seed), "ringx3"),
        "unknown-algorithm": lambda: rxt.parallelize(hf.build(cfg, seed), "ringz"),
        "no-batch": lambda: _unsharded_call(cfg, seed, ids),
    }
    rows = []
    for name, call in tries.items():
        try:
            call()
            rows.append({"case": f"bad-{name}", "message": ""})
        except ringx.RingxInputError as e:
            rows.append({"case": f"bad-{name}", "message": str(e)})
    return rows


def _unsharded_call(cfg, seed: int, ids) -> None:
    model = hf.build(cfg, seed)
    rxt.parallelize(model, "ring")
    model(input_ids=ids, use_cache=False)  # no sharded batch: the attention cannot know the sequence


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    rows = []
    docs = documents(seed)
    refs, models = {}, {}
    for arch, algo, packed in cases(P, seed):
        if arch not in models:
            cfg = hf.make_config(arch)
            models[arch] = cfg, hf.build(cfg, seed)  # one model per architecture: each step zeroes its gradients
        cfg, model = models[arch]
        ids, pos, labels = hf.global_batch(cfg, BATCH, SEQ, seed, docs if packed else None)
        if (arch, packed) not in refs:
            refs[arch, packed] = hf.reference_step(cfg, ids, pos, labels, seed, docs if packed else None)
        ref_loss, ref_grads, ref_logits = refs[arch, packed]
        loss, grads, logits = hf.sharded_step(cfg, ids, pos, labels, seed, algo, model=model)
        loss_err, grad_err, worst = compare(loss, grads, ref_loss, ref_grads)
        mine = ringx.shard(ref_logits, rxt.ContextParallel(algo).layout, r, P, dim=1)
        logit_err = ((logits - mine).abs().max() / mine.abs().max()).item()
        rows.append({"case": case_id(P, arch, algo, packed), "rank": r, "seed": seed, "loss_error": loss_err,
                     "grad_error": grad_err, "worst": worst, "logit_error": logit_err,
                     "documents": list(docs) if packed else None})
    if P == 2:
        cfg = hf.make_config("llama")
        rows += [{**x, "rank": r} for x in bad_inputs(seed)]
        ids, pos, labels = hf.global_batch(cfg, BATCH, SEQ, seed)
        loss = hf.sharded_step(cfg, ids, pos, labels, seed, "ringx4o")[0]  # every rank still meets the others
        rows.append({"case": "after-bad", "rank": r, "loss": loss})
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    launch.finalize()
    sys.stdout.flush()
    os._exit(0)  # as tests/workers/model_cases.py: the rows are complete, no teardown race can fail them


if __name__ == "__main__":
    main()
