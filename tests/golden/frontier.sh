#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile frontier: 4 node(s) x 8 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
#SBATCH --job-name=ringx-paper-N4x8
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --time=01:30:00
#SBATCH --output=/lustre/results/paper/sweep/logs/%x-%j.out
#SBATCH --error=/lustre/results/paper/sweep/logs/%x-%j.err
#SBATCH --account=abc123
#SBATCH --partition=batch
#SBATCH --network=disable_rdzv_get
#SBATCH -S 8
set -euo pipefail
module load PrgEnv-gnu rocm craype-accel-amd-gfx90a
export NCCL_NET_GDR_LEVEL=PHB
export NCCL_CROSS_NIC=1
export NCCL_SOCKET_IFNAME=hsn0
export FI_MR_CACHE_MONITOR=kdreg2
export FI_CXI_DISABLE_HOST_REGISTER=1
export FI_CXI_DEFAULT_CQ_SIZE=131072
export FI_CXI_RDZV_PROTO=alt_read
export OMP_NUM_THREADS=7
cd /home/u/ringx
srun -N 4 -n 32 -c 7 --gpus-per-task=1 --gpu-bind=closest /home/u/env/bin/python -m bench run --points /lustre/results/paper/sweep/points/N4x8.json --campaign paper --out /lustre/results --iters 10
