#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile frontier: 4 node(s) x 8 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
#SBATCH --job-name=ringx-paper-N4x8
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --time=00:12:00
#SBATCH --output=/scratch/memberwork/abc123/ringx-runs/paper/sweep/logs/%x-%j.out
#SBATCH --error=/scratch/memberwork/abc123/ringx-runs/paper/sweep/logs/%x-%j.err
#SBATCH --account=abc123
#SBATCH --partition=batch
#SBATCH --network=disable_rdzv_get
#SBATCH -S 8
set -euo pipefail
# software stack: prefix /lustre/proj/envs/ringx, modules PrgEnv-gnu/8.6.0 rocm/6.2.4 craype-accel-amd-gfx90a
module load PrgEnv-gnu/8.6.0 rocm/6.2.4 craype-accel-amd-gfx90a
export PATH=/lustre/proj/envs/ringx/bin"${PATH:+:$PATH}"
export LD_LIBRARY_PATH=/lustre/proj/aws-ofi-rccl/lib"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # the network plugin first
export NCCL_NET_GDR_LEVEL=PHB
export NCCL_CROSS_NIC=1
export NCCL_SOCKET_IFNAME=hsn0
export FI_MR_CACHE_MONITOR=kdreg2
export FI_CXI_DISABLE_HOST_REGISTER=1
export FI_CXI_DEFAULT_CQ_SIZE=131072
export FI_CXI_RDZV_PROTO=alt_read
export OMP_NUM_THREADS=7
# Preflight on this allocation: the MPI world against Slurm's, bench selftest on every rank's device and
# the network transport. A failure is recorded (bench sweep status shows it) and no point runs.
RINGX_PREFLIGHT=/scratch/memberwork/abc123/ringx-runs/paper/sweep/preflight/N4x8-"${SLURM_JOB_ID:-0}.json"
mkdir -p /scratch/memberwork/abc123/ringx-runs/paper/sweep/preflight
rc=0
srun -N 4 -n 32 -c 7 --gpus-per-task=1 --gpu-bind=closest /lustre/proj/envs/ringx/bin/ringx-bench preflight --record "$RINGX_PREFLIGHT" --job N4x8 --nodes 4 --ranks-per-node 8 --gpus-per-node 8 --device auto --dtypes bfloat16 --algorithms ring,ringx3,ringx4 --timeout 300.0 --network libfabric || rc=$?
if [ "$rc" -ne 0 ]; then
  [ -s "$RINGX_PREFLIGHT" ] || printf '{"job": "N4x8", "ok": false, "checks": [{"check": "preflight", "ok": false, "detail": "the preflight step exited with status %s before writing its verdict: see the job log"}]}\n' "$rc" > "$RINGX_PREFLIGHT"
  echo "ringx: preflight failed (status $rc): no point runs; see $RINGX_PREFLIGHT" >&2
  exit 3
fi
srun -N 4 -n 32 -c 7 --gpus-per-task=1 --gpu-bind=closest /lustre/proj/envs/ringx/bin/ringx-bench run --points /scratch/memberwork/abc123/ringx-runs/paper/sweep/points/N4x8.json --campaign paper --out /scratch/memberwork/abc123/ringx-runs --warmup 2 --iters 10 --repeats 1 --check-max-seq 2048 --timeout 300.0 --peak-tflops 191.5 --link-gb-per-s 50.0
