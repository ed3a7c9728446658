"""The reliability probes (tests/reliability_probe.py) under mpiexec: every fault and hostile input meets its
bound (seconds to stop, records intact, the message shown). They run once, several at a time (~2 min on 2
cores), and each is reported as its own test."""

from __future__ import annotations

import pytest

from tests import reliability_probe as rp


@pytest.fixture(scope="module")
def results() -> dict[str, rp.Result]:
    return {r.name: r for r in rp.run_all(list(rp.PROBES))}


@pytest.mark.parametrize("name", list(rp.PROBES))
def test_probe_meets_its_bound(results, name):
    r = results[name]
    assert r.ok, f"{r.fault} (bound: {r.bound}): " + "; ".join(r.problems)
    assert r.lost == 0
