"""MPI worker: the end-to-end model matrix for this world size (tests/model_cases.py).

Usage: [RINGX_RANKS_PER_NODE=k] mpiexec -n P python tests/workers/model_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: per case the relative error of the loss and the largest relative
gradient error against the unsharded float64 model, the parameter it is in, the layout and the degree.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import ringx
from ringx import launch
from ringx_drivers import models
from ringx_drivers.drivers.step import (
    allreduce_grads,
    compare,
    global_batch64,
    reference_step,
    shard_batch,
    sharded_step,
)
from tests.model_cases import BATCH, SEQ, model_cases


def wrong_step(model, cfg, seed: int, layout: str, how: str, rank: int, world: int):
    """A step with a classic context-parallel mistake: RoPE at local positions, or labels shifted per shard."""
    model.zero_grad(set_to_none=True)
    inputs, targets, n = global_batch64(cfg, BATCH, SEQ, seed)
    lb = shard_batch(inputs, targets, n, layout, rank, world)
    if how == "local-positions":
        lb.positions = torch.arange(lb.inputs.shape[1])
    else:  # shift-after-shard: each rank shifts its own shard, so labels at shard boundaries are lost
        lb.targets = models.shift_labels(lb.inputs)
    attend = lambda q, k, v: ringx.attention(q, k, v, algorithm="zigzag", causal=cfg.causal)  # noqa: E731
    loss = model.loss(lb.inputs, lb.targets, lb.positions, attend, lb.n_global)
    loss.backward()
    total = loss.detach().clone()
    dist.all_reduce(total)
    allreduce_grads(list(model.parameters()))
    return total.item(), {k: p.grad for k, p in model.named_parameters()}


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=120)
    P, r = ctx.world_size, ctx.rank
    refs, rows = {}, []
    for case in model_cases(P):
        cfg = models.preset(case.preset)
        if case.preset not in refs:
            refs[case.preset] = reference_step(cfg, BATCH, SEQ, seed)
        algo = ringx.ALGORITHMS[case.algorithm]
        layout = algo.layout(cfg.causal, case.degree)
        model = models.build(cfg, seed, checkpoint=case.checkpoint).double()
        if case.wrong:
            got = wrong_step(model, cfg, seed, layout, case.wrong, r, P)
        else:
            got = sharded_step(model, cfg, BATCH, SEQ, seed, case.algorithm, layout, torch.device("cpu"),
                               ulysses_degree=case.degree)
        loss_err, grad_err, worst = compare(*got, *refs[case.preset])
        rows.append({"case": case.id, "rank": r, "seed": seed, "layout": layout, "loss_error": loss_err,
                     "grad_error": grad_err, "worst": worst, "loss": got[0], "ref_loss": refs[case.preset][0]})
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    launch.finalize()
    # Seen once in a full-suite run on a loaded machine: every row written, then one rank aborted during
    # teardown ("terminate called without an active exception", gloo). The results are complete by now;
    # leave without the interpreter's finalisation so that a teardown race cannot fail the matrix.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
