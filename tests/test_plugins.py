"""The plugin contract under bench run at 2 ranks: a user's algorithm (examples/my_algorithm) given by --plugin or
installed (an entry point), checked against float64, timed beside ring, its bytes measured at the dispatcher; a
wrong one fails its check and is not timed; each way of breaking the contract is one failed record with one clear
line, and the other candidates go on; the field's peers are installed plugins, skipped with the reason where their
package is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringx_suite import plugins
from ringx_suite.store import Store
from tests.cli import run_cli
from tests.mpi import launch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_algorithm" / "src" / "my_algorithm" / "__init__.py"
CASES = ROOT / "tests" / "plugin_cases.py"
SMALL = ["--seq", "64", "--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--iters", "2", "--warmup", "1",
         "--quiet"]


def bench(nprocs: int, *args: str, timeout: float = 300, env: dict | None = None):
    return launch(nprocs, ["-m", "ringx_bench", *args], timeout=timeout, env=env)


def by_name(root: Path, campaign: str) -> dict[str, dict]:
    return {r["algorithm"]: r for r in Store(root, campaign).records()}


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins")
    specs = [f"mine={EXAMPLE}:attention", f"almost={EXAMPLE}:almost", f"ring={EXAMPLE}:attention",
             f"gone={out}/no_such_file.py:attention", f"noattr={CASES}:missing", f"notcallable={CASES}:not_callable",
             f"shape={CASES}:wrong_shape", f"dtype={CASES}:wrong_dtype", f"nograd={CASES}:not_differentiable",
             f"raises={CASES}:raises", "rfa-zigzag=ringx_drivers.peers.ring_flash_attn:zigzag"]
    proc = bench(2, "run", "--algorithms", "ring", "--plugin", ",".join(specs), "--dtype", "float64", "--check",
                 "--out", str(out), "--campaign", "c", *SMALL)
    return proc, by_name(out, "c"), out


def test_a_users_algorithm_is_checked_timed_and_its_bytes_measured(contract_run):
    proc, recs, _ = contract_run
    assert proc.returncode == 0, proc.stderr
    mine, ring = recs["mine"], recs["ring"]
    assert mine["status"] == "ok" and ring["status"] == "ok"
    assert mine["family"] == "plugin" and "--plugin mine=" in mine["plugin_source"]
    assert mine["check_max_error"] <= 1e-10 and mine["samples_s"] and mine["timing_group"] == ring["timing_group"]
    # gather K and V forward, reduce-scatter dK and dV backward: 2 x 2 x (1 x 32 x 2 x 8 x 8 bytes) sent per rank
    kv = 32 * 2 * 8 * 8
    assert mine["bytes_sent_per_rank"] == [4 * kv, 4 * kv]
    assert mine["ledger_rank0"]["fwd+bwd"]["all_gather"]["calls"] == 2


def test_summary_compares_everything_against_a_plugin(contract_run):
    _, _, out = contract_run
    proc = run_cli("summary", str(out / "c"), "--baseline", "mine")
    assert proc.returncode == 0, proc.stderr
    assert "speedup over mine" in proc.stdout
    head = next(ln for ln in proc.stdout.splitlines() if ln.startswith("| ranks"))
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("| 2 | 64 |"))
    cells = dict(zip([c.strip() for c in head.split("|")], [c.strip() for c in row.split("|")]))
    assert "x [" in cells["ring"] and "x" not in cells["mine"]  # ring's speedup over mine; mine is the baseline


def test_a_wrong_answer_fails_its_check_and_is_not_timed(contract_run):
    _, recs, _ = contract_run
    bad = recs["almost"]
    assert bad["status"] == "failed" and "check failed" in bad["error"] and not bad.get("samples_s")


@pytest.mark.parametrize("name,words", [
    ("gone", "cannot be loaded: FileNotFoundError"),
    ("noattr", "cannot be loaded: AttributeError"),
    ("notcallable", "is not callable"),
    ("shape", "returned (1, 1, 4, 8)"),
    ("dtype", "expected q's shape and dtype"),
    ("nograd", "not differentiable"),
    ("raises", "ValueError: this plugin always fails"),
])
def test_a_broken_plugin_is_one_failed_record_with_one_line(contract_run, name, words):
    _, recs, _ = contract_run
    rec = recs[name]
    assert rec["status"] == "failed" and words in rec["error"] and "\n" not in rec["error"], rec["error"]


def test_a_plugin_named_as_a_built_in_is_refused_and_the_built_in_still_runs(contract_run):
    proc, recs, _ = contract_run
    assert recs["ring"]["status"] == "ok" and recs["ring"]["family"] == "ring"
    assert "has the name of a built-in algorithm" in proc.stdout + proc.stderr


def test_a_peer_whose_package_is_missing_is_skipped_with_the_reason(contract_run):
    _, recs, _ = contract_run
    assert recs["rfa-zigzag"]["status"] == "skipped"
    assert "ring_flash_attn not importable" in recs["rfa-zigzag"]["error"]


def test_a_hanging_plugin_is_bounded_by_the_timeout(tmp_path):
    proc = bench(2, "run", "--algorithms", "ring", "--plugin", f"hangs={CASES}:hangs", "--timeout", "10",
                 "--out", str(tmp_path), "--campaign", "c", *SMALL, timeout=120)
    assert proc.returncode != 0
    assert "hangs" in proc.stderr + proc.stdout


def test_an_installed_plugin_is_found_by_its_entry_point(tmp_path):
    """A distribution on the path that declares ringx.algorithms (as `pip install examples/my_algorithm` does)."""
    dist = tmp_path / "my_algorithm-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-algorithm\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[ringx.algorithms]\nmy-gather = my_algorithm:attention\n")
    env = {"PYTHONPATH": f"{tmp_path}:{EXAMPLE.parent.parent}:{ROOT}"}
    proc = bench(2, "run", "--algorithms", "ring,my-gather", "--check", "--dtype", "float64", "--out", str(tmp_path),
                 "--campaign", "c", *SMALL, env=env)
    assert proc.returncode == 0, proc.stderr
    recs = by_name(tmp_path, "c")
    assert recs["my-gather"]["status"] == "ok" and "entry point my_algorithm:attention" in \
        recs["my-gather"]["plugin_source"]


def test_the_peers_are_installed_plugins():
    assert {"rfa-ring", "rfa-zigzag", "rfa-stripe", "tcp-allgather", "tcp-ring"} <= set(plugins.installed())


def test_baselines_flag_says_where_the_peers_went(tmp_path):
    proc = run_cli("run", "--baselines", "torch_cp", "--out", str(tmp_path))
    assert proc.returncode == 2 and "name them in --algorithms" in proc.stderr and "tcp-ring" in proc.stderr


def test_unknown_algorithm_names_plugins_as_a_way_out(tmp_path):
    proc = run_cli("run", "--algorithms", "nope", "--out", str(tmp_path))
    assert proc.returncode == 2 and "plugin" in proc.stderr


def test_plugin_attributes_are_read_and_checked():
    def fn(q, k, v, *, causal, group):
        return q

    fn.layout, fn.masks, fn.memory_like = {"full": "contiguous", "causal": "zigzag"}, ("window",), "ringx3"
    p = plugins.of("x", fn, "test")
    assert p.layouts == ("contiguous", "zigzag") and p.masks == {"window"} and p.memory_like == "ringx3"
    fn.layout = "spiral"
    assert "not a ringx layout" in plugins.of("x", fn, "test").failure
    assert plugins.parse_spec("a=b.c:d") == ("a", "b.c:d") and plugins.parse_spec("b.c:d") == ("d", "b.c:d")
