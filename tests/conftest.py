"""Every CPU test runs its ranks on CPU with gloo, also on a machine with GPUs.

Workers and bench drivers launched by the tests inherit this environment, so
``ringx.launch.init()`` picks gloo there instead of NCCL. GPU tests
(``tests/test_gpu.py``) set ``RINGX_DEVICE=cuda`` for their own workers.
"""

import os
import signal
import tempfile
from pathlib import Path

import pytest

os.environ["RINGX_DEVICE"] = "cpu"

from tests import zygote  # noqa: E402
from tests.mpi import CHECKOUT  # noqa: E402

# The files that take longest here (measured on the 2-core machine, 3 processes, 2026-12-02), longest first. Under
# `./dev test`'s several processes (pytest-xdist, one file per process at a time) files are handed out in
# collection order, so starting these first keeps one long file from running alone at the end. Mostly waiting
# (a real Slurm, hung-rank timeouts) comes first: it overlaps with the others' computing. Order only.
LONGEST_FIRST = ("test_slurm_sweep.py", "test_analysis.py", "test_bench_run.py", "test_analysis_permask.py",
                 "test_masks_mpi.py", "test_reliability.py", "test_timeline_figure.py", "test_hier_mpi.py",
                 "test_model_step.py", "test_attention_mpi.py", "test_bench_masks.py", "test_analysis_infer.py",
                 "test_rings_mpi.py", "test_sweep_model.py", "test_hf.py", "test_install.py", "test_flex_kernel.py",
                 "test_bench_kernels.py", "test_seed_experiments.py", "test_plugins_sweep.py", "test_traced.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session", autouse=True)
def warm_ranks():
    """One zygote per pytest process (tests/zygote.py): ranks launched through tests/mpi.py `launch` fork from a
    process that has imported torch, instead of importing it again (~3 s of CPU each). RINGX_TEST_ZYGOTE=off: every
    rank starts cold, as `mpiexec python` alone would."""
    if os.environ.get(zygote.ENV) == "off":
        os.environ.pop(zygote.ENV)
        yield
        return
    with tempfile.TemporaryDirectory(prefix="ringx-z") as d:  # short: a socket path has at most 107 bytes
        sock = Path(d) / "s"
        server = zygote.start(sock, {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(CHECKOUT)})
        os.environ[zygote.ENV] = str(sock)
        try:
            yield
        finally:
            os.environ.pop(zygote.ENV, None)
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """A gloo group of one rank in this process, for a test file's calls (torch.distributed must be initialised);
    module-scoped: each file makes and destroys its own."""
    import torch.distributed as dist

    assert not dist.is_initialized()
    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "file"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield None
    finally:
        from ringx import launch

        launch.finalize()  # ringx's caches of this group (its topology: one rank per node) go with it
