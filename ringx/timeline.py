"""Timeline marks: named ranges around every kernel call, communication post and wait, and merge.

Nothing is recorded unless someone asks: every mark site checks the module flag ``ON`` once
(``ON and start()``), so with tracing off a mark costs one global lookup, with no allocation and
no string formatting. :func:`record` turns it on for one call and hands back this rank's marks:

    with ringx.timeline.record() as rec:
        out = ringx.attention(...)
        out.backward(dout)
    rec.marks  # [Mark(cat, op, start_s, end_s, step, block, nbytes, received), ...]

Categories: ``compute`` (a kernel call on one sub-block: op ``fwd`` or ``bwd``), ``merge`` (the
online-softmax merge of a block's partial result), ``post`` (posting a communication; the whole
operation when it is blocking), ``wait`` (waiting for an asynchronous one), ``comm`` (an
operation in flight: from its post until its wait returned), and ``call`` (the whole forward or
backward of an implementation with no marks inside: a plugin, whose trace file says so). ``step`` is the
schedule's n-th block pair of the pass (the ring step for the rings), ``block`` the sub-block's query
and key rows and the rank whose K/V it used.

Communication an implementation that is not ours issues is marked from the dispatcher by
``ringx.traffic.Traffic(marks=True)``: there ``nbytes`` and ``received`` are the ledger's payload sent and
received (ringx's own post marks carry the operation's size in ``nbytes``).

Clocks: wall clock (``time.perf_counter``) on CPU; on CUDA, CUDA events on the current stream,
resolved to device times when recording ends, so device time is shown, not launch time (written
from the documented torch.cuda.Event API; not run on a GPU yet).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

ON = False  # the one flag every mark site checks
_REC: Recording | None = None


@dataclass
class Mark:
    cat: str  # compute, merge, post, wait, comm
    op: str  # fwd/bwd, merge, or the communication op (sendrecv, all_gather, ...)
    start_s: float
    end_s: float
    step: int = -1
    block: str = ""
    nbytes: int = 0
    received: int = 0  # set by the dispatcher's marks (ringx.traffic): the payload received, the ledger's


@dataclass
class Recording:
    """The marks of one rank, filled while :func:`record` is open (resolved when it closes)."""

    cuda: bool = False
    marks: list[Mark] = field(default_factory=list)
    step: int = -1
    kv_rank: int = -1
    _raw: list = field(default_factory=list)  # (cat, op, start token, end token, step, block, nbytes, received)
    _origin: object = None

    def now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def resolve(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            t = lambda e: self._origin.elapsed_time(e) / 1e3  # noqa: E731 (ms -> s since the origin)
        else:
            t = lambda x: x - self._origin  # noqa: E731
        self.marks = [Mark(cat, op, t(a), t(b), step, block, n, r) for cat, op, a, b, step, block, n, r in self._raw]
        self._raw = []


@contextmanager
def record(device: torch.device | str | None = None) -> Iterator[Recording]:
    """Record this rank's marks while the block runs (CUDA events when ``device`` is a CUDA device)."""
    global ON, _REC
    if ON:
        raise RuntimeError("ringx.timeline.record() is already recording")
    rec = Recording(cuda=torch.device(device).type == "cuda" if device is not None else False)
    rec._origin = rec.now()
    _REC, ON = rec, True
    try:
        yield rec
    finally:
        ON, _REC = False, None
        rec.resolve()


def start():
    """A start token (call as ``ON and start()``)."""
    return _REC.now() if _REC is not None else None


def stop(token, cat: str, op: str, block: str = "", nbytes: int = 0, received: int = 0) -> None:
    """Close the range opened by ``token``."""
    rec = _REC
    if rec is None or token is None:
        return
    rec._raw.append((cat, op, token, rec.now(), rec.step, block, nbytes, received))


def pair(q_rank: int, kv_rank: int) -> None:
    """The schedule moves on to a new (queries, keys) block pair: the next step (``Ctx.plan`` calls it)."""
    if _REC is not None:
        _REC.step += 1
        _REC.kv_rank = kv_rank


def block_name(q0: int, q1: int, k0: int, k1: int) -> str:
    kv = _REC.kv_rank if _REC is not None else -1
    return f"q[{q0}:{q1}] k[{k0}:{k1}] of rank {kv}"


def reset_steps() -> None:
    """A new pass (forward or backward) starts counting steps from 0."""
    if _REC is not None:
        _REC.step = -1


