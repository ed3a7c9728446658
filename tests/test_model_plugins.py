"""Plugins in `bench model` at 2 ranks: a plugin attends in every layer of the training step, in its own layout; it is
checked against the unsharded float64 model and timed beside ours; the bytes of its attention (not the gradient
all-reduce) are counted at the dispatcher and equal the built-in's ledger when the plugin is a built-in wrapped; a
wrong one fails its check and is not timed; one that breaks the contract or does not take a layer's mask is one
line, and the others go on. Model sweeps take plugins too, and each job gets only the plugins it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringx_suite.cli import UserError
from tests.mpi import launch
from tests.test_plugins import by_name

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_algorithm" / "src" / "my_algorithm" / "__init__.py"
CASES = ROOT / "tests" / "plugin_cases.py"
SMALL = ["--preset", "tiny", "--layers", "2", "--iters", "2", "--warmup", "1", "--quiet"]


def bench(*args: str):
    return launch(2, ["-m", "ringx_bench", "model", *args], timeout=300)


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_plugins")
    specs = [f"mine={EXAMPLE}:attention", f"almost={EXAMPLE}:almost", f"as-ring={CASES}:as_ring",
             f"as-zigzag={CASES}:as_zigzag", f"full-only={CASES}:full_only", f"shape={CASES}:wrong_shape",
             f"raises={CASES}:raises", f"noattr={CASES}:missing"]
    proc = bench("--seq", "64", "--algorithms", "ring,zigzag,tcp-allgather", "--plugin", ",".join(specs), "--check",
                 "--out", str(out), "--campaign", "c", *SMALL)
    assert proc.returncode == 0, proc.stderr
    return by_name(out, "c"), proc


def test_a_plugin_trains_checked_and_timed_beside_ours(model_run):
    recs, _ = model_run
    ring = recs["ring"]
    for name in ("mine", "as-ring", "as-zigzag"):
        r = recs[name]
        assert r["status"] == "ok" and r["family"] == "plugin" and f"--plugin {name}=" in r["plugin_source"], r
        assert r["check_grad_error"] <= r["check_tolerance"] and r["check_loss_error"] <= r["check_tolerance"]
        assert r["timing_group"] == ring["timing_group"] and len(r["samples_s"]) == 2
        assert r["grad_allreduce_bytes"] == ring["grad_allreduce_bytes"] > 0
    assert recs["as-zigzag"]["layout"] == "zigzag" and recs["mine"]["layout"] == "contiguous"
    # the field's: PyTorch CP in every layer, on its load-balanced (our zigzag) layout, exact in float64
    tcp = recs["tcp-allgather"]
    assert tcp["status"] == "ok" and tcp["family"] == "peer" and tcp["layout"] == "zigzag", tcp.get("error")
    assert tcp["check_grad_error"] <= tcp["check_tolerance"] and tcp["timing_group"] == ring["timing_group"]
    assert sum(tcp["bytes_sent_per_rank"]) > 0


def test_a_plugins_bytes_are_its_attention_only(model_run):
    """A built-in wrapped as a plugin moves, counted at the dispatcher, what the built-in's own ledger says (so the
    gradient all-reduce, which runs outside the counted forward and backward, is not in it)."""
    recs, _ = model_run
    for wrapped, built_in in (("as-ring", "ring"), ("as-zigzag", "zigzag")):
        for field in ("bytes_sent_per_rank", "bytes_received_per_rank", "comm_calls_per_rank"):
            assert recs[wrapped][field] == recs[built_in][field], (wrapped, field)
    # the example gathers K and V (forward) and reduce-scatters their gradients (backward) in each of 2 layers:
    # each call sends this rank's shard, 32 tokens x 4 K/V heads x 8 dims in float32 (tiny: d 96 over 12 heads)
    shard = 32 * 4 * 8 * 4
    assert recs["mine"]["bytes_sent_per_rank"] == [2 * 4 * shard] * 2
    assert recs["mine"]["comm_calls_per_rank"] == [2 * 4] * 2


def test_a_wrong_plugin_fails_its_check_and_is_not_timed(model_run):
    r = model_run[0]["almost"]
    assert r["status"] == "failed" and "check failed" in r["error"] and not r.get("samples_s")
    assert r["check_grad_error"] > r["check_tolerance"]


@pytest.mark.parametrize("name,words", [
    ("shape", "returned (1, 1, 12, 8)"),
    ("raises", "this plugin always fails"),
    ("noattr", "cannot be loaded: AttributeError"),
    ("full-only", "does not take mask causal (its masks: full)"),
])
def test_a_plugin_that_cannot_train_is_one_line(model_run, name, words):
    r = model_run[0][name]
    assert r["status"] in ("failed", "skipped") and words in r["error"] and not r.get("samples_s"), r
    assert "\n" not in r["error"]
    assert (r["status"] == "skipped") == (name == "full-only")


def test_a_plugin_that_takes_a_layers_mask_trains_under_it(tmp_path):
    """--mask window:W on every layer: a plugin naming window among its masks gets it (mask=, exact), one that does
    not is skipped with the reason."""
    proc = bench("--seq", "64", "--mask", "window:16", "--algorithms", "ring", "--plugin",
                 f"as-ring={CASES}:as_ring,mine={EXAMPLE}:attention", "--check", "--out", str(tmp_path),
                 "--campaign", "w", *SMALL)
    assert proc.returncode == 0, proc.stderr
    recs = by_name(tmp_path, "w")
    assert recs["as-ring"]["status"] == "ok" and recs["as-ring"]["check_grad_error"] <= 1e-9
    assert recs["as-ring"]["bytes_sent_per_rank"] == recs["ring"]["bytes_sent_per_rank"]
    assert recs["mine"]["status"] == "skipped" and "does not take mask window:16" in recs["mine"]["error"]


def test_hf_models_refuse_plugins_in_one_line():
    from ringx_drivers.drivers.step import resolve

    with pytest.raises(UserError) as e:
        resolve(["--hf", "llama", "--plugin", f"mine={EXAMPLE}:attention", "--campaign", "c"], world=2)
    assert "plugins (mine) train --preset models" in str(e.value) and "\n" not in str(e.value)


def test_a_model_sweep_runs_plugins_and_each_job_gets_those_it_names(tmp_path):
    from ringx_drivers import sweeps as sweep
    from ringx_drivers.sweeps import plan

    f = tmp_path / "m.toml"
    f.write_text(f'''campaign = "m"
machine = "cpu-slurm"
nodes = 1
ranks_per_node = 2
out = "{tmp_path / 'runs'}"
driver = "model"
plugins = ["mine={EXAMPLE}:attention", "as-zigzag={CASES}:as_zigzag"]
[params]
preset = "tiny"
algorithms = ["ring", "mine", "as-zigzag"]
seq = [64, 128]
[[exclude]]
algorithms = "as-zigzag"
seq = 128
''')
    sw = sweep.load(f)
    pts = sw.jobs[0].points
    assert {(p.algorithm, p.seq) for p in pts} == {("ring", 64), ("mine", 64), ("as-zigzag", 64), ("ring", 128),
                                                   ("mine", 128)}
    cmds = plan.job_commands(sw, pts, tmp_path / "p.json")
    by_algos = {c[c.index("--algorithms") + 1]: c for c in cmds}
    assert set(by_algos) == {"ring,mine,as-zigzag", "ring,mine"}
    assert by_algos["ring,mine"][by_algos["ring,mine"].index("--plugin") + 1] == f"mine={EXAMPLE}:attention"
    both = by_algos["ring,mine,as-zigzag"]
    assert both[both.index("--plugin") + 1] == f"mine={EXAMPLE}:attention,as-zigzag={CASES}:as_zigzag"
