"""bench kernels (records of every kernel's TFLOP/s) and bench selftest (the first command on a new node)."""

from __future__ import annotations

import pytest

from ringx_suite.records import validate
from ringx_suite.store import Store
from tests.mpi import launch


def bench(nprocs: int, *args: str, timeout: float = 300):
    return launch(nprocs, ["-m", "ringx_bench", *args], timeout=timeout)


def test_kernels_records_every_kernel_direction_and_shape(tmp_path):
    proc = bench(1, "kernels", "--block", "64,128", "--kv-heads", "8,2", "--iters", "3", "--warmup", "1",
                 "--out", str(tmp_path), "--campaign", "k", "--quiet")
    assert proc.returncode == 0, proc.stderr
    recs = Store(tmp_path, "k").records()
    # torch-cpu (the reference kernel is the checks' ground truth, not a candidate): 2 seqs x 2 GQA x 2 masks x 2
    assert len(recs) == 16 and all(validate(r) == [] and r["status"] == "ok" for r in recs)
    assert {r["kernel"] for r in recs} == {"torch-cpu"} and {r["direction"] for r in recs} == {"fwd", "bwd"}
    for r in recs:
        fwd = 4.0 * r["seq"] ** 2 * 8 * 64 / (2 if r["causal"] else 1)
        assert r["flops"] == fwd * (2.5 if r["direction"] == "bwd" else 1.0)
        assert r["tflops"] == pytest.approx(r["flops"] / r["median_s"] / 1e12)
    again = bench(1, "kernels", "--block", "64,128", "--kv-heads", "8,2", "--iters", "3", "--warmup", "1",
                  "--out", str(tmp_path), "--campaign", "k", "--quiet")
    assert again.returncode == 0 and len(Store(tmp_path, "k").records()) == 16  # resumed: nothing re-measured
    bad = bench(1, "kernels", "--kernels", "nope", "--out", str(tmp_path))
    assert bad.returncode == 2 and "unknown kernel 'nope'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("world", [1, 2])
def test_selftest_passes_and_prints_its_table(world):
    proc = bench(world, "selftest", "--dtypes", "float32", "--seq-per-rank", "32", "--algorithms",
                 "ring,ringx3,ringx4o,ulysses", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| torch-cpu | torch" in proc.stdout and "every check passed" in proc.stdout
    assert proc.stdout.count("bench selftest: every check passed") == 1  # rank 0 speaks for all


def test_selftest_fails_loudly_on_a_wrong_kernel():
    proc = bench(1, "selftest", "--dtypes", "float32", "--seq-per-rank", "32", "--algorithms", "ring,ringx4",
                 "--break-kernel", "torch-cpu", timeout=300)
    assert proc.returncode == 1
    assert "FAILED: ring full, ring causal, ringx4 full, ringx4 causal" in proc.stdout
    assert "check(s) FAILED" in proc.stdout
