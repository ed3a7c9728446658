"""What the ranks of one MPI-launched driver share: agreement with a deadline, the campaign, progress.

Agreement goes over MPI, not torch's process group, so it works when that
group is broken by a failed collective, and it never waits forever: a rank
that does not report within the deadline means a rank died or hangs.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable

MARGIN_S = 25.0  # a rank waits at most --timeout + this on its peers (the rest of the documented 30 s: teardown)
RANK0_MARGIN_S = 15.0  # rank 0 decides sooner, so it can record a hung rank before the others give up
TAG_SPACE = 30000  # agreements are numbered by MPI tag (the standard guarantees tags up to 32767)


class Progress:
    """Rank 0's progress: one rewritten line on a terminal, plain lines in batch logs; ``lines``: a line per
    step on a terminal too (the drivers' one line per configuration)."""

    def __init__(self, total: int, quiet: bool, enabled: bool, lines: bool = False):
        self.total, self.quiet, self.enabled = total, quiet, enabled
        self.start = time.monotonic()
        self.done = 0
        self.tty = sys.stdout.isatty() and not lines

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
    """MPI-side agreement that does not depend on torch's (possibly broken) process group.

    Every rank reports to rank 0 point-to-point and rank 0 answers each, so rank 0 knows which ranks did not
    report, and nobody waits in a collective a dead rank would never join. Deadlines (from a rank's arrival):
    rank 0 waits ``timeout + RANK0_MARGIN_S`` for the others, the others wait ``timeout + MARGIN_S`` for rank
    0's answer, so a living rank 0 decides (and records) first. A rank that arrives after one of its
    collectives timed out has already waited ``timeout`` on its peers, so it only adds the margin: a hung rank
    stops the run within ``timeout + MARGIN_S`` of the fault, not twice the timeout.
    """

    def __init__(self, timeout: float, prog: str = "bench run"):
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = timeout
        self.prog = prog
        self.missing: list[int] = []  # after a failed agree: ranks that did not report (rank 0), or [0]
        self._round = 0

    def wait_s(self, waited: bool) -> float:
        """How long this rank waits in an agreement (see the class doc)."""
        return (0.0 if waited else self.timeout) + (RANK0_MARGIN_S if self.rank == 0 else MARGIN_S)

    def agree(self, ok: bool, info: dict, waited: bool = False) -> list[dict] | None:
        """Every rank's {"ok": ok, **info}, or None (and ``missing`` set) if some rank did not report in time.

        ``waited``: this rank arrives from a collective that timed out (it already waited on its peers).
        """
        self._round += 1
        tag = 1 + self._round % TAG_SPACE
        mine = {"ok": ok, **info}
        t_end = time.monotonic() + self.wait_s(waited)
        if self.rank != 0:
            sent = self.comm.isend(mine, dest=0, tag=tag)
            votes = self._receive(0, tag, t_end)
            if votes is None:
                self.missing = [0]
                return None
            sent.wait()  # rank 0 answered, so it has our report
            return votes
        votes: list[dict | None] = [mine] + [None] * (self.size - 1)
        pending = set(range(1, self.size))
        delay = 0.0005
        while pending:
            for r in sorted(pending):
                if self.comm.iprobe(source=r, tag=tag):
                    votes[r] = self.comm.recv(source=r, tag=tag)
                    pending.discard(r)
            if not pending:
                break
            if time.monotonic() > t_end:
                self.missing = sorted(pending)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        answers = [self.comm.isend(votes, dest=r, tag=tag) for r in range(1, self.size)]
        _wait_all(answers, time.monotonic() + MARGIN_S)
        return votes

    def _receive(self, source: int, tag: int, t_end: float):
        delay = 0.0005
        while not self.comm.iprobe(source=source, tag=tag):
            if time.monotonic() > t_end:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return self.comm.recv(source=source, tag=tag)

    def open_campaign(self, out: str, campaign: str, command: list[str],
                      pending: Callable[[dict, int], set[str]] | None = None,
                      hook: Callable[[], None] | None = None) -> tuple:
        """(store, run_id, done, nodes): rank 0 opens the store, claims the keys ``pending(done, nodes)`` names
        (the records this run will measure) and writes the run's provenance; every rank learns the run id, what
        the store already holds (key -> status) and how many nodes the run spans.

        Any failure on rank 0 (corrupt bytes, a read-only directory, another run measuring the same points, a
        hang) stops every rank with rank 0's message, before any work starts. ``hook``: the tests' fault.
        """
        from ringx_drivers.measure import provenance
        from ringx_suite.store import Store, StoreError

        hosts = self.comm.allgather(provenance.local_host())
        nodes = len({h["node"] for h in hosts})
        store, reply, done = Store(out, campaign), {}, None
        if self.rank == 0:
            try:
                if hook:
                    hook()
                reading = store.read()
                done = {r["key"]: r["status"] for r in reading.records}
                keys = pending(done, nodes) if pending else None
                reply = {"run_id": store.new_run(provenance.collect(hosts, command), keys),
                         "skipped": reading.summary()}
            except StoreError as e:  # a message for the user as it is
                reply = {"error": str(e)}
            except Exception as e:  # noqa: BLE001 - any failure here must reach every rank
                reply = {"error": f"cannot use campaign {store.dir}: {type(e).__name__}: {e}"}
        votes = self.agree("error" not in reply, reply)
        if votes is None:
            self.give_up(self.timeout_message("opening the campaign"))
        reply = votes[0]
        if "error" in reply:
            self.stop(reply["error"])
        done = self.comm.bcast(done, root=0)  # rank 0 is alive and here: it answered just now
        store.run_id = reply["run_id"]
        if reply["skipped"] and self.rank == 0:
            print(f"{self.prog}: warning: {store.dir}: {reply['skipped']} (not trusted for resume)",
                  file=sys.stderr, flush=True)
        return store, reply["run_id"], done, nodes

    def timeout_message(self, during: str) -> str:
        """What a failed agreement means, naming the ranks that did not report where this rank knows them."""
        if self.rank == 0:
            who = f"rank{'s' if len(self.missing) > 1 else ''} {', '.join(map(str, self.missing))} did not report"
        else:
            who = "rank 0 did not answer"
        return (f"{who} within {self.wait_s(False):.0f}s during {during}: a rank died or hangs; stopping the run "
                "(the records written so far are intact)")

    def stop(self, message: str, code: int = 2) -> None:
        """Every rank reached the same conclusion: rank 0 says why, all exit."""
        if self.rank == 0:
            print(f"{self.prog}: error: {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        from mpi4py import MPI

        # Finalized, a rank's exit is an end the launcher expects: unfinalized, mpiexec kills the ranks that exit
        # a moment later and reports their SIGKILL (exit 9, "BAD TERMINATION") instead of this code.
        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.Finalize()
        os._exit(code)

    def give_up(self, message: str, code: int = 1) -> None:
        """This rank alone stops the whole job (a peer died or hangs, or this rank cannot go on)."""
        print(f"{self.prog} (rank {self.rank}): {message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        time.sleep(0.3)  # the launcher forwards output asynchronously: an abort at once can swallow the last line
        try:
            self.comm.Abort(code)
        finally:
            os._exit(code)  # MPI_Abort may return before the launcher's kill arrives: never run on


def _wait_all(requests: list, t_end: float) -> None:
    """Complete sends while their receivers are alive to take them; give up at ``t_end``."""
    from mpi4py import MPI

    while not MPI.Request.Testall(requests):
        if time.monotonic() > t_end:
            return
        time.sleep(0.001)


# Failures that mean "my peers did not show up in time": the rank has already waited --timeout on them.
_TIMED_OUT = re.compile(r"timed out|timeout", re.IGNORECASE)
# Out of memory as the CPU allocator and other libraries say it (torch.OutOfMemoryError is the CUDA one).
_NO_MEMORY = re.compile(r"out of memory|can't allocate memory|cannot allocate memory|DefaultCPUAllocator",
                        re.IGNORECASE)


def describe(e: BaseException) -> tuple[str, str]:
    """(failure kind, message) of an exception: ``oom``, ``timeout`` (a collective waited --timeout on a
    peer) or ``exception``. The message is one line: the exception's first (torch's dispatcher errors go on
    for a hundred lines of registered backends)."""
    import torch

    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if first != text:
        first += f" [{text.count(chr(10))} more lines]"
    if isinstance(e, torch.OutOfMemoryError | MemoryError) or (isinstance(e, RuntimeError)
                                                               and _NO_MEMORY.search(text)):
        return "oom", f"out of memory: {first}"
    if isinstance(e, RuntimeError) and _TIMED_OUT.search(text):
        return "timeout", f"{type(e).__name__}: {first}"
    return "exception", f"{type(e).__name__}: {first}"
