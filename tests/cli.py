"""Running the suite's command lines in-process: what ``python -m bench|analysis ARGS`` prints and returns, without
a new interpreter importing torch (1-2 s idle, far more on a loaded machine). For tests that only need the
command's output and exit code; a test about processes (signals, ranks, environments) still starts one."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from bench.mpirun import ROOT


def run_cli(package: str, *args: str, cwd: Path | str = ROOT, env: dict | None = None
            ) -> subprocess.CompletedProcess:
    """``python -m PACKAGE ARGS`` (package "bench" or "analysis") in this process: its exit code (``SystemExit``
    included, as argparse raises it), stdout and stderr. ``env``: variables set for the call (None: unset)."""
    if package == "bench":
        from bench.__main__ import main as bench_main

        def call() -> int:
            return bench_main()
    elif package == "analysis":
        from analysis.__main__ import main as analysis_main

        def call() -> int:
            return analysis_main(list(args))
    else:
        raise ValueError(f"unknown package {package!r}")
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = [f"{package}/__main__.py", *args]
    for k, v in (env or {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = call()
            except SystemExit as e:
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([package, *args], code or 0, out.getvalue(), err.getvalue())
