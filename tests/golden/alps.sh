#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile alps: 4 node(s) x 4 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
#SBATCH --job-name=ringx-paper-N4x4
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --time=00:10:00
#SBATCH --output=/scratch/scratch/ringx-runs/paper/sweep/logs/%x-%j.out
#SBATCH --error=/scratch/scratch/ringx-runs/paper/sweep/logs/%x-%j.err
#SBATCH --account=abc123
#SBATCH --partition=normal
set -euo pipefail
# software stack: container /users/u/.edf/ringx.toml
export NCCL_NET='AWS Libfabric'
export MPICH_GPU_SUPPORT_ENABLED=0
export FI_CXI_DISABLE_HOST_REGISTER=1
export FI_MR_CACHE_MONITOR=userfaultfd
export OMP_NUM_THREADS=72
# Preflight on this allocation: the MPI world against Slurm's, bench selftest on every rank's device and
# the network transport. A failure is recorded (bench sweep status shows it) and no point runs.
RINGX_PREFLIGHT=/scratch/scratch/ringx-runs/paper/sweep/preflight/N4x4-"${SLURM_JOB_ID:-0}.json"
mkdir -p /scratch/scratch/ringx-runs/paper/sweep/preflight
rc=0
srun -N 4 -n 16 --ntasks-per-node=4 -c 72 --gpus-per-task=1 --environment=/users/u/.edf/ringx.toml ringx-bench preflight --record "$RINGX_PREFLIGHT" --job N4x4 --nodes 4 --ranks-per-node 4 --gpus-per-node 4 --device auto --dtypes bfloat16 --algorithms ring,ringx3,ringx4 --timeout 300.0 --network libfabric || rc=$?
if [ "$rc" -ne 0 ]; then
  [ -s "$RINGX_PREFLIGHT" ] || printf '{"job": "N4x4", "ok": false, "checks": [{"check": "preflight", "ok": false, "detail": "the preflight step exited with status %s before writing its verdict: see the job log"}]}\n' "$rc" > "$RINGX_PREFLIGHT"
  echo "ringx: preflight failed (status $rc): no point runs; see $RINGX_PREFLIGHT" >&2
  exit 3
fi
srun -N 4 -n 16 --ntasks-per-node=4 -c 72 --gpus-per-task=1 --environment=/users/u/.edf/ringx.toml ringx-bench run --points /scratch/scratch/ringx-runs/paper/sweep/points/N4x4.json --campaign paper --out /scratch/scratch/ringx-runs --warmup 2 --iters 10 --repeats 1 --check-max-seq 2048 --timeout 300.0 --peak-tflops 989.0 --link-gb-per-s 150.0
