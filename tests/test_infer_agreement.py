"""bench infer --check outside float64: the agreement with the unsharded float64 reference (leading ids equal, the
first divergence, the reference's margin there, the logits error up to it) is recorded and nothing fails; float64
still fails a candidate whose ids differ; --check-max-seq leaves longer prompts unchecked (checked: false).
Real mpiexec at 1 and 2 ranks, one launch per dtype."""

from __future__ import annotations

import pytest
import torch

from ringx_drivers import models
from ringx_drivers.drivers.infer import CHECK_TOLERANCE
from ringx_drivers.models import serving
from ringx_drivers.points import infer as infer_points
from ringx_drivers.points.infer import CHECK_MAX_SEQ
from ringx_suite.store import Store, validate
from tests.mpi import assert_refused_in_one_line, launch, refused_batch

NEW = 6
AGREEMENT = ("checked", "check_ids_equal", "check_agree_tokens", "check_first_divergence", "check_divergence_margin",
             "check_logits_error", "check_tolerance")


def bench(nprocs: int, tmp_path, *args: str, timeout: float = 300):
    proc = launch(nprocs, ["-m", "ringx_bench", "infer", "--preset", "tiny", "--new-tokens", str(NEW), "--warmup",
                               "0", "--iters", "1", "--out", str(tmp_path), "--campaign", "c", *args], timeout=timeout)
    recs = [r for r in Store(tmp_path, "c").records() if r["kind"] == "infer"] if (tmp_path / "c").exists() else []
    return proc, recs


def assert_plausible(r: dict) -> None:
    """The agreement fields of a checked record agree with one another."""
    assert validate(r) == [], validate(r)
    assert all(k in r for k in AGREEMENT), [k for k in AGREEMENT if k not in r]
    agree, first = r["check_agree_tokens"], r["check_first_divergence"]
    assert r["checked"] is True and 0 <= agree <= NEW
    assert r["check_ids_equal"] is (agree == NEW)
    if first is None:
        assert agree == NEW and r["check_divergence_margin"] is None
    else:
        assert agree == first < NEW and r["check_divergence_margin"] >= 0
    assert 0 <= r["check_logits_error"] < 1


# ---------------------------------------------------------------------------------------------- the comparison


def generation(ids: list[list[int]], logits: list[torch.Tensor]) -> serving.Generation:
    return serving.Generation(torch.tensor(ids), logits)


def test_agreement_counts_leading_ids_and_measures_the_margin_and_error_up_to_the_divergence():
    g = torch.Generator().manual_seed(0)
    ref_logits = [torch.randn(2, 11, generator=g, dtype=torch.float64) for _ in range(4)]
    ref = generation([[int(x) for x in (lg[b].argmax() for lg in ref_logits)] for b in range(2)], ref_logits)
    same = serving.agreement(ref.ids.clone(), [x.clone() for x in ref_logits], ref)
    assert same == serving.Agreement(4, None, None, 0.0)
    assert "ids equal (4 tokens)" in same.describe(4)

    # sequence 1 takes its runner-up at step 2: steps 0-2 share the reference's inputs, step 3 does not
    ids = ref.ids.clone()
    ids[1, 2] = int(ref_logits[2][1].topk(2).indices[1])
    ids[1, 3] = (ids[1, 3] + 1) % 11
    noisy = [x + 1e-3 * x.abs().max() for x in ref_logits[:3]] + [ref_logits[3] + 100.0]  # step 3: not compared
    a = serving.agreement(ids, noisy, ref)
    top = ref_logits[2][1].topk(2).values
    assert (a.agree_tokens, a.first_divergence) == (2, 2)
    assert a.margin == pytest.approx(float(top[0] - top[1]))
    assert a.logits_error == pytest.approx(1e-3)
    assert "ids agree for 2/4 tokens" in a.describe(4) and "at token 2" in a.describe(4)

    ids[0, 0] = (ids[0, 0] + 1) % 11  # a divergence at the first token
    assert serving.agreement(ids, noisy, ref).agree_tokens == 0


