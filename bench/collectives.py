"""``python -m bench collectives``: the network as the algorithms see it, nccl-tests style.

For each operation the algorithms use and each message size: time per call
(slowest rank per iteration, median of --iters after --warmup), algorithm
bandwidth algbw = bytes / time and bus bandwidth busbw = algbw x factor, with
nccl-tests' size convention and factors (n ranks):

  op              bytes (the "size")               busbw factor
  broadcast       the buffer                       1
  reduce          the buffer                       1
  all_reduce      the buffer                       2(n-1)/n
  all_gather      the gathered output (n parts)    (n-1)/n
  reduce_scatter  the input (n parts)              (n-1)/n
  all_to_all      the input (n parts, one per peer) (n-1)/n
  sendrecv        what each rank sends to rank+1   1   (the ring exchange of ring attention)

Records go to the same store as `bench run` (kind "collective").

Example: mpiexec -n 4 python -m bench collectives --max-bytes 64M --campaign net
"""

from __future__ import annotations

import re
import sys

from bench.measure.ranks import Group, Progress, describe
from bench.options import DTYPES
from core.cli import Parser
from costmodel.network import busbw_factor

OPS = ("broadcast", "reduce", "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "sendrecv")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 1024, 64K, 16M, 1G)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def sizes(lo: int, hi: int, step: int, quantum: int) -> list[int]:
    """lo, lo*step, ... <= hi, each rounded down to a multiple of ``quantum`` (at least one quantum)."""
    out, s = [], lo
    while s <= hi:
        out.append(max(quantum, s - s % quantum))
        s *= step
    return sorted(set(out))


def op_call(op: str, numel: int, dtype, device, rank: int, world: int):
    """A no-argument function performing one ``op`` on a ``numel``-element buffer."""
    import torch
    import torch.distributed as dist

    from ringx.comm import all_gather_flat, reduce_scatter_flat

    buf = torch.ones(numel, dtype=dtype, device=device)
    part = buf[: numel // world]
    recv = torch.empty_like(buf)
    nxt, prv = (rank + 1) % world, (rank - 1) % world

    def sendrecv():
        if world > 1:
            for w in dist.batch_isend_irecv([dist.P2POp(dist.isend, buf, nxt), dist.P2POp(dist.irecv, recv, prv)]):
                w.wait()

    return {
        "broadcast": lambda: dist.broadcast(buf, 0),
        "reduce": lambda: dist.reduce(buf, 0),
        "all_reduce": lambda: dist.all_reduce(buf),
        "all_gather": lambda: all_gather_flat(buf, part),
        "reduce_scatter": lambda: reduce_scatter_flat(part, buf),
        "all_to_all": lambda: dist.all_to_all_single(recv, buf),
        "sendrecv": sendrecv,
    }[op]


def build_parser() -> Parser:
    p = Parser(prog="python -m bench collectives", description=__doc__)
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated (default: all)")
    p.add_argument("--min-bytes", default="1K", help="smallest size (default 1K)")
    p.add_argument("--max-bytes", default="16M", help="largest size (default 16M)")
    p.add_argument("--step", type=int, default=4, help="size multiplier between points (default 4)")
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--out", default="runs", help="output root (default: runs)")
    p.add_argument("--campaign", default="collectives", help="campaign name (default: collectives)")
    p.add_argument("--tag")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a rank waits on its peers (default 300)")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    ops = [o for o in a.ops.split(",") if o]
    for o in ops:
        if o not in OPS:
            p.error(f"unknown op {o!r}; choose from {', '.join(OPS)}")
    try:
        lo, hi = parse_size(a.min_bytes), parse_size(a.max_bytes)
    except ValueError as e:
        p.error(str(e))
    if not 0 < lo <= hi:
        p.error(f"need 0 < --min-bytes <= --max-bytes, got {lo} and {hi}")
    if a.step < 2 or a.iters < 1 or a.warmup < 0 or a.iters > 100_000 or a.warmup > 100_000:
        p.error("--step must be >= 2, --iters from 1 to 100000, --warmup from 0 to 100000")
    if not 0 < a.timeout <= 86400:
        p.error("--timeout must be a number of seconds from 1 to 86400")
    from core.store import StoreError, check_campaign_name

    try:
        check_campaign_name(a.campaign)
    except StoreError as e:
        p.error(str(e))

    import torch

    from bench.measure.timing import time_iterations
    from core.stats import stat_fields, summarize
    from core.store import SCHEMA_VERSION, already_recorded, config_key, now
    from ringx import launch
    ctx = launch.init(timeout_s=a.timeout)
    group = Group(a.timeout, "bench collectives")
    P, rank = ctx.world_size, ctx.rank
    store, run_id, done, nodes = group.open_campaign(a.out, a.campaign, ["-m", "bench", "collectives", *(argv or [])])
    dt = getattr(torch, a.dtype)
    esize = torch.empty((), dtype=dt).element_size()
    plan = [(op, b) for op in ops for b in sizes(lo, hi, a.step, esize * P)]
    progress = Progress(len(plan), a.quiet, rank == 0)
    progress.note(f"bench collectives: {len(ops)} ops x sizes {lo}-{hi} B on {P} ranks -> {store.records_path}")

    for op, nbytes in plan:
        cfg = {"op": op, "bytes": nbytes, "dtype": a.dtype, "world_size": P, "nodes": nodes,
               "warmup": a.warmup, "iters": a.iters}
        key = config_key(cfg)
        if already_recorded(done.get(key), a.retry_failed):
            progress.step(f"{op} {nbytes} B: already recorded")
            continue
        rec = {"schema": SCHEMA_VERSION, "kind": "collective", "campaign": store.campaign, "tag": a.tag,
               "run_id": run_id, "key": key, "status": "ok", "error": None, "written_at": "",
               "busbw_factor": busbw_factor(op, P), **cfg}
        err = kind = None
        samples = []
        try:
            call = op_call(op, nbytes // esize, dt, ctx.device, rank, P)
            samples = time_iterations(call, a.warmup, a.iters, ctx.device)
        except Exception as e:  # noqa: BLE001 - failures are records
            kind, err = describe(e)
        votes = group.agree(err is None, {"error": err, "kind": kind}, waited=kind == "timeout")
        if votes is None:
            group.give_up(group.timeout_message(f"{op} {nbytes} B"))
        if not all(v["ok"] for v in votes):
            rec.update(status="failed", error="; ".join(f"rank {i}: {v['error']}" for i, v in enumerate(votes)
                                                        if not v["ok"]), written_at=now())
            if rank == 0:
                store.append(rec)
            progress.step(f"{op} {nbytes} B: FAILED")
            ctx = launch.reinit(ctx, a.timeout)
            continue
        st = summarize(samples)
        algbw = nbytes / st["median"] / 1e9
        rec.update(written_at=now(), samples_s=samples,
                   **stat_fields(samples),
                   algbw_GBps=algbw, busbw_GBps=algbw * rec["busbw_factor"])
        if rank == 0:
            store.append(rec)
        progress.step(f"{op:14s} {nbytes:>10d} B  {st['median'] * 1e6:10.1f} us  busbw {rec['busbw_GBps']:.3f} GB/s")
    progress.note(f"bench collectives: done -> {store.records_path}")
    launch.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
