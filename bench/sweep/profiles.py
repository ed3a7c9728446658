"""Machine profiles (jobs/profiles/*.toml): how to run a job on a machine, and what the machine is.

A profile names the scheduler, the launcher line, modules, set-up lines and
environment of a job, the GPUs per node, the device's published peak and the
cost model's machine description (its ``[model]`` table). A profile is trusted
input: its ``setup`` lines go into job scripts as shell, on purpose. So profiles
come only from jobs/profiles/ or a file the user names on the command line
(``--profile PATH``), never from a path inside a sweep file.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from costmodel.machine import PROFILES


@dataclass
class Profile:
    name: str
    description: str
    scheduler: str  # "slurm" or "local"
    gpus_per_node: int  # 0: CPU ranks
    peak_tflops: float  # per rank
    efficiency: float
    launcher: str  # with {nodes} {ranks} {ranks_per_node} {mpiexec}
    directives: list[str] = field(default_factory=list)
    account: str = ""
    partition: str = ""
    qos: str = ""
    modules: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    startup_s: float = 60.0  # job start-up (imports, rendezvous) for estimates
    per_point_s: float = 2.0  # per-point overhead (inputs, check, record) for estimates
    model: dict = field(default_factory=dict)  # cost-model machine description (costmodel/machine.py)
    memory_gb: float = 0.0  # one GPU's memory (GPU profiles) or one node's, shared by its ranks; 0: unknown

    def memory_per_rank(self, ranks_per_node: int) -> int:
        """Bytes one rank may use (0: unknown, not checked); the local machine's own when not given."""
        gb = self.memory_gb or (local_memory() if self.scheduler == "local" else 0.0)
        return int(gb * 1e9 / (1 if self.gpus_per_node else max(1, ranks_per_node)))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.toml"))


def local_memory() -> float:
    """GB of this machine (the local scheduler's node); 0 when unknown."""
    import torch

    from bench.measure.memory import device_memory

    return device_memory(torch.device("cpu")) / 1e9


# Each field's JSON type and bounds (a profile is trusted, but a typo should still read as one).
_NUMBERS = {"gpus_per_node": (0, 1024), "peak_tflops": (0, 1e7), "efficiency": (1e-6, 1.0),
            "startup_s": (0, 86400), "per_point_s": (0, 86400), "memory_gb": (0, 1e6)}
_TEXTS = ("description", "scheduler", "launcher", "account", "partition", "qos")
_LISTS = ("directives", "modules", "setup")


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
    known = set(Profile.__dataclass_fields__) - {"name"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"profile {path}: unknown key(s) {', '.join(sorted(unknown))}")
    problems = _check(path, data)
    if data.get("scheduler") not in ("slurm", "local"):
        problems.append("scheduler must be slurm or local")
    missing = [k for k in ("description", "scheduler", "gpus_per_node", "peak_tflops", "efficiency", "launcher")
               if k not in data]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if problems:
        raise ValueError(f"profile {path}: " + "; ".join(problems))
    return Profile(name=path.stem, **data)
