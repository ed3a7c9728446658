"""bench overhead: one-line errors, how a recorded call splits into kernels, waits and posts, and a tiny real run of
its three parts."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest

from ringx import timeline
from ringx_drivers import overhead
from tests.cli import run_cli


@pytest.mark.parametrize("args,message", [
    (["--algorithms", "ring,ringx9"], "unknown algorithm(s) ringx9"),
    (["--parts", "call,steps"], "unknown part(s) steps; choose from call, step, decode"),
    (["--modes", "bwd"], "unknown mode(s) bwd"),
    (["--seq", "127"], "--seq (127) and --block (64) must be even"),
    (["--ranks", "two"], "ranks must be an integer, got 'two'"),
    (["--dtype", "bfloat16"], "use float32 or float64"),
    (["--heads", "6", "--kv-heads", "4"], "--heads (6) must be a multiple of --kv-heads (4)"),
    (["--new-tokens", "1"], "new_tokens must be >= 2"),
    (["--calls", "0"], "calls must be >= 1"),
])
def test_bad_arguments_get_one_clear_message(args, message):
    proc = run_cli("overhead", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_a_recorded_call_splits_into_kernels_waits_and_posts(monkeypatch):
    """A fake clock (each reading one second later): a compute mark, a blocking all-gather (waited for whole), an
    asynchronous exchange (its post, then its wait) and a merge, over two steps of a forward."""
    ticks = itertools.count()
    monkeypatch.setattr(timeline.time, "perf_counter", lambda: float(next(ticks)))

    def call():
        for step in range(2):
            timeline.pair(0, step)
            t = timeline.start()
            timeline.stop(t, "compute", "fwd")  # 1 s
        t = timeline.start()
        timeline.stop(t, "post", "all_gather")  # blocking: 1 s, whole
        timeline.stop(t, "comm", "all_gather")  # 2 s in flight
        t = timeline.start()
        timeline.stop(t, "post", "sendrecv")  # 1 s
        w = timeline.start()
        timeline.stop(w, "wait", "sendrecv")  # 1 s
        timeline.stop(t, "comm", "sendrecv")
        m = timeline.start()
        timeline.stop(m, "merge", "merge")  # 1 s

    got = overhead._recorded(call, 1)
    assert (got["kernel"], got["merge"], got["post"], got["wait"], got["steps"]) == (2, 1, 1, 3, 2)
    assert got["wall"] > got["kernel"] + got["merge"] + got["post"] + got["wait"]


def test_tiny_run_writes_every_part(tmp_path):
    proc = run_cli("overhead", "--algorithms", "ring,ringx3", "--iters", "3", "--warmup", "1", "--calls", "2",
                   "--ranks", "2", "--decode-ranks", "1", "--record-rounds", "1", "--seq", "32", "--block", "16",
                   "--prompt-len", "16", "--new-tokens", "3", "--profile", "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["provenance"]["software"]["torch"]
    rows = res["rows"]
    keys = {(x["part"], x["world"], x["mode"], x["name"]) for x in rows}
    call = {("call", 1, m, n) for m in ("fwd", "fwd+bwd") for n in ("kernel", "ring", "ringx3")}
    call.add(("call", 1, "fwd+bwd", "autograd floor"))
    step = {("step", 2, m, n) for m in ("fwd", "fwd+bwd") for n in ("ring", "ringx3")}
    decode = {("decode", 1, "decode", n) for n in ("tp", "ring", "ringx3")}
    assert keys == call | step | decode
    for x in rows:  # a decode sample is one step: 3 generations of 2 steps
        assert len(x["samples"]) == (6 if x["part"] == "decode" else 3) and min(x["samples"]) > 0
    ring = {x["mode"]: x for x in rows if x["part"] == "step" and x["name"] == "ring"}
    # causal contiguous: rank 0's queries see nothing of rank 1's block, but it takes the step all the same
    assert [r["steps"] for r in ring["fwd"]["ranks"]] == [1, 2]
    assert (ring["fwd"]["steps"], ring["fwd+bwd"]["steps"]) == (2, 4)
    assert len(ring["fwd"]["checked_samples"]) == 3 and ring["fwd"]["host_per_step"] > 0
    for x in rows:
        if x["part"] == "step":  # a Python function's own share of the calls' time, by cProfile
            where, share = x["profile_top"]
            assert where.endswith(".py:" + where.rsplit(":", 1)[1]) and 0 < share < 1, x["profile_top"]
    table = (tmp_path / "table.md").read_text()
    assert "fwd+bwd / autograd floor" in table and "host µs per step" in table and "/ tp" in table
    assert "largest Python function's own time (cProfile)" in table
    assert table.count("x [") == 2 * 2 + 1 + 2 + 2 * 2 + 2  # call: 2 modes x 2 + floor + 2 vs floor; step; decode


def test_the_table_says_which_baseline():
    a = SimpleNamespace(algorithms=["ring"], modes=["fwd"], batch=1, seq=8, heads=2, kv_heads=2, head_dim=8,
                        dtype="float32", block=4, prompt_len=8, new_tokens=2)
    rows = [{"part": "call", "world": 1, "mode": "fwd", "name": n, "samples": s}
            for n, s in (("kernel", [1.0, 1.0, 1.0]), ("ring", [2.0, 2.0, 2.0]))]
    md = overhead.table(rows, a)
    assert "| ring | 2000000 | 2.00x [2.00-2.00] |" in md
