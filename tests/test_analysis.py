"""analysis: metrics with known answers, figures, tables, the CLI, notebooks, and bad data."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

import ringx_analysis as analysis  # noqa: E402
from ringx_analysis import figures, metrics, tables  # noqa: E402
from tests.cli import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "results" / "cpu-sample"
GOLDEN = ROOT / "tests" / "golden" / "analysis"  # written by the code before per-mask tables existed


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
        assert fig.get_supxlabel() and (fig.get_supylabel() or axes[0].get_ylabel())  # said once, for every panel
        for ax in axes:
            expected = n_algos - (1 if name.startswith("speedup") else 0) + (1 if name == "scaling" else 0)
            assert len(ax.get_legend_handles_labels()[1]) >= expected  # one series per algorithm (and ideal)
    paths = figures.save(fig, tmp_path, name, ("pdf", "png", "svg"))
    assert all(p.stat().st_size > 1000 for p in paths)


def test_collectives_figure(sample, tmp_path):
    df, _ = sample
    fig = figures.collectives_busbw(df)
    assert [ax.get_title() for ax in fig.axes] == ["broadcast", "reduce", "all reduce", "all gather",
                                                   "reduce scatter", "sendrecv"]
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)  # 2 and 4 ranks
    assert figures.save(fig, tmp_path, "c", ("png",))[0].stat().st_size > 1000


def test_collectives_by_level_never_share_a_line():
    """Records from before levels existed read as world over every rank; intra and inter get lines of their own."""
    old = analysis.load(SAMPLE, kind="collective")
    assert (old["level"] == "world").all() and (old["group_size"] == old["world_size"]).all()
    four = old[old["world_size"] == 4]
    df = pd.concat([old, four.assign(level="intra", group_size=2), four.assign(level="inter", group_size=2)],
                   ignore_index=True)
    fig = figures.collectives_busbw(df)
    assert all(len(ax.get_lines()) == 4 for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "2 ranks", "4 ranks", "4 ranks, intra-node groups of 2", "4 ranks, inter-node groups of 2"]
    fig = figures.collectives_busbw(old.drop(columns=["level", "group_size"]))  # a frame built elsewhere
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)


def _drawn_texts(fig):
    """Every text matplotlib draws, with its box in pixels: titles, axis labels, the tick labels of ticks in view,
    annotations, legends, figure-level labels."""
    import matplotlib.text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        items = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            items += [t.label1 for t in axis._update_ticks() if t.label1.get_visible()]
        found += [(t, ax) for t in items]
    found += [(t, None) for t in fig.texts]
    found += [(t, None) for leg in fig.legends for t in leg.get_texts()]
    for label in (fig._supxlabel, fig._supylabel):
        if label is not None:
            found.append((label, None))
    out, seen = [], set()
    for t, ax in found:
        if id(t) in seen:
            continue
        seen.add(id(t))
        if isinstance(t, matplotlib.text.Text) and t.get_visible() and t.get_text().strip():
            out.append((t.get_text().replace("\n", " "), t.get_window_extent(renderer), ax))
    return out


def _check_readable(fig, width: str, gpu: bool) -> None:
    assert fig.get_figwidth() == pytest.approx(figures.WIDTH_IN[width])  # saved at exactly a column's width
    texts = _drawn_texts(fig)
    fw, fh = fig.bbox.width, fig.bbox.height
    for text, bb, _ in texts:
        assert bb.x0 >= -1 and bb.y0 >= -1 and bb.x1 <= fw + 1 and bb.y1 <= fh + 1, f"{text!r} leaves the figure"
    for i, (a, ba, _) in enumerate(texts):
        for b, bb, _ in texts[i + 1:]:
            overlap = min(ba.x1, bb.x1) - max(ba.x0, bb.x0) > 0.5 and min(ba.y1, bb.y1) - max(ba.y0, bb.y0) > 0.5
            assert not overlap, f"labels overlap: {a!r} and {b!r}"
    words = " ".join(t for t, _, _ in texts)
    assert "1 ranks" not in words and " 1 nodes" not in words
    assert ("GPUs" in words) == gpu or "GPUs" not in words
    if not gpu:
        assert "GPU" not in words
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale == "log" and axis.get_label_position() in ("bottom", "left"):
                lo, hi = sorted(axis.get_view_interval())
                shown = [t for t in axis._update_ticks() if t.label1.get_text() and lo <= t.get_loc() <= hi]
                assert len(shown) >= 2, f"a log axis of {ax.get_title()!r} has {len(shown)} labelled tick(s)"


@pytest.mark.parametrize("campaign", ["cpu-sample", "local-demo"])
@pytest.mark.parametrize("width", ["one", "two"])
def test_every_figure_reads_at_one_and_two_columns(campaign, width):
    """Exact width, no overlapping labels, '1 rank' singular, no 'GPUs' on CPU runs, log axes with >= 2 ticks."""
    import matplotlib.pyplot as plt

    df = analysis.load(ROOT / "results" / campaign)
    s = analysis.summarize(df)
    made = {name: fn(s, width=width) for name, fn in figures.FIGURES.items()}
    made["collectives"] = figures.collectives_busbw(df, width=width)
    assert set(made) == set(figures.CAPTIONS)  - {"kernels"}
    for name, fig in made.items():
        try:
            _check_readable(fig, width, gpu=False)
        except AssertionError as e:
            raise AssertionError(f"{campaign} {name} at {width} column(s): {e}") from None
        plt.close(fig)
    titles = [ax.get_title() for ax in figures.speedup_vs_seq(s, width=width).axes]
    if campaign == "local-demo":
        assert "1 rank, causal" in titles and "2 ranks, causal" in titles


def test_gpu_records_are_labelled_gpus_and_nodes():
    rows = [rec(a, w, 4096, t) | {"device": "cuda", "nodes": max(1, w // 4)}
            for a, ts in (("ring", (4.0, 2.0, 1.2)), ("ringx4", (3.0, 1.5, 0.8))) for w, t in zip((4, 8, 16), ts)]
    s = analysis.summarize(pd.DataFrame(rows))
    assert set(s["device"]) == {"cuda"}
    for width in ("one", "two"):
        fig = figures.speedup_vs_ranks(s, width=width)
        assert fig.get_supxlabel() == "" and fig.axes[0].get_xlabel() == "GPUs (nodes)"  # one panel: its own label
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["4\n(1)", "8\n(2)", "16\n(4)"]
        _check_readable(fig, width, gpu=True)
    cpu = analysis.summarize(pd.DataFrame([rec("ring", 2, 1024, 1.0) | {"kernel": "torch-cpu"}]))
    assert figures.rank_label(cpu) == "CPU ranks" and not figures.on_gpus(cpu)


def test_every_figure_has_a_caption_that_explains_its_marks():
    for name in [*figures.FIGURES, "collectives", "kernels"]:
        assert figures.CAPTIONS[name] and figures.TITLES[name]
    for name in ("speedup", "speedup-ranks"):
        cap = figures.CAPTIONS[name]
        assert "hollow markers: within noise" in cap and "95%" in cap and "error bars" in cap.lower()
    assert "Band: p10-p90" in figures.CAPTIONS["scaling"] and "dashed" in figures.CAPTIONS["scaling"]
    assert "'~': within noise" in figures.CAPTIONS["fastest"]


def test_log_ticks_are_readable_over_any_range():
    import matplotlib.pyplot as plt

    for lo, hi in ((180, 260), (20, 200), (1e-4, 3.0), (0.9, 1.1), (1, 1e6)):
        fig, ax = plt.subplots()
        ax.plot([1, 2], [lo, hi])
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        figures.log_ticks(ax)
        ticks = [t for t in ax.get_yticks() if lo <= t <= hi]
        assert 2 <= len(ticks) <= 6, (lo, hi, ticks)
        plt.close(fig)


def test_tables_in_three_formats(sample):
    _, s = sample
    t = tables.speedup_table(s)
    md, tex, csv = (tables.render(t, f) for f in ("markdown", "latex", "csv"))
    assert md.splitlines()[0].startswith("| ranks | seq | mask | ring (ms) | zigzag")
    assert sum(line.startswith("|") for line in md.splitlines()) == 2 + 8
    assert "within noise" in md and "[p10-p90]" in md  # the caption says what '~' and the brackets mean
    assert csv.splitlines()[0].startswith("ranks,seq,mask")


def test_latex_table_is_ready_for_a_paper():
    """booktabs, numbers right-aligned, constant columns in the caption, \\times, spread as sub/superscripts,
    empty cells explained, a label."""
    import re

    s = analysis.summarize(analysis.load(ROOT / "results" / "local-demo"))
    tex = tables.render(tables.speedup_table(s), "latex")
    for part in (r"\toprule", r"\midrule", r"\bottomrule", r"\label{tab:speedup}", r"\caption{"):
        assert tex.count(part) == 1, part
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    header = tex.split(r"\toprule")[1].split(r"\\")[0].strip()
    columns = [c.strip() for c in header.split("&")]
    assert columns[:4] == ["ranks", "seq", "mask", "ring (ms)"] and "dtype" not in columns and "mode" not in columns
    assert spec == "rrl" + "r" * (len(columns) - 3)  # every number right-aligned
    caption = re.search(r"\\caption\{(.*)\}", tex).group(1)
    assert "float32" in caption and "fwd+bwd" in caption and "head dim 64" in caption  # lifted constants
    assert "subscript" in caption and "superscript" in caption
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert r"\times_{" in body and "^{" in body and r"\sim" in body
    assert re.search(r"\$\d+(\.\d+)?_\{[\d.]+\}\^\{[\d.]+\}\$", body)  # the baseline's p10/p90 spread
    assert " -- " in body and "--: not measured" in caption  # ringx2 is causal-only here: explained
    for line in body.strip().splitlines():
        assert line.count("&") == len(columns) - 1 and line.endswith(r"\\")


def cli(*args) -> subprocess.CompletedProcess:
    return run_cli(*args)


def test_cli_on_the_sample_campaign(tmp_path):
    proc = cli("figures", str(SAMPLE), "--out", str(tmp_path / "f"), "--format", "pdf,svg")
    assert proc.returncode == 0, proc.stderr
    made = {p.name for p in (tmp_path / "f").iterdir()}
    assert {f"{n}.{x}" for n in ("speedup", "speedup-ranks", "scaling", "mfu", "fastest", "memory", "collectives")
            for x in ("pdf", "svg")} == made
    proc = cli("table", str(SAMPLE), "--format", "latex")
    assert proc.returncode == 0 and r"\begin{tabular}" in proc.stdout
    proc = cli("report", str(SAMPLE), "--out", str(tmp_path / "r"), "--format", "html,md")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"report: {tmp_path / 'r' / name}" for name in ("report.html", "report.md")]
    # The Markdown page of the committed campaign, byte for byte as the code before per-mask tables wrote it
    assert (tmp_path / "r" / "report.md").read_text() == (GOLDEN / "cpu-sample.report.md").read_text()
    page = (tmp_path / "r" / "report.html").read_text()
    commit = json.loads(next((SAMPLE / "runs").glob("*.json")).read_text())["git_commit"]
    assert page.count("data:image/png;base64,") == 7 and commit[:12] in page
    assert "Table 1. Speedup over ring" in page and "within noise" in page and page.count("<figcaption>") == 7
    for n in range(1, 8):
        assert f"<b>Figure {n}.</b>" in page
    for section in ("Hardware, kernel and software", "Results", "Table 2. Spread of every configuration",
                    "Measured configurations", "Runs and their provenance"):
        assert f">{section}</h" in page, section
    assert "CPU ranks (no GPU)" in page and "torch-cpu" in page and "torch 2.13.0" in page and "MPICH" in page
    assert "configuration</h2>" not in page and "provenance</h2>" in page  # no raw section names
    assert "GPUs" not in page.split("<h2>Runs")[0].replace("no GPU", "")


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
    from ringx_suite.records import validate
    from ringx_suite.stats import stat_fields

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
