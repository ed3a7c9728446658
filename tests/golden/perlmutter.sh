#!/bin/bash
# Rendered by ringx-bench (bench sweep) for profile perlmutter: 4 node(s) x 4 ranks.
# Every substituted value is shell-quoted; #SBATCH values are restricted to a safe character set.
#SBATCH --job-name=ringx-paper-N4x8
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --time=01:30:00
#SBATCH --output=/lustre/results/paper/sweep/logs/%x-%j.out
#SBATCH --error=/lustre/results/paper/sweep/logs/%x-%j.err
#SBATCH --account=abc123
#SBATCH --qos=regular
#SBATCH -C gpu
#SBATCH --gpus-per-node=4
set -euo pipefail
module load pytorch
export NCCL_NET_GDR_LEVEL=PHB
export OMP_NUM_THREADS=32
cd /home/u/ringx
srun -N 4 -n 16 --ntasks-per-node=4 -c 32 --gpus-per-node=4 --gpu-bind=none /home/u/env/bin/python -m bench run --points /lustre/results/paper/sweep/points/N4x8.json --campaign paper --out /lustre/results --iters 10
