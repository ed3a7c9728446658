"""Running the suite's command lines in-process: what ``ringx-bench ARGS`` prints and returns, without
a new interpreter importing torch (1-2 s idle, far more on a loaded machine). For tests that only need the
command's output and exit code; a test about processes (signals, ranks, environments) still starts one."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

from tests.mpi import CHECKOUT as ROOT


def run_cli(*args: str, cwd: Path | str = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """``ringx-bench ARGS`` in this process: its exit code (``SystemExit`` included, as argparse raises it), stdout
    and stderr. ``env``: variables set for the call (None: unset)."""
    import ringx_bench

    def call() -> int:
        return ringx_bench.main(list(args))
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_env = sys.argv, dict(os.environ)
    sys.argv = ["ringx-bench", *args]
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
    return subprocess.CompletedProcess(["ringx-bench", *args], code or 0, out.getvalue(), err.getvalue())
