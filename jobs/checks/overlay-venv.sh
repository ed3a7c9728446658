#!/usr/bin/env bash
# A venv on an offline node whose Python already has torch (a container or site module) but no MPI:
# it sees that Python's packages through a .pth file and adds wheels carried in by hand (pip's mpich
# and mpi4py), so that `VENV/bin/mpiexec` and `VENV/bin/python` are ready for jobs/checks/*.sh.
#
#   jobs/checks/overlay-venv.sh WHEEL_DIR VENV     # e.g. .whl /tmp/venv
#
# Why not `python -m venv --system-site-packages`: when the node's python3 is itself a venv, that flag
# exposes the base interpreter's packages, not the ones that hold torch.
set -euo pipefail
wheels=${1:?usage: overlay-venv.sh WHEEL_DIR VENV}
venv=${2:?usage: overlay-venv.sh WHEEL_DIR VENV}
PY=${PYTHON:-python3}
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$PY" -m venv --without-pip "$venv"
mine=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# addsitedir, not a bare path: the base's own .pth files (namespace packages, vendor paths) are read too.
echo "import site; site.addsitedir('$site')" >"$mine/overlay-base.pth"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --ignore-installed --prefix "$venv" "$wheels"/*.whl
"$venv/bin/python" - <<'PY'
import mpi4py, torch
from mpi4py import MPI
print(f"overlay venv: torch {torch.__version__} (CUDA {torch.cuda.is_available()}), mpi4py {mpi4py.__version__}, "
      f"{MPI.Get_library_version().splitlines()[0]}")
PY
