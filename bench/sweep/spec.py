"""A sweep file (TOML): parsed and validated into jobs of points before anything runs.

The file names the campaign, a machine profile, node counts and ranks per
node, the measurement settings (``[bench]``, bench/options.py SETTINGS) and the
point parameters (``[params]``, bench/options.py PARAMS); see
``python -m bench sweep --help`` for its format.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench import options
from bench.points import Point, make_point, record_config
from core.cli import UserError, nearest
from core.store import Store, StoreError, check_campaign_name, config_key

from . import profiles, slurm

TOP = {"campaign", "machine", "nodes", "ranks_per_node", "account", "partition", "qos", "out", "tag", "time_margin",
       "bench", "params", "zip", "exclude", "stack"}
SWEEP_STACK = {"kind", "modules", "prefix", "image", "python", "plugin_path"}  # no `exec`: shell belongs in profiles
BENCH = set(options.SETTINGS)
PARAMS = set(options.PARAMS)
MAX_TIME_MARGIN = 100.0


class SweepError(UserError):
    """A problem with the sweep file, reported before anything is submitted."""


def _unknown(keys, valid, where: str) -> None:
    for k in keys:
        if k not in valid:
            raise SweepError(f"unknown key {k!r} in {where}{nearest(k, valid)}")


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def expand(params: dict, zips: list[list[str]], excludes: list[dict]) -> list[dict]:
    """Point dicts: lists crossed, zipped groups paired, excluded combinations dropped."""
    params = {("algorithm" if k == "algorithms" else k): v for k, v in params.items()}
    zips = [["algorithm" if k == "algorithms" else k for k in g] for g in zips]
    zipped = {k for g in zips for k in g}
    for g in zips:
        for k in g:
            if k not in params:
                raise SweepError(f"zip names {k!r}, which is not a parameter of this sweep")
        lengths = {len(_as_list(params[k])) for k in g}
        if len(lengths) != 1:
            raise SweepError(f"zip group {g} needs lists of equal length, got lengths {sorted(lengths)}")
    axes = [[{k: v} for v in _as_list(params[k])] for k in params if k not in zipped]
    axes += [[dict(zip(g, vals)) for vals in zip(*(_as_list(params[k]) for k in g))] for g in zips]
    points = []
    for combo in itertools.product(*axes):
        d = {}
        for part in combo:
            d |= part
        if not any(all(d.get("algorithm" if k == "algorithms" else k) in _as_list(v) for k, v in rule.items())
                   for rule in excludes):
            points.append(d)
    return points


@dataclass
class Job:
    nodes: int
    ranks_per_node: int
    points: list[Point]
    estimate_s: float = 0.0

    @property
    def ranks(self) -> int:
        return self.nodes * self.ranks_per_node

    @property
    def name(self) -> str:
        return f"N{self.nodes}x{self.ranks_per_node}"


@dataclass
class Sweep:
    path: Path
    campaign: str
    profile: profiles.Profile
    jobs: list[Job]
    bench: dict
    out: Path
    account: str = ""
    partition: str = ""
    qos: str = ""
    tag: str | None = None
    time_margin: float = 2.0
    _call_s: dict = field(default_factory=dict, init=False, repr=False)  # estimate's cache per (job, point)

    def limit_s(self, estimate_s: float) -> float:
        """A job's time limit: the estimate (start-up allowance included, see plan.estimate) times the margin,
        plus 2 minutes of slack."""
        return estimate_s * self.time_margin + 120

    @property
    def settings(self) -> dict:
        return self.bench

    @property
    def store(self) -> Store:
        return Store(self.out, self.campaign)

    @property
    def dir(self) -> Path:
        return self.out / self.campaign / "sweep"

    def keys(self, job: Job) -> dict[str, Point]:
        """Record key -> point, for every point and repeat of a job (as bench run will write them)."""
        b = self.bench
        return {config_key(record_config(pt, job.ranks, job.nodes, rep, b["kernel"], b["warmup"], b["iters"])): pt
                for pt in job.points for rep in range(b["repeats"])}


DEFAULT_OUT = "runs"


def _machine(name, sweep_path: Path) -> str:
    """A profile name from jobs/profiles, or a .toml path (relative to the sweep file) the user named."""
    if not isinstance(name, str) or not name:
        raise SweepError(f"machine must be a profile name, got {name!r}")
    if name.endswith(".toml"):
        p = Path(name)
        return str(p if p.is_absolute() else sweep_path.parent / p)
    if not all(c.isalnum() or c in "-_" for c in name):
        raise SweepError(f"machine {name!r}: a profile name from jobs/profiles (letters, digits, - and _) "
                         "or a path ending in .toml")
    return name


def _scratch(profile: profiles.Profile, account: str) -> str:
    """The default output root: the profile's scratch (home is read-only from Frontier's compute nodes), else runs."""
    if not profile.scratch:
        return DEFAULT_OUT
    if "{account}" in profile.scratch and not account:
        raise SweepError(f"machine {profile.name} writes to {profile.scratch}, which needs the account: give "
                         "account (or --account), or out = \"/path/to/scratch\" in the sweep file")
    try:
        return profiles.expand(profile.scratch, f"machine {profile.name}'s scratch", account=account)
    except ValueError as e:
        raise SweepError(f"{e}: set it (the machine's login nodes do), or give out = \"/path/to/scratch\" in the "
                         "sweep file") from None


def load(path: str | Path, account: str = "", partition: str = "", qos: str = "") -> Sweep:
    """Parse and validate a sweep file; every impossible point is reported before anything runs."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} is not valid TOML: {e}") from None
    params = dict(raw.get("params", {}))
    zips = raw.get("zip", []) + params.pop("zip", [])  # TOML puts a zip written after [params] inside it
    _unknown(raw, TOP, path.name)
    _unknown(raw.get("bench", {}), BENCH, f"[bench] of {path.name}")
    _unknown(params, PARAMS, f"[params] of {path.name}")
    for rule in raw.get("exclude", []):
        _unknown(rule, PARAMS, f"[[exclude]] of {path.name}")
    for k in ("campaign", "machine", "nodes"):
        if k not in raw:
            raise SweepError(f"{path.name} needs {k!r}")
    try:
        campaign = check_campaign_name(raw["campaign"])
        for key in ("account", "partition", "qos"):
            if raw.get(key):
                slurm.sbatch_value(key, raw[key])
        profile = profiles.load_profile(_machine(raw["machine"], path))
        if "stack" in raw:  # the user's own prefix, plugin or image over the profile's
            given = raw["stack"] if isinstance(raw["stack"], dict) else {"?": raw["stack"]}
            _unknown(given, SWEEP_STACK, f"[stack] of {path.name}")
            profile.stack = profiles.make_stack(given, f"[stack] of {path.name}", base=profile.stack)
        bench = options.settings(raw.get("bench", {}), f"[bench] of {path.name}")
    except StoreError as e:
        raise SweepError(f"{path.name}: {e}") from None
    except ValueError as e:
        raise SweepError(str(e)) from None
    margin = raw.get("time_margin", 2.0)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 1.0 <= margin <= MAX_TIME_MARGIN \
            or not math.isfinite(margin):
        raise SweepError(f"time_margin must be a number from 1 to {MAX_TIME_MARGIN:g}, got {margin!r}")
    if bench["peak_tflops"] is None and profile.peak_tflops and profile.gpus_per_node:
        bench["peak_tflops"] = profile.peak_tflops  # a device's published peak; a CPU's is a guess: no MFU
    nodes = _as_list(raw["nodes"])
    rpns = _as_list(raw.get("ranks_per_node", profile.gpus_per_node or None))
    if rpns == [None]:
        raise SweepError(f"machine {profile.name} has no GPUs per node: give ranks_per_node")
    problems = []
    for n in nodes + rpns:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100_000:
            problems.append(f"node counts and ranks_per_node must be integers from 1 to 100000, got {n!r}")
    for r in rpns:
        if profile.gpus_per_node and isinstance(r, int) and r > profile.gpus_per_node:
            problems.append(f"ranks_per_node {r} exceeds the {profile.gpus_per_node} GPUs per node of "
                            f"{profile.name} (one rank per GPU)")
    if problems:
        raise SweepError("; ".join(dict.fromkeys(problems)))
    dicts = expand(params, zips, raw.get("exclude", []))
    if not dicts:
        raise SweepError("the sweep has no points (every combination is excluded?)")
    sweep_jobs = []
    for n in nodes:
        for r in rpns:
            pts = []
            for d in dicts:
                try:
                    pts.append(make_point(d, n * r))
                except ValueError as e:
                    problems.append(f"{n} node(s) x {r} ranks, point {json.dumps(d)}: {e}")
            sweep_jobs.append(Job(n, r, pts))
    if problems:
        raise SweepError(f"{len(problems)} impossible point(s):\n  " + "\n  ".join(problems))
    out = raw.get("out") or _scratch(profile, account or raw.get("account", "") or profile.account)
    if not isinstance(out, str) or not out or "\n" in out:
        raise SweepError(f"out must be a directory path, got {out!r}")
    sw = Sweep(path, campaign, profile, sweep_jobs, bench, Path(out),
               account or raw.get("account", ""), partition or raw.get("partition", ""), qos or raw.get("qos", ""),
               raw.get("tag"), float(margin))
    from .plan import estimate  # plan builds on the Sweep defined here

    for j in sw.jobs:
        j.estimate_s = estimate(sw, j, j.points)
    return sw