def test_the_check_costs_only_the_points_it_checks():
    pt = infer_points.make_infer_point({"algorithm": "ring", "prompt_len": 64, "preset": "tiny"}, 2, "cpu")
    assert infer_points.memory_bytes(pt, 2, 64) > infer_points.memory_bytes(pt, 2, 63) == \
        infer_points.memory_bytes(pt, 2, 0)
    assert CHECK_MAX_SEQ >= 4096  # a default that checks ordinary prompts and spares 32K-token ones


# ---------------------------------------------------------------------------------------------- real runs


def test_float32_at_one_rank_records_the_agreement(tmp_path):
    proc, recs = bench(1, tmp_path, "--prompt-len", "16", "--dtype", "float32", "--check", "--algorithms",
                       "ring,ringx1,tp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [r["status"] for r in recs] == ["ok"] * 3
    for r in recs:
        assert_plausible(r)
        assert r["check_tolerance"] is None and r["check_logits_error"] < 1e-4  # float32 is close


def test_bfloat16_at_two_ranks_and_check_max_seq_leaves_longer_prompts_unchecked(tmp_path):
    proc, recs = bench(2, tmp_path, "--prompt-len", "16,32", "--dtype", "bfloat16", "--check", "--check-max-seq",
                       "16", "--algorithms", "ring,ringx1,ulysses,tp")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "prompt=32 (not checked: longer than --check-max-seq 16):" in proc.stdout
    assert "prompt=16 (not checked" not in proc.stdout
    assert [(r["prompt_len"], r["status"]) for r in recs] == [(16, "ok")] * 4 + [(32, "ok")] * 4
    for r in recs:
        if r["prompt_len"] == 16:
            assert_plausible(r)
            assert r["check_tolerance"] is None and r["check_logits_error"] > 1e-5  # bf16 is not exact
        else:
            assert validate(r) == [] and r["checked"] is False
            assert not any(k.startswith("check_") for k in r), r  # nothing was compared


def test_float64_agrees_everywhere_and_a_failed_check_keeps_its_agreement(tmp_path):
    # case 1 (ringx1) fails its check by injection after the comparison: its record still says how far it agreed
    proc, recs = bench(2, tmp_path, "--prompt-len", "16", "--dtype", "float64", "--check", "--algorithms",
                       "ring,ringx1,tp", "--inject", "0:1:check@check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {r["algorithm"]: r["status"] for r in recs} == {"ring": "ok", "ringx1": "failed", "tp": "ok"}
    ref_model = models.build(models.preset("tiny"), seed=16).double()
    prompt = serving.prompt_tokens(models.preset("tiny"), 1, 16, seed=16)
    want = [int(i) for i in serving.reference_generate(ref_model, prompt, NEW).ids[0]]
    for r in recs:
        assert r["check_agree_tokens"] == NEW and r["check_first_divergence"] is None and r["check_ids_equal"]
        assert r["check_logits_error"] <= CHECK_TOLERANCE == r["check_tolerance"]
        if r["status"] == "ok":
            assert_plausible(r)
            assert r["generated"] == want
        else:
            assert validate(r) == [] and r["failure"] == "check" and "injected check failure" in r["error"]


def test_bad_input_is_one_line_on_two_ranks_and_nothing_hangs(tmp_path):
    cases = [
        (["--prompt-len", "30", "--algorithms", "zigzag"], "prompt length 30 cannot be split by zigzag"),
        (["--new-tokens", "0", "--check"], "new_tokens must be >= 1"),
        (["--algorithms", "tp", "--mlp", "255"],
         "tp: the MLP's 255 hidden units do not split over 2 ranks"),
        (["--check", "--check-max-seq", "0"], "check_max_seq must be >= 1"),
    ]
    procs = refused_batch(tmp_path, "infer", cases)  # one launch
    for i, (proc, (_, message)) in enumerate(zip(procs, cases, strict=True)):
        assert_refused_in_one_line(proc, message, tmp_path / str(i))


