"""analysis of bench model records: step speedup beside attention-only speedup, MFU, the table, the report."""

from __future__ import annotations

import json

import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from ringx_analysis import figures, report, step  # noqa: E402
from ringx_analysis.metrics import MissingBaseline, NoData, speedup, summarize  # noqa: E402
from ringx_suite.records import validate  # noqa: E402


def model_rec(algorithm, world, seq, t, peak=None, device="cpu", group="g"):
    """An ok model record whose every sample is ``t`` seconds (tiny decoder, float32)."""
    n = 5
    return {"schema": 1, "kind": "model", "campaign": "c", "tag": None, "run_id": "r",
            "key": f"{algorithm}{world}{seq}", "status": "ok", "error": None, "written_at": "2026-01-01T00:00:00",
            "world_size": world, "nodes": 1,
            "warmup": 1, "iters": n, "samples_s": [t] * n, "median_s": t, "min_s": t, "max_s": t, "mean_s": t,
            "std_s": 0.0, "p10_s": t, "p90_s": t, "algorithm": algorithm, "family": "x", "model": "tiny",
            "arch": "decoder", "layers": 2, "d_model": 96, "heads": 12, "kv_heads": 4, "mlp": 256, "vocab": 256,
            "patch_dim": 48, "rope_theta": 5e5, "norm_eps": 1e-5, "seq": seq, "seq_per_rank": seq // world,
            "scaling": "strong", "batch": 1, "dtype": "float32", "causal": True, "checkpoint": False, "repeat": 0,
            "device": device, "lr": 1e-5, "timing_group": group, "kernel": "torch-cpu", "layout": "contiguous",
            "forward_s": t / 4, "backward_s": t / 2, "grad_allreduce_s": t / 8, "optimizer_s": t / 8,
            "phase_samples_s": {"forward": [t / 4] * n, "backward": [t / 2] * n, "grad_allreduce": [t / 8] * n,
                                "optimizer": [t / 8] * n},
            "tokens_per_s_per_rank": seq / world / t, "params": 300000, "params_flops": 220000,
            "flops_per_token": 1e6, "flops": 1e6 * seq, "flops_convention": "x",
            "tflops_per_rank": 1e6 * seq / world / t / 1e12, "peak_tflops": peak, "mfu": None,
            "bytes_sent_per_rank": [1] * world,
            "bytes_received_per_rank": [1] * world, "comm_calls_per_rank": [1] * world, "grad_allreduce_bytes": 0,
            "mem_peak_bytes_per_rank": [100] * world}


def att_rec(algorithm, world, seq, t):
    return {"kind": "attention", "status": "ok", "algorithm": algorithm, "family": "x", "world_size": world,
            "nodes": 1, "seq": seq, "seq_per_rank": seq // world, "scaling": "strong", "batch": 1, "heads": 12,
            "kv_heads": 4, "head_dim": 8, "dtype": "float32", "causal": True, "mode": "fwd+bwd",
            "samples_s": [t] * 5, "flops": 1.0, "peak_tflops": None, "timing_group": "a",
            "mem_peak_bytes_per_rank": [1] * world, "bytes_sent_per_rank": [1] * world}


def frame(recs):
    return pd.DataFrame(recs)


def test_a_synthetic_record_is_valid():
    assert validate(model_rec("ring", 2, 256, 0.1)) == []


def test_step_speedup_beside_attention_speedup_known_answers():
    df = frame([model_rec("ring", 2, 256, 0.10), model_rec("ringx3", 2, 256, 0.08),
                att_rec("ring", 2, 256, 0.04), att_rec("ringx3", 2, 256, 0.02),
                att_rec("ringx3", 2, 512, 0.02)])  # no model record there: not joined
    sp = step.with_attention(speedup(summarize(df, "model")), df).set_index("algorithm")
    assert sp.loc["ringx3", "speedup"] == pytest.approx(1.25)
    assert sp.loc["ringx3", "attention_speedup"] == pytest.approx(2.0)  # attention 2x, diluted to 1.25x by the step
    assert sp.loc["ringx3", "forward_s"] == pytest.approx(0.02) and sp.loc["ringx3", "head_dim"] == 8
    assert len(sp) == 2


