"""Failures as records, the same for every driver that measures cases on every rank (bench run, bench model).

A stage of a case (preparing, checking, the first call, timing) runs on every rank; an exception becomes a
failure report instead of a traceback; the ranks agree over MPI (:class:`Group`, which never waits forever);
every affected case gets a failure record from rank 0; when a collective may be half-done the process group
is re-initialised; when a rank does not report, rank 0 names it in the records of the stage's cases and the
run stops. The tests' faults (``--inject``) enter through the same hooks in every driver.

A case is any object with ``index`` (its position in the run, which ``--inject`` addresses), ``rec`` (its
record in the making), ``label`` ("ALGORITHM DETAILS"), ``result`` (what measuring it gave so far: ``check_*``
fields are kept in a failure record) and ``votes`` (every rank's report of its last stage).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ringx_drivers.measure.ranks import Group, Progress, describe
from ringx_suite.cli import UserError


class Injected(RuntimeError):
    """A failure the tests asked for."""


class CheckFailed(RuntimeError):
    """The --check gate found the algorithm wrong at this configuration."""


# The tests' faults: --inject RANK:CASE:KIND[@PHASE]. KIND: raise, oom, hang, stop (SIGSTOP), kill (SIGKILL) on
# RANK, check (a failed check on every rank) or pause (every rank sleeps PAUSE_S, outside any collective: a run
# that holds its claim for a while without computing). PHASE: open (the campaign; CASE ignored), prepare, check,
# run (the untimed first call), time (the timed loop) or write (rank 0 writing CASE's record). Older spellings:
# raise, oom (@prepare), midraise, kill, hang (@run), check (@check).
INJECT_KINDS = ("raise", "oom", "hang", "stop", "kill", "check", "pause")
PAUSE_S = 25.0
INJECT_PHASES = ("open", "prepare", "check", "run", "time", "write")
_LEGACY = {"raise": "raise@prepare", "oom": "oom@prepare", "midraise": "raise@run", "kill": "kill@run",
           "hang": "hang@run", "check": "check@check"}


@dataclass(frozen=True)
class Inject:
    rank: int
    case: int
    kind: str
    phase: str


def parse_inject(spec: str | None) -> Inject | None:
    if not spec:
        return None
    try:
        r, i, what = spec.split(":")
        kind, phase = _LEGACY.get(what, what).split("@")
        inj = Inject(int(r), int(i), kind, phase)
    except ValueError:
        inj = None
    if inj is None or inj.kind not in INJECT_KINDS or inj.phase not in INJECT_PHASES:
        raise UserError(f"--inject {spec!r}: RANK:CASE:KIND[@PHASE], KIND one of {', '.join(INJECT_KINDS)}, "
                        f"PHASE one of {', '.join(INJECT_PHASES)}")
    return inj


def maybe_inject(inj: Inject | None, rank: int, index: int, phase: str, prog: str = "bench run") -> None:
    if inj is None or inj.phase != phase or (phase != "open" and inj.case != index):
        return
    if inj.kind == "check":
        raise CheckFailed("injected check failure")  # on every rank, as a real failed check is
    if inj.kind == "pause":
        time.sleep(PAUSE_S)  # every rank at once: no collective waits on a sleeping peer
        return
    if inj.rank != rank:
        return
    print(f"{prog}: injecting {inj.kind} on rank {rank} at {phase} of case {index}, t={time.time():.3f}",
          file=sys.stderr, flush=True)  # the reliability probes measure the time to stop from here
    if inj.kind == "raise":
        raise Injected(f"injected failure on rank {rank} at {phase}")
    if inj.kind == "oom":
        import torch

        raise torch.OutOfMemoryError(f"injected out of memory on rank {rank}")
    if inj.kind in ("kill", "stop"):
        os.kill(os.getpid(), signal.SIGKILL if inj.kind == "kill" else signal.SIGSTOP)
    if inj.kind == "hang":
        time.sleep(10**6)


class Recorder:
    """One driver's failure plumbing: stages, agreement, failure records, the writing of every record.

    ``reinit``: re-initialises the driver's process group (a collective may be half-done). ``counts``: the
    driver's tally; each failure adds one to ``counts["failed"]``. ``progress``: set by the driver once it
    knows its total.
    """

    def __init__(self, group: Group, store, reinit: Callable[[], None], counts: dict[str, int],
                 inject: Inject | None = None):
        self.group, self.store, self.reinit, self.counts, self.inject = group, store, reinit, counts, inject
        self.rank = group.rank
        self.progress: Progress | None = None

    def hook(self, index: int, phase: str) -> None:
        """The tests' fault for case ``index`` at ``phase``, if --inject asked for it there."""
        maybe_inject(self.inject, self.rank, index, phase, self.group.prog)

    def injecting(self, index: int, call: Callable[[], Any]) -> Callable[[], Any]:
        """A timed call with the tests' fault in front (only when --inject is given: never in a real run)."""
        if self.inject is None:
            return call

        def injected():
            self.hook(index, "time")
            return call()
        return injected

    def write(self, rec: dict, index: int) -> None:
        """Rank 0 appends the record; if it cannot, the whole run stops now (the others would measure for
        nothing), with the records written before intact."""
        if self.rank != 0:
            return
        try:
            self.hook(index, "write")
            self.store.append(rec)
        except Exception as e:  # noqa: BLE001 - a full disk, a lost mount, a record that is not valid JSON
            self.group.give_up(f"cannot write a record to {self.store.records_path}: {type(e).__name__}: {e}; "
                               "stopping every rank (the records written before are intact)")

    def stage(self, c, fn: Callable[[], None], what: str, broke_group: bool) -> bool:
        """Run ``fn`` (one stage of case ``c``) on every rank; False, with the failure recorded, if any rank
        failed. ``broke_group``: a failure there may leave a collective half-done (not a failed check)."""
        err = None
        try:
            fn()
        except CheckFailed as e:
            err = ("check", str(e))
        except Exception as e:  # noqa: BLE001 - every failure becomes a record
            err = describe(e)
        info = {k: c.result.get(k) for k in ("mem", "sent", "received", "calls", "kv")}  # kv: bench infer's cache
        votes = self.agree([c.rec], f"{what} {c.label}", err, info, c.index)
        c.votes = votes
        return self.record_failure(c, votes, broke_group and err is not None and err[0] != "check")

    def settle_all(self, cases: Sequence, err: tuple[str, str] | None, what: str, broke_group: bool) -> bool:
        """A failure that concerns every case of the group (inputs, the model, the timed loop) fails them all."""
        label = (f"{what} {', '.join(c.label.split(' ', 1)[0] for c in cases)} at "
                 f"{cases[0].label.split(' ', 1)[-1]}")
        votes = self.agree([c.rec for c in cases], label, err, {}, cases[0].index)
        ok = True
        for c in cases:
            ok = self.record_failure(c, votes, broke_group, reinit=False) and ok
        if not ok and broke_group:
            self.reinit()
        return ok

    def agree(self, recs: list[dict], label: str, err, info: dict, index: int) -> list[dict]:
        """Every rank's report of a stage; a rank that does not report stops the run, recorded by rank 0 in
        the records of the stage's cases."""
        from ringx_suite.store import now

        votes = self.group.agree(err is None, {"error": err[1] if err else None, "kind": err[0] if err else None,
                                               **info}, waited=err is not None and err[0] == "timeout")
        if votes is None:
            msg = self.group.timeout_message(label)
            for rec in recs:
                rec.update(status="failed", failure="timeout", error=msg, written_at=now(),
                           failed_ranks=self.group.missing if self.rank == 0 else [])
                self.write(rec, index)
            self.group.give_up(msg)
        return votes

    def record_failure(self, c, votes: list[dict], broke_group: bool, reinit: bool = True) -> bool:
        """True if every rank succeeded; else ``c``'s failure record is written (the cause: the first failing
        rank's own failure, not its peers' timeout waiting on it) and False returned."""
        from ringx_suite.store import now

        bad = [(i, v) for i, v in enumerate(votes) if not v["ok"]]
        if not bad:
            return True
        cause = next((v["kind"] for _, v in bad if v["kind"] != "timeout"), "timeout")  # not its peers' wait
        c.rec.update(status="failed", failure=cause, failed_ranks=[i for i, _ in bad],
                     error="; ".join(f"rank {i}: {v['error']}" for i, v in bad), written_at=now(),
                     **{k: v for k, v in c.result.items() if k.startswith("check_")})
        self.write(c.rec, c.index)
        self.counts["failed"] += 1
        if self.progress is not None:
            self.progress.step(f"{c.label}: FAILED ({c.rec['error']})")
        if reinit and (broke_group or any(v["kind"] != "check" for _, v in bad)):
            self.reinit()  # a collective may be half-done
        return False


def run_guarded(group: Group, fn: Callable[[], None]) -> None:
    """``fn()`` on every rank; a bug (an exception that escaped it) on one rank alone would leave the others
    waiting, so it stops them all, with its traceback."""
    try:
        fn()
    except Exception:
        import traceback

        traceback.print_exc()
        group.give_up("unexpected error (traceback above); stopping every rank")
