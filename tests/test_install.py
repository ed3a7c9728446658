"""`pip install .` (not editable) gives the whole suite and its `ringx-bench` command, working from anywhere.

The install goes into a fresh virtual environment whose only view of this machine's packages (torch, mpi4py,
setuptools) is a .pth line onto the running environment's site-packages: nothing is downloaded, nothing of the
checkout is on its path, and what runs is the installed copy.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_SHIPPED = {".git", ".venv", "runs", "results", "tests", "build", "__pycache__", ".pytest_cache", ".ruff_cache",
               "examples"}


def test_every_package_and_data_file_is_listed():
    """Packages are listed by hand in pyproject.toml (jobs/ installs under another name): none may be forgotten."""
    tool = PYPROJECT["tool"]["setuptools"]
    renamed = {v: k for k, v in tool["package-dir"].items()}
    found = set()
    for init in ROOT.rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        if rel.parts and not NOT_SHIPPED & set(rel.parts) and not rel.parts[0].startswith("."):
            top = renamed.get(rel.parts[0], rel.parts[0])
            found.add(".".join((top, *rel.parts[1:])))
    assert found == set(tool["packages"]), "pyproject.toml [tool.setuptools] packages differ from the folders"
    assert "ringx_bench" in tool["py-modules"] and PYPROJECT["project"]["scripts"]["ringx-bench"] == "ringx_bench:main"
    for f in (ROOT / "jobs").rglob("*"):  # every data file of jobs/ matches a package-data pattern
        if f.is_file() and f.suffix != ".py" and "__pycache__" not in f.parts:
            rel = f.relative_to(ROOT / "jobs")
            assert any(rel.match(p) for p in tool["package-data"]["ringx_jobs"]), f"jobs/{rel} is not installed"


def test_bench_and_analysis_command_names_do_not_clash():
    from ringx_analysis.__main__ import commands
    from ringx_drivers.__main__ import COMMANDS

    assert not set(COMMANDS) & set(commands())


def test_nothing_imports_the_top_level_command():
    for f in [*ROOT.glob("*/**/*.py")]:
        if NOT_SHIPPED & set(f.relative_to(ROOT).parts):
            continue
        names = {n.module for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom) and n.module}
        names |= {a.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Import) for a in n.names}
        assert "ringx_bench" not in names, f"{f.relative_to(ROOT)} imports ringx_bench (the layer above everything)"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh environment with the suite installed from a copy of the checkout (no network, no editable)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=lambda d, names: [n for n in names if n in NOT_SHIPPED or n.endswith(
        ".egg-info")])
    env = tmp / "env"
    venv.create(env, with_pip=False)
    site = Path(subprocess.run([env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "dev-packages.pth").write_text(sysconfig.get_path("purelib") + "\n")  # torch, mpi4py, setuptools
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q",
                           "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shutil.rmtree(src)  # nothing may come from the copy it was built from
    return env


def clean_env() -> dict:
    """This environment without the checkout on the path; the running venv's MPI (pip's mpich: mpiexec in bin/,
    libmpi in lib/, which mpi4py finds from its own prefix) made visible to the fresh one, as a site's module
    would."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = ":".join(x for x in (f"{sys.prefix}/lib", env.get("LD_LIBRARY_PATH")) if x)
    return env


def run(env: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(env / "bin" / "ringx-bench"), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=clean_env())


def test_installed_command_from_an_unrelated_directory(installed, tmp_path):
    proc = subprocess.run([installed / "bin" / "python", "-c", "import ringx_analysis as a, ringx_drivers as d, "
                           "ringx_costmodel.machine as m, ringx, ringx_bench, ringx_suite; print(d.__file__, "
                           "ringx.__file__, a.__file__, ringx_bench.__file__, m.PROFILES)"], capture_output=True,
                          text=True, cwd=tmp_path, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    for path in proc.stdout.split():
        assert Path(path).is_relative_to(installed), f"{path} is not the installed copy"
    assert not Path(proc.stdout.split()[0]).is_relative_to(ROOT)
    profiles = Path(proc.stdout.split()[-1])
    assert {p.stem for p in profiles.glob("*.toml")} >= {"frontier", "perlmutter", "alps", "local"}
    site = Path(proc.stdout.split()[1]).parent.parent  # ringx/__init__.py's site-packages
    names = {p.name.removesuffix(".py") for p in site.iterdir() if p.suffix not in (".pth", ".dist-info")
             and p.name != "__pycache__"}
    assert names and all(n.startswith("ringx") for n in names), f"generic top-level names installed: {names}"
    top = run(installed, "--help", cwd=tmp_path)
    assert top.returncode == 0, top.stderr
    for name in ("run", "model", "sweep", "summary", "demo", "report", "figures", "table", "predict", "validate"):
        assert re.search(rf"^  {name} ", top.stdout, re.M), f"ringx-bench --help does not list {name}"
    for cmd, words in ((["run"], "--points"), (["sweep"], "resubmit"), (["sweep", "local"], "--quiet"),
                       (["summary"], "usage:"), (["report"], "--baseline")):
        proc = run(installed, *cmd, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and words in proc.stdout, (cmd, proc.stdout, proc.stderr)
    bad = run(installed, "reprot", cwd=tmp_path)
    assert bad.returncode == 2 and "did you mean 'report'" in bad.stderr
    # the installed profiles render a Frontier job: the installed command of its environment, no checkout
    (tmp_path / "f.toml").write_text('campaign = "c"\nmachine = "frontier"\nnodes = 1\naccount = "abc"\n'
                                     '[params]\nalgorithms = ["ring"]\nseq = 65536\ndtype = "bfloat16"\n')
    proc = run(installed, "sweep", "plan", "f.toml", cwd=tmp_path)
    assert proc.returncode == 2 and "$MEMBERWORK" in proc.stderr


def test_installed_sweep_local_shows_progress_and_keeps_logs(installed, tmp_path):
    """A tiny real campaign through the installed command: progress lines while it runs, the job's log kept under
    the campaign, and its records summarized."""
    (tmp_path / "s.toml").write_text('campaign = "tiny"\nmachine = "local"\nnodes = 1\nranks_per_node = 1\n'
                                     'out = "runs"\n[bench]\nwarmup = 1\niters = 2\n[params]\n'
                                     'algorithms = ["ring", "ringx4"]\nseq = 256\nheads = 2\nhead_dim = 16\n'
                                     'dtype = "float32"\n')
    proc = run(installed, "sweep", "local", "s.toml", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"N1x1: 2/2 points, campaign 2/2, .* elapsed, ETA 0.0 min", proc.stdout), proc.stdout
    logs = list((tmp_path / "runs" / "tiny" / "sweep" / "logs").glob("ringx-tiny-N1x1-*.out"))
    assert len(logs) == 1 and "ringx4" in logs[0].read_text()
    script = (tmp_path / "runs" / "tiny" / "sweep" / "jobs" / "N1x1.sh").read_text()
    assert f"{installed}/bin/ringx-bench run" in script and "\ncd " not in script
    summary = run(installed, "summary", "runs/tiny", cwd=tmp_path)
    assert summary.returncode == 0 and "ringx4" in summary.stdout, summary.stderr
