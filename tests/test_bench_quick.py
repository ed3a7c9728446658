"""bench quick: statistics, clear CLI errors, and a tiny real run on 1 and 2 ranks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ringx_suite.stats import summarize
from tests.cli import run_cli
from tests.mpi import FROM_CHECKOUT

ROOT = Path(__file__).resolve().parent.parent


def test_summarize_known_answers():
    s = summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s["median"], s["min"], s["max"], s["mean"], s["n"]) == (3.0, 1.0, 5.0, 3.0, 5)
    assert s["p10"] == pytest.approx(1.4) and s["p90"] == pytest.approx(4.6)
    assert s["std"] == pytest.approx(1.5811388, rel=1e-6)
    assert summarize([2.0])["std"] == 0.0


def quick(*args: str) -> subprocess.CompletedProcess:
    return run_cli("quick", *args)


@pytest.mark.parametrize("args,message", [
    (["--algorithms", "ring,ringx9"], "unknown algorithm(s) ringx9"),
    (["--seq", "-4"], "seq must be >= 1, got '-4'"),
    (["--seq", "100", "--ranks", "1,3"], "--seq 100 must be divisible by 6"),
    (["--heads", "6", "--kv-heads", "4"], "--heads (6) must be a multiple of --kv-heads (4)"),
    (["--ranks", "two"], "ranks must be an integer, got 'two'"),
])
def test_bad_arguments_get_one_clear_message(args, message):
    proc = quick(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_tiny_run_writes_table_and_samples(tmp_path):
    # a plugin (the example's) is timed beside ours; a peer that cannot run here is left out in one line
    mine = f"mine={ROOT / 'examples' / 'my_algorithm' / 'src' / 'my_algorithm' / '__init__.py'}:attention"
    proc = quick("--ranks", "1,2", "--seq", "64", "--iters", "3", "--warmup", "1", "--algorithms",
                 "ring,ringx4,rfa-ring", "--plugin", mine, "--out", str(tmp_path), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "rfa-ring left out: ring_flash_attn not importable" in proc.stderr
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["provenance"]["software"]["torch"]
    assert bool(res["provenance"]["git_commit"]) == FROM_CHECKOUT  # an installed suite has no commit to name
    keys = {(r["world"], r["algorithm"], r["causal"], r["mode"]) for r in res["rows"]}
    assert keys == {(w, a, c, m) for w, names in ((1, ("kernel", "ring", "ringx4", "mine")),
                                                  (2, ("ring", "ringx4", "mine")))
                    for a in names for c in (False, True) for m in ("fwd", "fwd+bwd")}
    for r in res["rows"]:
        assert len(r["samples"]) == 3 and r["min"] <= r["median"] <= r["max"] and r["min"] > 0
    table = (tmp_path / "table.md").read_text()
    assert "| kernel |" in table and "speedup over ring (above 1: faster)" in table
    assert "speedup over the bare kernel" in table
    assert table.count("x [") == 3 * 4 + 2 * 4  # an interval beside every speedup (not the baselines')
