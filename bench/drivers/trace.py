"""``ringx-bench trace``: one traced call per algorithm and rank, as Chrome/Perfetto trace files.

It takes ``bench run``'s options and points (the same flags, config file and --points), and for each point,
after --warmup untimed calls (at least one) and a barrier, records one call
on the timeline (every kernel call, merge, post and wait): forward, and forward+backward
(both unless --mode says one). Each rank writes its trace to
OUT/CAMPAIGN/trace/PRANKS/ALGO-MODE-SEQ-MASK-DTYPE-rankR.json (open it in ui.perfetto.dev), with what was
traced in the file's otherData. Nothing is timed and no record is written; the figure is analysis's:
``ringx-bench timeline OUT/CAMPAIGN`` (printed at the end).

Plugins (docs/plugins.md: ``--plugin``, installed names in --algorithms) are traced beside ours, with what can be
seen from outside them: the whole forward and backward (``call`` marks), and each communication op they issue, seen
at the dispatcher by ``ringx.traffic.Traffic`` (``post`` marks with the ledger's op name and bytes sent and
received; for functional collectives also the ``wait`` and post-to-wait ``comm``; a c10d call's wait is a plain
``Work.wait()`` the dispatcher does not see). Nothing inside the plugin's kernels is marked, so its overlap is
"n/a", never a number. Its otherData's ``plugin`` says this, where it came from and its ledger. A plugin that
cannot run (a built-in's name, an import that fails, another device, a mask it does not take) or that fails
(raises, a wrong shape) is one line, and the other algorithms are traced.

Clocks: wall-clock ranges on CPU; on GPUs CUDA events on the current stream (device time, not launch time;
written from the documented torch.cuda API, not run on a GPU yet).

Example (2 local CPU ranks):
  mpiexec -n 2 ringx-bench trace --algorithms ring,ringx4o,tcp-allgather --seq 1024 --campaign demo
"""

from __future__ import annotations

import re
import sys
from contextlib import nullcontext
from pathlib import Path

from ringx_drivers.driver import Driver, mpi_main
from ringx_drivers.drivers import attention

PROG = "ringx-bench trace"

# what a plugin's trace holds, said in its otherData (and the docs)
PLUGIN_MARKS = ("the whole forward, and backward in fwd+bwd ('call'), and each communication op it issues, seen at the "
                "dispatcher ('post': op, bytes sent and received by the ledger's conventions); nothing inside the "
                "plugin's kernels")
WAITS = {"functional": "functional collectives (_c10d_functional): their wait_tensor is marked 'wait', post to "
                       "wait 'comm' (in flight)",
         "c10d": "c10d calls (dist.all_gather, isend, ...): posts only; their Work.wait() is not dispatched, so "
                 "waits are not seen (with gloo a post enqueues the operation and returns)"}
NO_OVERLAP = "n/a: nothing inside the plugin is marked, so no compute to overlap with"


def build_parser():
    p = attention.build_parser()
    p.prog, p.description = PROG, __doc__
    return p


def trace_path(root: Path, pt, world: int, rank: int) -> Path:
    mask, algo = (re.sub(r"[^\w.+-]", "_", x) for x in (pt.mask_text(), pt.algorithm))  # no path separators
    name = f"{algo}-{pt.mode.replace('+', '-')}-{pt.seq}-{mask}-{pt.dtype}-rank{rank}.json"
    return root / f"{world}ranks" / name


