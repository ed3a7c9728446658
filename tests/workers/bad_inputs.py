"""MPI worker: feed bad inputs (on the last rank only, or on all) and record what each rank raised.

Usage: mpiexec -n P python tests/workers/bad_inputs.py OUT_DIR [uncaught]
With ``uncaught`` the last rank passes an odd zigzag length and nobody catches
the error: every rank must then exit non-zero on its own.
"""

import json
import sys
from pathlib import Path

import torch

import ringx
from ringx import launch
from ringx.dropin import zigzag_ring_flash_attn_func


def t(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


def scenarios(last: bool):
    ok = dict(q=t(1, 8, 4, 16), k=t(1, 8, 2, 16), v=t(1, 8, 2, 16), algorithm="zigzag", causal=True)

    def bad(**kw):
        return {**ok, **kw} if last else ok

    return {
        "seq_differs": bad(q=t(1, 4, 4, 16), k=t(1, 4, 2, 16), v=t(1, 4, 2, 16)),
        "dtype_differs": bad(q=t(1, 8, 4, 16, dtype=torch.float64), k=t(1, 8, 2, 16, dtype=torch.float64),
                             v=t(1, 8, 2, 16, dtype=torch.float64)),
        "qkv_dtypes": bad(k=t(1, 8, 2, 16, dtype=torch.float64)),
        "gqa_heads": bad(k=t(1, 8, 3, 16), v=t(1, 8, 3, 16)),
        "kv_shapes": bad(v=t(1, 8, 2, 8)),
        "odd_zigzag": bad(q=t(1, 7, 4, 16), k=t(1, 7, 2, 16), v=t(1, 7, 2, 16)),
        "device": bad(k=t(1, 8, 2, 16, device="meta")),
        "backend_device": bad(q=t(1, 8, 4, 16, device="meta"), k=t(1, 8, 2, 16, device="meta"),
                              v=t(1, 8, 2, 16, device="meta")),
        "unknown_algorithm": bad(algorithm="ringx7"),
        "bad_scale": bad(softmax_scale=-1.0),
        "int_dtype": bad(q=torch.ones(1, 8, 4, 16, dtype=torch.int32), k=torch.ones(1, 8, 2, 16, dtype=torch.int32),
                         v=torch.ones(1, 8, 2, 16, dtype=torch.int32)),
        "causal_differs": bad(causal=False),
    }


def main() -> None:
    out_dir = Path(sys.argv[1])
    uncaught = len(sys.argv) > 2
    torch.set_num_threads(1)
    ctx = launch.init(timeout_s=30)
    last = ctx.rank == ctx.world_size - 1
    if uncaught:
        n = 7 if last else 8
        ringx.attention(t(1, n, 2, 8), t(1, n, 2, 8), t(1, n, 2, 8), algorithm="zigzag", causal=True)
        return
    res, kept = {}, {}
    for into in (res, kept):  # the second time every rank has kept a plan for every configuration
        for name, kw in scenarios(last).items():
            kw = dict(kw)
            try:
                ringx.attention(kw.pop("q"), kw.pop("k"), kw.pop("v"), **kw)
                into[name] = None
            except ringx.RingxInputError as e:
                into[name] = str(e)
            ringx.attention(*(t(1, 8, 2, 16) for _ in range(3)), algorithm="zigzag", causal=True)  # a good call
    res["kept"] = kept
    # The group is still healthy afterwards, and the drop-in path agrees with ringx.attention.
    q, k, v = (t(1, 8, 2, 16) for _ in range(3))
    a = ringx.attention(q, k, v, algorithm="zigzag", causal=True)
    b = zigzag_ring_flash_attn_func(q, k, v, causal=True)
    res["healthy_after"] = bool(torch.equal(a, b))
    (out_dir / f"rank{ctx.rank}.json").write_text(json.dumps(res))
    launch.finalize()


if __name__ == "__main__":
    main()
