"""A sweep file (TOML): parsed and validated into jobs of points before anything runs.

The file names the campaign, a machine profile, node counts and ranks per
node, the measurement settings (``[bench]``, bench/options.py SETTINGS) and the
point parameters (``[params]``, bench/options.py PARAMS); see
``python -m bench sweep --help`` for its format. With ``driver = "model"`` its
points are ``bench model`` training steps (bench/points/step.py), whose
``[params]`` are the model's options (bench/options.py MODEL) and the point's
algorithms, seq or seq_per_rank and batch.
"""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bench import options
from bench.drivers import step as step_driver
from bench.points import step as step_points
from bench.points.attention import Point, make_point, memory_bytes, record_config
from bench.points.step import StepPoint, make_step_point
from ringx_suite.cli import UserError, nearest
from ringx_suite.store import Store, StoreError, check_campaign_name, config_key

from . import profiles, slurm

TOP = {"campaign", "machine", "nodes", "ranks_per_node", "account", "partition", "qos", "out", "tag", "time_margin",
       "bench", "params", "zip", "exclude", "stack", "driver"}
SWEEP_STACK = {"kind", "modules", "prefix", "image", "python", "plugin_path"}  # no `exec`: shell belongs in profiles
BENCH = set(options.SETTINGS)
PARAMS = set(options.PARAMS)
DRIVERS = {"run": PARAMS, "model": set(step_points.SWEEP_PARAMS)}  # driver -> its [params] keys
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
    points: list[Point] | list[StepPoint]
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
    driver: str = "run"  # bench run (attention) or bench model (training steps) points
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

    def keys(self, job: Job) -> dict[str, Point | StepPoint]:
        """Record key -> point, for every point and repeat of a job (as bench run or bench model will write
        them)."""
        b = self.bench
        if self.driver == "model":
            return {config_key(step_points.record_config(pt, job.ranks, job.nodes, rep, b)): pt
                    for pt in job.points for rep in range(b["repeats"])}
        return {config_key(record_config(pt, job.ranks, job.nodes, rep, b["kernel"], b["warmup"], b["iters"])): pt
                for pt in job.points for rep in range(b["repeats"])}


DEFAULT_OUT = "runs"
MAX_JOB_S = 14 * 86400.0  # a job limit beyond this is a typo (iters = 10**12), not a plan


def _machine(name) -> str:
    """A profile name from jobs/profiles. A profile elsewhere is trusted code (its set-up lines are shell), so
    only the command line may name one (--profile PATH), never a sweep file."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SweepError(f"machine {name!r}: a sweep file names a profile of jobs/profiles (letters, digits, - and "
                         "_); a profile file elsewhere is given on the command line: --profile PATH")
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


def _table(raw: dict, key: str, where: str) -> dict:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        raise SweepError(f"[{key}] of {where} must be a table, got {v!r}")
    return dict(v)


def _zips(raw: dict, params: dict, where: str) -> list[list[str]]:
    zips = []
    for z in (raw.get("zip", []), params.pop("zip", [])):  # TOML puts a zip written after [params] inside it
        if not isinstance(z, list) or not all(isinstance(g, list) and all(isinstance(k, str) for k in g) for g in z):
            raise SweepError(f"zip in {where} must be a list of lists of parameter names, got {z!r}")
        zips += z
    return zips


def _excludes(raw: dict, where: str, valid: set[str]) -> list[dict]:
    rules = raw.get("exclude", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise SweepError(f"exclude in {where} must be [[exclude]] tables, got {rules!r}")
    for rule in rules:
        _unknown(rule, valid, f"[[exclude]] of {where}")
    return rules


def _driver(raw: dict) -> str:
    d = raw.get("driver", "run")
    if not isinstance(d, str) or d not in DRIVERS:
        raise SweepError(f"driver {d!r}: choose run (attention points, bench run) or model (training steps, "
                         "bench model)")
    return d


def _check_model_params(params: dict, dicts: list[dict], where: str) -> None:
    """A model sweep's [params], said in one line whatever the ranks: values against their definitions, then
    every model configuration with the algorithms asked of it (preset, fields that do not divide, masking)."""
    where = f"[params] of {where}"
    if "algorithms" not in params:
        raise SweepError(f"{where} needs algorithms, e.g. algorithms = ['ring', 'ringx4']")
    if "seq" not in params and "seq_per_rank" not in params:
        raise SweepError(f"{where} needs seq (global tokens) or seq_per_rank (weak scaling)")
    try:
        step_points.check_values(params, where)
        models: dict[tuple, list[str]] = {}  # each model configuration (its values are scalars by now) -> algorithms
        for d in dicts:
            models.setdefault(tuple((k, v) for k, v in d.items() if k in step_points.MODEL_KEYS), []).append(
                d["algorithm"])
        for key, algos in models.items():
            step_points.check_model(dict(key), list(dict.fromkeys(algos)), where)
    except ValueError as e:
        raise SweepError(str(e)) from None


def _out(value) -> Path:
    """The output root: a plain path whose resolved form can go into #SBATCH lines (logs live under it)."""
    if not isinstance(value, str) or not value:
        raise SweepError(f"out must be a directory path, got {value!r}")
    out = Path(value)
    slurm.sbatch_value("out", str(out.resolve()))  # ValueError -> SweepError by the caller
    return out


