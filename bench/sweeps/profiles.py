"""Machine profiles (jobs/profiles/*.toml): how to run a job on a machine, and what the machine is.

A profile names the scheduler, the launcher line, the software stack a job runs
(``[stack]``), set-up lines and environment of a job, the GPUs per node and
their runtime, the network transport the job must use, the scratch root its
output goes to, the device's published peak and the cost model's machine
description (its ``[model]`` table). A profile is trusted input: its ``setup``
lines go into job scripts as shell, on purpose.

``[stack]`` (see :class:`Stack`) says which Python runs the job:

- ``kind = "modules"``: ``module load`` the listed modules (pin versions:
  ``rocm/6.2.4``), then run ``python`` from them;
- ``kind = "prefix"``: the modules, then a conda environment or venv directory:
  its ``bin/`` goes first on PATH and ``PREFIX/bin/python`` runs the job;
- ``kind = "container"``: the modules, then ``exec`` (``apptainer exec --rocm
  {image}``, or an ``srun`` option such as ``--environment={image}``) between
  the launcher and ``python``.

``plugin_path`` names the directory of the network plugin (aws-ofi-rccl or
aws-ofi-nccl); it is put first on ``LD_LIBRARY_PATH``. A sweep file's own
``[stack]`` table overrides the profile's keys (a user's prefix, plugin or image).

A profile is trusted input: its ``setup`` lines go into job scripts as shell, on purpose. So
profiles come only from jobs/profiles/ or a file the user names on the command line
(``--profile PATH``), never from a path inside a sweep file.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ringx_costmodel.machine import PROFILES

from .schedulers import SCHEDULERS, Scheduler

STACK_KINDS = ("none", "modules", "prefix", "container")
RUNTIMES = ("", "cuda", "rocm")
NETWORKS = ("", "libfabric")


@dataclass(frozen=True)
class Stack:
    kind: str = "none"  # none: the Python running `bench sweep` (fine for CPU ranks; refused for GPUs)
    modules: tuple[str, ...] = ()  # loaded first, whatever the kind: pin versions (rocm/6.2.4)
    prefix: str = ""  # kind prefix: a conda env or venv directory ($VARS expanded when rendering)
    image: str = ""  # kind container: the image (or Alps EDF name)
    exec: str = ""  # kind container: words between the launcher and python, with {image}
    python: str = ""  # the interpreter (default: PREFIX/bin/python for prefix, python3 for modules/container)
    plugin_path: str = ""  # directory holding the NCCL/RCCL network plugin; put first on LD_LIBRARY_PATH

    def interpreter(self, fallback: str) -> str:
        """The Python a job runs: the stack's, or ``fallback`` (the running one) without a stack."""
        if self.python:
            return self.python
        if self.kind == "prefix":
            return f"{self.prefix.rstrip('/')}/bin/python"
        return "python3" if self.kind in ("modules", "container") else fallback

    def suite(self, fallback: str) -> list[str]:
        """The suite's command in the job's environment: ``ringx-bench`` beside the stack's interpreter (a path),
        else on the PATH the stack sets up. Without a stack: the one beside ``fallback`` (the running Python),
        or ``fallback -m ringx_bench`` where this environment has no console script (a bare checkout)."""
        python = self.interpreter(fallback)
        if self.kind == "none" and not self.python:
            here = Path(fallback).parent / "ringx-bench"
            return [str(here)] if here.exists() else [fallback, "-m", "ringx_bench"]
        return [str(Path(python).parent / "ringx-bench")] if "/" in python else ["ringx-bench"]

    def describe(self) -> str:
        """One line for the job script's comment: where the interpreter comes from."""
        mods = "modules " + " ".join(self.modules) if self.modules else ""
        head = {"none": "the Python that ran bench sweep", "modules": "", "prefix": f"prefix {self.prefix}",
                "container": f"container {self.image}"}[self.kind]
        return ", ".join(x for x in (head, mods) if x) or "modules (none listed)"


