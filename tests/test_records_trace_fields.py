"""The attention record's measured call peak and overlap fields: defined once (ringx_suite/records.py), validated,
documented (docs/records.md), summarised by analysis, and drawn by the memory figure in place of the RSS."""

from __future__ import annotations

from pathlib import Path

import pytest

pd = pytest.importorskip("pandas")

from ringx_analysis import figures, metrics  # noqa: E402
from ringx_suite.records import KINDS, validate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("call_peak_bytes_per_rank", "overlap_fraction", "overlap_fraction_per_rank")


def rec(algorithm, world, **extra):
    return {"kind": "attention", "status": "ok", "algorithm": algorithm, "family": "x", "world_size": world,
            "nodes": 1, "seq": 1024, "seq_per_rank": 1024 // world, "scaling": "strong", "batch": 1, "heads": 8,
            "kv_heads": 8, "head_dim": 64, "dtype": "float32", "causal": True, "mode": "fwd+bwd",
            "samples_s": [1.0] * 3, "flops": 1e9, "peak_tflops": None, "mem_peak_bytes_per_rank": [400e6] * world,
            "bytes_sent_per_rank": [10] * world, **extra}


def test_fields_are_defined_once_and_documented():
    names = [f.name for f in KINDS["attention"]]
    text = (ROOT / "docs" / "records.md").read_text()
    for name in FIELDS:
        assert names.count(name) == 1
        assert f"| `{name}` |" in text


def test_store_validation_types_the_new_fields():
    good = {**{f.name: None for f in KINDS["attention"]}, "kind": "attention"}
    probs = validate({**good, "schema": 1, "status": "failed", "call_peak_bytes_per_rank": "big"})
    assert "call_peak_bytes_per_rank has type str" in probs
    assert not any(p.startswith(("overlap_fraction ", "call_peak")) for p in
                   validate({**good, "schema": 1, "status": "failed", "overlap_fraction": 0.5,
                             "overlap_fraction_per_rank": [0.5, 0.4], "call_peak_bytes_per_rank": [1, 2]}))


def test_summary_and_memory_figure_use_the_call_peak_when_measured():
    df = pd.DataFrame([rec("ring", 2, call_peak_bytes_per_rank=[3 << 20, 4 << 20], overlap_fraction=0.2),
                       rec("ring", 2, call_peak_bytes_per_rank=[3 << 20, 4 << 20], overlap_fraction=0.4),
                       rec("ringx3", 2, call_peak_bytes_per_rank=[9 << 20, 9 << 20]),
                       rec("ring", 4, call_peak_bytes_per_rank=[2 << 20] * 4),
                       rec("ringx3", 4, call_peak_bytes_per_rank=[17 << 20] * 4)])
    s = metrics.summarize(df).set_index(["algorithm", "world_size"])
    assert s.loc[("ring", 2), "call_peak_bytes"] == 4 << 20 and s.loc[("ring", 2), "mem_peak_bytes"] == 400e6
    assert s.loc[("ring", 2), "overlap_fraction"] == pytest.approx(0.3)
    assert pd.isna(s.loc[("ringx3", 2), "overlap_fraction"])
    summary = metrics.summarize(df)
    assert figures.memory_column(summary) == "call_peak_bytes"
    fig = figures.memory_per_rank(summary)
    ys = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].get_lines()}
    assert ys["ring"] == [4.0, 2.0] and ys["ringx3"] == [9.0, 17.0]  # MiB: O(S/P) falls, O(S) does not
    assert "allocated by one call" in fig.axes[0].get_ylabel()
    old = metrics.summarize(pd.DataFrame([rec("ring", 2), rec("ring", 4)]))  # older records: the RSS as before
    assert figures.memory_column(old) == "mem_peak_bytes"
