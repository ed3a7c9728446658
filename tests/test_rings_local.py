"""Without MPI: timeline overlap on synthetic marks, the Chrome trace, marks off by default; the tracer's view of
bidir-ring (both link directions at once) and double-ring (two levels); the memory measurement at one op."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ringx import memory, timeline
from ringx.schedule import trace
from ringx.timeline import Mark


def test_overlap_fraction_on_synthetic_marks():
    marks = [Mark("comm", "sendrecv", 0.0, 4.0), Mark("compute", "fwd", 1.0, 2.0), Mark("merge", "merge", 2.0, 3.0),
             Mark("compute", "fwd", 3.5, 10.0), Mark("comm", "broadcast", 8.0, 12.0)]
    # in flight: [0, 4] u [8, 12] = 8 s; computing meanwhile: [1, 3] + [3.5, 4] + [8, 10] = 4.5 s
    assert timeline.overlap_fraction(marks) == pytest.approx(4.5 / 8)
    assert timeline.overlap_fraction([Mark("comm", "x", 0, 1)]) == 0.0
    assert timeline.overlap_fraction([Mark("compute", "fwd", 0, 1)]) == 1.0


def test_chrome_trace_and_marks_off_by_default(tmp_path):
    assert timeline.ON is False
    path = tmp_path / "t.json"
    timeline.write_chrome_trace(path, {0: [Mark("compute", "fwd", 0.001, 0.003, 2, "q[0:4] k[0:4] of rank 1")]})
    ev = json.loads(path.read_text())["traceEvents"]
    x = [e for e in ev if e["ph"] == "X"]
    assert x == [{"ph": "X", "name": "fwd", "cat": "compute", "pid": 0, "tid": 0, "ts": pytest.approx(1000.0),
                  "dur": pytest.approx(2000.0), "args": {"step": 2, "block": "q[0:4] k[0:4] of rank 1", "bytes": 0}}]
    with timeline.record() as rec:
        assert timeline.ON
        with pytest.raises(RuntimeError):
            with timeline.record():
                pass
    assert not timeline.ON and rec.marks == []


def test_bidir_costs_one_direction_per_step_and_halves_the_steps():
    kw = dict(batch=1, seq=8 * 64, heads=4, kv_heads=4, head_dim=16, dtype=torch.float32)
    kv = 2 * 64 * 4 * 16 * 4
    ring, bidir = trace("ring", False, 8, 3, **kw), trace("bidir-ring", False, 8, 3, **kw)
    steps = [e for e in bidir.forward if e.kind == "comm"]
    assert len(steps) == 4 and len([e for e in ring.forward if e.kind == "comm"]) == 7
    # both directions at once: each step costs the bytes sent to one neighbour, the last one goes one way only
    assert [e.nbytes for e in steps] == [kv, kv, kv, kv]
    assert bidir.ledger_forward.sent == ring.ledger_forward.sent == 7 * kv


def test_double_ring_communicates_on_two_levels():
    tr = trace("double-ring", True, 8, 5, batch=1, seq=8 * 32, heads=4, kv_heads=2, head_dim=16, ranks_per_node=4)
    spans = {(e.group, e.nodes) for e in tr.forward if e.kind == "comm"}
    assert spans == {((4, 5, 6, 7), 1), ((1, 5), 2)}
    assert sum(e.kind == "compute" and e.flops > 0 for e in tr.forward) >= 8
    with pytest.raises(ValueError, match="inner_ring=3"):
        trace("double-ring", True, 8, 0, batch=1, seq=256, heads=4, kv_heads=2, head_dim=16, ranks_per_node=4,
              inner_ring=3)


def test_measure_counts_new_tensors_only():
    x = torch.randn(1024)

    def call():
        y = x * 2  # 4 KiB, freed before z
        del y
        z = torch.empty(2048)  # 8 KiB returned
        x.add_(1)  # in place: not an allocation
        return z

    _, peak = memory.measure(call)
    assert peak == 8192


def test_measuring_memory_does_not_import_dynamo():
    """A fresh process (a rank at start-up): the dispatch mode's first op must not import torch._dynamo
    (~800 modules, ~2.4 s of CPU per rank here), which torch's wrapper of a mode's __torch_dispatch__ does."""
    code = ("import sys, torch; from ringx import memory; x = torch.ones(8, requires_grad=True); "
            "_, peak = memory.measure(lambda: (x * 2).sum().backward()); "
            "print(peak > 0, 'torch._dynamo' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False"]