class Tracer(Driver):
    """``bench trace``: every point's call recorded once per rank, after warm-up."""

    prog, command, kind = "bench trace", "trace", "attention"

    def __init__(self, inv, points, plugins: dict | None = None):
        super().__init__(inv)
        self.points, self.external = points, plugins or {}

    def open(self, **kw) -> None:
        super().open(claims=False, **kw)  # no records, so no keys to claim

    def run(self) -> None:
        root = self.store.dir / "trace"
        written = []
        for pt in self.points:
            why = self.unrunnable(pt)
            if why:  # alike on every rank: no agreement needed
                self.say(f"{pt.algorithm} {pt.mode} seq={pt.seq}: {why}", always=True)
                continue
            got = self.guarded(pt, root)
            if got is None:
                continue
            path, marks, ov = got
            written.append(path)
            if not self.output.quiet:
                ext = self.external.get(pt.algorithm)
                what = " (the whole call and communication at the dispatcher)" if ext else ""
                over = "n/a (nothing inside a plugin is marked)" if ov is None else ", ".join(f"{x:.2f}" for x in ov)
                self.say(f"{pt.algorithm} {pt.mode} seq={pt.seq}: {marks} marks on rank 0{what}; overlap per rank "
                         f"{over}")
        self.say(f"{len(written)} trace files per rank under {root}\nfigure: ringx-bench timeline {root.parent}",
                 always=True)

    def say(self, text: str, always: bool = False) -> None:
        """Rank 0's line (progress only without --quiet; failures, skips and the end always)."""
        if self.rank == 0 and (always or not self.output.quiet):
            print(text, flush=True)

    def unrunnable(self, pt) -> str | None:
        """Why a plugin's point is not traced here, in bench run's words ("FAILED (...)", "skipped (...)"), or None."""
        ext = self.external.get(pt.algorithm)
        refused = ext.refusal(self.ctx.device.type, [pt.the_mask()]) if ext else None
        if refused is None:
            return None
        status, _, error = refused
        return f"{'FAILED' if status == 'failed' else status} ({error})"

    def guarded(self, pt, root: Path):
        """:meth:`trace` on every rank; a failure on any rank is one line from rank 0 (the ranks agree, within
        --timeout) and None, and the process group is made anew (a collective may be half-done)."""
        from ringx_drivers.measure.ranks import describe

        got, err = None, None
        try:
            got = self.trace(pt, root)
        except Exception as e:  # noqa: BLE001 - a plugin's failure (or ours) is one line; the others go on
            err = describe(e)
        votes = self.group.agree(err is None, {"error": err[1] if err else None}, waited=bool(err)
                                 and err[0] == "timeout")
        if votes is None:
            self.group.give_up(self.group.timeout_message(f"tracing {pt.algorithm} {pt.mode} seq={pt.seq}"))
        if all(v["ok"] for v in votes):
            return got[0], got[1], self.overlaps(got[2])
        self.say(f"{pt.algorithm} {pt.mode} seq={pt.seq}: FAILED ({failure_line(votes)})", always=True)
        if got is not None:  # this rank's half of a call that failed elsewhere: not a trace to draw
            got[0].unlink(missing_ok=True)
        self.reinit()
        return None

    def overlaps(self, mine: float | None) -> list[float] | None:
        """Every rank's overlap_fraction; None for a plugin's call (the same on every rank)."""
        return None if mine is None else self.group.comm.allgather(mine)

    def trace(self, pt, root: Path) -> tuple[Path, int, float | None]:
        """The point's call, after warm-up, recorded and written: (its file, this rank's marks, its overlap or
        None where it means nothing)."""
        import torch

        from ringx import timeline
        from ringx.traffic import Traffic

        dev, s = self.ctx.device, self.settings
        ext = self.external.get(pt.algorithm)
        g = torch.Generator(device="cpu").manual_seed(1000)
        dt = getattr(torch, pt.dtype)
        inputs = [torch.randn(pt.batch, pt.seq_per_rank, h, pt.head_dim, generator=g, dtype=dt).to(dev)
                  for h in (pt.heads, pt.kv_heads, pt.kv_heads, pt.heads)]
        call, stats = attention.make_call(pt.algorithm, ext, pt, inputs, s.kernel)
        call(stats)  # the first call validates the inputs on every rank and names the kernel
        for _ in range(max(0, s.warmup - 1)):
            call(None)
        torch.distributed.barrier()  # the ranks' recordings start together
        traffic = Traffic(marks=True) if ext else None  # a plugin's communication, marked at the dispatcher
        with timeline.record(dev) as rec, traffic or nullcontext():
            call(None)
        meta = {"algorithm": pt.algorithm, "world_size": self.P, "rank": self.rank, "mode": pt.mode,
                "seq": pt.seq, "causal": pt.causal, "batch": pt.batch, "heads": pt.heads,
                "kv_heads": pt.kv_heads, "head_dim": pt.head_dim, "dtype": pt.dtype, "device": dev.type,
                "kernel": stats.kernel if stats else pt.algorithm, "clock": "cuda events" if rec.cuda else "wall clock",
                "run_id": self.run_id, "host": self.ctx.hostname}
        if ext:
            meta["plugin"] = plugin_meta(ext, traffic, rec.marks)
        path = trace_path(root, pt, self.P, self.rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        timeline.write_chrome_trace(path, {self.rank: rec.marks}, meta)
        # a plugin's overlap is n/a even when it calls ringx inside: its marks are then only part of its call
        return path, len(rec.marks), None if ext else timeline.overlap_fraction(rec.marks)


def failure_line(votes: list[dict]) -> str:
    """The ranks' errors in one line, each error once: "ranks 0, 1: ValueError: ..."."""
    by_error: dict[str, list[int]] = {}
    for r, v in enumerate(votes):
        if not v["ok"]:
            by_error.setdefault(v["error"], []).append(r)
    return "; ".join(f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))}: {e}" for e, rs in by_error.items())


def plugin_meta(ext, traffic, marks) -> dict:
    """What a plugin's trace holds and does not, where the plugin came from, and its traffic (the ledger's)."""
    lg = traffic.ledger
    kinds = {"functional" if m.block.startswith("_c10d_functional.") else "c10d" for m in marks if m.cat == "post"}
    return {"source": ext.source, "family": ext.family,
            "marks": PLUGIN_MARKS, "waits": "; ".join(WAITS[k] for k in sorted(kinds, reverse=True)) or
            "no communication was seen", "overlap_fraction": NO_OVERLAP,
            "bytes_sent": lg.sent, "bytes_received": lg.received, "comm_calls": lg.calls, "ledger": lg.as_dict(),
            **({"not_counted": sorted(traffic.unknown)} if traffic.unknown else {})}


def resolve(argv: list[str], world: int):
    """bench run's options, plugins and points; both modes unless --mode (or a --points file) says which."""
    build_parser().parse_args(argv)  # this command's usage and errors
    if not any(a == "--mode" or a.startswith("--mode=") for a in argv) and "--points" not in argv:
        argv = [*argv, "--mode", "fwd,fwd+bwd"]
    return attention.resolve(argv, world, PROG)


def main(argv: list[str] | None = None) -> int:
    def make(argv: list[str], world: int) -> Tracer:
        inv, plugins, points = resolve(argv, world)
        return Tracer(inv, points, plugins)

    return mpi_main(PROG, argv, make)


if __name__ == "__main__":
    sys.exit(main())
