"""``ringx-bench demo``: the README's main command, on an embedded default.

1. the library's overhead at one rank: every algorithm against the bare local
   kernel on the same data (`bench quick --ranks 1`);
2. a small local campaign, ring vs ringX on 1, 2 and 4 CPU ranks
   (`bench sweep local jobs/sweeps/local-demo.toml`: every algorithm checked
   against float64 attention, then all algorithms of a configuration timed
   side by side; re-running resumes it);
   then one traced call per schedule at 2 ranks (`bench trace`: the report's timeline figure), and masked
   attention at 2 ranks: packed documents and a sliding window (`bench run --mask`, checked; ~40 s);
3. the campaign's table (`bench summary`), figures and a report page
   (`ringx-bench report runs/local-demo`);
4. a whole training step, the `tiny` model at 1 and 2 ranks (`bench model`, every
   algorithm's step checked against the unsharded float64 model first; runs/local-demo-model), then a tiny
   transformers gpt-oss (sinks, alternating windows, MoE) at 2 ranks (`bench model --hf gpt-oss`, checked; where
   transformers is installed: ./dev installs it);
5. serving: a short prefill and decode of the `tiny` model at 1 and 2 ranks, ring, ringX and Ulysses against
   tensor parallelism (`bench infer`, every generation checked against the unsharded float64 model's first;
   runs/local-demo-infer).
Everything lands under runs/ (not tracked by git).
"""

from __future__ import annotations

import os
import subprocess
import sys

from ringx_costmodel.machine import JOBS
from ringx_drivers import mpirun, quick, summary
from ringx_drivers.sweeps import commands as sweep
from ringx_suite.cli import Parser

SWEEP = JOBS / "sweeps" / "local-demo.toml"


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="ringx-bench demo", description=__doc__)
    p.add_argument("--skip-overhead", action="store_true", help="skip step 1")
    p.add_argument("--model-only", action="store_true", help="only step 4 (the training step)")
    a = p.parse_args(argv)
    if mpirun.CHECKOUT:
        os.chdir(mpirun.ROOT)  # the sweep file's out = "runs": the checkout's; installed, where we are
    cores = os.cpu_count() or 1
    if a.model_only:
        return model_step() or serving()
    if not a.skip_overhead:
        print("== 1/5 library overhead at one rank (speedup over the bare kernel) ==", flush=True)
        if quick.main(["--ranks", "1", "--out", "runs/quick", "--quiet"]) != 0:
            return 1
    print(f"\n== 2/5 local campaign: jobs/sweeps/{SWEEP.name} ==", flush=True)
    print(f"this machine has {cores} core(s): runs with more ranks than that share cores, so their times include "
          "that contention", flush=True)
    if sweep.main(["local", str(SWEEP)]) != 0:  # a progress line (points, ETA) at most every 15 s
        return 1
    if trace_step() != 0 or masks_step() != 0:
        return 1
    print("\n== 3/5 ring vs ringX: table, figures, report ==", flush=True)
    summary.main(["runs/local-demo"])
    # analysis is a separate layer (pandas, matplotlib): run it as its own command
    proc = subprocess.run([sys.executable, "-m", "ringx_bench", "report", "runs/local-demo"])
    if proc.returncode != 0:
        print("no figures: `ringx-bench report runs/local-demo` failed (pip install -e '.[analysis]'?)")
        return model_step() or serving()
    print("figures: runs/local-demo/report/figures/ (the PNG files the page embeds; vector PDF for a paper: "
          "ringx-bench figures runs/local-demo --format pdf)")
    print("records: runs/local-demo/records/ (schema: docs/records.md); overhead table: runs/quick/table.md")
    return model_step() or serving()


TRACE = ["--algorithms", "ring,ringx4o,bidir-ring,double-ring,ringx3b", "--seq", "1024", "--mode", "fwd+bwd",
         "--out", "runs", "--campaign", "local-demo", "--quiet"]


