#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile local: 4 node(s) x 2 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
set -euo pipefail
# software stack: the Python that ran bench sweep
export OMP_NUM_THREADS=1
export RINGX_PIN_CPU=1
/home/u/ringx/.venv/bin/mpiexec -n 8 /home/u/ringx/.venv/bin/ringx-bench run --points /scratch/runs/paper/sweep/points/N4x2.json --campaign paper --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check-max-seq 2048 --timeout 300.0
