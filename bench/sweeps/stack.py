"""Before a GPU job is written: does the stack's Python have a torch that can use the profile's GPUs?

The check runs the job's own stack lines here (``module load``, the prefix's
bin/, the plugin's lib/) and then the interpreter, which prints its torch build.
Render runs on a login node, where GPUs are usually not visible, so it judges
the build: a CPU-only torch (no CUDA, no HIP), a build for the other vendor, or
a ROCm build whose version differs from the pinned ``rocm/X.Y`` module is
refused, in one line, unless ``--allow-cpu-python``. What cannot be run here
(no ``module`` command, a container started by an srun option) is said in a
note; the job's preflight checks the devices again on the allocation.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

from .profiles import Profile
from .script import command, stack_lines

PROBE = ("import json, torch; print('RINGX_PROBE ' + json.dumps({'torch': torch.__version__, "
         "'cuda': torch.version.cuda, 'hip': torch.version.hip}))")


def probe(prof: Profile, python: str, timeout: float = 120.0) -> tuple[dict | None, str]:
    """(torch build info, '') from the stack's interpreter, or (None, why it could not be run here).

    Without a ``module`` command here, an interpreter named by path (a prefix) is still asked, without the
    modules: which GPUs its torch was built for does not depend on them.
    """
    info, why = _probe(prof, prof.stack, python, timeout)
    if info is None and "module" in why and prof.stack.kind == "prefix":
        from dataclasses import replace

        info, why = _probe(prof, replace(prof.stack, modules=()), python, timeout)
    return info, why


def _probe(prof: Profile, st, python: str, timeout: float) -> tuple[dict | None, str]:
    if st.kind == "container" and st.exec.lstrip().startswith("-"):
        return None, f"its container starts through a launcher option ({st.exec.split()[0]}), only on an allocation"
    run = command(prof, 1, 1, [python], "mpiexec")
    launcher = prof.launcher.format(nodes=1, ranks=1, ranks_per_node=1, mpiexec="mpiexec")
    local = run[len(launcher):].strip()  # the container's exec words and the interpreter, without srun
    script = "\n".join([*stack_lines(st)[1:], f"{local} -c {shlex.quote(PROBE)}"])
    try:
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"{python} did not answer within {timeout:.0f} s"
    if st.modules and re.search(r"module: (command )?not found", proc.stderr):
        return None, "there is no `module` command here"  # whatever python ran is not the job's
    m = re.search(r"^RINGX_PROBE (.*)$", proc.stdout, re.M)
    if m:
        return json.loads(m.group(1)), ""
    return {"error": (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]}, ""


def check(prof: Profile, python: str, allow_cpu_python: bool = False) -> str:
    """'' when the stack's torch can use the profile's GPUs (or the profile has none); a note when that cannot be
    told here. Raises ValueError (one line) when it certainly cannot, unless ``allow_cpu_python``."""
    if not prof.gpus_per_node:
        return ""
    info, why = probe(prof, python)
    vendor = {"rocm": "ROCm", "cuda": "CUDA"}[prof.gpu_runtime]
    if info is None:
        return (f"note: cannot check the stack's torch here ({why}); the job's preflight checks the GPUs on its "
                "allocation before any point")
    problem = ""
    if "error" in info:
        problem = f"{python} cannot import torch here ({info['error']})"
    else:
        build = info["hip"] if prof.gpu_runtime == "rocm" else info["cuda"]
        if not info["hip"] and not info["cuda"]:
            problem = f"{python} has torch {info['torch']}, a CPU-only build"
        elif not build:
            other = "CUDA" if info["cuda"] else "ROCm"
            problem = f"{python} has torch {info['torch']}, built for {other}, not {vendor}"
        elif prof.gpu_runtime == "rocm":
            pinned = [m.split("/", 1)[1] for m in prof.stack.modules if m.startswith("rocm/")]
            if pinned and not _same_release(str(info["hip"]), pinned[0]):
                problem = (f"{python} has torch {info['torch']} built for ROCm {info['hip']}, but the stack loads "
                           f"rocm/{pinned[0]}")
    if not problem:
        return ""
    if allow_cpu_python:
        return f"note: {problem}; rendering anyway (--allow-cpu-python)"
    raise ValueError(f"{problem}: on {prof.name} ({prof.gpus_per_node} {vendor} GPUs per node) the job would not "
                     f"run on its GPUs. Name a {vendor} torch in [stack] (profile or sweep file), or pass "
                     "--allow-cpu-python")


def _same_release(hip: str, module_version: str) -> bool:
    """torch.version.hip '6.2.41134-65d174c3e' against module 'rocm/6.2.4': the same major.minor."""
    return hip.split(".")[:2] == module_version.split(".")[:2]
