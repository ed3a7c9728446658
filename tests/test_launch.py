"""How ``ringx.launch`` decides device and backend, and how it refuses what cannot work (no MPI needed)."""

from __future__ import annotations

import pytest

from ringx.launch import DEVICE_ENV, LaunchError, plan


@pytest.mark.parametrize("backend,device,env,gpus,ranks,expected", [
    (None, None, None, 0, 4, ("cpu", "gloo")),  # CPU machine
    (None, None, None, 8, 8, ("cuda", "nccl")),  # GPU node, one rank per GPU
    (None, None, "cpu", 8, 16, ("cpu", "gloo")),  # RINGX_DEVICE=cpu: CPU ranks on a GPU node
    (None, "cpu", None, 8, 16, ("cpu", "gloo")),  # device="cpu" (bench run --device cpu)
    ("gloo", None, "cuda", 8, 16, ("cpu", "gloo")),  # an explicit backend beats the environment
    ("nccl", None, None, 4, 4, ("cuda", "nccl")),
    (None, None, "cuda", 2, 2, ("cuda", "nccl")),
])
def test_device_and_backend(backend, device, env, gpus, ranks, expected):
    assert plan(backend, device, env, gpus, ranks) == expected


def test_more_ranks_than_gpus_is_refused_in_one_line():
    with pytest.raises(LaunchError) as e:
        plan(None, None, None, 1, 2, "gpu-node-7")
    msg = str(e.value)
    assert "\n" not in msg
    # what was asked, what is there, how to fix it
    assert "2 ranks on gpu-node-7 need 2 GPUs for NCCL" in msg
    assert "but 1 GPU is visible there" in msg
    assert "run at most 1 rank(s) per node" in msg and f"--device cpu or {DEVICE_ENV}=cpu" in msg


@pytest.mark.parametrize("backend,device,env,gpus,match", [
    ("nccl", "cpu", None, 1, "nccl cannot move CPU tensors"),
    ("gloo", "cuda", None, 1, "gloo with CUDA tensors is not supported"),
    (None, "cuda", None, 0, "device cuda asked, but this node has no visible GPU"),
    (None, None, "gpu", 1, "RINGX_DEVICE='gpu' is not a device type"),
    ("mpi", None, None, 0, "unknown backend 'mpi'"),
])
def test_impossible_setups_say_what_to_do(backend, device, env, gpus, match):
    with pytest.raises(LaunchError, match=match):
        plan(backend, device, env, gpus, 1)
