"""GPU kernels inside ringx against float64, at one rank and across all local GPUs.

Run where CUDA (or ROCm) is present; skipped with the reason elsewhere. The
worker forces ``RINGX_DEVICE=cuda`` (the rest of the suite forces CPU ranks).

Tolerances (max |x - ref| / max(1, max |ref|), every quantity: out, lse, dq, dk,
dv), about 4-6x the errors plain SDPA showed against float64 in the same dtype on
one H100 (bf16 4.7e-3, fp16 6e-4; the efficient op in fp32 1e-6) to leave room for
merging several blocks: bf16 2e-2, fp16 4e-3, fp32 2e-5.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.cases import ALGOS
from tests.mpi import run_mpi

CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
pytestmark = pytest.mark.skipif(not CUDA, reason="no CUDA/ROCm device visible: GPU kernels not checked here")

TOL = {"bfloat16": 2e-2, "float16": 4e-3, "float32": 2e-5}
KERNELS = ("auto", "flash-attn3", "torch-cudnn", "flash-attn", "torch-cuda", "torch-efficient")
SEED = int(os.environ.get("RINGX_TEST_SEED", int.from_bytes(os.urandom(3), "little")))
GPU_ENV = {"RINGX_DEVICE": "cuda"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cache: dict[int, list[dict]] = {}

    def get(world: int) -> list[dict]:
        if world not in cache:
            out = tmp_path_factory.mktemp(f"gpu{world}")
            proc = run_mpi(world, "tests/workers/gpu_cases.py", str(out), str(SEED), timeout=900, env=GPU_ENV)
            assert proc.returncode == 0, f"worker failed (seed {SEED}):\n{proc.stdout}\n{proc.stderr}"
            cache[world] = [json.loads(line) for r in range(world)
                            for line in (out / f"rank{r}.jsonl").read_text().splitlines()]
        return cache[world]

    return get


def _world(which: str) -> int:
    if which == "all":
        if GPUS < 2:
            pytest.skip(f"needs 2 or more GPUs for a multi-rank run, {GPUS} visible")
        return GPUS
    return 1


@pytest.mark.parametrize("world", ["one", "all"])
@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("kernel", KERNELS)
def test_gpu_kernel_matches_float64(results, kernel, dtype, world):
    P = _world(world)
    rows = [x for x in results(P) if x.get("kernel") == kernel and x["dtype"] == dtype]
    ran = [x for x in rows if "skipped" not in x]
    if not ran:
        pytest.skip("; ".join(sorted({x["skipped"] for x in rows})) or "no rows")
    assert {(x["algorithm"], x["causal"]) for x in ran} >= {(a, c) for a in ALGOS for c in (False, True)}
    for x in ran:
        assert x["ran"] == kernel or kernel == "auto"
        assert x["version"], "CallStats.kernel_version is empty"
        assert x["dtypes"] == [f"torch.{dtype}"] * 4
        for q, err in x["errors"].items():
            assert err <= TOL[dtype], (f"{x['ran']} {x['algorithm']} {'causal' if x['causal'] else 'full'} "
                                       f"{x['shape']} rank {x['rank']}/{P} {q}: {err:.3e} > {TOL[dtype]:.0e} "
                                       f"(seed {SEED})")


@pytest.mark.parametrize("world", ["one", "all"])
def test_device_backend_mismatch_is_refused_on_every_rank(results, world):
    P = _world(world)
    rows = [x for x in results(P) if "mismatch" in x]
    assert len(rows) == 2 * P
    for x in rows:
        assert x["raised"] and "but this process group's backend moves" in x["raised"], x


def test_more_ranks_than_gpus_is_refused_in_one_line(tmp_path):
    proc = run_mpi(GPUS + 1, "tests/workers/launch_only.py", timeout=120, env=GPU_ENV)
    assert proc.returncode != 0
    assert f"{GPUS + 1} ranks on" in proc.stderr and "GPUs for NCCL" in proc.stderr, proc.stderr
    assert "Duplicate GPU" not in proc.stderr


@pytest.mark.parametrize("world", ["one", "all"])
def test_pytorch_cp_runs_its_cuda_ops_checked(tmp_path, world):
    """The PyTorch CP peers on CUDA (bench/peers/torch_cp.py: flash per block in bf16, memory-efficient in float32
    with K/V heads expanded, written from torch's own CP handlers), causal and full, fewer K/V heads, checked against
    float64 and timed beside ring; across GPUs the ring's rotation, merge and load-balanced halves run too. float64
    has no CUDA op: one failed line."""
    from ringx_suite.store import Store
    from tests.mpi import launch

    n = _world(world)
    proc = launch(n, ["-m", "ringx_bench", "run", "--algorithms", "ring,tcp-allgather,tcp-ring", "--seq", "4096",
                      "--heads", "8", "--kv-heads", "2", "--head-dim", "128", "--dtype", "bfloat16,float32,float64",
                      "--causal", "true,false", "--check", "--iters", "3", "--warmup", "1", "--out", str(tmp_path),
                      "--campaign", "g", "--quiet"], timeout=600, env=GPU_ENV)
    assert proc.returncode == 0, proc.stderr
    recs = [r for r in Store(tmp_path, "g").records() if r["algorithm"].startswith("tcp-")]
    assert len(recs) == 12
    for r in recs:
        if r["dtype"] == "float64":
            assert r["status"] == "failed" and "no float64 op on CUDA" in r["error"] and "\n" not in r["error"]
            continue
        assert r["status"] == "ok" and r["device"] == "cuda", (r["algorithm"], r["dtype"], r.get("error"))
        assert r["check_max_error"] <= r["check_tolerance"]
