#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile local: 1 node(s) x 2 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
set -euo pipefail
# software stack: the Python that ran bench sweep
export OMP_NUM_THREADS=1
export RINGX_PIN_CPU=1
/home/u/ringx/.venv/bin/mpiexec -n 2 /home/u/ringx/.venv/bin/ringx-bench infer --preset tiny --dtype float32 --batch 1 --new-tokens 16 --prompt-len 128 --algorithms ring,ringx1,tp --campaign paper-infer --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check --check-max-seq 8192 --timeout 300.0
/home/u/ringx/.venv/bin/mpiexec -n 2 /home/u/ringx/.venv/bin/ringx-bench infer --preset tiny --dtype float32 --batch 1 --new-tokens 16 --prompt-len 256 --algorithms ring,ringx1 --campaign paper-infer --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check --check-max-seq 8192 --timeout 300.0
