"""Plugins in sweep files: ``plugins = [...]`` and installed plugin names are validated and sized like ours, the
rendered job passes them to every rank as --plugin, and a tiny sweep runs them through `bench sweep local`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ringx_drivers import sweeps as sweep
from ringx_drivers.sweeps import plan
from ringx_drivers.sweeps.sweep import SweepError
from ringx_suite.store import Store

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "my_algorithm" / "src" / "my_algorithm" / "__init__.py"


def sweep_file(tmp_path: Path, plugins: str, algorithms: str, machine: str = "local", bench: str = "",
               seq: int = 64) -> Path:
    f = tmp_path / "s.toml"
    f.write_text(f'''campaign = "p"
machine = "{machine}"
nodes = 1
ranks_per_node = 2
out = "{tmp_path / 'runs'}"
plugins = {plugins}
[bench]
iters = 2
warmup = 1
check = true
{bench}
[params]
algorithms = {algorithms}
seq = {seq}
heads = 4
kv_heads = 2
head_dim = 8
dtype = "float64"
''')
    return f


def test_a_sweep_names_plugins_and_its_jobs_pass_them(tmp_path):
    # a file path relative to the sweep file's folder becomes absolute: the job may start anywhere
    (tmp_path / "mine.py").write_text(EXAMPLE.read_text())
    f = sweep_file(tmp_path, '["mine=mine.py:attention"]', '["ring", "mine", "tcp-allgather"]',
                   machine="cpu-slurm")
    sw = sweep.load(f)
    assert {p.algorithm for p in sw.jobs[0].points} == {"ring", "mine", "tcp-allgather"}
    assert set(sw.external) == {"mine", "tcp-allgather"}
    (cmd,) = plan.job_commands(sw, sw.jobs[0].points, tmp_path / "pts.json")
    assert cmd[cmd.index("--plugin") + 1] == f"mine={(tmp_path / 'mine.py').resolve()}:attention"
    text = plan.render_job(sw, sw.jobs[0], sw.jobs[0].points)[sw.dir / "jobs" / f"{sw.jobs[0].name}.sh"]
    assert f"--plugin mine={(tmp_path / 'mine.py').resolve()}:attention" in text
    assert "--algorithms ring " in text  # the preflight's selftest checks the machine with ours


@pytest.mark.parametrize("plugins,algorithms,words", [
    ('["mine=no_such.py:attention"]', '["ring", "mine"]', "cannot be loaded: FileNotFoundError"),
    ('["ring=mine.py:attention"]', '["ring"]', "has the name of a built-in algorithm"),
    ('"mine.py:attention"', '["ring"]', "must be a list"),
    ("[]", '["ring", "nope"]', "unknown algorithm 'nope'"),
])
def test_a_bad_plugin_in_a_sweep_is_one_line(tmp_path, plugins, algorithms, words):
    (tmp_path / "mine.py").write_text(EXAMPLE.read_text())
    with pytest.raises(SweepError) as e:
        sweep.load(sweep_file(tmp_path, plugins, algorithms))
    assert words in str(e.value) and "\n" not in str(e.value).strip(), str(e.value)


def test_a_tiny_plugin_sweep_runs_locally(tmp_path):
    # and the link half of the sanity check reaches the job: 2 CPU ranks send far more than 1 MB/s (at 1024 tokens
    # a call sends ~0.2-0.4 MB a rank and takes tens of ms; at 64 tokens a loaded machine's slow calls were not)
    f = sweep_file(tmp_path, f'["mine={EXAMPLE}:attention"]', '["ring", "mine"]', bench="link_gb_per_s = 0.001",
                   seq=1024)
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "sweep", "local", str(f), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recs = {r["algorithm"]: r for r in Store(tmp_path / "runs", "p").records()}
    assert recs["mine"]["status"] == "ok" and recs["mine"]["family"] == "plugin", recs["mine"].get("error")
    assert recs["mine"]["check_max_error"] <= 1e-10 and recs["ring"]["status"] == "ok"
    for r in recs.values():  # every rank's bytes per second against the link: flagged, and kept
        rate = max(r["bytes_sent_per_rank"]) / r["median_s"] / 1e9
        assert r["link_gb_per_s"] == 0.001 and rate > 0.001, rate
        assert any("above the link's 0.001 GB/s" in x for x in r["implausible"])


def test_a_sweep_checks_bytes_per_second_against_its_profiles_fastest_link(tmp_path):
    sw = sweep.load(sweep_file(tmp_path, "[]", '["ring"]', machine="frontier"))
    assert sw.bench["link_gb_per_s"] == 50.0  # frontier's [model]: intra 50 GB/s, inter 12.5
    assert sweep.load(sweep_file(tmp_path, "[]", '["ring"]')).bench["link_gb_per_s"] is None  # local: no [model]


def test_sweep_predict_traces_a_sweeps_plugin(tmp_path, capsys):
    from ringx_drivers.sweeps import commands

    f = sweep_file(tmp_path, f'["mine={EXAMPLE}:attention"]', '["ring", "mine"]', machine="frontier")
    assert commands.main(["predict", str(f)]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| N1x2 |")]
    assert {ln.split("|")[2].strip() for ln in rows} == {"ring", "mine"}
