"""Any code's communication, counted where every ``torch.distributed`` call goes through: the dispatcher.

Under :class:`Traffic` (a ``TorchDispatchMode``) every collective and point-to-point call of ``torch.distributed``
(``dist.broadcast``, ``isend``, ``batch_isend_irecv``, ``all_gather_into_tensor``, ...) and of its functional
collectives reaches the mode as a ``c10d`` or ``_c10d_functional`` op with its tensors and process group. Each is
counted into a :class:`ringx.comm.Ledger` with the ledger's conventions (the logical payload a rank sends and
receives, not bytes on the wire), so an implementation that is not ours is measured as ours is, and ours can be
checked against its own ledger (``tests/test_traffic.py``: equal for every built-in algorithm).

An op of those namespaces that no rule here knows is listed in ``unknown`` (its bytes are not counted), so a
caller can say what was missed rather than under-count silently.

With ``marks=True``, while ``ringx.timeline`` records, each op is also a timeline mark (``bench trace`` of a plugin):
a ``post`` around the op's call at the dispatcher, with the ledger's op name, payload sent (``nbytes``) and received,
and the dispatcher's op in ``block``. What the dispatcher shows of the wait differs by API:

- functional collectives (``_c10d_functional.*``, e.g. PyTorch's context parallelism): the wait is an op of its
  own (``wait_tensor``), so it is marked ``wait``, and post to wait return is marked ``comm`` (in flight);
- ``torch.distributed``'s c10d calls (``dist.all_gather``, ``isend``, ...): the op returns a ``Work`` whose
  ``wait()`` is a plain method, never dispatched, so only the post is seen. On CPU with gloo the post enqueues the
  operation on gloo's thread and returns (~0.1-0.2 ms for a 4 KiB all-gather at 2 ranks), so its mark is the
  posting's host time, not the transfer's (NCCL enqueues on its stream too; not run here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from . import timeline
from .comm import Ledger


def _bytes(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, list | tuple):
        return sum(_bytes(t) for t in x)
    return 0


def _group(pg) -> tuple[int, int]:
    """(this rank's rank in the group, the group's size) of a c10d op's process group argument."""
    g = dist.ProcessGroup.unbox(pg) if isinstance(pg, torch.ScriptObject) else pg
    return g.rank(), g.size()


def _named(name: str) -> tuple[int, int]:
    """The same of a functional collective's group name."""
    return _group(dist.distributed_c10d._resolve_process_group(name))


def _rooted(n: int, me: int, root: int, *, to_root: bool) -> tuple[int, int]:
    """(sent, received) of a broadcast (from the root) or a reduce (``to_root``)."""
    if to_root:
        return (0, n) if me == root else (n, 0)
    return (n, 0) if me == root else (0, n)


def _gathered(n: int, size: int) -> tuple[int, int]:
    return n, n * (size - 1)


def _scattered(n: int, size: int) -> tuple[int, int]:
    return n - n // size, n // size


def _moved(n: int, size: int) -> tuple[int, int]:
    return n - n // size, n - n // size


# op -> (the ledger's op name, (args) -> (sent, received)), by the positions of the ops' schemas in torch 2.x
_RULES: dict[str, tuple[str, Callable[[tuple], tuple[int, int]]]] = {
    "c10d.broadcast_": ("broadcast", lambda a: _rooted(_bytes(a[0]), _group(a[1])[0], a[2], to_root=False)),
    "c10d.reduce_": ("reduce", lambda a: _rooted(_bytes(a[0]), _group(a[1])[0], a[3], to_root=True)),
    "c10d.allreduce_": ("all_reduce", lambda a: (_bytes(a[0]), _bytes(a[0]))),
    "c10d.allreduce_coalesced_": ("all_reduce", lambda a: (_bytes(a[0]), _bytes(a[0]))),
    "c10d._allgather_base_": ("all_gather", lambda a: _gathered(_bytes(a[1]), _group(a[2])[1])),
    "c10d.allgather_": ("all_gather", lambda a: _gathered(_bytes(a[1]), _group(a[2])[1])),
    "c10d.allgather_into_tensor_coalesced_": ("all_gather", lambda a: _gathered(_bytes(a[1]), _group(a[2])[1])),
    "c10d._reduce_scatter_base_": ("reduce_scatter", lambda a: _scattered(_bytes(a[1]), _group(a[2])[1])),
    "c10d.reduce_scatter_": ("reduce_scatter", lambda a: _scattered(_bytes(a[1]), _group(a[2])[1])),
    "c10d.reduce_scatter_tensor_coalesced_": ("reduce_scatter",
                                              lambda a: _scattered(_bytes(a[1]), _group(a[2])[1])),
    "c10d.alltoall_base_": ("all_to_all", lambda a: _moved(_bytes(a[1]), _group(a[2])[1])),
    "c10d.alltoall_": ("all_to_all", lambda a: _moved(_bytes(a[1]), _group(a[2])[1])),
    "c10d.send": ("send", lambda a: (_bytes(a[0]), 0)),
    "c10d.recv_": ("recv", lambda a: (0, _bytes(a[0]))),
    "c10d.recv_any_source_": ("recv", lambda a: (0, _bytes(a[0]))),  # its third argument is a tag: no peer
    "_c10d_functional.broadcast": ("broadcast", lambda a: _rooted(_bytes(a[0]), _named(a[2])[0], a[1],
                                                                   to_root=False)),
    "_c10d_functional.all_reduce": ("all_reduce", lambda a: (_bytes(a[0]), _bytes(a[0]))),
    "_c10d_functional.all_reduce_": ("all_reduce", lambda a: (_bytes(a[0]), _bytes(a[0]))),
    "_c10d_functional.all_gather_into_tensor": ("all_gather", lambda a: _gathered(_bytes(a[0]), a[1])),
    "_c10d_functional.all_gather_into_tensor_out": ("all_gather", lambda a: _gathered(_bytes(a[0]), a[1])),
    "_c10d_functional.reduce_scatter_tensor": ("reduce_scatter", lambda a: _scattered(_bytes(a[0]), a[2])),
    "_c10d_functional.all_to_all_single": ("all_to_all", lambda a: _split_moved(a)),
}
_SILENT = {"c10d.barrier", "c10d.monitored_barrier_", "_c10d_functional.wait_tensor",
           "_c10d_functional._wrap_tensor_autograd"}


