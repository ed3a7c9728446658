"""Communication counted at the dispatcher (ringx.traffic) equals ringx's own ledger for every built-in algorithm,
forward and backward, under full, causal, window and document masks, MHA and GQA, at 2 and 4 ranks and 2 x 2
simulated nodes; and torch.distributed's own calls (collectives, batched point-to-point, functional collectives)
are counted by the ledger's conventions. This is what lets the harness measure any implementation's bytes."""

from __future__ import annotations

import os

import pytest

from ringx import ALGORITHMS
from tests.mpi import matrix_launcher

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
LAUNCHES = ((2, 0), (4, 0), (4, 2))


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    return matrix_launcher(tmp_path_factory, "tests/workers/traffic_cases.py", SEED, extras="never")


@pytest.mark.parametrize("world,rpn", LAUNCHES)
def test_measured_bytes_equal_the_ledger_for_every_algorithm(launched, world, rpn):
    by_case, _ = launched(world, rpn)
    assert {rows[0]["algorithm"] for c, rows in by_case.items() if c != "raw"} == set(ALGORITHMS)
    assert "raw" in by_case
    for case, rows in by_case.items():
        assert len(rows) == world
        for row in rows:
            assert row["unknown"] == [], f"{case} rank {row['rank']}: not counted: {row['unknown']}"
            assert row["traffic"] == row["ledger"], f"{case} rank {row['rank']}"
    moved = [r for c, rows in by_case.items() if c != "raw" for r in rows if r["traffic"]]
    assert moved, "some algorithm moved something"
