#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile local: 2 node(s) x 2 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
set -euo pipefail
# software stack: the Python that ran bench sweep
export OMP_NUM_THREADS=1
export RINGX_PIN_CPU=1
/home/u/ringx/.venv/bin/mpiexec -n 4 /home/u/ringx/.venv/bin/ringx-bench model --preset tiny --dtype float32 --batch 1 --seq 256 --algorithms ring,ringx3,ringx4o --campaign paper-model --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check --check-max-seq 512 --timeout 300.0
/home/u/ringx/.venv/bin/mpiexec -n 4 /home/u/ringx/.venv/bin/ringx-bench model --preset tiny --dtype float32 --batch 1 --seq 512 --algorithms ring,ringx4o --campaign paper-model --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check --check-max-seq 512 --timeout 300.0
/home/u/ringx/.venv/bin/mpiexec -n 4 /home/u/ringx/.venv/bin/ringx-bench model --preset tiny --dtype float32 --checkpoint --batch 1 --seq 256,512 --algorithms ring,ringx3,ringx4o --campaign paper-model --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check --check-max-seq 512 --timeout 300.0
