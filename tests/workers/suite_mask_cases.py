"""MPI worker: the suite's masked checks catch a wrong mask (bench run's float64 reference, bench model's step).

Usage: mpiexec -n P python tests/workers/suite_mask_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl, one row per case: the check's error under the right mask ("good") and
with the algorithm run under another mask than its reference's ("wrong"), both the same on every rank.
"""

import json
import os
import sys
from pathlib import Path

import torch

import ringx
from ringx import Mask, launch
from ringx_drivers import models
from ringx_drivers.drivers import step
from ringx_suite import masks as suite_masks

SEQ = 256  # attention cases (global)
MODEL_SEQ = 128


def attention_rows(seed: int) -> list[dict]:
    rows = []
    specs = ["window:24", "docs:lognormal:40", "docs:lognormal:40+window:12", "docs:100,60,96:full"]
    for spec in specs:
        m = suite_masks.parse(spec, SEQ, seed)
        wrong = Mask.full() if m.is_causal else Mask.causal()
        for heads, kv in ((4, 4), (4, 2)):
            ref = ringx.verify.reference(m, 1, SEQ, heads, kv, 16, torch.float64, seed=seed)
            for alg in ("ring", "zigzag", "ringx4o", "ulysses"):
                good = ringx.verify.check(ref, alg, torch.device("cpu"))
                bad = ringx.verify.check(ref, alg, torch.device("cpu"), mask=wrong)
                row = {"case": f"attn {spec} {heads}/{kv} {alg}", "good": good, "wrong": bad}
                if m.lengths is not None and len(m.lengths) > 1 and m.lengths[1] > 8:  # one boundary moved by 8
                    moved = Mask.documents([m.lengths[0] + 8, m.lengths[1] - 8, *m.lengths[2:]], causal=m.is_causal,
                                           window=m.left)
                    row["moved"] = ringx.verify.check(ref, alg, torch.device("cpu"), mask=moved)
                rows.append(row)
    return rows


def model_rows(seed: int) -> list[dict]:
    rows = []
    cfg = models.preset("tiny")
    docs = suite_masks.parse("docs:lognormal:24", MODEL_SEQ, seed)
    patterns = {"docs": (docs,), "layers": (Mask.window(16), Mask.causal())}
    for name, ms in patterns.items():
        ref_loss, ref_grads = step.reference_step(cfg, 1, MODEL_SEQ, seed, ms)
        causal_loss, causal_grads = step.reference_step(cfg, 1, MODEL_SEQ, seed)  # the wrong reference
        for alg in ("ring", "zigzag", "ringx4o"):
            model = models.build(cfg, seed).double()
            layout = ringx.ALGORITHMS[alg].layout(mask=ms[0])
            loss, grads = step.sharded_step(model, cfg, 1, MODEL_SEQ, seed, alg, layout, torch.device("cpu"),
                                            masks=ms)
            good = step.compare(loss, grads, ref_loss, ref_grads)
            bad = step.compare(loss, grads, causal_loss, causal_grads)
            rows.append({"case": f"model {name} {alg}", "good": max(good[:2]), "wrong": max(bad[:2])})
    return rows


def main() -> None:
    out, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=300)
    rows = attention_rows(seed) + model_rows(seed)
    with open(out / f"rank{ctx.rank}.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    torch.distributed.barrier()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
