"""bench run and bench collectives under mpiexec: records, provenance, resume, failures as data."""

from __future__ import annotations

import json
import time

import pytest

from ringx_costmodel.network import busbw_factor
from ringx_drivers import mpirun
from ringx_drivers.drivers.collectives import default_levels, layout_problem, parse_levels, parse_size, sizes
from ringx_suite.store import Store, validate
from tests.cli import run_cli
from tests.mpi import CHECKOUT, FROM_CHECKOUT, cli_batch, launch


def bench(nprocs: int, *args: str, timeout: float = 300, env: dict | None = None):
    return launch(nprocs, ["-m", "ringx_bench", *args], timeout=timeout, env=env)


def records(root, campaign="c") -> list[dict]:
    return Store(root, campaign).records()


def status(recs: list[dict]) -> dict:
    """(algorithm, causal) -> the statuses of its records, in the order written."""
    out: dict = {}
    for r in recs:
        out.setdefault((r["algorithm"], r["causal"]), []).append(r["status"])
    return out


SMALL = ["--seq", "64", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--iters", "2", "--warmup", "1",
         "--quiet", "--campaign", "c"]


@pytest.mark.parametrize("world", [2, 4])
def test_records_validate_and_carry_provenance(tmp_path, world):
    proc = bench(world, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,ringx3,ringx4o",
                 "--causal", "true,false", "--mode", "fwd,fwd+bwd", "--check", "--tag", "t1")
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path)
    assert len(recs) == 3 * 2 * 2
    for r in recs:
        assert validate(r) == [], r
        assert r["status"] == "ok" and r["world_size"] == world and r["tag"] == "t1"
        assert len(r["samples_s"]) == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["check_max_error"] <= r["check_tolerance"]
        assert len(r["bytes_sent_per_rank"]) == world and all(b > 0 for b in r["bytes_sent_per_rank"])
        assert r["tflops_per_rank"] == pytest.approx(r["flops"] / world / r["median_s"] / 1e12)
        expect = 4 * 64 * 64 * 4 * 16 / (2 if r["causal"] else 1) * (3.5 if r["mode"] == "fwd+bwd" else 1)
        assert r["flops"] == expect
    runs = list((tmp_path / "c" / "runs").glob("*.json"))
    assert len(runs) == 1
    prov = json.loads(runs[0].read_text())
    assert prov["run_id"] == recs[0]["run_id"] and prov["ranks"] == world and prov["nodes"] == 1
    assert prov["software"]["torch"] and prov["software"]["mpi_library"]
    assert bool(prov["git_commit"]) == FROM_CHECKOUT  # an installed suite has no commit to name
    assert prov["env"]["OMP_NUM_THREADS"] == "1"  # the OMP_ family is recorded


def test_resume_skips_done_and_retries_failed_on_request(tmp_path):
    args = ["run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,ringx1"]
    assert bench(2, *args, "--inject", "1:1:raise").returncode == 0
    first = records(tmp_path)
    assert status(first) == {("ring", True): ["ok"], ("ringx1", True): ["failed"]}
    assert bench(2, *args).returncode == 0
    assert len(records(tmp_path)) == 2  # nothing re-run: the ok one is done, the failed one kept
    assert bench(2, *args, "--retry-failed").returncode == 0
    after = records(tmp_path)
    assert status(after) == {("ring", True): ["ok"], ("ringx1", True): ["failed", "ok"]}
    failed = next(r for r in first if r["status"] == "failed")
    assert after[-1]["key"] == failed["key"] and len({r["run_id"] for r in after}) == 2  # the 2nd run wrote none
    assert len(list((tmp_path / "c" / "records").glob("*.jsonl"))) == 3


@pytest.mark.parametrize("kind,failure,message", [
    ("raise", "exception", "rank 1: Injected: injected failure on rank 1"),
    ("oom", "oom", "rank 1: out of memory: injected out of memory on rank 1"),
    ("midraise", "exception", "rank 1: Injected: injected failure on rank 1 at run"),
])
def test_a_failing_rank_becomes_a_record_and_the_run_goes_on(tmp_path, kind, failure, message):
    proc = bench(2, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,ringx4,ringx3", "--timeout", "5",
                 "--inject", f"1:1:{kind}")
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path)
    assert status(recs) == {("ring", True): ["ok"], ("ringx4", True): ["failed"], ("ringx3", True): ["ok"]}
    bad = next(r for r in recs if r["status"] == "failed")
    assert validate(bad) == [] and bad["failure"] == failure and message in bad["error"]
    assert 1 in bad["failed_ranks"]
    ok = [r for r in recs if r["status"] == "ok"]  # the others were still timed side by side
    assert ok[0]["timing_group"] and ok[0]["timing_group"] == ok[1]["timing_group"]


