"""``python -m bench demo``: the README's main command, on an embedded default.

1. the library's overhead at one rank: every algorithm against the bare local
   kernel on the same data (`bench quick --ranks 1`);
2. a small local campaign, ring vs ringX on 1, 2 and 4 CPU ranks
   (`bench sweep local jobs/sweeps/local-demo.toml`: every algorithm checked
   against float64 attention, then all algorithms of a configuration timed
   side by side; re-running resumes it);
3. the campaign's table (`bench summary`), figures and a report page
   (`python -m analysis report runs/local-demo`).
Everything lands under runs/ (not tracked by git).
"""

from __future__ import annotations

import os
import subprocess
import sys

from bench import mpirun, quick, summary
from bench.sweep import commands as sweep
from core.cli import Parser

SWEEP = mpirun.ROOT / "jobs" / "sweeps" / "local-demo.toml"


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m bench demo", description=__doc__)
    p.add_argument("--skip-overhead", action="store_true", help="skip step 1")
    a = p.parse_args(argv)
    os.chdir(mpirun.ROOT)  # the sweep file's out = "runs" is relative to the checkout
    cores = os.cpu_count() or 1
    if not a.skip_overhead:
        print("== 1/3 library overhead at one rank (speedup over the bare kernel) ==", flush=True)
        if quick.main(["--ranks", "1", "--out", "runs/quick", "--quiet"]) != 0:
            return 1
    print(f"\n== 2/3 local campaign: {SWEEP.relative_to(mpirun.ROOT)} ==", flush=True)
    print(f"this machine has {cores} core(s): runs with more ranks than that share cores, so their times include "
          "that contention", flush=True)
    if sweep.main(["local", str(SWEEP), "--quiet"]) != 0:
        return 1
    print("\n== 3/3 ring vs ringX: table, figures, report ==", flush=True)
    summary.main(["runs/local-demo"])
    # analysis is a separate layer (pandas, matplotlib): run it as its own command
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", "runs/local-demo"], cwd=mpirun.ROOT)
    if proc.returncode != 0:
        print("no figures: `python -m analysis report runs/local-demo` failed (pip install -e '.[analysis]'?)")
        return 0
    print("figures: runs/local-demo/report/figures/ (PDF and PNG)")
    print("records: runs/local-demo/records/ (schema: results/README.md); overhead table: runs/quick/table.md")
    return 0