def trace_step() -> int:
    """One traced call per schedule at 2 ranks (bench trace, ~20 s): the report's timeline figure."""
    print("\n== timeline: one traced fwd+bwd call of ring, ringx4o, bidir-ring, double-ring, ringx3b at 2 ranks "
          "(bench trace) ==", flush=True)
    return mpirun.run(2, ["-m", "ringx_bench", "trace", *TRACE], capture=False, timeout=600).returncode


MASKS = ["--mask", "docs:lognormal:256,window:256", "--seq", "1024,2048", "--algorithms", "ring,zigzag,ringx4o,ulysses",
         "--check", "--check-max-seq", "512", "--warmup", "2", "--iters", "12", "--heads", "8", "--head-dim", "64",
         "--out", "runs", "--campaign", "local-demo", "--tag", "local demo: masks at 2 ranks", "--quiet"]


def masks_step() -> int:
    """Packed documents (log-normal lengths, mean 256) and a causal window of 256 at 2 ranks, in the demo's
    campaign (its tables and figures group them by mask; ~40 s)."""
    print("\n== masks: packed documents (docs:lognormal:256) and a sliding window (window:256) at 2 ranks, ring, "
          "zigzag, ringx4o, ulysses (bench run --mask --check) ==", flush=True)
    return mpirun.run(2, ["-m", "ringx_bench", "run", *MASKS], capture=False, timeout=600).returncode


MODEL_ARGS = ["--preset", "tiny", "--seq", "512", "--algorithms", "ring,zigzag,ringx3,ringx4o", "--warmup", "1",
              "--iters", "5", "--check", "--campaign", "local-demo-model", "--quiet"]


def model_step() -> int:
    """Step 4: the tiny model's training step at 1 and 2 ranks (~15 s), and its table."""
    print("\n== 4/5 a whole training step: the tiny model at 1 and 2 ranks (bench model) ==", flush=True)
    for ranks in (1, 2):
        if mpirun.run(ranks, ["-m", "ringx_bench", "model", *MODEL_ARGS], capture=False, timeout=600).returncode != 0:
            return 1
    if hf_step():
        return 1
    summary.main(["runs/local-demo-model"])
    print("records: runs/local-demo-model/records/ (kind `model`); figures: ringx-bench report "
          "runs/local-demo-model")
    return 0


HF_ARGS = ["--hf", "gpt-oss", "--seq", "64", "--algorithms", "ring,ringx4o", "--warmup", "1", "--iters", "3",
           "--check", "--campaign", "local-demo-model", "--quiet"]


def hf_step() -> int:
    """A tiny transformers gpt-oss at 2 ranks, checked (a few seconds), in the model campaign; skipped, saying so,
    where transformers is not installed."""
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        print("(bench model --hf skipped: transformers is not installed; pip install '.[hf]')", flush=True)
        return 0
    print("-- a transformers model: tiny gpt-oss (sinks, alternating windows, MoE) at 2 ranks (bench model --hf) --",
          flush=True)
    return mpirun.run(2, ["-m", "ringx_bench", "model", *HF_ARGS], capture=False, timeout=600).returncode


INFER_ARGS = ["--preset", "tiny", "--prompt-len", "128", "--new-tokens", "8", "--dtype", "float64", "--algorithms",
              "ring,ringx1,ringx3,ulysses,tp", "--warmup", "1", "--iters", "3", "--check", "--campaign",
              "local-demo-infer", "--quiet"]


def serving() -> int:
    """Step 5: the tiny model served at 1 and 2 ranks (~15 s): TTFT and TPOT against tp."""
    print("\n== 5/5 serving: prefill and decode of the tiny model at 1 and 2 ranks (bench infer) ==", flush=True)
    for ranks in (1, 2):
        if mpirun.run(ranks, ["-m", "ringx_bench", "infer", *INFER_ARGS], capture=False, timeout=600).returncode != 0:
            return 1
    summary.main(["runs/local-demo-infer"])
    print("records: runs/local-demo-infer/records/ (kind `infer`, docs/records.md)")
    return 0
