"""The cheap input check at 2-4 ranks: its maximum (recursive doubling, P a power of two or not), the gloo twin a
group that moves no CPU tensors uses, and a wrong input on one rank at a later call (a sequence length, a dtype,
sinks): the same one-line error on every rank at that call, and the group healthy after
(tests/workers/host_check.py)."""

from __future__ import annotations

import json
import os

import pytest

from tests.mpi import run_mpi

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="module", params=[2, 3, 4])
def ranks(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"host{request.param}")
    proc = run_mpi(request.param, "tests/workers/host_check.py", str(out), str(SEED), timeout=180)
    assert proc.returncode == 0, f"seed {SEED}:\n{proc.stdout}\n{proc.stderr}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(request.param)]


def test_all_max_gives_every_rank_the_maximum(ranks):
    P = len(ranks)
    for res in ranks:
        assert res["max"] == [P - 1, 0, 7, 10 * (P - 1) + 3]
        assert res["twin_max"] == [0, P - 1] and res["twin_kept"]


def test_the_check_travels_on_cpu_tensors_over_the_group_or_its_gloo_twin(ranks):
    assert ranks[0]["picks"] == {"gloo": ["group", "cpu"], "nccl": ["twin", "cpu"], "unknown": ["group", "cpu"]}


def test_a_wrong_input_at_a_later_call_raises_the_same_error_on_every_rank(ranks):
    P = len(ranks)
    for j, want in enumerate(ranks[0]["late"]):
        for r, res in enumerate(ranks):
            got = res["late"][j]
            assert got["raised"] is not None, f"seed {SEED}, rank {r} accepted a wrong {got['kind']}"
            assert got["raised"] == want["raised"], f"seed {SEED}: ranks raised differently"
            at, msg = got["raised"]
            assert at == got["at"] and "\n" not in msg, msg
            if got["kind"] == "sinks":  # a problem of the last rank's own input, told to every rank
                assert f"rejected the input (rank {P - 1}: sinks must hold one logit per query head" in msg, msg
            else:
                assert f"rank {P - 1} has" in msg, msg
                assert ("q shape" if got["kind"] == "seq" else "dtype") + " differs across ranks" in msg
    assert all(res["healthy_after"] for res in ranks)