def test_a_failed_check_is_recorded_and_not_timed(tmp_path):
    proc = bench(2, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,ringx4", "--check",
                 "--inject", "0:0:check")
    assert proc.returncode == 0, proc.stderr
    recs = {r["algorithm"]: r for r in records(tmp_path)}
    assert recs["ring"]["status"] == "failed" and recs["ring"]["failure"] == "check"
    assert "samples_s" not in recs["ring"] and recs["ringx4"]["status"] == "ok"


def test_a_killed_rank_ends_the_run_and_keeps_earlier_records(tmp_path):
    start = time.monotonic()
    proc = bench(2, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,ringx4,ringx3", "--timeout", "5",
                 "--causal", "true,false", "--inject", "1:4:kill", timeout=120)  # in the second configuration
    assert proc.returncode != 0
    assert time.monotonic() - start < 60
    recs = records(tmp_path)
    assert [(r["status"], r["causal"]) for r in recs] == [("ok", True)] * 3 and all(validate(r) == [] for r in recs)


def test_a_hung_rank_is_recorded_and_the_others_stop(tmp_path):
    start = time.monotonic()
    proc = bench(2, "run", *SMALL, "--out", str(tmp_path), "--algorithms", "ring,ringx4", "--timeout", "2",
                 "--causal", "true,false", "--inject", "1:3:hang", timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0 and elapsed < 2 + 30 + 30, elapsed
    recs = records(tmp_path)
    assert [r["status"] for r in recs] == ["ok", "ok", "failed"] and recs[2]["failure"] == "timeout"
    assert "a rank died or hangs" in proc.stderr


BAD_CLI = [
    (["--algorithms", "ring,ringx9"], "unknown algorithm 'ringx9'"),
    (["--seq", "102"], "sequence length 102 cannot be split for zigzag (causal) over 2 ranks: it must be a multiple "
                       "of 4"),
    (["--seq", "-8"], "seq must be >= 1, got '-8'"),
    (["--batch", "0"], "batch must be >= 1, got '0'"),
    (["--kv-heads", "0"], "kv_heads must be >= 1"),
    (["--heads", "8", "--kv-heads", "3"], "--heads (8) must be a multiple of --kv-heads (3)"),
    (["--seq", "64", "--seq-per-rank", "32"], "not both"),
    (["--mode", "bwd"], "mode 'bwd': choose one of fwd, fwd+bwd"),
    (["--causal", "maybe"], "causal must be true or false"),
    (["--timeout", "nan"], "timeout must be a finite number"),
    (["--timeout", "inf"], "timeout must be a finite number"),
    (["--timeout", "1e-6"], "timeout must be >= 1"),
    (["--iters", str(10**12)], "iters must be <= 100000"),
    (["--peak-tflops", "-1"], "peak_tflops must be >= 0.001"),
    (["--campaign", "../x y"], "must be a plain directory name"),
]


@pytest.fixture(scope="module")
def bad_cli(tmp_path_factory):
    """Every BAD_CLI mistake given to `bench run` on 2 ranks, all in one launch (tests/mpi.py cli_batch)."""
    out = tmp_path_factory.mktemp("badcli")
    return out, cli_batch(2, [["run", "--out", str(out / str(i)), *args] for i, (args, _) in enumerate(BAD_CLI)],
                          out / "batch")


@pytest.mark.parametrize("i", range(len(BAD_CLI)), ids=[m for _, m in BAD_CLI])
def test_bad_cli_input_gets_one_message_before_any_work(bad_cli, i):
    out, procs = bad_cli
    proc, message = procs[i], BAD_CLI[i][1]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count(message) == 1, proc.stderr  # once, not once per rank
    assert "Traceback" not in proc.stderr
    assert not (out / str(i) / "default").exists()  # no campaign opened


def test_config_file_keys_and_typos(tmp_path):
    good = tmp_path / "sweep.toml"
    good.write_text('algorithms = ["ring", "ringx4"]\nseq = [64]\nheads = 4\nhead_dim = 16\niters = 2\n'
                    'campaign = "fromfile"\nquiet = true\n')
    assert bench(2, "run", "--config", str(good), "--out", str(tmp_path)).returncode == 0
    assert sorted(r["algorithm"] for r in records(tmp_path, "fromfile")) == ["ring", "ringx4"]
    bad = tmp_path / "bad.toml"
    bad.write_text("head_dims = 16\n")
    proc = bench(2, "run", "--config", str(bad), "--out", str(tmp_path))
    assert proc.returncode == 2 and "did you mean 'head_dim'?" in proc.stderr


def test_busbw_factors_and_sizes_follow_nccl_tests():
    assert busbw_factor("all_reduce", 4) == 1.5
    assert busbw_factor("all_gather", 4) == busbw_factor("reduce_scatter", 4) == 0.75
    assert busbw_factor("broadcast", 8) == busbw_factor("reduce", 8) == busbw_factor("sendrecv", 8) == 1.0
    assert parse_size("64K") == 65536 and parse_size("1M") == 1 << 20 and parse_size("512") == 512
    with pytest.raises(ValueError):
        parse_size("lots")
    assert sizes(1000, 100000, 10, 16) == [992, 10000, 100000]


@pytest.mark.parametrize("world", [2, 4])
def test_collectives_records(tmp_path, world):
    proc = bench(world, "collectives", "--min-bytes", "1K", "--max-bytes", "16K", "--iters", "3", "--warmup", "1",
                 "--out", str(tmp_path), "--campaign", "net", "--quiet")
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path, "net")
    assert {r["op"] for r in recs} == {"broadcast", "reduce", "all_reduce", "all_gather", "reduce_scatter",
                                       "all_to_all", "sendrecv"}
    for r in recs:
        assert validate(r) == [] and r["status"] == "ok" and r["world_size"] == world
        assert r["bytes"] % (4 * world) == 0
        assert r["algbw_GBps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * busbw_factor(r["op"], world))
        assert r["level"] == "world" and r["group_size"] == world  # one node: world alone, by default
    assert bench(world, "collectives", "--max-bytes", "huge", "--out", str(tmp_path)).returncode == 2


def test_collectives_levels_time_intra_and_inter_node_groups(tmp_path):
    """2 simulated nodes x 2 ranks: world over 4 ranks, intra and inter in groups of 2, busbw of the group's size;
    a second run with the default levels (all three, as the layout spans two nodes) finds every point recorded."""
    env = {"RINGX_RANKS_PER_NODE": "2"}
    args = ["collectives", "--min-bytes", "1K", "--max-bytes", "4K", "--iters", "2", "--warmup", "1", "--out",
            str(tmp_path), "--campaign", "net"]
    proc = bench(4, *args, "--levels", "world,intra,inter", "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path, "net")
    assert len(recs) == 3 * 7 * 2 and len({r["key"] for r in recs}) == len(recs)
    for r in recs:
        n = {"world": 4, "intra": 2, "inter": 2}[r["level"]]
        assert validate(r) == [] and r["status"] == "ok" and r["world_size"] == 4 and r["group_size"] == n, r
        assert r["busbw_factor"] == busbw_factor(r["op"], n)
        assert r["busbw_GBps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9 * busbw_factor(r["op"], n))
    assert {(r["level"], r["op"]) for r in recs if r["bytes"] == 1024} == {
        (lv, op) for lv in ("world", "intra", "inter") for op in ("broadcast", "reduce", "all_reduce", "all_gather",
                                                                   "reduce_scatter", "all_to_all", "sendrecv")}
    again = bench(4, *args, env=env)
    assert again.returncode == 0, again.stderr
    assert "levels world,intra,inter" in again.stdout and again.stdout.count("already recorded") == len(recs)
    assert len(records(tmp_path, "net")) == len(recs)


@pytest.mark.parametrize("world,env,levels,message", [
    (3, {"RINGX_RANKS_PER_NODE": "2"}, "intra", "RINGX_RANKS_PER_NODE=2 does not divide the 3 ranks"),
    (2, {}, "world,inter", "all 2 ranks share one node"),
])
def test_collectives_levels_the_layout_cannot_form_are_refused_in_one_line(tmp_path, world, env, levels, message):
    proc = bench(world, "collectives", "--levels", levels, "--out", str(tmp_path), "--campaign", "net", env=env)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()  # rank 0 alone says it, once
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith(f"ringx-bench collectives: error: --levels {levels.split(',')[-1]} cannot run")
    assert not (tmp_path / "net").exists()  # refused before the campaign is opened


def test_collective_levels_follow_the_node_layout():
    from ringx.topology import Topology

    two_by_two = Topology([0, 0, 1, 1], 0, build=False)
    assert default_levels(two_by_two) == ["world", "intra", "inter"]
    assert default_levels(Topology([0, 0, 0, 0], 0, build=False)) == ["world"]
    one_each = Topology([0, 1, 2, 3], 0, build=False)
    assert default_levels(one_each) == ["world", "inter"] and "holds one rank" in layout_problem("intra", one_each)
    uneven = Topology(["a", "a", "b"], 2, build=False)
    assert default_levels(uneven) == ["world"]
    assert "different numbers of ranks (1, 2)" in layout_problem("inter", uneven)
    assert layout_problem("intra", None, "RINGX_RANKS_PER_NODE=2 does not divide the 3 ranks").startswith("RINGX")
    assert parse_levels(None) is None and parse_levels("inter,world,inter") == ["world", "inter"]
    for bad in ("", "node", "world,cross"):
        with pytest.raises(ValueError):
            parse_levels(bad)


def test_peers_are_checked_timed_or_skipped_with_reason(tmp_path):
    """The field's implementations, named in --algorithms (installed plugins; no flash-attn stand-in here)."""
    proc = bench(2, "run", *SMALL, "--out", str(tmp_path), "--causal", "true,false", "--check",
                 "--algorithms", "zigzag,tcp-allgather,tcp-ring,rfa-ring,rfa-zigzag,rfa-stripe")
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path)
    by = {(r["algorithm"], r["causal"]): r for r in recs}
    for name in ("tcp-allgather", "tcp-ring"):
        for causal in (False, True):
            r = by[name, causal]
            assert validate(r) == [] and r["status"] == "ok" and r["family"] == "peer"
            assert r["check_max_error"] <= r["check_tolerance"]
            assert r["layout"] == ("zigzag" if causal else "contiguous")
    for name in ("rfa-ring", "rfa-zigzag", "rfa-stripe"):
        r = by[name, True]
        assert r["status"] == "skipped" and "ring_flash_attn not importable" in r["error"]


@pytest.mark.parametrize("args,message", [
    (["summary", "runs/nope"], "no campaign at runs/nope"),
    (["summary", "nope", "--out", "/nonexistent"], "no records in /nonexistent/nope"),
    (["sweep", "plan", "nope.toml"], "cannot read nope.toml"),
    (["kernels", "--campaign", "../x"], "must be a plain directory name"),
])
def test_user_mistakes_get_one_line_and_no_traceback(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_ctrl_c_stops_every_rank_at_once_with_one_line(tmp_path):
    import os
    import signal
    import subprocess

    proc = subprocess.Popen([mpirun.mpiexec(), "-n", "2", os.sys.executable, "-m", "ringx_bench", "run", *SMALL,
                             "--seq", "2048", "--iters", "1000", "--out", str(tmp_path), "--algorithms", "ring,ringx4"],
                            cwd=CHECKOUT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(CHECKOUT)}, start_new_session=True)
    deadline = time.monotonic() + 60
    records_dir = tmp_path / "c" / "records"
    while not (records_dir.exists() and any(records_dir.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # inside the timed loop, blocked in collectives
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - start < 10
    assert "Traceback" not in err and err.count("bench run: interrupted") == 1, err
    assert all(validate(r) == [] for r in records(tmp_path))  # nothing torn


def test_n_copies_of_rank_0_under_srun_are_refused(tmp_path):
    import os
    import subprocess
    import sys

    # what srun --mpi=none does to an MPICH program: every task is a world of one
    for procid, expect in (("0", "4 copies of rank 0"), ("3", "")):
        env = {**os.environ, "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": procid, "PYTHONPATH": str(CHECKOUT)}
        proc = subprocess.run([sys.executable, "-m", "ringx_bench", "run", *SMALL, "--out", str(tmp_path)], env=env,
                              capture_output=True, text=True, cwd=CHECKOUT, timeout=120)
        assert proc.returncode == 2 and expect in proc.stderr and "Traceback" not in proc.stderr
        assert (expect == "") == (proc.stderr.strip() == "")  # task 0 says why; the others stay silent
    assert not (tmp_path / "c").exists()


def test_summary_tabulates_collectives_by_level_only_when_there_are_levels():
    from ringx_drivers.summary import collectives_table

    def coll(level=None, group=None):
        r = {"kind": "collective", "status": "ok", "op": "all_reduce", "world_size": 4, "bytes": 1024,
             "median_s": 1e-4, "busbw_GBps": 1.0}
        return r if level is None else {**r, "level": level, "group_size": group}

    old = collectives_table([coll()])  # before levels existed
    assert "| ranks | bytes |" in old and "level" not in old
    rows = [line for line in collectives_table([coll(), coll("inter", 2), coll("intra", 2)]).splitlines()
            if line.startswith("| 4 ")]
    assert [r.split("|")[2:4] for r in rows] == [[" world ", " 4 "], [" intra ", " 2 "], [" inter ", " 2 "]]
