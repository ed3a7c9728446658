#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile local: 1 node(s) x 2 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
set -euo pipefail
export OMP_NUM_THREADS=1
cd /work/main
/work/main/.venv/bin/mpiexec -n 2 /work/main/.venv/bin/python -m bench run --points /work/main/runs/slow-link/sweep/points/N1x2.json --campaign slow-link --out /work/main/runs --warmup 1 --iters 5 --repeats 1 --timeout 300.0 --check --check-max-seq 256 --peak-tflops 0.05 --tag 'local ranks over a rate-limited loopback (tc tbf in a private network namespace)'
