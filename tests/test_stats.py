"""Speedup intervals and the 'within noise' verdict (ringx_suite/stats.py), and the one table writer."""

from __future__ import annotations

import numpy as np
import pytest

from ringx_suite import stats
from ringx_suite.tables import Table, render


def test_identical_work_is_within_noise_and_a_real_gap_is_not():
    rng = np.random.default_rng(1)
    a = list(1.0 + 0.05 * rng.standard_normal(30))
    b = list(1.0 + 0.05 * rng.standard_normal(30))
    same = stats.speedup(a, b)
    assert same.within_noise and same.verdict == "within noise" and same.text().startswith("~")
    faster = stats.speedup(a, [x / 1.3 for x in b])
    assert not faster.within_noise and faster.verdict == "faster" and faster.lo > 1.1
    slower = stats.speedup(a, [x * 1.3 for x in b])
    assert slower.verdict == "slower" and slower.hi < 0.9


def test_pairing_removes_drift_shared_by_both_candidates():
    # the machine drifts by 2x over the run; the candidate is 5% faster in every round
    drift = np.linspace(1.0, 2.0, 40)
    base, cand = list(drift), list(drift / 1.05)
    paired = stats.speedup(base, cand, paired=True)
    unpaired = stats.speedup(base, cand, paired=False)
    assert paired.value == pytest.approx(1.05)
    assert paired.lo == pytest.approx(1.05) and paired.hi == pytest.approx(1.05)  # every round agrees
    assert unpaired.within_noise  # the drift swamps the 5% when rounds are not paired


def test_records_pair_only_within_one_timing_group():
    base = [{"samples_s": [1.0, 2.0, 3.0], "timing_group": "g1"}]
    same = [{"samples_s": [0.9, 1.8, 2.7], "timing_group": "g1"}]
    other = [{"samples_s": [0.9, 1.8, 2.7], "timing_group": "g2"}]
    assert stats.records_speedup(base, same).paired and not stats.records_speedup(base, other).paired
    assert not stats.records_speedup(base + base, same).paired  # repeats pool, unpaired


def test_one_sample_says_nothing_about_noise():
    sp = stats.speedup([1.0], [0.5])
    assert sp.value == 2.0 and sp.within_noise


def test_table_writer_aligns_numbers_and_labels_latex():
    t = Table(["algorithm", "ms"], [["ring", 1.5], ["ringx4", 12.25]], caption="Times 50%", label="tab:x")
    md = render(t, "markdown")
    assert md.splitlines()[1] == "|---|---:|" and "| ringx4 | 12.25 |" in md
    tex = render(t, "latex")
    assert r"\begin{tabular}{lr}" in tex and r"\label{tab:x}" in tex and r"\toprule" in tex
    assert r"Times 50\%" in tex
    assert render(t, "csv").splitlines() == ["algorithm,ms", "ring,1.5", "ringx4,12.25"]
    with pytest.raises(ValueError):
        render(t, "html")
