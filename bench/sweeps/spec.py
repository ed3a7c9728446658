"""A sweep file (TOML): parsed and validated into jobs of points before anything runs.

The file names the campaign, a machine profile, node counts and ranks per
node, the measurement settings (``[bench]``, bench/options.py SETTINGS) and the
point parameters (``[params]``, bench/options.py PARAMS); see
``ringx-bench sweep --help`` for its format. ``driver`` names what the points
are (kinds.py: ``run``, attention points, the default; ``model``, training
steps). What the profile needs and is not given (the scratch's variables, the
account, the stack's variables) is named all at once (needs()).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
from pathlib import Path

from ringx_drivers import options
from ringx_suite.cli import nearest
from ringx_suite.store import StoreError, check_campaign_name

from . import profiles, slurm
from .estimate import estimate
from .kinds import kind
from .sweep import Job, Sweep, SweepError

__all__ = ["Job", "Sweep", "SweepError", "load", "needs"]

TOP = {"campaign", "machine", "nodes", "ranks_per_node", "account", "partition", "qos", "out", "tag", "time_margin",
       "bench", "params", "zip", "exclude", "stack", "driver", "plugins"}
SWEEP_STACK = {"kind", "modules", "prefix", "image", "python", "plugin_path"}  # no `exec`: shell belongs in profiles
TOP |= {"env"}  # an experiment's own variables over its profile's [env] (a published run's NCCL settings)
BENCH = set(options.SETTINGS)
MAX_TIME_MARGIN = 100.0


def _unknown(keys, valid, where: str) -> None:
    for k in keys:
        if k not in valid:
            raise SweepError(f"unknown key {k!r} in {where}{nearest(k, valid)}")


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


PLURAL = {"algorithms": "algorithm", "masks": "mask"}  # a sweep's list key -> the point's field


def expand(params: dict, zips: list[list[str]], excludes: list[dict]) -> list[dict]:
    """Point dicts: lists crossed, zipped groups paired, excluded combinations dropped."""
    if "masks" in params and "mask" in params:
        raise SweepError("give masks = [...] or mask, not both")
    params = {PLURAL.get(k, k): v for k, v in params.items()}
    zips = [[PLURAL.get(k, k) for k in g] for g in zips]
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
        if not any(all(d.get(PLURAL.get(k, k)) in _as_list(v) for k, v in rule.items())
                   for rule in excludes):
            points.append(d)
    return points


DEFAULT_OUT = "runs"
MAX_JOB_S = 14 * 86400.0  # a job limit beyond this is a typo (iters = 10**12), not a plan


def _machine(name) -> str:
    """A profile name from jobs/profiles. A profile elsewhere is trusted code (its set-up lines are shell), so
    only the command line may name one (--profile PATH), never a sweep file."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name):
        raise SweepError(f"machine {name!r}: a sweep file names a profile of jobs/profiles (letters, digits, - and "
                         "_); a profile file elsewhere is given on the command line: --profile PATH")
    return name


STACK_NEEDS = {"prefix": "the conda env or venv the job runs, with the suite installed",
               "image": "the container image the job runs", "python": "the interpreter the job runs",
               "plugin_path": "the network plugin's lib/ directory (aws-ofi-rccl or aws-ofi-nccl)"}


def needs(prof: profiles.Profile, account: str = "", out_given: bool = False, stack: bool = True) -> list[str]:
    """Every setting a job of this profile needs and that is not given here, each with what it is for and where it
    is set: the output root's (scratch) variables and account, then (``stack``) the software stack's."""
    found = []
    if prof.scratch and not out_given:
        if "{account}" in prof.scratch and not account:
            found.append(f"the account: the allocation the jobs are charged to, and part of the output root "
                         f"{prof.scratch} (sweep file: account = \"...\", or --account; or out = "
                         "\"/path/to/scratch\" in the sweep file)")
        found += [f"${v}, which is not set here: the output root {prof.scratch} (the environment: the machine's login "
                  "nodes set it; or out = \"/path/to/scratch\" in the sweep file)"
                  for v in profiles.unset_vars(prof.scratch)]
    if stack:
        st = prof.stack
        for k, why in STACK_NEEDS.items():
            found += [f"${v}, which is not set here: [stack] {k} = {getattr(st, k)!r}, {why} (the environment: "
                      f"export {v}=...; or [stack] {k} in the sweep file)" for v in profiles.unset_vars(getattr(st, k))]
        if prof.network and prof.gpu_runtime == "rocm" and not st.plugin_path:
            found.append(f"[stack] plugin_path: RCCL needs the aws-ofi-rccl plugin for {prof.network} (its lib/ "
                         "directory; the profile or the sweep file)")
    return list(dict.fromkeys(found))


def refuse(prof: profiles.Profile, missing: list[str]) -> SweepError:
    """One error naming every missing setting."""
    if len(missing) == 1:
        return SweepError(f"machine {prof.name} needs {missing[0]}")
    return SweepError(f"machine {prof.name} needs {len(missing)} settings that are not given here:\n  "
                      + "\n  ".join(missing))


def _scratch(profile: profiles.Profile, account: str) -> str:
    """The default output root: the profile's scratch (home is read-only from Frontier's compute nodes), else runs
    (needs() has made sure it can be expanded)."""
    if not profile.scratch:
        return DEFAULT_OUT
    return profiles.expand(profile.scratch, f"machine {profile.name}'s scratch", account=account)


def _table(raw: dict, key: str, where: str) -> dict:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        raise SweepError(f"[{key}] of {where} must be a table, got {v!r}")
    return dict(v)


