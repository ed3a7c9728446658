"""A measurement that cannot be right is flagged where it is written and marked wherever it is shown."""

from __future__ import annotations

from ringx_suite import plausible
from ringx_suite.store import Store
from tests.cli import run_cli
from tests.mpi import launch


def test_known_peaks_by_the_names_torch_gives():
    assert plausible.known_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert plausible.known_peak("NVIDIA GH200 480GB") == 989.0
    assert plausible.known_peak("AMD Instinct MI250X") == 191.5
    assert plausible.known_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert plausible.known_peak(None) is None and plausible.known_peak("Intel Xeon") is None


def test_problems_above_the_peak_or_the_link():
    assert plausible.problems(1937.0, 989.0)  # Megatron-Bridge #2665's figure on an H200
    assert plausible.problems(500.0, 989.0) == []
    assert plausible.problems(None, 989.0) == [] and plausible.problems(2000.0, None) == []
    assert plausible.problems(1.0, 989.0, [50 * 10**9], 1.0, 25.0)  # 50 GB in 1 s through a 25 GB/s link
    assert plausible.problems(1.0, 989.0, [10 * 10**9], 1.0, 25.0) == []


def test_a_record_above_the_given_peak_is_written_flagged_and_shown_marked(tmp_path):
    # a CPU rank does ~0.01-0.1 TFLOP/s here: a "peak" of 0.001 cannot be right
    proc = launch(1, ["-m", "ringx_bench", "run", "--algorithms", "ring,ringx3", "--seq", "1024", "--heads", "8",
                      "--head-dim", "64", "--iters", "2", "--warmup", "1", "--peak-tflops", "0.001", "--quiet",
                      "--out", str(tmp_path), "--campaign", "c"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = Store(tmp_path, "c").records()
    assert all(r["status"] == "ok" and "above the device's peak of 0.001" in r["implausible"][0] for r in recs)
    shown = run_cli("summary", str(tmp_path / "c"))
    assert shown.returncode == 0
    row = next(ln for ln in shown.stdout.splitlines() if ln.startswith("| 1 | 1024 |"))
    assert row.count(plausible.MARK) == 2 and "Implausible" in shown.stdout
    table = run_cli("table", str(tmp_path / "c"))  # analysis's speedup table: marked, and the caption says why
    assert table.returncode == 0, table.stderr
    assert plausible.MARK in table.stdout and "implausible" in table.stdout

