"""The store's promises in-process: claims (one writer per point), fresh-line appends, how duplicates
combine, and how failures are classed. (Under mpiexec: tests/test_reliability.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ringx_suite.store import Busy, Store, claim

SAMPLE = Path(__file__).resolve().parent.parent / "results" / "cpu-sample"


def test_a_second_claim_on_the_same_keys_is_refused_naming_the_holder(tmp_path):
    held = claim(tmp_path, "run-a", {"k1", "k2"}, "ringx-bench run A")
    with pytest.raises(Busy) as e:
        claim(tmp_path, "run-b", {"k2", "k3"})
    assert "1 of the 2 records" in str(e.value) and "run run-a" in str(e.value) and "bench run A" in str(e.value)
    other = claim(tmp_path, "run-c", {"k3"})  # disjoint points (another job of the sweep): allowed
    held.release()
    claim(tmp_path, "run-d", {"k1", "k2"}).release()  # free again once the holder is done
    other.release()
    assert not list((tmp_path / "claims").glob("*.json"))


def test_a_dead_holder_leaves_no_claim(tmp_path):
    # a process that claims and dies without releasing (as a killed run does): its lock goes with it
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r}); "
            "from ringx_suite.store import claim; "
            f"claim(__import__('pathlib').Path({str(tmp_path)!r}), 'dead', {{'k'}}); "
            "import os; os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "claims" / "dead.json").exists()
    claim(tmp_path, "alive", {"k"}).release()
    assert not (tmp_path / "claims" / "dead.json").exists()  # the stale claim was removed


def test_an_append_after_a_torn_line_starts_a_fresh_line(tmp_path):
    recs = [json.loads(x) for x in (SAMPLE / "records.jsonl").read_text().splitlines()[:2]]
    store = Store(tmp_path, "c")
    store.new_run({"command": []})
    store.append(recs[0])
    text = store.records_path.read_bytes()
    store.records_path.write_bytes(text + text[: len(text) // 2])  # a killed writer's half line
    store.append(recs[1])
    reading = store.read()
    assert [r["key"] for r in reading.records] == [recs[0]["key"], recs[1]["key"]]
    assert reading.skipped == {"corrupt or torn": 1}


def test_summary_and_analysis_pool_duplicates_alike(tmp_path):
    """Two runs of the same cell: bench summary's speedup is analysis's, not the lower median of a pair."""
    from ringx_analysis import load
    from ringx_analysis.metrics import speedup, summarize
    from ringx_drivers.summary import attention_table

    recs = [json.loads(x) for x in (SAMPLE / "records.jsonl").read_text().splitlines()]
    cell = [r for r in recs if r["kind"] == "attention" and r["status"] == "ok" and r["world_size"] == 2
            and r["seq"] == 1024 and r["causal"] and r["algorithm"] in ("ring", "ringx4")]
    again = [{**r, "run_id": "second", "samples_s": [x * 1.5 for x in r["samples_s"]], "timing_group": "g2"}
             for r in cell]
    camp = tmp_path / "dup"
    (camp / "records").mkdir(parents=True)
    (camp / "records" / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in cell + again))
    table = attention_table(Store.at(camp).records())
    row = next(line for line in table.splitlines() if line.startswith("| 2 | 1024 | causal"))
    sp = speedup(summarize(load(camp)))
    x4 = sp[sp["algorithm"] == "ringx4"].iloc[0]
    assert f"{x4['speedup']:.2f}x [{x4['speedup_lo']:.2f}-{x4['speedup_hi']:.2f}]" in row


@pytest.mark.parametrize("error,kind", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"), "oom"),
    (MemoryError(), "oom"),
    (RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv"), "timeout"),
    (RuntimeError("Connection closed by peer"), "exception"),
    (ValueError("bad"), "exception"),
])
def test_failures_are_classed(error, kind):
    from ringx_drivers.measure.ranks import describe

    assert describe(error)[0] == kind


def test_memory_estimate_grows_with_the_point_and_gathers_are_o_s():
    from ringx_drivers.points.attention import make_point, memory_bytes

    pt = make_point({"algorithm": "ring", "seq": 4096}, 4)
    assert memory_bytes(pt, 4) < memory_bytes(make_point({"algorithm": "ring", "seq": 8192}, 4), 4)
    gather = make_point({"algorithm": "ringx3", "seq": 4096}, 4)
    assert memory_bytes(gather, 4) > memory_bytes(pt, 4)  # the gathered K/V of the whole sequence
    assert memory_bytes(pt, 4, check_max_seq=4096) >= memory_bytes(pt, 4)


def test_memory_estimate_is_the_library_formula_over_the_inputs_for_every_algorithm():
    """bench's bound reads the registry's buffers through ringx.memory.peak_formula: no algorithm is left out, and
    a plugin counts as the built-in it declares (memory_like)."""
    import torch

    import ringx
    from ringx import memory
    from ringx_drivers.points.attention import make_point, memory_bytes
    from ringx_suite import plugins

    s = memory.sizes(1, 1024, 8, 2, 64, torch.float32)
    inputs = 2 * 1024 * (8 + 2) * 64 * 4
    for name in ringx.ALGORITHMS:
        pt = make_point({"algorithm": name, "seq": 4096, "kv_heads": 2}, 4)
        assert memory_bytes(pt, 4) == inputs + memory.peak_formula(name, 4, s, backward=True, kv_heads=2), name
    mine = {"mine": plugins.of("mine", lambda q, k, v, *, causal, group: q, "test")}
    pt = make_point({"algorithm": "mine", "seq": 4096, "kv_heads": 2}, 4, external=mine)
    for like in ("ring", "ringx3"):
        assert memory_bytes(pt, 4, like=like) == inputs + memory.peak_formula(like, 4, s, backward=True, kv_heads=2)


def test_element_sizes_are_torch_s_and_partials_accumulate_as_the_library_does():
    import torch

    from ringx.kernels import acc_dtype
    from ringx_suite.dtypes import ACCUMULATE, DTYPES, element_bytes

    for name in DTYPES:
        dt = getattr(torch, name)
        assert element_bytes(name) == torch.empty((), dtype=dt).element_size()
        assert ACCUMULATE[name] == str(acc_dtype(dt)).removeprefix("torch.")