_PEERED = ("c10d.send", "c10d.recv_")  # point-to-point calls whose third argument is the peer's group rank


def _size(a: tuple) -> int:
    """The size of a call's group: its process group argument (c10d) or group name (functional); 0 if neither."""
    for x in a:
        if isinstance(x, torch.ScriptObject | dist.ProcessGroup):
            return _group(x)[1]
    for x in a:
        if isinstance(x, str):
            try:
                return _named(x)[1]
            except (ValueError, RuntimeError, KeyError):
                continue
    return 0


def _split_moved(a) -> tuple[int, int]:
    """all_to_all_single(input, output_split_sizes, input_split_sizes, group_name): the rows to the others."""
    x, out_splits, in_splits, name = a[0], a[1], a[2], a[3]
    me, size = _named(name)
    if not in_splits:
        return _moved(_bytes(x), size)
    row = _bytes(x) // max(1, x.shape[0])
    return (sum(in_splits) - in_splits[me]) * row, (sum(out_splits) - out_splits[me]) * row


class Traffic(TorchDispatchMode):
    """Counts the communication of everything run under it into ``ledger`` (see the module doc)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # as ringx.memory's mode: no dynamo import per rank; nothing run under it is compiled

    def __init__(self, ledger: Ledger | None = None, calls: list | None = None, marks: bool = False):
        super().__init__()
        self.ledger = ledger if ledger is not None else Ledger()
        self.unknown: set[str] = set()
        # given a list: every counted call appended in issue order, (op, sent, received, group size, peer) with the
        # peer's group rank for send/recv (else -1), for a schedule rebuilt from the calls (the cost model's)
        self.calls = calls
        self.marks = marks
        # functional collectives posted and not yet waited: id(output) -> (output, op, post token, sent, received);
        # the output is held so that its id is not reused before its wait_tensor arrives
        self._posted: dict[int, tuple] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if not name.startswith(("c10d.", "_c10d_functional.")):
            return func(*args, **(kwargs or {}))
        marking = self.marks and timeline.ON
        if marking and name == "_c10d_functional.wait_tensor":
            return self._waited(func, args, kwargs)
        if name in _SILENT:
            return func(*args, **(kwargs or {}))
        op, sent, received = name, 0, 0
        rule = _RULES.get(name)
        if rule is None:
            self.unknown.add(name)
        else:
            op, count = rule
            a = tuple(args) + tuple((kwargs or {}).values())
            sent, received = count(a)
            self.ledger.record(op, sent, received)
            if self.calls is not None:
                self.calls.append((op, sent, received, _size(a), a[2] if name in _PEERED else -1))
        if not marking:
            return func(*args, **(kwargs or {}))
        t = timeline.start()
        out = func(*args, **(kwargs or {}))
        timeline.stop(t, "post", op, name if rule else f"{name} (not counted)", sent, received)
        if name.startswith("_c10d_functional.") and isinstance(out, torch.Tensor):
            self._posted[id(out)] = (out, op, t, sent, received)
        return out

    def _waited(self, func, args, kwargs):
        """A functional collective's wait: marked ``wait``, and its post to here ``comm``."""
        t = timeline.start()
        out = func(*args, **(kwargs or {}))
        posted = self._posted.pop(id(args[0]), None) if args else None
        if posted is None:  # posted before the recording (or by another mode): the wait alone
            timeline.stop(t, "wait", "wait_tensor", "_c10d_functional.wait_tensor")
            return out
        _, op, token, sent, received = posted
        timeline.stop(t, "wait", op, "_c10d_functional.wait_tensor", sent, received)
        timeline.stop(token, "comm", op, "post to wait_tensor", sent, received)
        return out


__all__ = ["Traffic"]