@dataclass
class Profile:
    name: str
    description: str
    scheduler: Scheduler  # named in the file: a key of schedulers.SCHEDULERS
    gpus_per_node: int  # 0: CPU ranks
    peak_tflops: float  # per rank
    efficiency: float
    launcher: str  # with {nodes} {ranks} {ranks_per_node} {mpiexec}
    directives: list[str] = field(default_factory=list)
    account: str = ""
    partition: str = ""
    qos: str = ""
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    stack: Stack = field(default_factory=Stack)
    gpu_runtime: str = ""  # "cuda" or "rocm": the torch build the GPUs need ("" for CPU ranks)
    network: str = ""  # "libfabric": the preflight fails when NCCL/RCCL falls back to sockets
    scratch: str = ""  # default output root, e.g. "$MEMBERWORK/{account}/ringx-runs" ($VARS expanded when rendering)
    startup_s: float = 60.0  # one launch's start-up at one rank (imports, rendezvous), for estimates
    startup_per_rank_s: float = 0.0  # ... plus this per rank (imports from a parallel filesystem, rendezvous)
    preflight_s: float = 30.0  # the preflight's checks, after its start-up
    per_point_s: float = 2.0  # per-point overhead (inputs, check, record) for estimates
    model: dict = field(default_factory=dict)  # cost-model machine description (costmodel/machine.py)
    memory_gb: float = 0.0  # one GPU's memory (GPU profiles) or one node's, shared by its ranks; 0: unknown

    def memory_per_rank(self, ranks_per_node: int) -> int:
        """Bytes one rank may use (0: unknown, not checked); the local machine's own when not given."""
        gb = self.memory_gb or (local_memory() if self.scheduler.here else 0.0)
        return int(gb * 1e9 / (1 if self.gpus_per_node else max(1, ranks_per_node)))

    def startup(self, ranks: int) -> float:
        """Seconds one launch of ``ranks`` ranks takes before its first point (documented in the README)."""
        return self.startup_s + self.startup_per_rank_s * ranks


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.toml"))


def make_stack(raw: dict, where: str, base: Stack | None = None) -> Stack:
    """A [stack] table (over ``base``) checked: known keys, a known kind, the fields its kind needs."""
    valid = {f.name for f in fields(Stack)}
    unknown = set(raw) - valid
    if unknown:
        raise ValueError(f"{where}: unknown [stack] key(s) {', '.join(sorted(unknown))} (valid: "
                         f"{', '.join(sorted(valid))})")
    for k, v in raw.items():
        ok = isinstance(v, list) and all(isinstance(x, str) for x in v) if k == "modules" else isinstance(v, str)
        if not ok or any("\n" in x for x in (v if isinstance(v, list) else [v])):
            raise ValueError(f"{where}: [stack] {k} must be {'a list of strings' if k == 'modules' else 'a string'} "
                             "on one line")
    st = replace(base or Stack(), **{k: (tuple(v) if k == "modules" else v) for k, v in raw.items()})
    if st.kind not in STACK_KINDS:
        raise ValueError(f"{where}: [stack] kind {st.kind!r}: choose one of {', '.join(STACK_KINDS)}")
    if st.kind == "prefix" and not st.prefix:
        raise ValueError(f"{where}: [stack] kind \"prefix\" needs prefix = \"/path/to/env\" (a conda env or venv)")
    if st.kind == "container" and not (st.image and st.exec):
        raise ValueError(f"{where}: [stack] kind \"container\" needs image and exec (e.g. exec = "
                         "\"apptainer exec --rocm {image}\")")
    return st


def local_memory() -> float:
    """GB of this machine (the local scheduler's node); 0 when unknown."""
    import torch

    from ringx_drivers.measure.memory import device_memory

    return device_memory(torch.device("cpu")) / 1e9


# Each field's JSON type and bounds (a profile is trusted, but a typo should still read as one).
_NUMBERS = {"gpus_per_node": (0, 1024), "peak_tflops": (0, 1e7), "efficiency": (1e-6, 1.0),
            "startup_s": (0, 86400), "per_point_s": (0, 86400), "memory_gb": (0, 1e6),
            "startup_per_rank_s": (0, 3600), "preflight_s": (0, 86400)}