def _inside(sw_dir: Path, out: Path) -> None:
    """The campaign's sweep directory must resolve inside the output root (no symlink out of it)."""
    root, d = out.resolve(), sw_dir.resolve()
    if root != d and root not in d.parents:
        raise SweepError(f"{sw_dir} resolves to {d}, outside the output root {root}: a symbolic link? "
                         "Remove it or choose another out")


def load(path: str | Path, account: str = "", partition: str = "", qos: str = "",
         profile: str | Path | None = None) -> Sweep:
    """Parse and validate a sweep file; every impossible point is reported before anything runs.

    ``account``, ``partition``, ``qos`` override the file's; ``profile`` is a profile file the user named on
    the command line, in place of the file's ``machine``.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise SweepError(f"cannot read {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} is not valid TOML: {e}") from None
    where = path.name
    _unknown(raw, TOP, where)
    driver = _driver(raw)
    params = _table(raw, "params", where)
    zips = _zips(raw, params, where)
    _unknown(_table(raw, "bench", where), BENCH, f"[bench] of {where}")
    _unknown(params, DRIVERS[driver], f"[params] of {where}")
    excludes = _excludes(raw, where, DRIVERS[driver])
    for k in ("campaign", "nodes") + (() if profile else ("machine",)):
        if k not in raw:
            raise SweepError(f"{where} needs {k!r}")
    account, partition, qos = (account or raw.get("account", ""), partition or raw.get("partition", ""),
                               qos or raw.get("qos", ""))
    try:
        campaign = check_campaign_name(raw["campaign"])
        for key, v in (("account", account), ("partition", partition), ("qos", qos)):
            if v:
                slurm.sbatch_value(key, v)
        prof = profiles.load_profile(str(profile) if profile else _machine(raw["machine"]), explicit=bool(profile))
        if "stack" in raw:  # the user's own prefix, plugin or image over the profile's
            given = raw["stack"] if isinstance(raw["stack"], dict) else {"?": raw["stack"]}
            _unknown(given, SWEEP_STACK, f"[stack] of {where}")
            prof.stack = profiles.make_stack(given, f"[stack] of {where}", base=prof.stack)
        defaults = {"check_max_seq": step_driver.CHECK_MAX_SEQ} if driver == "model" else {}  # bench model's
        bench = options.settings(defaults | _table(raw, "bench", where), f"[bench] of {where}")
        out = _out(raw["out"] if "out" in raw else _scratch(prof, account or prof.account))
    except StoreError as e:
        raise SweepError(f"{where}: {e}") from None
    except ValueError as e:
        raise SweepError(str(e)) from None
    tag = raw.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise SweepError(f"tag must be a string, got {tag!r}")
    margin = raw.get("time_margin", 2.0)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 1.0 <= margin <= MAX_TIME_MARGIN \
            or not math.isfinite(margin):
        raise SweepError(f"time_margin must be a number from 1 to {MAX_TIME_MARGIN:g}, got {margin!r}")
    if bench["peak_tflops"] is None and prof.peak_tflops and prof.gpus_per_node:
        bench["peak_tflops"] = prof.peak_tflops  # a device's published peak; a CPU's is a guess: no MFU
    nodes = _as_list(raw["nodes"])
    rpns = _as_list(raw.get("ranks_per_node", prof.gpus_per_node or None))
    if rpns == [None]:
        raise SweepError(f"machine {prof.name} has no GPUs per node: give ranks_per_node")
    if not nodes or not rpns:
        raise SweepError("nodes and ranks_per_node need at least one value each")
    problems = []
    for n in nodes + rpns:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100_000:
            problems.append(f"node counts and ranks_per_node must be integers from 1 to 100000, got {n!r}")
    for r in rpns:
        if prof.gpus_per_node and isinstance(r, int) and r > prof.gpus_per_node:
            problems.append(f"ranks_per_node {r} exceeds the {prof.gpus_per_node} GPUs per node of "
                            f"{prof.name} (one rank per GPU)")
    if problems:
        raise SweepError("; ".join(dict.fromkeys(problems)))
    dicts = expand(params, zips, excludes)
    if not dicts:
        raise SweepError("the sweep has no points (every combination is excluded?)")
    if driver == "model":
        _check_model_params(params, dicts, where)
    check_seq = bench["check_max_seq"] if bench["check"] else 0
    gpu = bool(prof.gpus_per_node) and bench["device"] != "cpu"
    sweep_jobs = []
    for n in nodes:
        for r in rpns:
            pts = []
            have = prof.memory_per_rank(r)
            for d in dicts:
                try:
                    pt = make_step_point(d, n * r, "cuda" if gpu else "cpu") if driver == "model" \
                        else make_point(d, n * r)
                except ValueError as e:
                    problems.append(f"{n} node(s) x {r} ranks, point {json.dumps(d)}: {e}")
                    continue
                need = step_points.memory_bytes(pt, n * r, gpu, bench["check"]) if driver == "model" \
                    else memory_bytes(pt, n * r, check_seq)
                if have and need > have:
                    problems.append(f"{n} node(s) x {r} ranks, point {json.dumps(d)}: needs at least "
                                    f"{need / 2**30:.1f} GiB per rank, more than the {have / 2**30:.1f} GiB a rank "
                                    f"has on {prof.name}")
                pts.append(pt)
            sweep_jobs.append(Job(n, r, pts))
    if len(problems) == 1:
        raise SweepError(f"impossible point: {problems[0]}")
    if problems:
        raise SweepError(f"{len(problems)} impossible point(s):\n  " + "\n  ".join(problems))
    sw = Sweep(path, campaign, prof, sweep_jobs, bench, out, account, partition, qos, tag, float(margin), driver)
    _inside(sw.dir, out)
    from .plan import estimate  # plan builds on the Sweep defined here

    for j in sw.jobs:
        j.estimate_s = estimate(sw, j, j.points)
        if sw.limit_s(j.estimate_s) > MAX_JOB_S:
            problems.append(f"job {j.name}: time limit {slurm.time_limit(sw.limit_s(j.estimate_s))} (estimated "
                            f"{j.estimate_s / 3600:.0f} h x time_margin) exceeds {MAX_JOB_S / 86400:.0f} days: "
                            "fewer points, iterations or shorter sequences per job")
    if problems:
        raise SweepError("; ".join(problems))
    return sw
