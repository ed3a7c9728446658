"""MPI worker: every GPU kernel x dtype x algorithm against float64, on one GPU per rank.

Usage: RINGX_DEVICE=cuda mpiexec -n P python tests/workers/gpu_cases.py OUT_DIR SEED
Each rank writes OUT_DIR/rank{r}.jsonl: one row per (kernel, dtype, algorithm, masking,
shape) with the error of every quantity of its own shard, or the reason the kernel does
not run here; then rows checking that mismatched devices are refused on every rank.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import ringx
from ringx import launch
from tests.cases import ALGOS, QUANTITIES
from tests.reference import full_attention

KERNELS = ("auto", "flash-attn3", "torch-cudnn", "flash-attn", "torch-cuda", "torch-efficient")
DTYPES = ("bfloat16", "float16", "float32")
# (name, batch, heads, kv_heads, head_dim, seq_local): MHA, and GQA with head_dim 128 and batch 2.
SHAPES = (("mha", 1, 4, 4, 64, 128), ("gqa", 2, 8, 2, 128, 64))


def error(x: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((x.detach().double().cpu() - ref).abs().max() / max(1.0, ref.abs().max().item())).item()


def main() -> None:
    out_dir, seed = Path(sys.argv[1]), int(sys.argv[2])
    ctx = launch.init(device="cuda", timeout_s=120)
    P, r, dev = ctx.world_size, ctx.rank, ctx.device
    rows = []
    refs = {}
    for kernel in KERNELS:
        for dt_name in DTYPES:
            dt = getattr(torch, dt_name)
            for shape in SHAPES:
                name, b, h, hk, d, n = shape
                if kernel != "auto" and not ringx.KERNELS[kernel].supports(dev, dt, d):
                    rows.append({"kernel": kernel, "dtype": dt_name, "shape": name, "rank": r,
                                 "skipped": f"{kernel} does not run {dt_name}, head_dim {d} on this GPU"})
                    continue
                for causal in (False, True):
                    key = (dt_name, shape, causal)
                    if key not in refs:  # one float64 reference per configuration, shared by kernels and algorithms
                        gen = torch.Generator().manual_seed(seed + len(refs))
                        S = n * P
                        full = [torch.randn(b, S, x, d, generator=gen, dtype=torch.float64).to(dt).double()
                                for x in (h, hk, hk, h)]
                        refs[key] = (full, full_attention(*full, causal))
                    (Q, K, V, dO), ref = refs[key]
                    for algo in ALGOS:
                        layout = ringx.ALGORITHMS[algo].layout(causal)
                        q, k, v = (ringx.shard(t, layout, r, P).to(dev, dt).requires_grad_() for t in (Q, K, V))
                        stats = ringx.CallStats()
                        out, lse = ringx.attention(q, k, v, algorithm=algo, causal=causal, return_lse=True,
                                                   kernel=None if kernel == "auto" else kernel, stats=stats)
                        out.backward(ringx.shard(dO, layout, r, P).to(dev, dt))
                        mine = [ringx.shard(t, layout, r, P, dim=2 if j == 1 else 1) for j, t in enumerate(ref)]
                        got = (out, lse, q.grad, k.grad, v.grad)
                        rows.append({
                            "kernel": kernel, "dtype": dt_name, "shape": name, "rank": r, "algorithm": algo,
                            "causal": causal, "ran": stats.kernel, "version": stats.kernel_version,
                            "dtypes": [str(t.dtype) for t in (out, q.grad, k.grad, v.grad)],
                            "errors": {nm: error(g, m) for nm, g, m in zip(QUANTITIES, got, mine)},
                        })
    # Tensors on a device the group's backend does not move are refused on every rank alike.
    gloo = dist.new_group(backend="gloo")
    x = torch.randn(1, 8, 2, 16)
    for case, tensors, group in (("cpu_on_nccl", (x, x, x), None), ("cuda_on_gloo", (x.to(dev),) * 3, gloo)):
        try:
            ringx.attention(*tensors, algorithm="ring", causal=False, group=group)
            msg = None
        except ringx.RingxInputError as e:
            msg = str(e)
        rows.append({"mismatch": case, "rank": r, "raised": msg})
    (out_dir / f"rank{r}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    launch.finalize()


if __name__ == "__main__":
    main()
