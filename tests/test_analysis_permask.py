"""Per-mask analysis of a masked campaign: the report's tables (HTML, Markdown, LaTeX) come one per mask with the
right records' values, figures get a panel per mask titled with its text, the step joins attention of the same
mask only; campaigns of causal and non-causal attention alone keep the tables they had (committed results/)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from ringx_analysis import figures, metrics, report, step, tables  # noqa: E402
from ringx_analysis.records import load  # noqa: E402
from ringx_suite import masks  # noqa: E402
from ringx_suite.records import validate  # noqa: E402
from ringx_suite.stats import stat_fields  # noqa: E402
from ringx_suite.store import Store  # noqa: E402
from tests.cli import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# ring's median time per mask (relative), and each algorithm's speedup over ring under that mask: chosen so that a
# value from the wrong mask's records gives a different number.
RING = {"causal": 1.0, "window:256": 0.3, "docs:lognormal:256": 0.45}
SPEEDUP = {"causal": {"zigzag": 1.25, "ringx4": 2.0}, "window:256": {"zigzag": 0.8, "ringx4": 1.6},
           "docs:lognormal:256": {"zigzag": 1.1, "ringx4": 3.0}}
WORLDS, SEQS = (2, 4), (1024, 2048)


def attention(store: Store, algorithm: str, world: int, seq: int, spec: str, t: float, **shape) -> dict:
    """An ok attention record under ``spec`` (drawn documents: one draw per configuration, as bench run does) whose
    samples have median ``t``."""
    m = masks.parse(spec, seq, seed=world * seq)
    samples = [t * f for f in (0.98, 0.99, 1.0, 1.01, 1.02)]
    s = {"batch": 1, "heads": 8, "kv_heads": 8, "head_dim": 64, **shape}
    return {"schema": 1, "kind": "attention", "campaign": store.campaign, "run_id": store.run_id,
            "key": f"{algorithm}-{world}-{seq}-{spec}-{sorted(shape.items())}", "status": "ok", "error": None,
            "written_at": "2026-12-01T00:00:00", "world_size": world, "nodes": 1, "warmup": 1, "iters": 5,
            "algorithm": algorithm, "family": "ring", "seq": seq, "seq_per_rank": seq // world, "scaling": "strong",
            **s, "dtype": "float32", "causal": True, "mode": "fwd+bwd", "repeat": 0, "kernel": "torch-cpu",
            "layout": "contiguous", "device": "cpu", "flops": 1e9, "flops_convention": "ringx",
            "tflops_per_rank": 1e-3, "samples_s": samples, "timing_group": f"g{world}{seq}{spec}",
            "bytes_sent_per_rank": [10] * world, "bytes_received_per_rank": [10] * world,
            "comm_calls_per_rank": [1] * world, "mem_peak_bytes_per_rank": [100] * world,
            **masks.record_fields(spec, m, world * seq), **stat_fields(samples)}


def model(store: Store, algorithm: str, world: int, seq: int, spec: str, t: float) -> dict:
    """An ok model record (the tiny decoder: attention shape 12 heads, 4 K/V heads, head dim 8) under ``spec``."""
    n = 5
    m = masks.parse(spec, seq, seed=world * seq)
    return {"schema": 1, "kind": "model", "campaign": store.campaign, "run_id": store.run_id,
            "key": f"m-{algorithm}-{world}-{seq}-{spec}", "status": "ok", "error": None,
            "written_at": "2026-12-01T00:00:00", "world_size": world, "nodes": 1, "warmup": 1, "iters": n,
            "samples_s": [t] * n, **stat_fields([t] * n), "algorithm": algorithm, "family": "ring", "model": "tiny",
            "arch": "decoder", "layers": 2, "d_model": 96, "heads": 12, "kv_heads": 4, "mlp": 256, "vocab": 256,
            "patch_dim": 48, "rope_theta": 5e5, "norm_eps": 1e-5, "seq": seq, "seq_per_rank": seq // world,
            "scaling": "strong", "batch": 1, "dtype": "float32", "causal": True, "checkpoint": False, "repeat": 0,
            "device": "cpu", "lr": 1e-5, "timing_group": f"m{spec}", "kernel": "torch-cpu", "layout": "contiguous",
            "forward_s": t / 4, "backward_s": t / 2, "grad_allreduce_s": t / 8, "optimizer_s": t / 8,
            "phase_samples_s": {"forward": [t / 4] * n, "backward": [t / 2] * n, "grad_allreduce": [t / 8] * n,
                                "optimizer": [t / 8] * n},
            "tokens_per_s_per_rank": seq / world / t, "params": 300000, "params_flops": 220000,
            "flops_per_token": 1e6, "flops": 1e6 * seq, "flops_convention": "x",
            "tflops_per_rank": 1e6 * seq / world / t / 1e12, "peak_tflops": None, "mfu": None,
            "bytes_sent_per_rank": [1] * world, "bytes_received_per_rank": [1] * world,
            "comm_calls_per_rank": [1] * world, "grad_allreduce_bytes": 0, "mem_peak_bytes_per_rank": [100] * world,
            **masks.record_fields(spec, m, world * seq)}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    store = Store(tmp_path_factory.mktemp("runs"), "permask")
    store.new_run({"command": ["test"]})
    for world in WORLDS:
        for seq in SEQS:
            for spec, rel in RING.items():
                base = 0.01 * rel * seq / 1024 / world
                recs = [attention(store, "ring", world, seq, spec, base)]
                recs += [attention(store, a, world, seq, spec, base / x) for a, x in SPEEDUP[spec].items()]
                for r in recs:
                    assert validate(r) == [], validate(r)
                    store.append(r)
    return store.dir


def test_two_masks_make_two_groups_of_their_own_records(campaign):
    df = load(campaign)
    s = metrics.summarize(df)
    parts = tables.by_mask(s)
    assert [m for m, _ in parts] == ["causal", "docs:lognormal:256", "window:256"]  # causal first, then by name
    for mask, part in parts:
        assert set(part["mask"]) == {mask} and part.attrs["mask"] == mask and part.attrs["kind"] == "attention"
        assert len(part) == len(WORLDS) * len(SEQS) * 3
        # ring's medians are those of this mask's records, and nothing else's
        ring = part[part["algorithm"] == "ring"].set_index(["world_size", "seq"])["median_s"]
        for (world, seq), got in ring.items():
            assert got == pytest.approx(0.01 * RING[mask] * seq / 1024 / world)
        sp = metrics.speedup(part)
        for a, want in SPEEDUP[mask].items():
            assert sp[sp["algorithm"] == a]["speedup"].tolist() == pytest.approx([want] * 4)
    only_two = s[s["mask"].isin(["causal", "window:256"])]
    assert [m for m, _ in tables.by_mask(only_two)] == ["causal", "window:256"]


def test_full_and_causal_alone_keep_one_table():
    s = pd.DataFrame({"mask": ["causal", "non-causal", "causal"], "algorithm": ["ring"] * 3})
    assert [m for m, _ in tables.by_mask(s)] == [None]
    assert [m for m, _ in tables.by_mask(s.drop(columns=["mask"]))] == [None]


def test_report_tables_are_grouped_by_mask_with_the_right_values(campaign):
    df = load(campaign)
    made, skipped = report.build_tables(df)
    assert not skipped
    speed = [(h, t) for h, t, _, kind in made if h.startswith("Speedup over ring")]
    assert [h for h, _ in speed] == [f"Speedup over ring: mask {m}" for m in ("causal", "docs:lognormal:256",
                                                                                "window:256")]
    for (_, t), mask in zip(speed, ("causal", "docs:lognormal:256", "window:256")):
        assert "mask" not in t.columns and t.caption.startswith(f"Mask {mask}. ")
        assert t.caption.count(mask) == 1  # said once, first, not again in "Every row"
        assert t.label == "tab:speedup-" + re.sub(r"[^0-9a-zA-Z]", "-", mask)
        assert len(t.rows) == len(WORLDS) * len(SEQS)
        for a, want in SPEEDUP[mask].items():
            col = t.columns.index(a)
            assert all(r[col].lstrip("~").startswith(f"{want:.2f}x") for r in t.rows), (mask, a, t.rows)
        latex = tables.render(t, "latex")
        assert r"\caption{Mask " + mask in latex and r"\label{" + t.label + "}" in latex
        assert latex.count(r"\begin{tabular}") == 1
    spread = [t for h, t, _, _ in made if h.startswith("Spread")]
    assert len(spread) == 3 and all(len({r[2] for r in t.rows}) == 1 for t in spread)  # one mask per table


def test_table_command_prints_one_latex_table_per_mask(campaign):
    out = run_cli("table", str(campaign), "--format", "latex")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(r"\begin{tabular}") == 3
    labels = re.findall(r"\\label\{([^}]*)\}", out.stdout)
    assert labels == ["tab:speedup-causal", "tab:speedup-docs-lognormal-256", "tab:speedup-window-256"]


def test_figures_have_a_panel_per_mask_titled_with_it(campaign, tmp_path):
    s = metrics.summarize(load(campaign))
    for name in ("speedup", "speedup-ranks", "scaling", "mfu", "memory"):
        fig = figures.FIGURES[name](s)
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert len(titles) == 3 * 2, (name, titles)  # three masks x two rank counts or lengths
        for spec in RING:
            assert sum(t.endswith(", " + spec) for t in titles) == 2, (name, titles)
        figures.plt.close(fig)
    fig = figures.fastest_map(s)
    assert sorted(ax.get_title() for ax in fig.axes if ax.get_title()) == sorted(RING)
    figures.plt.close(fig)
    out = run_cli("figures", str(campaign), "--out", str(tmp_path), "--format", "png,pdf")
    assert out.returncode == 0, out.stderr
    for name in ("speedup", "speedup-ranks", "scaling", "mfu", "fastest", "memory"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{name}.{ext}").stat().st_size > 5000, name


def test_step_joins_attention_of_the_same_mask_only(tmp_path):
    store = Store(tmp_path, "stepmask")
    store.new_run({"command": ["test"]})
    att = {"causal": 2.0, "window:256": 1.5}  # attention-only speedup of ringx4 per mask
    for spec, t in (("causal", 0.1), ("window:256", 0.05)):
        for r in (model(store, "ring", 2, 512, spec, t), model(store, "ringx4", 2, 512, spec, t / 1.2),
                  attention(store, "ring", 2, 512, spec, t / 2, heads=12, kv_heads=4, head_dim=8),
                  attention(store, "ringx4", 2, 512, spec, t / 2 / att[spec], heads=12, kv_heads=4, head_dim=8)):
            assert validate(r) == [], validate(r)
            store.append(r)
    df = load(store.dir)
    sp = step.with_attention(metrics.speedup(metrics.summarize(df, "model")), df)
    got = sp[sp["algorithm"] == "ringx4"].set_index("mask")
    assert len(got) == 2
    for spec, want in att.items():
        assert got.loc[spec, "speedup"] == pytest.approx(1.2)
        assert got.loc[spec, "attention_speedup"] == pytest.approx(want)
    made, _ = report.build_tables(df)
    heads = [h for h, *_ in made]
    assert "Training steps: mask causal" in heads and "Training steps: mask window:256" in heads


def test_report_html_md_and_latex_group_by_mask(campaign, tmp_path):
    md, html, tex = (p.read_text() for p in report.write_formats(campaign, tmp_path / "r", ("md", "html", "latex"))
                     .values())
    for mask in RING:
        assert f"Speedup over ring: mask {mask}" in md and f"Speedup over ring: mask {mask}" in html
        assert r"\label{tab:speedup-" + re.sub(r"[^0-9a-zA-Z]", "-", mask) + "}" in tex
    assert md.index("mask causal") < md.index("mask docs:lognormal:256") < md.index("mask window:256")
    assert "- mask: " in md  # the measured configurations name the masks
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    for pdf in re.findall(r"\\includegraphics\[[^]]*\]\{([^}]*)\}", tex):
        assert (tmp_path / "r" / pdf).stat().st_size > 5000
    if shutil.which("pdflatex"):  # where TeX is installed: the document compiles
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                             cwd=tmp_path / "r", capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:]
        assert (tmp_path / "r" / "report.pdf").stat().st_size > 10000


GOLDEN = Path(__file__).parent / "golden" / "analysis"  # written by the code before per-mask tables existed


@pytest.mark.parametrize("campaign_dir,fmt,golden", [("cpu-sample", "markdown", "cpu-sample.table.md"),
                                                     ("cpu-sample", "latex", "cpu-sample.table.tex"),
                                                     ("model-step", "markdown", "model-step.table.md")])
def test_committed_campaigns_keep_their_tables(campaign_dir, fmt, golden):
    out = run_cli("table", str(ROOT / "results" / campaign_dir), "--format", fmt)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (GOLDEN / golden).read_text()
