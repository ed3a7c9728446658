#!/usr/bin/env bash
# Every GPU check of the suite on one node, in one go (issue "GPUs first"): the tests, bench selftest,
# bench kernels, a one-rank campaign of every algorithm with --check, a Llama-3-8B-shaped training step
# (bench model), and their reports.
#
#   jobs/checks/gpu-node.sh OUT_DIR          # on a GPU node, with a Python whose torch sees the GPU and
#                                            # whose mpi4py has an MPI library (pip's mpich will do)
#   SMALL=1 DEVICE=cpu jobs/checks/gpu-node.sh /tmp/x   # the same steps on CPU, tiny sizes (a smoke test)
#
# Records land in OUT_DIR/<campaign>/ (copy them to results/gpu-<device>/), logs in OUT_DIR/*.log,
# and OUT_DIR/summary.md says what passed. Exit status: non-zero if any step failed.
# Sizes can be narrowed to fit an allocation: SEQS (one-rank campaign), MODEL_SEQS, ITERS, and STEP_LIMIT
# (seconds any one step may take before it is stopped and marked failed; default: no limit).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: jobs/checks/gpu-node.sh OUT_DIR}
mkdir -p "$out"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${SMALL:-}" ]; then
  seqs=256,512; heads=8; kv=2; hd=64; dtype=float32; kseq=128,256; iters=3; preset=tiny; mseqs=256
  model_extra=(--check)
else
  seqs=4096,8192,16384,32768,65536; heads=32; kv=8; hd=128; dtype=bfloat16; kseq=""; iters=20; preset=llama3-8b
  mseqs=8192,32768; model_extra=(--peak-tflops "${PEAK_TFLOPS:-989}")  # H100/H200 SXM bf16 dense, published
fi
seqs=${SEQS:-$seqs}; iters=${ITERS:-$iters}; mseqs=${MODEL_SEQS:-$mseqs}
limit=()
[ -n "${STEP_LIMIT:-}" ] && limit=(timeout -k 10 "$STEP_LIMIT")
status=0
step() {  # step NAME CMD...: run, log, note the result
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*" | tee -a "$out/summary.md"
  if "${limit[@]}" "$@" >"$out/$name.log" 2>&1; then r=ok; else r="FAILED (exit $?)"; status=1; fi
  echo "   $r in $((SECONDS - t0)) s (log: $name.log)" | tee -a "$out/summary.md"
}
: >"$out/summary.md"
"$PY" - <<'PY' | tee -a "$out/summary.md"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, HIP {torch.version.hip}, cuDNN "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}, GPUs: "
      f"{[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
PY
step tests "$PY" -m pytest -q -x tests/test_gpu.py tests/test_kernels.py tests/test_single_rank.py tests/test_launch.py \
  tests/test_bench_kernels.py
step selftest "$PY" -m ringx_bench selftest --device "$DEVICE"
step kernels "$PY" -m ringx_bench kernels --device "$DEVICE" --campaign kernels --out "$out" --iters "$iters" \
  ${kseq:+--block "$kseq"} ${SMALL:+--heads 8 --kv-heads 8,2 --head-dim 64 --dtype float32}
step one-rank "$PY" -m ringx_bench run --device "$DEVICE" --campaign one-rank --out "$out" --seq "$seqs" --heads "$heads" \
  --kv-heads "$kv" --head-dim "$hd" --dtype "$dtype" --causal true,false --mode fwd,fwd+bwd --warmup 3 \
  --iters "$iters" --check --check-max-seq 65536 ${SMALL:+--check-max-seq 512}
# One rank cannot show ring against ringX (every algorithm is one local block there); what it shows is the
# whole step's MFU and the share of attention in it, with the kernel the suite picks.
step model "$PY" -m ringx_bench model --device "$DEVICE" --preset "$preset" --seq "$mseqs" \
  --algorithms ring,zigzag,ringx3,ringx4o --warmup 2 --iters 5 --campaign model --out "$out" \
  "${model_extra[@]}"
step model-check "$PY" -m ringx_bench model --device "$DEVICE" --preset tiny --seq 512 --algorithms ring,ringx3 \
  --check --warmup 1 --iters 2 --campaign model-check --out "$out"
step report-one-rank "$PY" -m ringx_bench report "$out/one-rank" --out "$out/one-rank-report"
step report-kernels "$PY" -m ringx_bench report "$out/kernels" --out "$out/kernels-report"
step report-model "$PY" -m ringx_bench report "$out/model" --out "$out/model-report"
"$PY" -m ringx_bench summary "$out/one-rank" >"$out/one-rank-summary.md" 2>&1 || true
echo "done: $out/summary.md" | tee -a "$out/summary.md"
exit $status
