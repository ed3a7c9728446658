"""``ringx-bench trace``: one traced call per algorithm and rank, as Chrome/Perfetto trace files.

It takes ``bench run``'s options and points (the same flags, config file and --points), and for each point,
after --warmup untimed calls (at least one) and a barrier, records one call
on the timeline (every kernel call, merge, post and wait): forward, and forward+backward
(both unless --mode says one). Each rank writes its trace to
OUT/CAMPAIGN/trace/PRANKS/ALGO-MODE-SEQ-MASK-DTYPE-rankR.json (open it in ui.perfetto.dev), with what was
traced in the file's otherData. Nothing is timed and no record is written; the figure is analysis's:
``ringx-bench timeline OUT/CAMPAIGN`` (printed at the end).

Clocks: wall-clock ranges on CPU; on GPUs CUDA events on the current stream (device time, not launch time;
written from the documented torch.cuda API, not run on a GPU yet).

Example (2 local CPU ranks):
  mpiexec -n 2 ringx-bench trace --algorithms ring,ringx4o --seq 1024 --campaign demo
"""

from __future__ import annotations

import sys
from pathlib import Path

from ringx_drivers.driver import Driver, mpi_main
from ringx_drivers.drivers import attention

PROG = "ringx-bench trace"


def build_parser():
    p = attention.build_parser()
    p.prog, p.description = PROG, __doc__
    return p


def trace_path(root: Path, pt, world: int, rank: int) -> Path:
    mask = "causal" if pt.causal else "full"
    name = f"{pt.algorithm}-{pt.mode.replace('+', '-')}-{pt.seq}-{mask}-{pt.dtype}-rank{rank}.json"
    return root / f"{world}ranks" / name


class Tracer(Driver):
    """``bench trace``: every point's call recorded once per rank, after warm-up."""

    prog, command, kind = "bench trace", "trace", "attention"

    def __init__(self, inv, points):
        super().__init__(inv)
        self.points = points

    def open(self, **kw) -> None:
        super().open(claims=False, **kw)  # no records, so no keys to claim

    def run(self) -> None:
        import torch

        from ringx import timeline

        dev, s = self.ctx.device, self.settings
        root = self.store.dir / "trace"
        written = []
        for pt in self.points:
            g = torch.Generator(device="cpu").manual_seed(1000)
            dt = getattr(torch, pt.dtype)
            inputs = [torch.randn(pt.batch, pt.seq_per_rank, h, pt.head_dim, generator=g, dtype=dt).to(dev)
                      for h in (pt.heads, pt.kv_heads, pt.kv_heads, pt.heads)]
            call, stats = attention.make_call(pt.algorithm, None, pt, inputs, s.kernel)
            call(stats)  # the first call validates the inputs on every rank and names the kernel
            for _ in range(max(0, s.warmup - 1)):
                call(None)
            torch.distributed.barrier()  # the ranks' recordings start together
            with timeline.record(dev) as rec:
                call(None)
            meta = {"algorithm": pt.algorithm, "world_size": self.P, "rank": self.rank, "mode": pt.mode,
                    "seq": pt.seq, "causal": pt.causal, "batch": pt.batch, "heads": pt.heads,
                    "kv_heads": pt.kv_heads, "head_dim": pt.head_dim, "dtype": pt.dtype, "device": dev.type,
                    "kernel": stats.kernel, "clock": "cuda events" if rec.cuda else "wall clock",
                    "run_id": self.run_id, "host": self.ctx.hostname}
            path = trace_path(root, pt, self.P, self.rank)
            path.parent.mkdir(parents=True, exist_ok=True)
            timeline.write_chrome_trace(path, {self.rank: rec.marks}, meta)
            ov = self.group.comm.allgather(timeline.overlap_fraction(rec.marks))
            written.append(path)
            if self.rank == 0 and not self.output.quiet:
                print(f"{pt.algorithm} {pt.mode} seq={pt.seq}: {len(rec.marks)} marks on rank 0; overlap per rank "
                      f"{', '.join(f'{x:.2f}' for x in ov)}", flush=True)
        if self.rank == 0:
            print(f"{len(written)} trace files per rank under {root}\n"
                  f"figure: ringx-bench timeline {root.parent}", flush=True)


def resolve(argv: list[str], world: int):
    """bench run's options and points; both modes unless --mode (or a --points file) says which."""
    build_parser().parse_args(argv)  # this command's usage and errors
    if not any(a == "--mode" or a.startswith("--mode=") for a in argv) and "--points" not in argv:
        argv = [*argv, "--mode", "fwd,fwd+bwd"]
    inv, plugins, points = attention.resolve(argv, world)
    if plugins:
        from ringx_suite.cli import UserError

        raise UserError(f"bench trace traces ringx's algorithms only (a plugin has no marks): {', '.join(plugins)}")
    return inv, points


def main(argv: list[str] | None = None) -> int:
    def make(argv: list[str], world: int) -> Tracer:
        return Tracer(*resolve(argv, world))

    return mpi_main(PROG, argv, make)


if __name__ == "__main__":
    sys.exit(main())
