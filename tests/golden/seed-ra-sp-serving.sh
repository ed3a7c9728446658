#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile nvidia-slurm: 2 node(s) x 8 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
#SBATCH --job-name=ringx-seed-ra-sp-serving-N2x8
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --time=00:21:00
#SBATCH --output=/scratch/runs/seed-ra-sp-serving/sweep/logs/%x-%j.out
#SBATCH --error=/scratch/runs/seed-ra-sp-serving/sweep/logs/%x-%j.err
#SBATCH --account=abc123
set -euo pipefail
# software stack: prefix /lustre/proj/envs/ringx
export PATH=/lustre/proj/envs/ringx/bin"${PATH:+:$PATH}"
export OMP_NUM_THREADS=8
# Preflight on this allocation: the MPI world against Slurm's, bench selftest on every rank's device and
# the network transport. A failure is recorded (bench sweep status shows it) and no point runs.
RINGX_PREFLIGHT=/scratch/runs/seed-ra-sp-serving/sweep/preflight/N2x8-"${SLURM_JOB_ID:-0}.json"
mkdir -p /scratch/runs/seed-ra-sp-serving/sweep/preflight
rc=0
srun -N 2 -n 16 --ntasks-per-node=8 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench preflight --record "$RINGX_PREFLIGHT" --job N2x8 --nodes 2 --ranks-per-node 8 --gpus-per-node 8 --device auto --dtypes float16 --algorithms ring,zigzag,stripe,tp8pp2 --timeout 300.0 || rc=$?
if [ "$rc" -ne 0 ]; then
  [ -s "$RINGX_PREFLIGHT" ] || printf '{"job": "N2x8", "ok": false, "checks": [{"check": "preflight", "ok": false, "detail": "the preflight step exited with status %s before writing its verdict: see the job log"}]}\n' "$rc" > "$RINGX_PREFLIGHT"
  echo "ringx: preflight failed (status $rc): no point runs; see $RINGX_PREFLIGHT" >&2
  exit 3
fi
srun -N 2 -n 16 --ntasks-per-node=8 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench infer --preset ra-sp --dtype float16 --batch 64 --new-tokens 64 --prompt-len 10240 --algorithms ring,zigzag,stripe,tp8pp2 --campaign seed-ra-sp-serving --out /scratch/runs --warmup 1 --iters 5 --repeats 1 --check-max-seq 8192 --timeout 300.0 --peak-tflops 989.0 --tag 'RA+SP (seed 003): ring family vs TP8 x PP2, ra-sp model, FP16'
srun -N 2 -n 16 --ntasks-per-node=8 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench infer --preset ra-sp --dtype float16 --batch 64 --new-tokens 64 --prompt-len 10000 --algorithms ring,tp8pp2 --campaign seed-ra-sp-serving --out /scratch/runs --warmup 1 --iters 5 --repeats 1 --check-max-seq 8192 --timeout 300.0 --peak-tflops 989.0 --tag 'RA+SP (seed 003): ring family vs TP8 x PP2, ra-sp model, FP16'
srun -N 2 -n 16 --ntasks-per-node=8 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench infer --preset ra-sp --dtype float16 --batch 256 --new-tokens 64 --prompt-len 10240 --algorithms ring,zigzag,stripe,tp8pp2 --campaign seed-ra-sp-serving --out /scratch/runs --warmup 1 --iters 5 --repeats 1 --check-max-seq 8192 --timeout 300.0 --peak-tflops 989.0 --tag 'RA+SP (seed 003): ring family vs TP8 x PP2, ra-sp model, FP16'
srun -N 2 -n 16 --ntasks-per-node=8 --gpus-per-task=1 /lustre/proj/envs/ringx/bin/ringx-bench infer --preset ra-sp --dtype float16 --batch 256 --new-tokens 64 --prompt-len 10000 --algorithms ring,tp8pp2 --campaign seed-ra-sp-serving --out /scratch/runs --warmup 1 --iters 5 --repeats 1 --check-max-seq 8192 --timeout 300.0 --peak-tflops 989.0 --tag 'RA+SP (seed 003): ring family vs TP8 x PP2, ra-sp model, FP16'
