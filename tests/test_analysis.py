"""analysis: metrics with known answers, figures, tables, the CLI, notebooks, and bad data."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

import analysis  # noqa: E402
from analysis import figures, metrics, tables  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "results" / "cpu-sample"


def rec(algorithm, world, seq, t, causal=True, scaling="strong", samples=None, peak=None, mem=100.0):
    """A minimal ok attention record whose every sample is ``t`` seconds unless given."""
    flops = 4.0 * seq * seq * 8 * 64 / (2 if causal else 1) * 3.5
    return {"kind": "attention", "status": "ok", "algorithm": algorithm, "family": "x", "world_size": world,
            "nodes": 1, "seq": seq, "seq_per_rank": seq // world, "scaling": scaling, "batch": 1, "heads": 8,
            "kv_heads": 8, "head_dim": 64, "dtype": "float32", "causal": causal, "mode": "fwd+bwd",
            "samples_s": samples or [t] * 5, "flops": flops, "peak_tflops": peak,
            "mem_peak_bytes_per_rank": [mem] * world, "bytes_sent_per_rank": [10] * world}


def test_speedup_and_spread_known_answers():
    df = pd.DataFrame([rec("ring", 2, 1024, 0.0, samples=[1.0, 2.0, 3.0, 4.0, 5.0]),
                       rec("ringx4", 2, 1024, 0.5)])
    s = analysis.summarize(df)
    ring = s[s["algorithm"] == "ring"].iloc[0]
    assert (ring["median_s"], ring["p10_s"], ring["p90_s"]) == (3.0, pytest.approx(1.4), pytest.approx(4.6))
    sp = analysis.speedup(s).set_index("algorithm")
    assert sp.loc["ringx4", "speedup"] == pytest.approx(6.0)
    # bootstrap of the ratio of medians: ring's resampled median lies in [1, 5], ringx4's is 0.5
    assert 2.0 <= sp.loc["ringx4", "speedup_lo"] < 6.0 < sp.loc["ringx4", "speedup_hi"] <= 10.0
    assert not sp.loc["ringx4", "within_noise"]
    assert sp.loc["ring", "speedup"] == 1.0 and not sp.loc["ring", "within_noise"]


def test_repeats_are_pooled():
    df = pd.DataFrame([rec("ring", 2, 1024, 1.0), rec("ring", 2, 1024, 3.0)])
    s = analysis.summarize(df)
    assert len(s) == 1 and s["n_repeats"].iloc[0] == 2 and s["n_samples"].iloc[0] == 10
    assert s["median_s"].iloc[0] == 2.0


def test_strong_and_weak_scaling_known_answers():
    strong = pd.DataFrame([rec("ring", w, 4096, t) for w, t in ((1, 8.0), (2, 5.0), (4, 2.0))])
    st = analysis.strong_scaling(analysis.summarize(strong)).set_index("world_size")
    assert st.loc[2, "speedup"] == pytest.approx(1.6) and st.loc[2, "efficiency"] == pytest.approx(0.8)
    assert st.loc[4, "speedup"] == pytest.approx(4.0) and st.loc[4, "efficiency"] == pytest.approx(1.0)
    weak = pd.DataFrame([rec("ring", w, 1024 * w, t, scaling="weak") for w, t in ((1, 2.0), (2, 2.5), (4, 4.0))])
    wk = analysis.weak_scaling(analysis.summarize(weak)).set_index("world_size")
    assert wk.loc[2, "efficiency"] == pytest.approx(0.8) and wk.loc[4, "efficiency"] == pytest.approx(0.5)


def test_mfu_known_answer():
    r = rec("ring", 2, 1024, 0.01, peak=10.0)
    s = analysis.summarize(pd.DataFrame([r]))
    tflops = r["flops"] / 2 / 0.01 / 1e12
    assert s["tflops_per_rank"].iloc[0] == pytest.approx(tflops) and s["mfu"].iloc[0] == pytest.approx(tflops / 10)


def test_missing_baseline_is_named():
    s = analysis.summarize(pd.DataFrame([rec("ringx4", 2, 1024, 1.0)]))
    with pytest.raises(metrics.MissingBaseline, match="baseline 'ring' has no successful measurement; measured: ringx"):
        analysis.speedup(s)


@pytest.fixture(scope="module")
def sample():
    df = analysis.load(SAMPLE)
    return df, analysis.summarize(df)


def test_load_types_and_provenance(sample):
    df, _ = sample
    assert str(df["world_size"].dtype) == "Int64" and str(df["causal"].dtype) == "boolean"
    assert str(df["median_s"].dtype) == "float64"
    assert df["commit"].notna().all() and df["torch"].str.startswith("2.").all()
    assert set(df["kind"]) == {"attention", "collective"}


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_each_figure_has_the_expected_axes_and_series(sample, tmp_path, name):
    _, s = sample
    fig = figures.FIGURES[name](s)
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    n_algos = s["algorithm"].nunique()
    if name == "fastest":
        assert len(axes) == 2 and all(len(ax.texts) == 4 for ax in axes)  # 2 seq x 2 rank counts, annotated
    else:
        assert len(axes) == 4  # (masking x rank counts) or (masking x sequence lengths)
        for ax in axes:
            assert ax.get_xlabel() and (ax is not axes[0] or ax.get_ylabel())
            expected = n_algos - (1 if name == "speedup" else 0) + (1 if name == "scaling" else 0)  # baseline, ideal
            assert len(ax.get_lines()) >= expected
    paths = figures.save(fig, tmp_path, name, ("pdf", "png", "svg"))
    assert all(p.stat().st_size > 1000 for p in paths)


def test_collectives_figure(sample, tmp_path):
    df, _ = sample
    fig = figures.collectives_busbw(df)
    assert [ax.get_title() for ax in fig.axes] == ["broadcast", "reduce", "all_reduce", "all_gather",
                                                   "reduce_scatter", "sendrecv"]
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)  # 2 and 4 ranks
    assert figures.save(fig, tmp_path, "c", ("png",))[0].stat().st_size > 1000


def test_tables_in_three_formats(sample):
    _, s = sample
    t = tables.speedup_table(s)
    md, tex, csv = (tables.render(t, f) for f in ("markdown", "latex", "csv"))
    assert md.splitlines()[0].startswith("| ranks | seq | mask | mode | dtype | ring | zigzag")
    assert sum(line.startswith("|") for line in md.splitlines()) == 2 + 8
    assert "within noise" in md  # the caption says what '~' means
    assert r"\toprule" in tex and r"\caption{" in tex and "ringx4o" in tex and r"\label{tab:speedup}" in tex
    assert r"$\times$" in tex and r"\begin{tabular}{rrllll" in tex  # numbers right-aligned
    assert csv.splitlines()[0].startswith("ranks,seq,mask")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_cli_on_the_sample_campaign(tmp_path):
    proc = cli("figures", str(SAMPLE), "--out", str(tmp_path / "f"), "--format", "pdf,svg")
    assert proc.returncode == 0, proc.stderr
    made = {p.name for p in (tmp_path / "f").iterdir()}
    assert {f"{n}.{x}" for n in ("speedup", "scaling", "mfu", "fastest", "memory", "collectives")
            for x in ("pdf", "svg")} == made
    proc = cli("table", str(SAMPLE), "--format", "latex")
    assert proc.returncode == 0 and r"\begin{tabular}" in proc.stdout
    proc = cli("report", str(SAMPLE), "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r" / "report.html").read_text()
    commit = json.loads(next((SAMPLE / "runs").glob("*.json")).read_text())["git_commit"]
    assert page.count("data:image/png;base64,") == 6 and commit in page
    assert "Speedup table" in page and "within noise" in page and page.count("<figcaption>") == 6


def test_parquet_export_round_trips_every_record(sample, tmp_path):
    pytest.importorskip("pyarrow")
    df, _ = sample
    proc = cli("export", str(SAMPLE), "--out", str(tmp_path / "c.parquet"))
    assert proc.returncode == 0, proc.stderr
    back = analysis.load(tmp_path / "c.parquet")
    assert f"{len(df)} records" in proc.stdout and list(back.columns) == list(df.columns)
    assert back.dtypes.equals(df.dtypes)
    for col in df.columns:  # lists (samples, per-rank), nested dicts (ledger), provenance, nulls
        for a, b in zip(df[col], back[col]):
            assert a == b if isinstance(a, list | dict) else (pd.isna(a) and pd.isna(b)) or a == b, col
    pd.testing.assert_frame_equal(metrics.summarize(back), metrics.summarize(df))
    assert cli("table", str(tmp_path / "c.parquet")).stdout == cli("table", str(SAMPLE)).stdout
    (tmp_path / "junk.parquet").write_text("not parquet")
    proc = cli("table", str(tmp_path / "junk.parquet"))
    assert proc.returncode == 2 and "not a readable Parquet file" in proc.stderr
    proc = cli("export", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "no campaign at" in proc.stderr


def test_bad_data_gives_figures_or_clear_messages(tmp_path):
    camp = tmp_path / "c"
    shutil.copytree(SAMPLE, camp)
    with open(camp / "records.jsonl", "a") as f:
        f.write('{"schema": 1, "kind": "attention", "stat\n')  # a torn line
        f.write("not json at all\n")
        f.write(json.dumps({"schema": 9, "kind": "attention"}) + "\n")
    with pytest.warns(UserWarning) as caught:
        df = analysis.load(camp)
    messages = " ".join(str(w.message) for w in caught)
    assert "skipped 2 corrupt or torn line(s), 1 foreign or invalid line(s)" in messages
    assert len(df) == 176

    proc = cli("table", str(camp), "--baseline", "nope")
    assert proc.returncode == 2 and "baseline 'nope' has no successful measurement" in proc.stderr
    assert "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "records.jsonl").write_text("")
    proc = cli("report", str(empty))
    assert proc.returncode == 2 and "no usable records" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("figures", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no campaign at" in proc.stderr


def test_single_point_series_still_plot(tmp_path):
    camp = tmp_path / "one"
    camp.mkdir()
    from core.records import validate
    from core.stats import stat_fields

    r = {**rec("ring", 2, 1024, 0.01), "schema": 1, "campaign": "one", "run_id": "x", "key": "k", "error": None,
         "written_at": "2026-01-01T00:00:00", "warmup": 1, "iters": 5, "repeat": 0, "kernel": "torch-cpu",
         "layout": "contiguous", "flops_convention": "flash-attn", "tflops_per_rank": 1.0,
         "bytes_received_per_rank": [10, 10], "comm_calls_per_rank": [1, 1], **stat_fields([0.01] * 5)}
    assert validate(r) == []
    (camp / "records.jsonl").write_text(json.dumps(r) + "\n" + json.dumps({**r, "algorithm": "ringx4"}) + "\n")
    proc = cli("figures", str(camp), "--out", str(tmp_path / "f"), "--format", "png")
    assert proc.returncode == 0, proc.stderr
    assert "speedup:" in proc.stdout and "skipped scaling: scaling needs" in proc.stdout


def test_notebooks_execute_against_the_sample():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    books = sorted((ROOT / "analysis" / "notebooks").glob("*.ipynb"))
    assert [b.name for b in books] == ["collectives.ipynb", "scaling.ipynb", "speedup.ipynb"]
    for book in books:
        nb = nbformat.read(book, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{book.name} has outputs"
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(book.parent)}}).execute()
        images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
        assert images >= 1, f"{book.name} drew no figure"
