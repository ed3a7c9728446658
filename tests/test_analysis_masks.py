"""Analysis grouped by mask: records of one campaign with causal, window and document masks are compared,
drawn and tabulated per mask, never pooled."""

from __future__ import annotations

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from ringx_analysis import figures, kinds, metrics, report, tables  # noqa: E402
from ringx_analysis.records import load  # noqa: E402
from ringx_suite import masks  # noqa: E402
from ringx_suite.stats import stat_fields  # noqa: E402
from ringx_suite.store import Store  # noqa: E402

SPECS = {"causal": 1.0, "window:64": 0.25, "docs:lognormal:128": 0.5}  # ring's time relative to causal's
SPEEDUP = {"causal": 2.0, "window:64": 1.0, "docs:lognormal:128": 4.0}  # ringx4's speedup over ring, per mask


def record(store: Store, algorithm: str, world: int, seq: int, spec: str, t: float) -> dict:
    m = masks.parse(spec, seq, seed=world)
    samples = [t * (1 + 0.01 * i) for i in range(5)]
    return {"schema": 1, "kind": "attention", "campaign": store.campaign, "run_id": store.run_id,
            "key": f"{algorithm}-{world}-{seq}-{spec}", "status": "ok", "error": None,
            "written_at": "2026-12-01T00:00:00", "world_size": world, "nodes": 1, "warmup": 1, "iters": 5,
            "algorithm": algorithm, "family": "ring", "seq": seq, "seq_per_rank": seq // world, "scaling": "strong",
            "batch": 1, "heads": 8, "kv_heads": 8, "head_dim": 64, "dtype": "float32", "causal": True,
            "mode": "fwd+bwd", "repeat": 0, "kernel": "torch-cpu", "layout": "contiguous", "device": "cpu",
            "flops": 1e9, "flops_convention": "ringx", "tflops_per_rank": 1e-3, "samples_s": samples,
            "bytes_sent_per_rank": [10] * world, "bytes_received_per_rank": [10] * world,
            "comm_calls_per_rank": [1] * world, "mem_peak_bytes_per_rank": [100] * world,
            **masks.record_fields(spec, m, world), **stat_fields(samples)}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("runs"), "masked")
    store.new_run({"command": ["test"]})
    for world in (2, 4):
        for seq in (1024, 2048):
            for spec, rel in SPECS.items():
                base = 0.01 * rel * seq / 1024 / world
                store.append(record(store, "ring", world, seq, spec, base))
                store.append(record(store, "ringx4", world, seq, spec, base / SPEEDUP[spec]))
    return store.dir


def test_records_carry_the_mask_and_compare_per_mask(campaign):
    df = load(campaign)
    assert set(kinds.mask_names(df)) == set(SPECS)  # drawn documents named by their distribution
    docs = df[df["mask_spec"] == "docs:lognormal:128"]
    assert docs["mask"].str.startswith("docs").all() and docs["mask_lengths"].map(sum).eq(docs["seq"]).all()
    s = metrics.summarize(df)
    assert len(s) == 2 * 2 * 2 * len(SPECS)  # not pooled: one row per mask too
    sp = metrics.speedup(s)
    got = sp[sp["algorithm"] == "ringx4"].groupby("mask")["speedup"]
    for spec, want in SPEEDUP.items():
        assert got.get_group(spec).tolist() == pytest.approx([want] * 4)


def test_older_records_without_a_mask_read_as_causal(campaign):
    df = load(campaign)
    old = df[df["mask"] == "causal"].drop(columns=[c for c in df if c.startswith("mask")])
    s = metrics.summarize(old)
    assert set(s["mask"]) == {"causal"} and len(s) == 8


@pytest.mark.parametrize("name", ["speedup", "speedup-ranks", "scaling"])
def test_figures_have_panels_per_mask(campaign, tmp_path, name):
    s = metrics.summarize(load(campaign))
    fig = figures.FIGURES[name](s)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    for spec in SPECS:
        assert sum(t.endswith(spec) for t in titles) == 2, titles  # two rank counts / two lengths per mask
    paths = figures.save(fig, tmp_path, name, ("png",))
    assert paths[0].stat().st_size > 1000


def test_tables_and_latex_have_a_mask_column(campaign):
    s = metrics.summarize(load(campaign))
    t = tables.speedup_table(s)
    assert "mask" in t.columns and len(t.rows) == 2 * 2 * len(SPECS)
    col = t.columns.index("mask")
    assert {r[col] for r in t.rows} == set(SPECS)
    latex = tables.render(t, "latex")
    for spec in SPECS:
        assert spec.replace("_", r"\_") in latex
    md = tables.render(t, "markdown")
    row = next(line for line in md.splitlines() if "| docs:lognormal:128 |" in line and line.startswith("| 2 |"))
    assert "4.00x" in row


def test_report_names_each_mask(campaign, tmp_path):
    path = report.write(str(campaign), str(tmp_path / "report"), "md", "ring")
    text = open(path).read()
    assert all(spec in text for spec in SPECS)
