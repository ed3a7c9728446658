"""The report's section against the field's implementations (analysis/field.py): drawn from a campaign with peers
(results/peers-cpu), every outsider against ring and the fastest of ours with intervals, an implausible record's
cell marked; absent from a campaign of ours only."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis import field, metrics, report
from analysis.records import load

PEERS = Path(__file__).resolve().parent.parent / "results" / "peers-cpu"


@pytest.fixture(scope="module")
def summary():
    return metrics.summarize(load(PEERS))


def test_every_outsider_is_compared_with_ring_and_the_fastest_of_ours(summary):
    t = field.table(summary)
    names = {r[t.columns.index("implementation")] for r in t.rows}
    assert names == {"rfa-ring", "rfa-stripe", "rfa-zigzag", "tcp-allgather", "tcp-ring"}
    for r in t.rows:
        assert "x [" in r[t.columns.index("ring over it")] and "x [" in r[t.columns.index("fastest of ours over it")]
    d = field.rows(summary)
    assert (d.loc[d["role"] == "fastest of ours", "speedup"].to_numpy() + 1e-12
            >= d.loc[d["role"] == "ring", "speedup"].to_numpy()).all()


def test_an_implausible_record_is_marked(summary):
    odd = summary.assign(implausible=summary["algorithm"] == "tcp-ring")
    t = field.table(odd)
    col = t.columns.index("ring over it")
    marked = {r[t.columns.index("implementation")] for r in t.rows if r[col].endswith("!")}
    assert marked == {"tcp-ring"} and "implausible" in t.caption


def test_the_section_is_drawn_only_with_outsiders(summary, tmp_path):
    figs, tabs, skipped = report._field(summary, tmp_path, ("png",))
    assert [f[4] for f in figs] == [field.SECTION] and (tmp_path / "field.png").exists() and not skipped
    assert tabs[0][3] == field.SECTION
    ours = summary[~summary["family"].isin(field.OUTSIDE)]
    assert report._field(ours, tmp_path / "none", ("png",)) == ([], [], {})