def test_mfu_only_against_a_gpu_peak():
    cpu = summarize(frame([model_rec("ring", 1, 256, 0.5, peak=989.0)]), "model")
    assert cpu["mfu"].isna().all()  # a CPU has no published peak
    gpu = summarize(frame([model_rec("ring", 1, 256, 0.5, peak=989.0, device="cuda")]), "model")
    assert gpu["mfu"].iloc[0] == pytest.approx(1e6 * 256 / 0.5 / 1e12 / 989.0)


def test_figures_table_and_report(tmp_path):
    recs = [model_rec(a, w, s, t * s / 256 * (1 if a == "ring" else 0.9))
            for a in ("ring", "ringx3", "ringx4") for w in (1, 2) for s, t in ((256, 0.1), (512, 0.2))]
    recs += [att_rec(a, w, s, 0.05 if a == "ring" else 0.03) for a in ("ring", "ringx3") for w in (1, 2)
             for s in (256, 512)]
    made, skipped = report.build_figures(frame(recs), tmp_path, ("png",))
    assert {"model-speedup", "model-mfu", "speedup", "mfu"} <= set(made)
    assert not {"model-speedup", "model-mfu"} & set(skipped)
    steps = summarize(frame(recs), "model")
    fig = step.speedup_vs_seq(steps, records=frame(recs))
    assert [ax.get_title() for ax in fig.axes] == ["tiny, 1 rank, causal", "tiny, 2 ranks, causal"]
    lines = [ln for ax in fig.axes for ln in ax.get_lines()  # the algorithms' lines (not the caps, nor y = 1)
             if ln.get_linestyle() != "None" and ln.get_marker() in tuple(figures.MARKERS)]
    thin = [ln for ln in lines if ln.get_linewidth() < step.STEP_WIDTH]
    assert thin and all(ln.get_markerfacecolor() == "none" for ln in thin)  # attention beside the step
    thick = {(ln.get_color(), ln.get_linestyle()) for ln in lines if ln not in thin}
    assert {x[1] for x in thick} == {":", "-"}  # ringx3's and ringx4's own dashes, as in every other figure
    assert {(ln.get_color(), ln.get_linestyle()) for ln in thin} <= thick  # attention in its step's colour and dash
    t = step.table(steps, records=frame(recs))
    assert len(t.rows) == 12 and t.columns[-2:] == ["step x ring", "attention x ring"]
    row = next(r for r in t.rows if r[1] == 2 and r[2] == 512 and r[3] == "ringx3")
    assert row[-2].startswith("1.11x") and row[-1] == "1.67x"
    camp = tmp_path / "camp"
    (camp / "records").mkdir(parents=True)
    (camp / "records" / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs if r["kind"] == "model"))
    page = report.write(camp, tmp_path / "rep", "md")
    text = page.read_text()
    assert "Table 1. Training steps" in text and "model-speedup.png" in text and "model-mfu.png" in text


def test_missing_baseline_and_no_records_are_named():
    with pytest.raises(MissingBaseline, match="baseline 'ring' has no successful model record"):
        speedup(summarize(frame([model_rec("ringx3", 2, 256, 0.1)]), "model"))
    with pytest.raises(NoData, match="no successful model records"):
        summarize(frame([att_rec("ring", 2, 256, 0.1)]), "model")


def test_the_committed_campaign_joins_every_step_with_its_attention_configuration():
    from pathlib import Path

    from ringx_analysis.records import load

    df = load(Path(__file__).resolve().parent.parent / "results" / "model-step")
    steps = df[df["kind"] == "model"]
    assert len(steps) == 81 and (steps["status"] == "ok").all()
    assert (steps["check_grad_error"] <= steps["check_tolerance"]).all()
    sp = step.with_attention(speedup(summarize(df, "model")), df)
    assert len(sp) == 81 and sp["attention_speedup"].notna().all()  # bench run measured every step's shape
