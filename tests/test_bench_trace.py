"""bench trace at 2 ranks (one mpiexec launch): a well-formed trace file per algorithm, mode and rank, and the
timeline figure and overlap analysis draws from them; bad flags fail in one line before launching anything.
Plugins (one more launch): traced beside ring with their whole call and their communication at the dispatcher, whose
bytes are the ledger's; a broken one is one line and the others are traced; the figure draws them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ringx_analysis import timeline as tl
from ringx_analysis.__main__ import main as analysis_main
from tests.mpi import launch
from tests.test_plugins import by_name

ALGOS = ("ring", "ringx4o", "ringx3b")


def test_bench_trace_writes_traces_and_the_figure(tmp_path, capsys):
    proc = launch(2, ["-m", "ringx_bench", "trace", "--algorithms", ",".join(ALGOS), "--seq", "256", "--heads", "4",
                          "--head-dim", "16", "--warmup", "1", "--out", str(tmp_path), "--campaign", "tr"],
                      timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"ringx-bench timeline {tmp_path / 'tr'}" in proc.stdout
    files = sorted((tmp_path / "tr" / "trace" / "2ranks").glob("*.json"))
    assert len(files) == len(ALGOS) * 2 * 2  # algorithms x (fwd, fwd+bwd) x ranks
    for f in files:
        doc = json.loads(f.read_text())
        meta = doc["otherData"]
        assert f.name == (f"{meta['algorithm']}-{meta['mode'].replace('+', '-')}-256-causal-float32-"
                          f"rank{meta['rank']}.json")
        assert meta["world_size"] == 2 and meta["clock"] == "wall clock" and meta["kernel"]
        x = [e for e in doc["traceEvents"] if e["ph"] == "X"]
        assert x and all(e["pid"] == meta["rank"] and e["dur"] >= 0 and e["ts"] >= 0 for e in x)
        cats = {e["cat"] for e in x}
        assert "compute" in cats and "comm" in cats, (f.name, cats)
    traces = tl.load(tmp_path / "tr")
    assert {(t.meta["algorithm"], t.meta["mode"]) for t in traces} == {(a, m) for a in ALGOS
                                                                        for m in ("fwd", "fwd+bwd")}
    assert all(0.0 <= t.overlap <= 1.0 for t in traces)
    assert analysis_main(["timeline", str(tmp_path / "tr"), "--format", "png"]) == 0
    assert "| fwd+bwd | ringx4o | 2 | 1 |" in capsys.readouterr().out
    for name in ("timeline-fwd.png", "timeline-fwd-bwd.png"):
        assert (tmp_path / "tr" / "figures" / name).stat().st_size > 5000


@pytest.mark.parametrize("argv, words", [(["--algorithms", "nope"], "unknown algorithm")])
def test_bench_trace_bad_input_is_one_line(tmp_path, argv, words):
    proc = launch(1, ["-m", "ringx_bench", "trace", *argv, "--out", str(tmp_path)], timeout=120)
    assert proc.returncode != 0 and words in proc.stderr and "Traceback" not in proc.stderr


def test_bench_run_records_call_peaks_and_with_trace_the_overlap(tmp_path):
    from ringx import memory
    from ringx_suite.store import Store, validate

    small = ["--seq", "256", "--heads", "4", "--head-dim", "16", "--iters", "2", "--warmup", "1", "--quiet",
             "--algorithms", "ring,ringx3", "--mode", "fwd+bwd", "--out", str(tmp_path)]
    proc = launch(2, ["-m", "ringx_bench", "run", *small, "--campaign", "traced", "--trace"], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plain = launch(2, ["-m", "ringx_bench", "run", *small, "--campaign", "plain"], timeout=300)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    recs = by_name(tmp_path, "traced")
    s = memory.sizes(1, 128, 4, 4, 16, __import__("torch").float32)
    for algo, r in recs.items():
        assert validate(r) == [], r
        peaks = r["call_peak_bytes_per_rank"]
        assert len(peaks) == 2 and all(0 < p <= memory.peak_formula(algo, 2, s, backward=True) for p in peaks)
        assert len(r["overlap_fraction_per_rank"]) == 2 and 0.0 <= r["overlap_fraction"] <= 1.0
        assert r["overlap_fraction"] in r["overlap_fraction_per_rank"]
    assert max(recs["ringx3"]["call_peak_bytes_per_rank"]) > max(recs["ring"]["call_peak_bytes_per_rank"])
    for r in Store(tmp_path, "plain").records():  # untraced: peaks, no overlap
        assert validate(r) == [] and r["call_peak_bytes_per_rank"] and "overlap_fraction" not in r


# --- plugins ------------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_algorithm" / "src" / "my_algorithm" / "__init__.py"
CASES = ROOT / "tests" / "plugin_cases.py"
SEQ, KV_HEADS, HEAD_DIM = 64, 2, 8
KV = SEQ // 2 * KV_HEADS * HEAD_DIM * 4  # one rank's K (or V) shard in float32: what an all-gather sends


@pytest.fixture(scope="module")
def plugin_trace(tmp_path_factory):
    """ring (built-in), tcp-allgather (installed, functional collectives), mine (--plugin, c10d calls) traced at 2
    ranks, beside plugins that cannot run or that fail."""
    out = tmp_path_factory.mktemp("plugin_trace")
    specs = [f"mine={EXAMPLE}:attention", f"ring={EXAMPLE}:attention", f"raises={CASES}:raises",
             f"shape={CASES}:wrong_shape", f"gone={out}/no_such_file.py:attention", f"fullonly={CASES}:full_only"]
    proc = launch(2, ["-m", "ringx_bench", "trace", "--algorithms", "ring,tcp-allgather,rfa-ring", "--plugin",
                      ",".join(specs), "--seq", str(SEQ), "--heads", "4", "--kv-heads", str(KV_HEADS), "--head-dim",
                      str(HEAD_DIM), "--warmup", "1", "--out", str(out), "--campaign", "pl"], timeout=300)
    return proc, out / "pl"


def _docs(campaign: Path, algo: str) -> dict[tuple[str, int], dict]:
    return {(d["otherData"]["mode"], d["otherData"]["rank"]): d
            for d in (json.loads(f.read_text()) for f in (campaign / "trace" / "2ranks").glob(f"{algo}-*.json"))}


@pytest.mark.parametrize("algo", ["mine", "tcp-allgather"])
def test_a_plugin_is_traced_whole_with_its_communication_at_the_dispatcher(plugin_trace, algo):
    proc, campaign = plugin_trace
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = _docs(campaign, algo)
    assert set(docs) == {(m, r) for m in ("fwd", "fwd+bwd") for r in (0, 1)}
    for (mode, _), doc in docs.items():
        meta, x = doc["otherData"], [e for e in doc["traceEvents"] if e["ph"] == "X"]
        plugin = meta["plugin"]
        assert "nothing inside the plugin's kernels" in plugin["marks"] and plugin["overlap_fraction"].startswith("n/a")
        assert plugin["source"].startswith("--plugin mine=" if algo == "mine" else "entry point ringx_drivers.peers")
        assert [e["name"] for e in x if e["cat"] == "call"] == (["fwd"] if mode == "fwd" else ["fwd", "bwd"])
        assert not {e["cat"] for e in x} & {"compute", "merge"}
        posts = [e for e in x if e["cat"] == "post"]
        # the marks' bytes are what Traffic counted for the same call (the ledger's conventions)
        assert sum(e["args"]["bytes"] for e in posts) == plugin["bytes_sent"] > 0
        assert sum(e["args"]["received"] for e in posts) == plugin["bytes_received"]
        assert len(posts) == plugin["comm_calls"]
        if algo == "mine":  # all-gather K and V; backward: reduce-scatter dK and dV (each KV by the ledger)
            assert plugin["bytes_sent"] == (2 if mode == "fwd" else 4) * KV
            assert {e["args"]["block"] for e in posts} <= {"c10d.allgather_", "c10d.reduce_scatter_"}
            assert "posts only" in plugin["waits"] and not any(e["cat"] in ("wait", "comm") for e in x)
        else:  # functional collectives: each post's wait is seen, and the time between is in flight
            waits, comm = [e for e in x if e["cat"] == "wait"], [e for e in x if e["cat"] == "comm"]
            assert len(waits) == len(comm) == len(posts) and "wait_tensor" in plugin["waits"]
            assert sorted(e["ts"] for e in comm) == sorted(e["ts"] for e in posts)


def test_a_plugin_that_cannot_run_or_fails_is_one_line_and_ring_is_still_traced(plugin_trace):
    proc, campaign = plugin_trace
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    for mode in ("fwd", "fwd+bwd"):
        for line in (f"raises {mode} seq={SEQ}: FAILED (ranks 0, 1: ValueError: this plugin always fails)",
                     f"shape {mode} seq={SEQ}: FAILED (ranks 0, 1: PluginError: shape returned (1, 1, 4, 8)",
                     f"gone {mode} seq={SEQ}: FAILED (plugin gone", f"rfa-ring {mode} seq={SEQ}: skipped (",
                     f"fullonly {mode} seq={SEQ}: skipped (fullonly does not take mask causal (its masks: full))"):
            assert line in out, line
    assert "plugin ring (--plugin ring=" in proc.stderr and "ring runs as the built-in" in proc.stderr
    assert set(_docs(campaign, "ring")) == {(m, r) for m in ("fwd", "fwd+bwd") for r in (0, 1)}
    assert "plugin" not in _docs(campaign, "ring")[("fwd", 0)]["otherData"]
    names = {f.name.split("-f")[0] for f in (campaign / "trace" / "2ranks").glob("*.json")}
    assert names == {"ring", "mine", "tcp-allgather"}  # the broken ones wrote nothing


def test_the_timeline_draws_a_campaign_holding_plugins(plugin_trace, capsys):
    _, campaign = plugin_trace
    traces = tl.load(campaign)
    assert {t.meta["algorithm"] for t in traces} == {"ring", "mine", "tcp-allgather"}
    assert all((t.overlap is None) == (t.meta["algorithm"] != "ring") for t in traces)
    assert len(tl.calls(traces)) == 2  # a plugin is drawn beside ring, not in a figure of its own
    assert analysis_main(["timeline", str(campaign), "--format", "png"]) == 0
    table = capsys.readouterr().out
    assert "| fwd | mine | 2 | 0 | n/a | n/a | n/a | n/a |" in table
    assert "| fwd+bwd | tcp-allgather | 2 | 1 | n/a |" in table
    for name in ("timeline-fwd.png", "timeline-fwd-bwd.png"):
        assert (campaign / "figures" / name).stat().st_size > 5000


def test_bench_run_with_trace_records_no_overlap_for_a_plugin(tmp_path):
    """Nothing inside a plugin is marked: an overlap_fraction would be a number measured from nothing."""
    from ringx_suite.store import validate

    proc = launch(2, ["-m", "ringx_bench", "run", "--algorithms", "ring", "--plugin", f"mine={EXAMPLE}:attention",
                      "--seq", str(SEQ), "--heads", "4", "--kv-heads", str(KV_HEADS), "--head-dim", str(HEAD_DIM),
                      "--iters", "2", "--warmup", "1", "--mode", "fwd", "--quiet", "--trace", "--out", str(tmp_path)],
                  timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = by_name(tmp_path, "default")
    assert all(validate(r) == [] for r in recs.values())
    assert "overlap_fraction" in recs["ring"] and "overlap_fraction" not in recs["mine"]


def test_trace_files_of_different_masks_do_not_overwrite_each_other(tmp_path):
    from ringx_drivers.drivers.trace import trace_path
    from ringx_drivers.points.attention import make_point

    pts = [make_point({"algorithm": "ring", "seq": 64, "mask": m}, 2) for m in ("causal", "window:16", "full")]
    paths = {trace_path(tmp_path, pt, 2, 0) for pt in pts}
    assert len(paths) == 3 and all(p.parent == tmp_path / "2ranks" for p in paths)
    assert any("window_16" in p.name for p in paths) and any("-causal-" in p.name for p in paths)
