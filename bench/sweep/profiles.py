"""Machine profiles (jobs/profiles/*.toml): how to run a job on a machine, and what the machine is.

A profile names the scheduler, the launcher line, modules, set-up lines and
environment of a job, the GPUs per node, the device's published peak and the
cost model's machine description (its ``[model]`` table). A profile is trusted
input: its ``setup`` lines go into job scripts as shell, on purpose.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

from costmodel.machine import PROFILES, profile_path


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


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES.glob("*.toml"))


def load_profile(name: str) -> Profile:
    """A profile by name (jobs/profiles/NAME.toml) or by path to a TOML file."""
    path = profile_path(name)
    if not path.exists():
        raise ValueError(f"unknown machine {name!r}; profiles: {', '.join(available_profiles())} "
                         f"(add one as jobs/profiles/NAME.toml)")
    data = tomllib.loads(path.read_text())
    known = set(Profile.__dataclass_fields__) - {"name"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"profile {path}: unknown key(s) {', '.join(sorted(unknown))}")
    prof = Profile(name=path.stem, **data)
    if prof.scheduler not in ("slurm", "local"):
        raise ValueError(f"profile {path}: scheduler must be slurm or local")
    for line in prof.directives + prof.setup + prof.modules:
        if "\n" in line:
            raise ValueError(f"profile {path}: directives, setup and modules entries must be single lines")
    return prof
