"""What the ranks of one MPI-launched driver share: agreement with a deadline, the campaign, progress.

Agreement goes over MPI, not torch's process group, so it works when that
group is broken by a failed collective, and it never waits forever: a rank
that does not report within the deadline means a rank died or hangs.
"""

from __future__ import annotations

import os
import sys
import time


class Progress:
    """Rank 0's progress: one rewritten line on a terminal, plain lines in batch logs."""

    def __init__(self, total: int, quiet: bool, enabled: bool):
        self.total, self.quiet, self.enabled = total, quiet, enabled
        self.start = time.monotonic()
        self.done = 0
        self.tty = sys.stdout.isatty()

    def step(self, what: str, count: int = 1) -> None:
        self.done += count
        if self.quiet or not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        line = f"[{self.done}/{self.total}] {what} | elapsed {elapsed:.0f}s, ETA {eta:.0f}s"
        if self.tty:
            print("\r\033[K" + line, end="" if self.done < self.total else "\n", flush=True)
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        if self.enabled and not self.quiet:
            print(("\n" if self.tty and 0 < self.done < self.total else "") + text, flush=True)


class Group:
    """MPI-side agreement that does not depend on torch's (possibly broken) process group."""

    def __init__(self, timeout: float, prog: str = "bench run"):
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.deadline = timeout + 30.0
        self.prog = prog

    def agree(self, ok: bool, info: dict) -> list[dict] | None:
        """Every rank's (ok, info), or None if some rank did not report within the deadline."""
        import numpy as np

        mine = np.array([1 if ok else 0], dtype=np.int32)
        every = np.zeros(self.size, dtype=np.int32)
        req = self.comm.Iallgather(mine, every)
        t_end = time.monotonic() + self.deadline
        while not req.Test():
            if time.monotonic() > t_end:
                return None
            time.sleep(0.01)
        return self.comm.allgather({"ok": ok, **info})

    def open_campaign(self, out: str, campaign: str, command: list[str]):
        """(store, run_id, done, nodes): rank 0 opens the store and writes the run's provenance; every rank
        learns the run id, what the store already holds (key -> status) and how many nodes the run spans.

        A store rank 0 cannot open or write (corrupt bytes, a read-only directory) stops every rank with
        rank 0's message, before any work starts.
        """
        from bench.measure import provenance
        from core.store import Store

        hosts = self.comm.allgather(provenance.local_host())
        store, reply = Store(out, campaign), None
        if self.rank == 0:
            try:
                reading = store.read()
                run_id = store.new_run(provenance.collect(hosts, command))
                reply = {"run_id": run_id, "done": {r["key"]: r["status"] for r in reading.records},
                         "skipped": reading.summary()}
            except Exception as e:  # noqa: BLE001 - any failure here must reach every rank
                reply = {"error": f"cannot use campaign {store.dir}: {type(e).__name__}: {e}"}
        reply = self.comm.bcast(reply, root=0)
        if "error" in reply:
            self.stop(reply["error"])
        store.run_id = reply["run_id"]
        if reply["skipped"] and self.rank == 0:
            print(f"{self.prog}: warning: {store.dir}: {reply['skipped']} (not trusted for resume)",
                  file=sys.stderr, flush=True)
        return store, reply["run_id"], reply["done"], len({h["node"] for h in hosts})

    def stop(self, message: str, code: int = 2) -> None:
        """Every rank reached the same conclusion: rank 0 says why, all exit."""
        if self.rank == 0:
            print(f"{self.prog}: error: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(code)

    def give_up(self, message: str) -> None:
        print(f"{self.prog} (rank {self.rank}): {message}", file=sys.stderr, flush=True)
        self.comm.Abort(1)


def describe(e: BaseException) -> tuple[str, str]:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return "oom", f"out of memory: {e}"
    return "exception", f"{type(e).__name__}: {e}"
