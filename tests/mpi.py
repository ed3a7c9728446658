"""Launching real MPI jobs from pytest (through the suite's own launcher)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from ringx_drivers import mpirun
from tests import zygote

# The checkout the tests run from: their workers and data. Not mpirun.ROOT, which is site-packages when the suite is
# installed (as environment.yml does) rather than editable.
CHECKOUT = Path(__file__).resolve().parent.parent

# Whether the suite's drivers run from this checkout (editable, as ./dev installs it) or from an installed copy
# (site-packages, as environment.yml does): only the first has a git commit to record.
FROM_CHECKOUT = (mpirun.ROOT / "pyproject.toml").is_file()

# RINGX_TEST_FULL=1: every case of the tests that CI runs a fresh random part of (the ~10-minute budget of
# ./dev test); ranks launched by the tests inherit it.
FULL = os.environ.get("RINGX_TEST_FULL") == "1"


def launch(nprocs: int, args: list[str], timeout: float | None = None, env: dict | None = None
           ) -> subprocess.CompletedProcess:
    """``mpiexec -n nprocs python ARGS`` (``mpirun.run``), each rank forked from the session's zygote when one runs
    (tests/zygote.py): the same ranks, without importing torch again."""
    path = [p for p in ((env or {}).get("PYTHONPATH") or "").split(os.pathsep) if p]  # the tests' workers import
    env = {**(env or {}), "PYTHONPATH": os.pathsep.join([*path, str(CHECKOUT)])}  # tests.*, also when installed
    return mpirun.run(nprocs, zygote.wrap(args), timeout=timeout, env=env)


def run_mpi(nprocs: int, script: str, *args: str, timeout: float = 300, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """Run ``python script args`` on ``nprocs`` ranks; kill the job after ``timeout`` s."""
    return launch(nprocs, [str(CHECKOUT / script), *args], timeout=timeout, env=env)


def run_cases(nprocs: int, script: str, out: Path, seed: int, env: dict | None = None) -> dict[str, list[dict]]:
    """Run a case worker (it writes ``rank{r}.jsonl`` rows with a "case" id into ``out``) on ``nprocs`` ranks;
    case id -> the rows of every rank."""
    proc = run_mpi(nprocs, script, str(out), str(seed), timeout=600, env=env)
    assert proc.returncode == 0, f"worker failed (seed {seed}):\n{proc.stdout}\n{proc.stderr}"
    by_case: dict[str, list[dict]] = {}
    for r in range(nprocs):
        for line in (out / f"rank{r}.jsonl").read_text().splitlines():
            row = json.loads(line)
            by_case.setdefault(row["case"], []).append(row)
    return by_case


def matrix_launcher(tmp_path_factory, script: str, seed: int, extras: str = "always"):
    """A lazy, cached launcher of a case-matrix worker: ``get(world, rpn)`` runs ``script`` once per (ranks,
    ranks per node) on ``world`` ranks (``RINGX_RANKS_PER_NODE=rpn`` when ``rpn``) and returns (case id -> per-rank
    rows, the per-rank ``rank{r}.json`` extras). ``extras="flat"``: the worker writes them only on one node
    (rpn 0), else they are None; ``"never"``: it writes none."""
    name = Path(script).stem
    cache: dict[tuple[int, int], tuple[dict[str, list[dict]], list[dict] | None]] = {}

    def get(world: int, rpn: int):
        if (world, rpn) not in cache:
            out = tmp_path_factory.mktemp(f"{name}{world}n{rpn}")
            env = {"RINGX_RANKS_PER_NODE": str(rpn) if rpn else ""}
            by_case = run_cases(world, script, out, seed, env=env)
            read = extras == "always" or (extras == "flat" and not rpn)
            cache[world, rpn] = by_case, ([json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
                                          if read else None)
        return cache[world, rpn]

    return get


def rows_of(launched, case) -> list[dict]:
    """Every rank's row of one case (it has ``world``, ``rpn`` and ``id``) from a :func:`matrix_launcher`."""
    rows = launched(case.world, case.rpn)[0][case.id]
    assert sorted(r["rank"] for r in rows) == list(range(case.world)), "a rank reported nothing"
    return rows


def cli_batch(nprocs: int, calls: list[list[str]], out: Path, env: dict | None = None,
              timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Run ``ringx-bench ARGV`` for every ARGV of ``calls`` on ``nprocs`` ranks of one launch
    (tests/workers/cli_batch.py): per call, what ``mpiexec`` would have shown for a launch of its own, the ranks'
    stdout and stderr joined in rank order and the highest exit code. For calls that fail before any collective."""
    out.mkdir(parents=True, exist_ok=True)
    spec = out / "calls.json"
    spec.write_text(json.dumps(calls))
    proc = run_mpi(nprocs, "tests/workers/cli_batch.py", str(spec), str(out), timeout=timeout, env=env)
    assert proc.returncode == 0, f"the batch itself failed:\n{proc.stdout}\n{proc.stderr}"
    per_rank = [[json.loads(x) for x in (out / f"rank{r}.jsonl").read_text().splitlines()] for r in range(nprocs)]
    return [subprocess.CompletedProcess(["ringx-bench", *argv], max(rank[i]["code"] for rank in per_rank),
                                        "".join(rank[i]["stdout"] for rank in per_rank),
                                        "".join(rank[i]["stderr"] for rank in per_rank))
            for i, argv in enumerate(calls)]


def refused_batch(out: Path, command: str, mistakes: list[tuple[list[str], str]]) -> list[subprocess.CompletedProcess]:
    """``ringx-bench COMMAND ARGS --out OUT/i --campaign c`` for every (ARGS, message) of ``mistakes``, on 2 ranks
    in one launch (:func:`cli_batch`)."""
    calls = [[command, *args, "--out", str(out / str(i)), "--campaign", "c"] for i, (args, _) in enumerate(mistakes)]
    return cli_batch(2, calls, out / "batch")


def assert_refused_in_one_line(proc: subprocess.CompletedProcess, message: str, out: Path) -> None:
    """Exit 2, one ``error:`` line over all ranks naming ``message``, no traceback, campaign ``c`` never opened."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr  # one line, from rank 0 only
    assert "Traceback" not in proc.stderr
    assert not (out / "c").exists()  # no store opened: nothing collective ran