def _env(raw: dict, where: str) -> dict[str, str]:
    """[env]: variable names and string values only (each becomes one quoted export line of the job)."""
    env = _table(raw, "env", where)
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) or not isinstance(v, str):
            raise SweepError(f"[env] of {where}: {k} = {v!r}: give variable names and string values, e.g. "
                             'NCCL_ALGO = "Tree"')
    return env


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


def _plugins(raw: dict, params: dict, sweep_dir: Path, where: str, pk) -> tuple[tuple[str, ...], dict]:
    """(the ``--plugin`` specs the jobs pass, file paths made absolute; the plugins by name) of ``plugins = [...]``
    and of the installed plugins ``algorithms`` names. They are loaded here too: a point's layout and memory need
    them, and a plugin that cannot be loaded is better said now than on the compute nodes."""
    import ringx
    from ringx_suite import plugins

    given = raw.get("plugins", [])
    if not isinstance(given, list) or not all(isinstance(x, str) and x for x in given):
        raise SweepError(f"plugins in {where} must be a list of \"[NAME=]MODULE:ATTR\" or \"[NAME=]FILE.py:ATTR\" "
                         f"strings, got {given!r}")
    specs = []
    for spec in given:  # a file is found from the sweep file's folder, wherever the job starts
        name, target = plugins.parse_spec(spec)
        where_, _, attr = target.rpartition(":")
        if where_.endswith(".py"):
            target = f"{(sweep_dir / where_).resolve()}:{attr}"
        specs.append(f"{name}={target}")
    named = [a for a in _as_list(params.get("algorithms", params.get("algorithm", []))) if isinstance(a, str)]
    loaded = plugins.load(named, specs)
    if loaded and not pk.takes_plugins:
        raise SweepError(f"plugins run in attention and training-step sweeps (driver = \"run\" or \"model\"); this "
                         f"is a {pk.name} sweep: {', '.join(loaded)}")
    for n, p in loaded.items():
        if p.failure:
            raise SweepError(f"{where}: {p.failure}")
        if n in ringx.ALGORITHMS:
            raise SweepError(f"{where}: plugin {n} has the name of a built-in algorithm: rename it")
    return tuple(specs), loaded


def load(path: str | Path, account: str = "", partition: str = "", qos: str = "",
         profile: str | Path | None = None, for_jobs: bool = False) -> Sweep:
    """Parse and validate a sweep file; every impossible point is reported before anything runs.

    ``account``, ``partition``, ``qos`` override the file's; ``profile`` is a profile file the user named on
    the command line, in place of the file's ``machine``. With ``for_jobs`` (render, submit, local) the settings
    the job scripts need (the software stack's) must be given too; every missing one is named in one error.
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
    try:
        pk = kind(raw.get("driver", "run"))
    except ValueError as e:
        raise SweepError(str(e)) from None
    params = _table(raw, "params", where)
    zips = _zips(raw, params, where)
    _unknown(_table(raw, "bench", where), BENCH, f"[bench] of {where}")
    _unknown(params, pk.params, f"[params] of {where}")
    excludes = _excludes(raw, where, pk.params)
    specs, external = _plugins(raw, params, path.parent, where, pk)
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
        if "env" in raw:
            prof.env = {**prof.env, **_env(raw, where)}
        bench = options.settings(pk.defaults | _table(raw, "bench", where), f"[bench] of {where}")
        missing = needs(prof, account or prof.account, "out" in raw, stack=for_jobs)
        if missing:
            raise refuse(prof, missing)
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
    links = [t["bw_GBps"] for t in (prof.model.get("intra"), prof.model.get("inter")) if isinstance(t, dict)
             and isinstance(t.get("bw_GBps"), int | float)]
    if bench["link_gb_per_s"] is None and links and pk.name == "run":  # bench run checks it; model and infer do not
        bench["link_gb_per_s"] = float(max(links))  # no rank sends faster than its fastest link (logical payload)
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
    if bench.get("mask_seed") is not None:  # a drawn mask's seed travels with its points
        masked = [d.get("mask") is not None or d.get("layer_masks") is not None for d in dicts]
        dicts = [d | {"mask_seed": bench["mask_seed"]} if m else d for d, m in zip(dicts, masked)]
    try:
        pk.check_params(params, dicts, where, external)
    except ValueError as e:
        raise SweepError(str(e)) from None
    gpu = bool(prof.gpus_per_node) and bench["device"] != "cpu"
    sweep_jobs = []
    for n in nodes:
        for r in rpns:
            pts = []
            have = prof.memory_per_rank(r)
            for d in dicts:
                try:
                    pt = pk.make(d, n * r, gpu, external)
                except ValueError as e:
                    problems.append(f"{n} node(s) x {r} ranks, point {json.dumps(d)}: {e}")
                    continue
                need = pk.memory_bytes(pt, n * r, gpu, bench, external)
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
    sw = Sweep(path, campaign, prof, sweep_jobs, bench, out, account, partition, qos, tag, float(margin), pk.name,
               specs, external)
    _inside(sw.dir, out)
    for j in sw.jobs:
        j.estimate_s = estimate(sw, j, j.points)
        if sw.limit_s(j.estimate_s) > MAX_JOB_S:
            problems.append(f"job {j.name}: time limit {slurm.time_limit(sw.limit_s(j.estimate_s))} (estimated "
                            f"{j.estimate_s / 3600:.0f} h x time_margin) exceeds {MAX_JOB_S / 86400:.0f} days: "
                            "fewer points, iterations or shorter sequences per job")
    if problems:
        raise SweepError("; ".join(problems))
    return sw
