"""analysis timeline: the figure and the per-rank overlap from trace files, on synthetic marks and on real traced
calls at 2 ranks (one mpiexec launch)."""

from __future__ import annotations

import json

import pytest

from ringx import timeline
from ringx.timeline import Mark
from ringx_analysis import timeline as tl
from ringx_analysis.__main__ import main as analysis_main
from tests.mpi import run_mpi


def _write(d, algo, world, rank, marks, mode="fwd+bwd"):
    meta = {"algorithm": algo, "world_size": world, "rank": rank, "mode": mode, "seq": 1024, "causal": True}
    timeline.write_chrome_trace(d / f"{algo}-{mode.replace('+', '-')}-{world}-rank{rank}.json", {rank: marks}, meta)


def test_chrome_trace_reads_back_and_hidden_ranges():
    marks = [Mark("comm", "sendrecv", 0.0, 4e-3, 0, "", 64), Mark("post", "isend", 0.0, 1e-4, 0),
             Mark("compute", "fwd", 1e-3, 2e-3, 0, "q[0:4] k[0:4] of rank 1"), Mark("merge", "merge", 2e-3, 3e-3, 0),
             Mark("wait", "wait", 3e-3, 4e-3, 0), Mark("compute", "fwd", 5e-3, 6e-3, 1)]
    back = timeline.from_chrome_trace(timeline.chrome_trace({3: marks}, {"algorithm": "ring"}))
    assert list(back) == [3]
    for a, b in zip(marks, back[3]):
        assert (a.cat, a.op, a.step, a.block, a.nbytes) == (b.cat, b.op, b.step, b.block, b.nbytes)
        assert a.start_s == pytest.approx(b.start_s) and a.end_s == pytest.approx(b.end_s)
    assert timeline.hidden(marks) == [(1e-3, 3e-3)]
    assert timeline.overlap_fraction(back[3]) == pytest.approx(0.5)


def test_figure_and_rows_from_synthetic_traces(tmp_path):
    d = tmp_path / "camp" / "trace"
    d.mkdir(parents=True)
    # rank 1 of ring computes while its transfer is in flight for 3 of 4 ms; rank 0 for none, and finishes last
    _write(d, "ring", 2, 0, [Mark("comm", "sendrecv", 0.0, 4e-3), Mark("compute", "fwd", 4e-3, 9e-3)])
    _write(d, "ring", 2, 1, [Mark("comm", "sendrecv", 0.0, 4e-3), Mark("compute", "fwd", 1e-3, 5e-3)])
    _write(d, "ringx4o", 2, 0, [Mark("compute", "fwd", 0.0, 1e-3)])  # nothing communicated: nothing exposed
    _write(d, "ring", 2, 0, [Mark("comm", "sendrecv", 0.0, 2e-3), Mark("compute", "fwd", 0.0, 1e-3)], mode="fwd")
    rows = {(r["mode"], r["algorithm"], r["rank"]): r for r in tl.rows(tl.load(tmp_path / "camp"))}
    assert rows["fwd+bwd", "ring", 1]["overlap_fraction"] == pytest.approx(0.75)
    assert rows["fwd+bwd", "ring", 0]["overlap_fraction"] == 0.0 and rows["fwd+bwd", "ring", 0]["slowest"]
    assert rows["fwd+bwd", "ring", 1]["hidden_ms"] == pytest.approx(3.0)
    assert rows["fwd+bwd", "ringx4o", 0]["overlap_fraction"] == 1.0
    assert rows["fwd", "ring", 0]["overlap_fraction"] == pytest.approx(0.5)
    made = tl.write(tmp_path / "camp", formats=("png", "pdf"))
    assert set(made) == {"timeline-fwd", "timeline-fwd-bwd"}
    for paths in made.values():
        for p in paths:
            assert p.parent == tmp_path / "camp" / "figures" and p.stat().st_size > 5000


def test_timeline_command_errors_in_one_line(tmp_path, capsys):
    assert analysis_main(["timeline", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "no trace files" in err and "Traceback" not in err
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace" / "torn.json").write_text('{"traceEvents": [')
    assert analysis_main(["timeline", str(tmp_path)]) != 0
    assert "not a readable trace file" in capsys.readouterr().err


def test_real_traced_calls_at_2_ranks(tmp_path, capsys):
    proc = run_mpi(2, "tests/workers/trace_cases.py", str(tmp_path), "11", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    traces = tl.load(tmp_path)
    assert sorted((t.meta["algorithm"], t.rank) for t in traces) == [("ring", 0), ("ring", 1), ("ringx4o", 0),
                                                                    ("ringx4o", 1)]
    for t in traces:
        mine = json.loads((tmp_path / f"rank{t.rank}.json").read_text())[t.meta["algorithm"]]
        assert len(t.marks) == mine["marks"] > 0
        assert t.overlap == pytest.approx(mine["overlap"]) and 0.0 <= t.overlap <= 1.0
        cats = {m.cat for m in t.marks}
        assert {"compute", "comm"} <= cats, cats  # kernels ran and something was communicated
        assert all(m.end_s >= m.start_s >= 0 for m in t.marks)
    assert analysis_main(["timeline", str(tmp_path), "--format", "png"]) == 0
    out = capsys.readouterr().out
    assert "| fwd+bwd | ring | 2 | 0 |" in out and (tmp_path / "figures" / "timeline-fwd-bwd.png").stat().st_size > 5000
    assert (tmp_path / "figures" / "timeline-overlap.csv").read_text().count("\n") == 5  # header and 4 ranks


def test_report_shows_the_timeline_when_the_campaign_has_traces(tmp_path):
    import shutil
    from pathlib import Path

    from ringx_analysis import report

    camp = tmp_path / "cpu-sample"
    shutil.copytree(Path(__file__).resolve().parent.parent / "results" / "cpu-sample", camp)
    # Without traces there is no timeline: the committed report of this campaign, which test_analysis.py's
    # test_cli_on_the_sample_campaign rebuilds and compares, has none.
    golden = Path(__file__).parent / "golden" / "analysis" / "cpu-sample.report.md"
    assert "timeline" not in golden.read_text().lower()
    (camp / "trace").mkdir()
    _write(camp / "trace", "ring", 2, 0, [Mark("comm", "sendrecv", 0.0, 4e-3), Mark("compute", "fwd", 1e-3, 5e-3)])
    text = report.write(camp, tmp_path / "rep", "md").read_text()
    assert "![timeline-fwd-bwd](figures/timeline-fwd-bwd.png)" in text and "Timeline of one traced call" in text
    assert (tmp_path / "rep" / "figures" / "timeline-fwd-bwd.png").exists()
