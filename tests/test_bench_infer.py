"""bench infer: the driver at 1, 2 and 4 ranks (4 as 2 simulated nodes) for every algorithm and tp in float64
with --check: its records carry the serving fields, and its generations equal the unsharded model's greedy
generation computed here, independently of the driver; bad input is refused in one line before any collective."""

from __future__ import annotations

import pytest

from ringx_drivers import models
from ringx_drivers.drivers.infer import CHECK_TOLERANCE
from ringx_drivers.models import serving
from ringx_suite.store import Store, validate
from tests.mpi import assert_refused_in_one_line, launch, refused_batch

PROMPT, NEW = 32, 3
FIELDS = ("ttft_s", "tpot_s", "prefill_tokens_per_s", "decode_tokens_per_s", "kv_cache_bytes",
          "kv_cache_bytes_per_rank", "generated", "prefill_samples_s", "decode_samples_s", "mem_peak_bytes_per_rank",
          "samples_s", "median_s")


def bench(nprocs: int, *args: str, timeout: float = 600, env: dict | None = None):
    return launch(nprocs, ["-m", "ringx_bench", "infer", *args], timeout=timeout, env=env)


@pytest.fixture(scope="module")
def reference() -> list[int]:
    """The unsharded float64 model's greedy ids of the first sequence (the driver's seed: the prompt length)."""
    cfg = models.preset("tiny")
    model = models.build(cfg, seed=PROMPT).double()
    prompt = serving.prompt_tokens(cfg, 1, PROMPT, seed=PROMPT)
    return [int(i) for i in serving.reference_generate(model, prompt, NEW).ids[0]]


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_algorithm_and_tp_generate_the_unsharded_models_tokens(tmp_path, world, reference):
    names = [n for n in serving.names() if "{" not in n]  # the tp{T}pp{S} pattern: tests/test_serving.py
    env = {"RINGX_RANKS_PER_NODE": "2"} if world == 4 else None
    proc = bench(world, "--preset", "tiny", "--prompt-len", str(PROMPT), "--new-tokens", str(NEW), "--dtype",
                 "float64", "--check", "--warmup", "0", "--iters", "2", "--algorithms", ",".join(names), "--out",
                 str(tmp_path), "--campaign", "c", "--tag", "t", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"[{len(names)}/{len(names)}] prompt={PROMPT}: ring TTFT" in proc.stdout  # the configuration's line
    recs = [r for r in Store(tmp_path, "c").records() if r["kind"] == "infer"]
    assert [r["algorithm"] for r in recs] == names
    groups = {r["timing_group"] for r in recs}
    assert len(groups) == 1 and None not in groups  # every candidate timed side by side
    for r in recs:
        assert validate(r) == [] and r["status"] == "ok", r
        assert r["world_size"] == world and r["prompt_len"] == PROMPT and r["new_tokens"] == NEW and r["tag"] == "t"
        assert all(f in r for f in FIELDS), [f for f in FIELDS if f not in r]
        assert r["generated"] == reference, (r["algorithm"], r["generated"], reference)
        assert r["check_ids_equal"] is True and r["check_first_divergence"] is None
        assert r["check_logits_error"] <= CHECK_TOLERANCE and r["check_tolerance"] == CHECK_TOLERANCE
        assert len(r["prefill_samples_s"]) == 2 and [len(d) for d in r["decode_samples_s"]] == [NEW - 1] * 2
        assert r["ttft_s"] > 0 and r["tpot_s"] > 0
        assert r["prefill_tokens_per_s"] == pytest.approx(PROMPT / r["ttft_s"])
        assert len(r["kv_cache_bytes_per_rank"]) == world and r["kv_cache_bytes"] == max(r["kv_cache_bytes_per_rank"])
        # float64 K and V of every layer: the whole sequence's cache, split (or replicated) over the ranks
        cfg = models.preset("tiny")
        whole = 2 * cfg.layers * (PROMPT + NEW - 1) * cfg.kv_heads * cfg.head_dim * 8
        assert sum(r["kv_cache_bytes_per_rank"]) >= whole
        if world == 1:
            assert r["kv_cache_bytes"] == whole
        assert len(r["mem_peak_bytes_per_rank"]) == world and min(r["mem_peak_bytes_per_rank"]) > 0


BAD_INFER = [
    (["--prompt-len", "33", "--algorithms", "zigzag"], "prompt length 33 cannot be split by zigzag"),
    (["--new-tokens", "0"], "new_tokens must be >= 1"),
    (["--algorithms", "tp", "--heads", "3", "--kv-heads", "1"], "tp: 3 query heads do not split over 2 ranks"),
    (["--algorithms", "ring,nope"], "unknown algorithm 'nope'"),
]


@pytest.fixture(scope="module")
def bad_infer(tmp_path_factory):
    """Every BAD_INFER mistake given to `bench infer`, all in one launch."""
    out = tmp_path_factory.mktemp("bad_infer")
    return out, refused_batch(out, "infer", BAD_INFER)


@pytest.mark.parametrize("i", range(len(BAD_INFER)), ids=[m for _, m in BAD_INFER])
def test_bad_input_is_refused_in_one_line_before_any_collective(bad_infer, i):
    out, procs = bad_infer
    assert_refused_in_one_line(procs[i], BAD_INFER[i][1], out / str(i))


def test_half_precision_reports_agreement_without_failing(tmp_path):
    proc = bench(2, "--prompt-len", "16", "--new-tokens", "4", "--dtype", "bfloat16", "--check", "--warmup", "0",
                 "--iters", "1", "--algorithms", "ring,ringx1,tp", "--quiet", "--out", str(tmp_path), "--campaign",
                 "c")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""  # --quiet
    recs = [r for r in Store(tmp_path, "c").records() if r["kind"] == "infer"]
    assert [r["status"] for r in recs] == ["ok"] * 3
    for r in recs:
        assert validate(r) == [] and r["dtype"] == "bfloat16" and r["check_tolerance"] is None
        assert isinstance(r["check_ids_equal"], bool) and 0 < r["check_logits_error"] < 1


def test_summary_tables_ttft_and_tpot_with_speedups_over_ring_and_tp():
    from ringx_drivers.summary import INFER_COMPARE_BY, infer_tables

    base = {k: 1 for k in INFER_COMPARE_BY} | {"model": "tiny", "dtype": "float64", "kernel_requested": None}

    def rec(algo, prefill, step):  # every iteration alike: the speedup's interval is a point
        return base | {"kind": "infer", "status": "ok", "algorithm": algo, "timing_group": "g",
                       "prefill_samples_s": [prefill] * 5, "decode_samples_s": [[step, step]] * 5}

    text = infer_tables([rec("ring", 0.04, 0.02), rec("ringx1", 0.02, 0.01), rec("tp", 0.08, 0.005)])
    ttft, tpot = text.split("Serving, TPOT")
    assert "| 20.00 2.00x [2.00-2.00] vs ring 4.00x [4.00-4.00] vs tp |" in ttft  # ringx1's TTFT cell
    assert "| 10.00 2.00x [2.00-2.00] vs ring 0.50x [0.50-0.50] vs tp |" in tpot  # ringx1's TPOT cell
    assert "| 5.00 4.00x [4.00-4.00] vs ring |" in tpot  # tp's, over ring only
