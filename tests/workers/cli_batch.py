"""MPI worker: many ``ringx-bench`` command lines in one launch, each in this process, every rank at once.

Usage: mpiexec -n P python tests/workers/cli_batch.py CALLS_JSON OUT_DIR
CALLS_JSON holds a list of argv lists. For each, in order, every rank meets the others (an MPI barrier, so no
call starts before the previous one ended everywhere), runs ``ringx_bench.main(argv)`` with its own stdout and
stderr captured, and notes its exit code. Each rank writes OUT_DIR/rank{r}.jsonl, one row per call. For command
lines that must fail before any collective (user mistakes): one launch instead of one per mistake, since each
launch's ranks spend seconds importing torch.
"""

import contextlib
import io
import json
import sys
import traceback
from pathlib import Path

from mpi4py import MPI

import ringx_bench


def run(argv: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = ringx_bench.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except Exception:  # noqa: BLE001 - a traceback is what the tests look for: keep it in stderr
            traceback.print_exc()
            code = 1
    return {"code": code or 0, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    calls, out_dir = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    comm = MPI.COMM_WORLD
    rows = []
    for argv in calls:
        comm.Barrier()
        rows.append(run(argv))
    comm.Barrier()
    (out_dir / f"rank{comm.Get_rank()}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
