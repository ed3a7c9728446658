#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile nvidia-slurm: 4 node(s) x 2 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
#SBATCH --job-name=ringx-paper-N4x2
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=2
#SBATCH --time=00:09:00
#SBATCH --output=/scratch/runs/paper/sweep/logs/%x-%j.out
#SBATCH --error=/scratch/runs/paper/sweep/logs/%x-%j.err
#SBATCH --account=abc123
set -euo pipefail
# software stack: prefix /lustre/proj/envs/ringx
export PATH=/lustre/proj/envs/ringx/bin"${PATH:+:$PATH}"
export OMP_NUM_THREADS=8
# Preflight on this allocation: the MPI world against Slurm's, bench selftest on every rank's device and
# the network transport. A failure is recorded (bench sweep status shows it) and no point runs.
RINGX_PREFLIGHT=/scratch/runs/paper/sweep/preflight/N4x2-"${SLURM_JOB_ID:-0}.json"
mkdir -p /scratch/runs/paper/sweep/preflight
rc=0
srun -N 4 -n 8 --ntasks-per-node=2 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench preflight --record "$RINGX_PREFLIGHT" --job N4x2 --nodes 4 --ranks-per-node 2 --gpus-per-node 8 --device auto --dtypes bfloat16 --algorithms ring,ringx3,ringx4 --timeout 300.0 || rc=$?
if [ "$rc" -ne 0 ]; then
  [ -s "$RINGX_PREFLIGHT" ] || printf '{"job": "N4x2", "ok": false, "checks": [{"check": "preflight", "ok": false, "detail": "the preflight step exited with status %s before writing its verdict: see the job log"}]}\n' "$rc" > "$RINGX_PREFLIGHT"
  echo "ringx: preflight failed (status $rc): no point runs; see $RINGX_PREFLIGHT" >&2
  exit 3
fi
srun -N 4 -n 8 --ntasks-per-node=2 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench run --points /scratch/runs/paper/sweep/points/N4x2.json --campaign paper --out /scratch/runs --warmup 2 --iters 10 --repeats 1 --check-max-seq 2048 --timeout 300.0 --peak-tflops 989.0 --link-gb-per-s 450.0
