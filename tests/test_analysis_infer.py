"""analysis of bench infer records (kind `infer`): TTFT and TPOT pooled over repeats, their speedups over ring and
over tp against hand-computed medians, the figures, the table, and the report's serving section (HTML, Markdown,
LaTeX), alone and beside attention records; and on a real `bench infer` campaign at 1 and 2 CPU ranks, the same
numbers as `bench summary`."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from ringx_analysis import figures, infer, metrics, report  # noqa: E402
from ringx_analysis.records import load  # noqa: E402
from ringx_suite.records import validate  # noqa: E402
from ringx_suite.stats import stat_fields  # noqa: E402
from ringx_suite.store import Store  # noqa: E402
from tests.cli import run_cli  # noqa: E402
from tests.mpi import launch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NEW = 4  # tokens generated: the prefill's, then 3 decode steps per iteration
# (ranks, prompt) -> candidate -> (prefill seconds, decode step seconds): every candidate is timed in the same
# rounds (one timing group per configuration), iteration i's samples scaled by ROUND[i]
TIMES = {(1, 64): {"ring": (0.010, 0.0020), "ringx1": (0.010, 0.0016), "tp": (0.008, 0.0020)},
         (1, 128): {"ring": (0.020, 0.0021), "ringx1": (0.018, 0.0017), "tp": (0.019, 0.0021)},
         (2, 64): {"ring": (0.008, 0.0030), "ringx1": (0.006, 0.0015), "tp": (0.005, 0.0025)},
         (2, 128): {"ring": (0.012, 0.0031), "ringx1": (0.010, 0.0016), "tp": (0.011, 0.0026)}}
ROUND = (1.0, 1.02, 0.97, 1.05, 0.99)


def infer_rec(store: Store, algorithm: str, world: int, prompt: int, prefill: list[float],
              decode: list[list[float]], group: str, repeat: int = 0, new_tokens: int = NEW) -> dict:
    steps = [t for it in decode for t in it]
    samples = [p + sum(d) for p, d in zip(prefill, decode)]
    return {"schema": 1, "kind": "infer", "campaign": store.campaign, "tag": None, "run_id": store.run_id,
            "key": f"{algorithm}-{world}-{prompt}-{repeat}-{new_tokens}", "status": "ok", "error": None,
            "written_at": "2026-12-01T00:00:00+0000", "device": "cpu", "family": "tp" if algorithm == "tp" else "ring",
            "world_size": world, "nodes": 1, "repeat": repeat, "kernel_requested": None, "warmup": 1,
            "iters": len(prefill), "algorithm": algorithm, "model": "tiny", "layers": 2, "d_model": 96, "heads": 12,
            "kv_heads": 4, "mlp": 256, "vocab": 256, "rope_theta": 5e5, "norm_eps": 1e-5, "prompt_len": prompt,
            "batch": 1, "new_tokens": new_tokens, "dtype": "float32", "kernel": "torch-cpu", "kernel_version": None,
            "layout": "replicated" if algorithm == "tp" else "contiguous", "timing_group": group,
            "samples_s": samples, **stat_fields(samples), "ttft_s": statistics.median(prefill),
            "tpot_s": statistics.median(steps) if steps else None,
            "prefill_tokens_per_s": prompt / statistics.median(prefill),
            "decode_tokens_per_s": len(steps) / sum(steps) if steps else None,
            "kv_cache_bytes": 1024 * prompt // world, "kv_cache_bytes_per_rank": [1024 * prompt // world] * world,
            "generated": [1, 2, 3, 4][:new_tokens], "prefill_samples_s": prefill, "decode_samples_s": decode,
            "bytes_sent_per_rank": [0] * world, "bytes_received_per_rank": [0] * world,
            "comm_calls_per_rank": [0] * world, "mem_peak_bytes_per_rank": [1 << 20] * world}


def phases(p: float, d: float, scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    prefill = [p * r * scale for r in ROUND]
    decode = [[d * r * scale * (1 + 0.01 * s) for s in range(NEW - 1)] for r in ROUND]
    return prefill, decode


def write(store: Store, recs: list[dict]) -> None:
    for r in recs:
        assert validate(r) == [], validate(r)
        store.append(r)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """The TIMES campaign; at (2, 128) ring and ringx1 ran twice (a repeat, in its own round, 10% slower): their
    samples are pooled, as bench summary pools them."""
    store = Store(tmp_path_factory.mktemp("runs"), "serving")
    store.new_run({"command": ["test"]})
    for (world, prompt), cands in TIMES.items():
        write(store, [infer_rec(store, a, world, prompt, *phases(p, d), f"g{world}{prompt}")
                      for a, (p, d) in cands.items()])
    write(store, [infer_rec(store, a, 2, 128, *phases(*TIMES[2, 128][a], 1.1), "again", repeat=1)
                  for a in ("ring", "ringx1")])
    return store.dir


def pooled(world: int, prompt: int, algorithm: str) -> tuple[list[float], list[float]]:
    """All prefill and all decode-step samples of a cell, as the fixture wrote them."""
    p, d = TIMES[world, prompt][algorithm]
    parts = [phases(p, d)] + ([phases(p, d, 1.1)] if (world, prompt) == (2, 128) and algorithm != "tp" else [])
    return ([x for pre, _ in parts for x in pre], [t for _, dec in parts for it in dec for t in it])


def test_summary_pools_the_phases_over_repeats(campaign):
    s = metrics.summarize(load(campaign), "infer")
    assert len(s) == 12 and s.attrs["kind"] == "infer"
    for _, r in s.iterrows():
        pre, steps = pooled(r["world_size"], r["prompt_len"], r["algorithm"])
        assert r["ttft_s"] == pytest.approx(statistics.median(pre))
        assert r["tpot_s"] == pytest.approx(statistics.median(steps))
        assert r["ttft_p10_s"] <= r["ttft_s"] <= r["ttft_p90_s"]
        assert r["decode_tokens_per_s"] == pytest.approx(len(steps) / sum(steps))
        assert r["prefill_tokens_per_s"] == pytest.approx(r["prompt_len"] / r["ttft_s"])
        assert r["kv_cache_bytes"] == 1024 * r["prompt_len"] // r["world_size"]
        assert r["n_repeats"] == (2 if (r["world_size"], r["prompt_len"]) == (2, 128) and r["algorithm"] != "tp"
                                  else 1)


@pytest.mark.parametrize("phase", ["TTFT", "TPOT"])
@pytest.mark.parametrize("baseline", ["ring", "tp"])
def test_speedups_over_ring_and_tp_are_ratios_of_hand_computed_medians(campaign, phase, baseline):
    sp = metrics.speedup(metrics.summarize(load(campaign), "infer"), baseline, phase)
    assert sp.attrs["phase"] == phase and len(sp) == 12
    for _, r in sp.iterrows():
        w, p, a = r["world_size"], r["prompt_len"], r["algorithm"]
        i = 0 if phase == "TTFT" else 1
        want = statistics.median(pooled(w, p, baseline)[i]) / statistics.median(pooled(w, p, a)[i])
        assert r["speedup"] == pytest.approx(want)
        assert r["speedup_lo"] <= r["speedup"] <= r["speedup_hi"]
        # one record each, timed side by side: paired; a repeat (ring's and ringx1's at (2, 128)) pools the samples
        # and is not
        repeated = (w, p) == (2, 128) and bool({a, baseline} & {"ring", "ringx1"})
        assert r["paired"] == (not repeated)
    # the hand-made cells: ringx1's decode is 1.25x and 2x ring's at 1 and 2 ranks, clearly outside noise
    x1 = sp[(sp["algorithm"] == "ringx1") & (sp["prompt_len"] == 64)].set_index("world_size")
    if phase == "TPOT" and baseline == "ring":
        assert x1.loc[1, "speedup"] == pytest.approx(0.0020 / 0.0016) and x1.loc[2, "speedup"] == pytest.approx(2.0)
        assert not x1["within_noise"].any()


def test_one_new_token_has_no_tpot(tmp_path):
    store = Store(tmp_path, "one")
    store.new_run({"command": ["test"]})
    write(store, [infer_rec(store, a, 1, 64, [0.01, 0.011, 0.012], [[], [], []], "g", new_tokens=1)
                  for a in ("ring", "tp")])
    s = metrics.summarize(load(store.dir), "infer")
    assert s["tpot_s"].isna().all() and s["decode_tokens_per_s"].isna().all()
    sp = metrics.speedup(s, "ring", "TPOT")
    assert sp["speedup"].isna().all() and not sp["within_noise"].any()
    t = infer.table(s)
    tpot = t.columns.index("TPOT ms")
    assert all(r[tpot] == "\u2013" for r in t.rows) and "no decode step" in t.caption
    with pytest.raises(figures.NoData):
        infer.tpot_vs_ranks(s)


def test_table_cells_and_latex(campaign):
    t = infer.table(metrics.summarize(load(campaign), "infer"))
    assert t.columns == ["ranks", "prompt", "algorithm", "TTFT ms", "TTFT x ring", "TTFT x tp", "TPOT ms",
                         "TPOT x ring", "TPOT x tp", "KV cache"]
    assert len(t.rows) == 12 and [r[2] for r in t.rows[:3]] == ["ring", "ringx1", "tp"]  # tp after the algorithms
    assert "Every row: tiny, 1 sequence, 4 new tokens, float32." in t.caption
    row = {(r[0], r[1], r[2]): r for r in t.rows}
    ring = row[1, 64, "ring"]
    assert ring[t.columns.index("TTFT x ring")] == "" and ring[t.columns.index("TTFT ms")].startswith("10.0 [")
    x1 = row[2, 64, "ringx1"][t.columns.index("TPOT x ring")]
    assert x1.startswith("2.00x [") and not x1.startswith("~")
    assert row[1, 64, "tp"][t.columns.index("TTFT x ring")].startswith("1.25x [")  # 0.010 / 0.008
    assert row[1, 128, "ringx1"][t.columns.index("KV cache")] == "128.0 KiB"
    from ringx_analysis import tables

    latex = tables.render(t, "latex")
    assert r"\begin{table*}" in latex and r"\label{tab:serving}" in latex
    assert r"$2.00\times_{" in latex and r"$10.0_{" in latex


def test_figures_ttft_against_prompt_and_tpot_against_ranks(campaign, tmp_path):
    s = metrics.summarize(load(campaign), "infer")
    fig = infer.ttft_vs_prompt(s)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["tiny, 1 rank", "tiny, 2 ranks"]
    assert fig.axes[0].get_yscale() == "log" and "time to first token (ms)" in (
        fig.axes[0].get_ylabel() + (fig._supylabel.get_text() if fig._supylabel else ""))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ring", "ringx1", "tp"]
    figures.plt.close(fig)
    fig = infer.tpot_vs_ranks(s)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["tiny, 64-token prompt", "tiny, 128-token prompt"]
    figures.plt.close(fig)
    with pytest.raises(figures.NoData, match="two or more prompt lengths"):
        infer.ttft_vs_prompt(s[s["prompt_len"] == 64])
    out = run_cli("figures", str(campaign), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for name in ("infer-ttft", "infer-tpot"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 5000


def _compiles(directory: Path) -> None:
    if shutil.which("pdflatex"):  # where TeX is installed: the document compiles
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                             cwd=directory, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:]


def test_report_has_a_serving_section(campaign, tmp_path):
    html, md, tex = (p.read_text() for p in report.write_formats(str(campaign), tmp_path, ("html", "md", "latex"))
                     .values())
    assert "<h2>Results</h2>" not in html  # nothing but serving: no empty section
    assert "<h2>Serving: prefill and decode</h2>" in html
    for head in ("Serving: time to first token against prompt length", "Serving: time per output token against ranks",
                 "Table 1. Serving: time to first token and per output token"):
        assert head in html and head in md
    assert "<b>Figure 2.</b>" in html and "- prompt_len: 64, 128" in md
    assert r"\subsection*{Serving: prefill and decode}" in tex and r"\label{tab:serving}" in tex
    assert r"\includegraphics[width=\linewidth]{figures/infer-ttft.pdf}" in tex
    _compiles(tmp_path)


def test_mixed_campaign_reports_attention_then_serving(campaign, tmp_path):
    """Attention records (masked: one table per mask) and infer records in one campaign."""
    from tests.test_analysis_permask import attention

    store = Store(tmp_path / "runs", "mixed")
    store.new_run({"command": ["test"]})
    for spec in ("causal", "window:128"):
        for world in (1, 2):
            write(store, [attention(store, a, world, 1024, spec, 0.01 / x) for a, x in (("ring", 1), ("ringx1", 2))])
    for (world, prompt), cands in TIMES.items():
        write(store, [infer_rec(store, a, world, prompt, *phases(p, d), f"g{world}{prompt}")
                      for a, (p, d) in cands.items()])
    out = tmp_path / "report"
    md, tex = (p.read_text() for p in report.write_formats(str(store.dir), out, ("md", "latex")).values())
    i_results, i_serving = md.index("## Results"), md.index("## Serving: prefill and decode")
    assert i_results < md.index("### Table 1. Speedup over ring: mask causal") < i_serving
    assert md.index("### Table 2. Speedup over ring: mask window:128") < i_serving
    assert md.index("### Table 5. Serving: time to first token and per output token") > i_serving  # after 2 spreads
    assert md.index("Serving: time to first token against prompt length") > i_serving
    figs = re.findall(r"\*Figure (\d+)\.", md)
    assert figs == [str(i) for i in range(1, len(figs) + 1)]  # numbered through the page
    assert tex.index(r"\subsection*{Results}") < tex.index(r"\label{tab:speedup-window-128}") < tex.index(
        r"\subsection*{Serving: prefill and decode}") < tex.index(r"\label{tab:serving}")
    _compiles(out)


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """A real bench infer campaign: the tiny model at 1 and 2 CPU ranks, two short prompts, ring, ringx1 and tp."""

    out = tmp_path_factory.mktemp("real")
    for n in (1, 2):
        proc = launch(n, ["-m", "ringx_bench", "infer", "--preset", "tiny", "--prompt-len", "32,64",
                              "--new-tokens", "3",
                              "--dtype", "float32", "--algorithms", "ring,ringx1,tp", "--warmup", "1", "--iters", "3",
                              "--out", str(out), "--campaign", "real", "--quiet"], timeout=600)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "real"


def test_real_campaign_agrees_with_bench_summary_and_reports(real, tmp_path):
    from ringx_drivers.summary import infer_tables

    df = load(real)
    s = metrics.summarize(df, "infer")
    assert len(s) == 2 * 2 * 3
    recs = [r for r in Store.at(real).records() if r["kind"] == "infer"]
    for _, r in s.iterrows():  # one record per cell: the summary's medians are the record's
        rec = next(x for x in recs if (x["world_size"], x["prompt_len"], x["algorithm"]) ==
                   (r["world_size"], r["prompt_len"], r["algorithm"]))
        assert r["ttft_s"] == pytest.approx(rec["ttft_s"]) and r["tpot_s"] == pytest.approx(rec["tpot_s"])
    text = infer_tables(recs)
    t = infer.table(s)
    cells = [c for row in t.rows for c, col in zip(row, t.columns) if " x " in col and c not in ("", "\u2013")]
    assert len(cells) == 2 * 2 * 3 * 2 * 2 - 2 * 2 * 2 * 2  # every candidate over each other baseline, per phase
    for c in cells:  # the same speedups and intervals as bench summary's (one bootstrap, ringx_suite/stats.py)
        assert c in text, (c, text)
    html = Path(report.write(str(real), str(tmp_path), "html")).read_text()
    assert "<h2>Serving: prefill and decode</h2>" in html and html.count("data:image/png;base64,") == 2