_TEXTS = ("description", "scheduler", "launcher", "account", "partition", "qos", "gpu_runtime", "network",
          "scratch")
_LISTS = ("directives", "setup")


def _check(path: Path, data: dict) -> list[str]:
    problems = []
    for k, (lo, hi) in _NUMBERS.items():
        v = data.get(k, 0)
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi
        if not ok or (k == "gpus_per_node" and not isinstance(v, int)):
            problems.append(f"{k} must be a number from {lo:g} to {hi:g}, got {v!r}")
    problems += [f"{k} must be a string" for k in _TEXTS if not isinstance(data.get(k, ""), str)]
    problems += [f"{k} must be a list of single-line strings" for k in _LISTS
                 if not isinstance(data.get(k, []), list)
                 or not all(isinstance(x, str) and "\n" not in x for x in data.get(k, []))]
    if not isinstance(data.get("env", {}), dict) or not isinstance(data.get("model", {}), dict):
        problems.append("[env] and [model] must be tables")
    return problems


def load_profile(name: str, explicit: bool = False) -> Profile:
    """A profile by name (jobs/profiles/NAME.toml), or, with ``explicit`` (the user named it on the command
    line), by path to a TOML file."""
    path = Path(name) if explicit else PROFILES / f"{name}.toml"
    if not path.is_file():
        where = f"no profile file {path}" if explicit else f"unknown machine {name!r}"
        raise ValueError(f"{where}; profiles: {', '.join(available_profiles())} (add one as jobs/profiles/NAME.toml, "
                         "or give a file with --profile PATH)")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"profile {path}: cannot read it as TOML: {e}") from None
    if "modules" in data:
        raise ValueError(f"profile {path}: modules now live in the [stack] table (modules = [...], with versions)")
    known = set(Profile.__dataclass_fields__) - {"name"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"profile {path}: unknown key(s) {', '.join(sorted(unknown))}")
    problems = _check(path, data)
    if data.get("scheduler") not in SCHEDULERS:
        problems.append(f"scheduler must be one of {', '.join(SCHEDULERS)}")
    missing = [k for k in ("description", "scheduler", "gpus_per_node", "peak_tflops", "efficiency", "launcher")
               if k not in data]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if problems:
        raise ValueError(f"profile {path}: " + "; ".join(problems))
    stack = make_stack(data.pop("stack", {}), f"profile {path}")
    prof = Profile(name=path.stem, stack=stack, **(data | {"scheduler": SCHEDULERS[data["scheduler"]]}))
    if prof.gpu_runtime not in RUNTIMES or bool(prof.gpu_runtime) != bool(prof.gpus_per_node):
        raise ValueError(f"profile {path}: gpu_runtime must be \"cuda\" or \"rocm\" when gpus_per_node > 0, and "
                         "absent for CPU ranks")
    if prof.network not in NETWORKS:
        raise ValueError(f"profile {path}: network must be one of {', '.join(repr(n) for n in NETWORKS)}")
    for line in prof.directives + prof.setup + list(prof.stack.modules):
        if "\n" in line:
            raise ValueError(f"profile {path}: directives, setup and modules entries must be single lines")
    return prof


_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def unset_vars(value: str) -> list[str]:
    """The $VARS of ``value`` that this environment does not set."""
    return [a or b for a, b in _VAR.findall(value) if not os.environ.get(a or b)]


def expand(value: str, what: str, **names: str) -> str:
    """``value`` with {account}-style names filled and $VARS expanded from this environment; a variable that is
    not set is an error naming it (a job must not write to a path that silently lost its root)."""
    try:
        value = value.format(**names)
    except (KeyError, IndexError) as e:
        raise ValueError(f"{what} {value!r}: unknown name {{{e.args[0]}}}") from None
    missing = unset_vars(value)
    if missing:
        raise ValueError(f"{what} {value!r} needs ${missing[0]}, which is not set here")
    return os.path.expandvars(value)
