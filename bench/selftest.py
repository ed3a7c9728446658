"""``ringx-bench selftest``: what to run first on a new node.

Finds the devices, the kernels that run on them and the backend; checks every
kernel that runs here with every algorithm against float64 attention (out,
LSE, dQ, dK, dV of every rank's shard, fresh random inputs), in every dtype the
device is meant for; measures each kernel's forward TFLOP/s on one block; and
prints one table. Exits 1 if anything is wrong, 0 otherwise.

One rank checks the device alone; under mpiexec or srun every rank checks its
own GPU and the algorithms run across all of them (one GPU per rank).

  ringx-bench selftest                        # this device
  srun -N1 -n8 --gpus-per-task=1 ringx-bench selftest   # every GPU of a node, and NCCL across them
"""

from __future__ import annotations

import argparse
import sys
import time

from ringx_suite.cli import Parser, UserError, split_list

DTYPES = {"cuda": ("bfloat16", "float16", "float32"), "cpu": ("float32", "float64")}


def build_parser() -> Parser:
    p = Parser(prog="ringx-bench selftest", description=__doc__)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: cuda when present")
    p.add_argument("--dtypes", help="comma-separated (default: bfloat16,float16,float32 on GPUs; float32,float64 "
                   "on CPUs)")
    p.add_argument("--algorithms", help="comma-separated (default: every algorithm)")
    p.add_argument("--seq-per-rank", type=int, default=256, help="tokens per rank in the checks (default 256)")
    p.add_argument("--heads", type=int, default=8, help="query heads (default 8; K/V heads are a quarter)")
    p.add_argument("--head-dim", type=int, help="default 128 on GPUs, 64 on CPUs")
    p.add_argument("--speed-seq", type=int, help="block length of the TFLOP/s column (default 4096 on GPUs, 1024 "
                   "on CPUs)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a rank waits on its peers (default 120)")
    p.add_argument("--break-kernel", help=argparse.SUPPRESS)  # tests: make this kernel's output 1% wrong
    return p


def _broken(kern):
    """The kernel with its output scaled by 1.01: what a wrong kernel looks like to the checks."""
    forward = kern.forward

    def wrong(q, k, v, causal, scale):
        out, lse = forward(q, k, v, causal, scale)
        return out * 1.01, lse

    kern.forward = wrong


def main(argv: list[str] | None = None) -> int:
    from ringx_suite.cli import main as cli_main

    a = build_parser().parse_args(argv)
    return cli_main("ringx-bench selftest", lambda: run(a))


def kernel_tflops(kern, dev, dtype, seq: int, heads: int, head_dim: int) -> float:
    """Forward TFLOP/s of one full block (median of 5 after 2 warm-up calls)."""
    import statistics

    import torch

    from ringx.flops import attention_flops

    q, k, v = (torch.randn(1, seq, h, head_dim, dtype=dtype, device=dev) for h in (heads, heads // 4 or 1,
                                                                                  heads // 4 or 1))
    times = []
    for i in range(7):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        kern.forward(q, k, v, False, head_dim**-0.5)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return attention_flops(1, seq, heads, head_dim, False, "fwd") / statistics.median(times) / 1e12


def check(a, ctx) -> tuple[list[list], int, int]:
    """Every kernel that runs here x every algorithm x both masks against float64, in ``a.dtypes``.

    Returns (table rows, checks that failed on this rank, block length of the TFLOP/s column). Collective:
    every rank calls it with the same arguments. ``bench preflight`` runs it too, on a job's allocation.
    """
    import torch

    import ringx

    dev, P = ctx.device, ctx.world_size
    dtypes = split_list(a.dtypes) if a.dtypes else list(DTYPES[dev.type])
    algos = split_list(a.algorithms) if a.algorithms else list(ringx.ALGORITHMS)
    for n in algos:
        if n not in ringx.ALGORITHMS:
            raise UserError(f"unknown algorithm {n!r}; choose from {', '.join(ringx.ALGORITHMS)}")
    if a.break_kernel:
        _broken(ringx.KERNELS[a.break_kernel])
    head_dim = a.head_dim or (128 if dev.type == "cuda" else 64)
    heads = a.heads
    kv = max(1, heads // 4)
    speed_seq = a.speed_seq or (4096 if dev.type == "cuda" else 1024)
    rows, failed = [], 0
    for dname in dtypes:
        dt = getattr(torch, dname)
        kernels = [k for k in ringx.KERNELS.values() if k.supports(dev, dt, head_dim)]
        if dt == torch.float64:
            kernels = [k for k in kernels if k.name != "reference"] or kernels
        for kern in kernels:
            errs, skipped = {}, []
            for name in algos:
                for causal in (False, True):
                    seq = a.seq_per_rank * P
                    try:
                        ref = ringx.verify.reference(causal, 1, seq, heads, kv, head_dim, dt, seed=1 + len(errs),
                                                     device=dev)
                        errs[name, causal] = ringx.verify.check(ref, name, dev, kern.name)
                    except ringx.RingxInputError as e:  # e.g. heads that do not spread over the ranks
                        skipped.append(f"{name}: {e}")
            tflops = kernel_tflops(kern, dev, dt, speed_seq, heads, head_dim)
            tol = ringx.verify.TOLERANCE[dt]
            worst = max(errs.values()) if errs else float("nan")
            bad = [f"{n} {'causal' if c else 'full'}" for (n, c), e in errs.items() if not e <= tol]
            failed += len(bad)
            rows.append([kern.name, kern.version(), dname, len(errs), f"{worst:.2e}", f"{tol:.0e}",
                         round(tflops, 2), "ok" if not bad else "FAILED: " + ", ".join(bad)])
            if skipped and ctx.rank == 0:
                print(f"  {kern.name} {dname}: not checked at {P} ranks: " + "; ".join(sorted(set(skipped))))
    return rows, failed, speed_seq


def table(rows: list[list], speed_seq: int) -> str:
    from ringx_suite.tables import Table, render

    return render(Table(["kernel", "version", "dtype", "algorithm checks", "max error", "tolerance",
                         f"fwd TFLOP/s (rank 0, {speed_seq} tokens)", "result"], rows), "markdown")


def run(a) -> int:
    import torch
    import torch.distributed as dist

    from ringx import launch
    from ringx_drivers.measure.ranks import Group

    ctx = launch.init(timeout_s=a.timeout, **({} if a.device == "auto" else {"device": a.device}))
    group = Group(a.timeout, "bench selftest")
    dev, P = ctx.device, ctx.world_size
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    if ctx.rank == 0:
        print(f"bench selftest: {P} rank(s), device {dev.type}{' (' + names[0] + ')' if names else ''}, backend "
              f"{ctx.backend}, torch {torch.__version__}; GPUs visible on this node: {len(names)}", flush=True)
    rows, failed, speed_seq = check(a, ctx)
    worst_rank = torch.tensor([failed], dtype=torch.int64, device=dev if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(worst_rank, op=dist.ReduceOp.MAX)
    del group
    if ctx.rank == 0:
        print(table(rows, speed_seq), end="")
        verdict = "every check passed" if not worst_rank.item() else f"{int(worst_rank.item())} check(s) FAILED"
        print(f"bench selftest: {verdict} (max error: largest relative error of out, LSE, dQ, dK, dV over all ranks "
              f"against float64, {a.seq_per_rank} tokens per rank)")
    launch.finalize()
    return 1 if worst_rank.item() else 0


if __name__ == "__main__":
    sys.exit(main())
