"""bench trace at 2 ranks (one mpiexec launch): a well-formed trace file per algorithm, mode and rank, and the
timeline figure and overlap analysis draws from them; bad flags fail in one line before launching anything."""

from __future__ import annotations

import json

import pytest

from ringx_analysis import timeline as tl
from ringx_analysis.__main__ import main as analysis_main
from tests.mpi import launch

ALGOS = ("ring", "ringx4o", "ringx3b")


def test_bench_trace_writes_traces_and_the_figure(tmp_path, capsys):
    proc = launch(2, ["-m", "ringx_bench", "trace", "--algorithms", ",".join(ALGOS), "--seq", "256", "--heads", "4",
                          "--head-dim", "16", "--warmup", "1", "--out", str(tmp_path), "--campaign", "tr"],
                      timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ringx-bench timeline {tmp_path / 'tr'}" in proc.stdout
    files = sorted((tmp_path / "tr" / "trace" / "2ranks").glob("*.json"))
    assert len(files) == len(ALGOS) * 2 * 2  # algorithms x (fwd, fwd+bwd) x ranks
    for f in files:
        doc = json.loads(f.read_text())
        meta = doc["otherData"]
        assert f.name == (f"{meta['algorithm']}-{meta['mode'].replace('+', '-')}-256-causal-float32-"
                          f"rank{meta['rank']}.json")
        assert meta["world_size"] == 2 and meta["clock"] == "wall clock" and meta["kernel"]
        x = [e for e in doc["traceEvents"] if e["ph"] == "X"]
        assert x and all(e["pid"] == meta["rank"] and e["dur"] >= 0 and e["ts"] >= 0 for e in x)
        cats = {e["cat"] for e in x}
        assert "compute" in cats and "comm" in cats, (f.name, cats)
    traces = tl.load(tmp_path / "tr")
    assert {(t.meta["algorithm"], t.meta["mode"]) for t in traces} == {(a, m) for a in ALGOS
                                                                        for m in ("fwd", "fwd+bwd")}
    assert all(0.0 <= t.overlap <= 1.0 for t in traces)
    assert analysis_main(["timeline", str(tmp_path / "tr"), "--format", "png"]) == 0
    assert "| fwd+bwd | ringx4o | 2 | 1 |" in capsys.readouterr().out
    for name in ("timeline-fwd.png", "timeline-fwd-bwd.png"):
        assert (tmp_path / "tr" / "figures" / name).stat().st_size > 5000


@pytest.mark.parametrize("argv, words", [(["--algorithms", "nope"], "unknown algorithm"),
                                          (["--algorithms", "tcp-ring"], "ringx's algorithms only")])
def test_bench_trace_bad_input_is_one_line(tmp_path, argv, words):
    proc = launch(1, ["-m", "ringx_bench", "trace", *argv, "--out", str(tmp_path)], timeout=120)
    assert proc.returncode != 0 and words in proc.stderr and "Traceback" not in proc.stderr


def test_bench_run_records_call_peaks_and_with_trace_the_overlap(tmp_path):
    from ringx import memory
    from ringx_suite.store import Store, validate

    small = ["--seq", "256", "--heads", "4", "--head-dim", "16", "--iters", "2", "--warmup", "1", "--quiet",
             "--algorithms", "ring,ringx3", "--mode", "fwd+bwd", "--out", str(tmp_path)]
    proc = launch(2, ["-m", "ringx_bench", "run", *small, "--campaign", "traced", "--trace"], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = launch(2, ["-m", "ringx_bench", "run", *small, "--campaign", "plain"], timeout=300)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    recs = {r["algorithm"]: r for r in Store(tmp_path, "traced").records()}
    s = memory.sizes(1, 128, 4, 4, 16, __import__("torch").float32)
    for algo, r in recs.items():
        assert validate(r) == [], r
        peaks = r["call_peak_bytes_per_rank"]
        assert len(peaks) == 2 and all(0 < p <= memory.peak_formula(algo, 2, s, backward=True) for p in peaks)
        assert len(r["overlap_fraction_per_rank"]) == 2 and 0.0 <= r["overlap_fraction"] <= 1.0
        assert r["overlap_fraction"] in r["overlap_fraction_per_rank"]
    assert max(recs["ringx3"]["call_peak_bytes_per_rank"]) > max(recs["ring"]["call_peak_bytes_per_rank"])
    for r in Store(tmp_path, "plain").records():  # untraced: peaks, no overlap
        assert validate(r) == [] and r["call_peak_bytes_per_rank"] and "overlap_fraction" not in r
