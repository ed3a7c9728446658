#!/usr/bin/env bash
# The cost model's scale check (issue "a cost model that holds at 8 and 16 ranks"): CPU ranks on one
# many-core node, one core and one thread each, over gloo. Records every microbenchmark the model is
# calibrated from (bench kernels with 1, 8, 16 ranks busy at once; bench collectives at 8 and 16 ranks;
# a one-rank run) and the multi-rank campaign it is judged on (all ten flat algorithms, causal, fwd+bwd).
#
#   jobs/checks/cpu-scale.sh OUT_DIR                 # 8 and 16 ranks (needs 16 cores)
#   RANKS="2 4" SEQS=1024,2048 jobs/checks/cpu-scale.sh /tmp/x   # a small try on a small machine
#
# Then: ringx-bench validate OUT_DIR/cpu-scale --cores-per-node 16
# Each launch is confined to cores 0..n-1 (n ranks), so every rank has a core of its own and the
# one-rank records run on one core, as the model's per-rank throughput means.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: jobs/checks/cpu-scale.sh OUT_DIR}
mkdir -p "$out"
PY=${PYTHON:-python3}
MPIEXEC=${MPIEXEC:-$(dirname "$PY")/mpiexec}
RANKS=${RANKS:-8 16}
SEQS=${SEQS:-4096,8192}
ONE_SEQS=${ONE_SEQS:-1024,2048}
KSEQ=${KSEQ:-128,256,512,1024}
ITERS=${ITERS:-8}
CAMPAIGN=${CAMPAIGN:-cpu-scale}
ALGOS=ring,zigzag,stripe,ringx1,ringx2,ringx3,ringx4,ringx1o,ringx2o,ringx4o
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
have=$(nproc)  # before OMP_NUM_THREADS is set: nproc honours it
export OMP_NUM_THREADS=1 RINGX_PIN_CPU=1 RINGX_DEVICE=cpu CUDA_VISIBLE_DEVICES=
common=(--out "$out" --campaign "$CAMPAIGN" --quiet)
shape=(--heads 8 --head-dim 64 --dtype float32)
status=0
on_cores() {  # on_cores N CMD...: run CMD confined to cores 0..N-1
  local n=$1; shift
  "$PY" -c 'import os, sys; os.sched_setaffinity(0, range(int(sys.argv[1]))); os.execvp(sys.argv[2], sys.argv[2:])' \
    "$n" "$@"
}
step() {  # step NAME N CMD...: CMD on N ranks confined to N cores, logged
  local name=$1 n=$2; shift 2
  local t0=$SECONDS
  if [ "$n" -gt "$have" ]; then echo "== $name: skipped ($n ranks, $have cores)" | tee -a "$out/summary.md"; return; fi
  echo "== $name: $n ranks: $*" | tee -a "$out/summary.md"
  if on_cores "$n" "$MPIEXEC" -n "$n" "$PY" "$@" >"$out/$name.log" 2>&1; then r=ok; else r="FAILED (exit $?)"; status=1; fi
  echo "   $r in $((SECONDS - t0)) s" | tee -a "$out/summary.md"
}
: >>"$out/summary.md"
echo "cpu-scale: $have cores, ranks $RANKS, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')" | tee -a "$out/summary.md"
for n in 1 $RANKS; do
  step "kernels-$n" "$n" -m ringx_bench kernels --device cpu --block "$KSEQ" "${shape[@]}" --kv-heads 8 \
    --warmup 2 --iters "$ITERS" --tag "bench kernels, $n ranks busy at once, one core each" "${common[@]}"
done
step one-rank 1 -m ringx_bench run --device cpu --algorithms "$ALGOS" --seq "$ONE_SEQS" "${shape[@]}" --causal true \
  --mode fwd+bwd --warmup 2 --iters "$ITERS" --tag "one rank, one core" "${common[@]}"
for n in $RANKS; do
  step "collectives-$n" "$n" -m ringx_bench collectives --max-bytes 32M --warmup 2 --iters 10 \
    --tag "gloo over loopback, $n ranks" "${common[@]}"
  step "run-$n" "$n" -m ringx_bench run --device cpu --algorithms "$ALGOS" --seq "$SEQS" "${shape[@]}" --causal true \
    --mode fwd+bwd --warmup 2 --iters "$ITERS" --check --check-max-seq 1024 \
    --tag "$n CPU ranks, one core each, gloo over loopback" "${common[@]}"
done
echo "done: $out/summary.md" | tee -a "$out/summary.md"
exit $status