# --- reading marks ----------------------------------------------------------------------------------------------

def _union(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _intersection(xs: list[tuple[float, float]], ys: list[tuple[float, float]]) -> list[tuple[float, float]]:
    i = j = 0
    out: list[tuple[float, float]] = []
    while i < len(xs) and j < len(ys):
        lo, hi = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if hi > lo:
            out.append((lo, hi))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out


def in_flight(marks: Iterable[Mark]) -> list[tuple[float, float]]:
    """The union of the ``comm`` ranges (post to wait return; a blocking operation's whole call), sorted."""
    return _union((m.start_s, m.end_s) for m in marks if m.cat == "comm")


def busy(marks: Iterable[Mark]) -> list[tuple[float, float]]:
    """The union of the ``compute`` and ``merge`` ranges, sorted."""
    return _union((m.start_s, m.end_s) for m in marks if m.cat in ("compute", "merge"))


def hidden(marks: Iterable[Mark]) -> list[tuple[float, float]]:
    """The ranges where communication was in flight while this rank computed (what :func:`overlap_fraction`
    measures; the timeline figure shades them)."""
    marks = list(marks)
    return _intersection(in_flight(marks), busy(marks))


def overlap_fraction(marks: Iterable[Mark]) -> float:
    """Communication time hidden under compute: |comm in flight AND computing| / |comm in flight|.

    Communication in flight is the union of ``comm`` ranges (post to wait return; a blocking operation's
    whole call); compute the union of ``compute`` and ``merge`` ranges. 1.0 when nothing was communicated
    (nothing exposed).
    """
    marks = list(marks)
    comm = in_flight(marks)
    if not comm:
        return 1.0
    return _length(hidden(marks)) / _length(comm)


def chrome_trace(marks_per_rank: dict[int, list[Mark]] | list[list[Mark]], meta: dict | None = None) -> dict:
    """The marks as Chrome/Perfetto trace JSON (open in ui.perfetto.dev or chrome://tracing): one process per
    rank, one thread per category, complete events in microseconds. ``meta`` (what was traced: algorithm,
    mode, shapes, ...) goes under the format's free ``otherData`` key."""
    if not isinstance(marks_per_rank, dict):
        marks_per_rank = dict(enumerate(marks_per_rank))
    tids = {"compute": 0, "merge": 0, "post": 1, "wait": 1, "comm": 2, "call": 3}
    events: list[dict] = []
    for rank, marks in marks_per_rank.items():
        events.append({"ph": "M", "name": "process_name", "pid": rank, "args": {"name": f"rank {rank}"}})
        threads = ((0, "compute"), (1, "host comm"), (2, "comm in flight"), (3, "whole call"))
        for tid, name in threads[:4 if any(m.cat == "call" for m in marks) else 3]:
            events.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": name}})
        for m in marks:
            events.append({"ph": "X", "name": m.op, "cat": m.cat, "pid": rank, "tid": tids.get(m.cat, 3),
                           "ts": m.start_s * 1e6, "dur": max(0.0, m.end_s - m.start_s) * 1e6,
                           "args": {"step": m.step, "block": m.block, "bytes": m.nbytes,
                                    **({"received": m.received} if m.received else {})}})
    doc = {"traceEvents": events, "displayTimeUnit": "ms"}
    if meta:
        doc["otherData"] = dict(meta)
    return doc


def write_chrome_trace(path, marks_per_rank, meta: dict | None = None) -> None:
    """Write :func:`chrome_trace` to ``path``."""
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps(chrome_trace(marks_per_rank, meta)))


def from_chrome_trace(doc: dict) -> dict[int, list[Mark]]:
    """The marks per rank of a :func:`chrome_trace` document (its complete events; other events are skipped)."""
    out: dict[int, list[Mark]] = {}
    for e in doc.get("traceEvents", []):
        if e.get("ph") != "X":
            continue
        a, t0 = e.get("args") or {}, float(e["ts"]) / 1e6
        out.setdefault(int(e.get("pid", 0)), []).append(
            Mark(e.get("cat", ""), e.get("name", ""), t0, t0 + float(e.get("dur", 0.0)) / 1e6, int(a.get("step", -1)),
                 str(a.get("block", "")), int(a.get("bytes", 0)), int(a.get("received", 0))))
    return out


__all__ = ["Mark", "Recording", "busy", "chrome_trace", "from_chrome_trace", "hidden", "in_flight",
           "overlap_fraction", "record", "write_chrome_trace"]
