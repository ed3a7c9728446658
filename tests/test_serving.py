"""Serving (bench.models.serving, ringx.decode): greedy generation at 1-4 ranks for every algorithm and tp identical to
the unsharded float64 model, every token's logits within 1e-9; decode attention exact on caches of unequal
lengths; bad input refused alike on every rank; the balanced-cache rule; the metrics."""

from __future__ import annotations

import os

import pytest

import ringx
from ringx_drivers.models import serving
from tests.mpi import run_cases
from tests.serving_cases import RANKS_PER_NODE, TOL, WORLDS, decode_cases, serve_cases

SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))


@pytest.fixture(scope="session")
def launched(tmp_path_factory):
    """world size -> case id -> per-rank rows (one mpiexec launch per world size)."""
    cache: dict[int, dict[str, list[dict]]] = {}

    def get(world: int) -> dict[str, list[dict]]:
        if world not in cache:
            env = {"RINGX_RANKS_PER_NODE": str(RANKS_PER_NODE.get(world, ""))}
            cache[world] = run_cases(world, "tests/workers/serving_cases.py", tmp_path_factory.mktemp(f"serve{world}"),
                                     SEED, env=env)
        return cache[world]

    return get


SERVE = [c for w in WORLDS for c in serve_cases(w)]
DECODE = [c for w in WORLDS for c in decode_cases(w)]


def _rows(launched, case) -> list[dict]:
    rows = launched(case.world)[case.id]
    assert sorted(r["rank"] for r in rows) == list(range(case.world)), "a rank reported nothing"
    return rows


@pytest.mark.parametrize("case", SERVE, ids=[c.id for c in SERVE])
def test_generation_matches_the_unsharded_float64_model(launched, case):
    rows = _rows(launched, case)
    if case.expect_error:
        msgs = {r["error"] for r in rows}
        assert len(msgs) == 1, f"ranks raised different errors: {msgs}"
        (msg,) = msgs
        assert case.expect_error in msg and "\n" not in msg
        return
    for r in rows:
        assert not r["error"], f"rank {r['rank']}: {r['error']}"
        assert r["ids_equal"], f"rank {r['rank']}: ids differ from the unsharded model (seed {SEED})"
        assert r["steps"] == case.new
        assert r["logits_error"] <= TOL, f"rank {r['rank']}: logits error {r['logits_error']:.2e} (seed {SEED})"
    if case.world > 1:
        moved = "model_bytes" if serving.baseline(case.algorithm) else "attention_bytes"
        assert all(r[moved] > 0 for r in rows), "nothing moved between ranks"
    assert len({tuple(r["ids"]) for r in rows}) == 1


@pytest.mark.parametrize("case", DECODE, ids=[c.id for c in DECODE])
def test_decode_attention_is_exact_and_refuses_bad_input_everywhere(launched, case):
    rows = _rows(launched, case)
    sched = ringx.decode.schedule(case.algorithm)
    for r in rows:
        assert r["out_error"] <= TOL and r["lse_error"] <= TOL, f"rank {r['rank']}: {r['out_error']:.2e}"
        assert r["bad_error"].count("\n") == 0 and "head_dim" in r["bad_error"]
        if case.world == 1:
            assert r["sent"] == 0 and r["ops"] == []
    assert len({r["bad_error"] for r in rows}) == 1
    assert len({r["out_sum"] for r in rows}) == 1, "ranks hold different outputs"  # bit for bit
    if case.world > 1:
        want = {"ring": {"send", "recv"}, "allreduce": {"all_reduce"}, "allgather": {"all_gather"}}.get(sched)
        ops = set(rows[0]["ops"])
        assert want is None or ops == want, ops
        if sched == "heads":
            assert "all_gather" in ops


def test_every_algorithm_has_a_decode_schedule_and_tp_is_offered():
    assert set(ringx.decode.SCHEDULES) == set(ringx.ALGORITHMS)
    assert serving.names() == [*ringx.ALGORITHMS, "tp", "tp{T}pp{S}"]
    assert serving.baseline("tp") and serving.baseline("tp8pp2") and not serving.baseline("ring")
    assert not serving.baseline("tp0pp2") and not serving.baseline("tp2pp")


def test_the_new_tokens_go_to_the_shortest_shard_lowest_on_ties():
    assert ringx.decode.owner([5, 5, 5]) == 0
    assert ringx.decode.owner([6, 5, 5]) == 1
    lengths, picks = [4, 4, 4], []
    for _ in range(6):
        at = ringx.decode.owner(lengths)
        picks.append(at)
        lengths[at] += 1
    assert picks == [0, 1, 2, 0, 1, 2] and max(lengths) - min(lengths) <= 1


def test_metrics_from_phases():
    m = serving.metrics(2.0, [0.1, 0.3, 0.2], batch=4, prompt_len=1000, kv_cache_bytes=[10, 30, 20],
                        generated=[1, 2, 3, 4])
    assert m == {"ttft_s": 2.0, "tpot_s": 0.2, "prefill_tokens_per_s": 2000.0,
                 "decode_tokens_per_s": pytest.approx(12 / 0.6), "kv_cache_bytes": 30, "generated": [1, 2, 3, 4]}
    one = serving.metrics(1.0, [], batch=1, prompt_len=8, kv_cache_bytes=[5], generated=[7])
    assert one["tpot_s"] is None and one["decode_tokens_per_s"] is None
    with pytest.raises(ValueError):
        serving.metrics(0.0, [], batch=1, prompt_len=8, kv_cache_bytes=[5], generated=[7])


def test_problems_are_one_line_and_name_the_fix():
    from ringx_drivers import models

    tiny = models.preset("tiny")
    assert "multiple of 8" in serving.problem(tiny, "zigzag", 50, 4, 4)
    assert "multiple of 8" in serving.problem(tiny, "usp", 52, 4, 4, 2)
    assert serving.problem(tiny, "stripe", 51, 4, 3) == ""
    assert "--new-tokens" in serving.problem(tiny, "ring", 48, 0, 2)
    assert "query heads" in serving.tp_problem(models.preset("tiny", heads=6, kv_heads=2), 4)
    assert "serves decoders" in serving.problem(models.preset("tiny-vit"), "ring", 48, 4, 1)
