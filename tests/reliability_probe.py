"""Reliability probes: faults and hostile input against `bench run` and `bench sweep`, each with its bound.

    python tests/reliability_probe.py [--jobs N] [--only NAME,...]   # run them, print the table

Every run probe starts real ranks (2 CPU ranks, gloo, `--timeout 5`) under the environment's MPICH mpiexec,
injects one fault (a signal from outside, or `--inject RANK:CASE:KIND@PHASE` inside), and measures the seconds
from the fault to the end of the job, the records written before the fault that are gone afterwards (lost),
and whether the message the user needs was shown. `tests/test_reliability.py` runs the same probes and
asserts each bound; `results/reliability.md` is this script's table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ringx_drivers import mpirun  # noqa: E402 - after the path for `python tests/reliability_probe.py`
from ringx_suite.store import Store  # noqa: E402
from tests import zygote  # noqa: E402

TIMEOUT = 5  # --timeout of every probe run
STOP_S = TIMEOUT + 30  # README: a rank that dies or hangs stops every rank within --timeout + 30 s
PROMPT_S = 5.0  # a fault rank 0 or the launcher sees at once: every rank gone within this
START_S = 20.0  # a refusal at start, start-up (two ranks importing torch on a busy 2-core machine) included
JOBS = 6  # probes at a time: most of a hang probe is waiting, so they overlap well on 2 cores
SMALL = ["--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--warmup", "1", "--quiet", "--campaign", "c",
         "--timeout", str(TIMEOUT)]
SHORT = [*SMALL, "--seq", "64", "--iters", "2", "--algorithms", "ring,ringx4", "--causal", "true,false"]
# Long enough that a signal sent after the first record lands mid-run (10 configurations, 2 algorithms each).
LONG = [*SMALL, "--seq", "64,128,256,512,1024", "--iters", "40", "--algorithms", "ring,ringx4", "--causal",
        "true,false"]
# Still running (paused, not computing) when a second copy has started: every rank sleeps PAUSE_S after the first
# configuration's records.
CONCURRENT = [*SHORT, "--inject", "0:2:pause@prepare"]


@dataclass
class Result:
    name: str
    fault: str
    bound: str
    stop_s: float | None = None  # fault -> every rank gone (None: the run went on, as it should)
    exit_code: int | None = None
    before: int = 0  # valid records when the fault struck
    after: int = 0  # valid records at the end
    lost: int = 0  # records present at the fault and gone (or corrupted) afterwards: goal 0
    problems: list[str] = field(default_factory=list)  # unmet bounds; empty: the probe passed

    @property
    def ok(self) -> bool:
        return not self.problems

    def need(self, cond: bool, what: str) -> None:
        if not cond:
            self.problems.append(what)


# Running ranks ---------------------------------------------------------------------------------------------


class Job:
    """One `bench run` under mpiexec, its output in files (no pipe to fill). ``warm``: its ranks fork from the test
    session's zygote when one runs (tests/zygote.py); a probe that signals a rank's pid from outside needs them
    cold."""

    def __init__(self, out: Path, args: list[str], name: str = "job", warm: bool = True):
        self.out = out
        self.err_path, self.log_path = out / f"{name}.err", out / f"{name}.out"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "RINGX_DEVICE": "cpu"}
        argv = ["-m", "ringx_bench", "run", "--out", str(out), *args]
        cmd = [mpirun.mpiexec(), "-n", "2", sys.executable, *(zygote.wrap(argv) if warm else argv)]
        with open(self.log_path, "w") as log, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=err)

    def wait(self, limit: float = 180.0) -> float:
        """Wait for the job's end; the time it ended (monotonic)."""
        try:
            self.proc.wait(limit)
        finally:
            self.kill()
        return time.monotonic()

    def kill(self) -> None:
        """Anything left of the job (a stopped rank): mpiexec's proxies start their own sessions, so the job
        is its process tree, not a process group."""
        for pid in [*self.descendants(), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def descendants(self) -> list[int]:
        parent = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        tree, grew = {self.proc.pid}, True
        while grew:
            more = {p for p, pp in parent.items() if pp in tree} - tree
            tree |= more
            grew = bool(more)
        return sorted(tree - {self.proc.pid})

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def rank_pid(self, rank: int) -> int:
        """The pid of the python process of ``rank`` (found by its PMI_RANK among the job's processes)."""
        for _ in range(600):
            for pid in self.descendants():
                try:
                    if b"bench" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"PMI_RANK={rank}".encode() in env:
                    return pid
            time.sleep(0.1)
        raise RuntimeError(f"rank {rank} not found")


class Watch:
    """Every valid record the store ever showed while a job ran: one that later disappears was lost."""

    def __init__(self, out: Path):
        import threading

        self.out, self.seen, self._stop = out, set(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(OSError):
                self.seen |= records(self.out)[0]

    def stop(self) -> set[str]:
        self._stop.set()
        self._thread.join()
        return self.seen


def records(out: Path) -> tuple[set[str], int]:
    """(every valid record as canonical JSON, lines skipped) of the probe's campaign."""
    reading = Store(out, "c").read()
    return {json.dumps(r, sort_keys=True) for r in reading.records}, sum(reading.skipped.values())


def wait_for_records(out: Path, job: Job, n: int = 1, limit: float = 120.0) -> None:
    end = time.monotonic() + limit
    while len(records(out)[0]) < n:
        if job.proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError(f"the run ended or stalled before writing {n} record(s):\n{job.stderr[-2000:]}")
        time.sleep(0.1)


def fault_time(stderr: str) -> float:
    """When an injected fault struck (the run prints it), as a monotonic time of this process."""
    m = re.search(r"bench run: injecting .* t=([0-9.]+)", stderr)
    if not m:
        raise RuntimeError(f"no injection in the output:\n{stderr[-2000:]}")
    return time.monotonic() - (time.time() - float(m.group(1)))


def finish(res: Result, out: Path, job: Job, t_fault: float, t_end: float, before: set[str]) -> set[str]:
    after, _ = records(out)
    res.stop_s, res.exit_code = round(t_end - t_fault, 1), job.proc.returncode
    res.before, res.after, res.lost = len(before), len(after), len(before - after)
    res.need(res.lost == 0, f"{res.lost} record(s) lost")
    res.need("Traceback" not in job.stderr, "a traceback")
    return after


# Probes ------------------------------------------------------------------------------------------------------


def signal_probe(sig: signal.Signals, rank: int) -> Callable[[Path], Result]:
    """A signal from outside to one rank mid-run. A killed or terminated rank ends the job at once (MPICH's
    mpiexec stops every rank when one dies, even with -disable-auto-cleanup); a stopped one is a hang."""
    hung = sig == signal.SIGSTOP
    bound = f"stop <= {STOP_S} s" if hung else f"stop <= {PROMPT_S:g} s"
    named = hung and rank != 0

    def probe(out: Path) -> Result:
        res = Result("", f"{sig.name} rank {rank}",
                     bound + ", 0 lost" + (f", a timeout record naming rank {rank}" if named else ""))
        job = Job(out, LONG, warm=False)
        wait_for_records(out, job)
        pid = job.rank_pid(rank)
        before, _ = records(out)
        watch = Watch(out)
        os.kill(pid, sig)
        t_fault = time.monotonic()
        t_end = job.wait()
        after = finish(res, out, job, t_fault, t_end, before | watch.stop())
        res.need(res.stop_s <= (STOP_S if hung else PROMPT_S), f"stopped after {res.stop_s} s")
        res.need(job.proc.returncode != 0, "exit code 0 after a fault")
        if named:
            timeouts = [json.loads(r) for r in after if json.loads(r).get("failure") == "timeout"]
            res.need(any(r.get("failed_ranks") == [rank] for r in timeouts), f"no timeout record naming rank {rank}")
        if hung and rank == 0:
            res.need("rank 0 did not answer" in job.stderr, "no message naming rank 0")
        if sig == signal.SIGTERM and rank == 0:
            res.need("terminated" in job.stderr, "no 'terminated' line")
        return res
    return probe


def inject_probe(spec: str, goes_on: bool, message: str, check: bool = False) -> Callable[[Path], Result]:
    """A fault the run injects into itself (--inject), on rank 0 alone unless the spec says otherwise."""
    rank, case, what = spec.split(":")
    bound = ("the run goes on, a failed record naming the rank" if goes_on else
             f"stop <= {STOP_S if 'hang' in what or 'stop' in what else PROMPT_S:g} s") + f", 0 lost, says {message!r}"

    def probe(out: Path) -> Result:
        res = Result("", f"{what} on rank {rank}" + (f" (case {case})" if "open" not in what else ""), bound)
        watch = Watch(out)
        job = Job(out, [*SHORT, *(["--check"] if check else []), "--inject", spec])
        t_end = job.wait()
        t_fault = fault_time(job.stderr)
        after = finish(res, out, job, t_fault, t_end, watch.stop())
        res.need(message in job.stderr or any(message in r for r in after), f"message {message!r} not shown")
        if goes_on:
            res.stop_s = None
            recs = [json.loads(r) for r in after]
            failed = [r for r in recs if r["status"] == "failed"]
            res.need(job.proc.returncode == 0, f"exit {job.proc.returncode}, the run did not go on")
            res.need(len(recs) == 4 and len(failed) >= 1, f"{len(recs)} records, {len(failed)} failed")
            res.need(all(int(rank) in r.get("failed_ranks", []) for r in failed), "the failed record does not name "
                     f"rank {rank}")
        else:
            limit = STOP_S if "hang" in what or "stop" in what else PROMPT_S
            res.need(res.stop_s <= limit, f"stopped after {res.stop_s} s")
            res.need(job.proc.returncode != 0, "exit code 0 after a fault")
        return res
    return probe


def store_probe(kind: str) -> Callable[[Path], Result]:
    """A torn, a garbage or a foreign line in the store: counted and reported by bench run, bench summary and
    analysis; never trusted for resume; no record lost."""
    def probe(out: Path) -> Result:
        res = Result("", f"a {kind} line in the store", "0 lost, the line counted by run, summary and analysis, "
                     "never trusted for resume")
        first = Job(out, SHORT, name="first")
        first.wait()
        store = Store(out, "c")
        path = store.files()[-1]
        lines = path.read_bytes().splitlines(keepends=True)
        victim = json.loads(lines[-1])
        if kind == "torn":  # a killed writer's half line, then an append to the same file
            path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
            store.run_id = path.stem
            store.append(victim)  # must start on a fresh line
            res.need(json.dumps(victim, sort_keys=True) in records(out)[0], "the record after a torn line is lost")
        elif kind == "garbage":
            (path.parent / "zz-garbage.jsonl").write_bytes(b"\xff\xfe\x00garbage\nnull\n")
        else:  # a line with a real key and "ok", but no record behind it; the real record is removed
            path.write_bytes(b"".join(lines[:-1]))
            (path.parent / "zz-foreign.jsonl").write_text(json.dumps({"key": victim["key"], "status": "ok"}) + "\n")
        before, skipped = records(out)
        res.need(skipped >= 1, "the bad line was not counted")
        t0 = time.monotonic()
        second = Job(out, SHORT, name="second")
        after = finish(res, out, second, t0, second.wait(), before)
        res.stop_s = None
        res.need(second.proc.returncode == 0, f"bench run exit {second.proc.returncode}")
        res.need("not trusted for resume" in second.stderr, "bench run did not report the bad line")
        keys = {json.loads(r)["key"] for r in after if json.loads(r)["status"] == "ok"}
        res.need(victim["key"] in keys, "the point behind the bad line was not measured")
        for cmd, stream in ((["summary", str(out / "c")], "stdout"), (["table", str(out / "c")], "stderr")):
            p = subprocess.run([sys.executable, "-m", "ringx_bench", *cmd], capture_output=True, text=True, cwd=ROOT,
                               timeout=120)
            res.need(p.returncode == 0 and "skipped" in getattr(p, stream), f"ringx-bench {cmd[0]} did not report it")
        return res
    return probe


def readonly_probe(out: Path) -> Result:
    """A campaign that cannot be written: refused on every rank before any work."""
    res = Result("", "a campaign that cannot be written", f"refused on every rank within {START_S:g} s of start, "
                 "one message, no run started")
    (out / "c").mkdir(parents=True)
    if os.geteuid() == 0:  # root writes through permissions: make the records directory impossible instead
        (out / "c" / "records").write_text("")
    else:
        (out / "c").chmod(0o555)
    t0 = time.monotonic()
    job = Job(out, SHORT)
    t_end = job.wait()
    (out / "c").chmod(0o755)
    res.stop_s, res.exit_code = round(t_end - t0, 1), job.proc.returncode
    res.need(job.proc.returncode == 2, f"exit {job.proc.returncode}")
    res.need(job.stderr.count("cannot use campaign") == 1, "not exactly one 'cannot use campaign' message")
    res.need("Traceback" not in job.stderr, "a traceback")
    res.need(not list((out / "c").glob("runs/*.json")), "a run was started")
    res.need(res.stop_s <= START_S, f"took {res.stop_s} s (start-up included)")
    return res


def concurrent_probe(out: Path) -> Result:
    """Two runs of the same points at once: the second is refused naming the first; each point measured once."""
    res = Result("", "a second run of the same points while the first runs", "the second refused within "
                 f"{START_S:g} s of start naming the holder, every point recorded once, 0 lost")
    first = Job(out, CONCURRENT, name="first")
    wait_for_records(out, first)
    holder = next((out / "c" / "claims").glob("*.json")).stem
    before, _ = records(out)
    t0 = time.monotonic()
    second = Job(out, CONCURRENT, name="second")
    t_second = second.wait()
    res.stop_s = round(t_second - t0, 1)
    res.need(second.proc.returncode == 2 and holder in second.stderr, "not refused naming the holder's run")
    res.need(res.stop_s <= START_S, f"refused after {res.stop_s} s (start-up included)")
    first.wait()
    after = finish(res, out, first, t0, t_second, before)
    res.stop_s = round(t_second - t0, 1)
    keys = [json.loads(r)["key"] for r in after]
    res.need(first.proc.returncode == 0 and len(keys) == 4 and len(set(keys)) == 4,
             f"{len(keys)} records, {len(set(keys))} points (want 4 once each)")
    return res


RUN_PROBES: dict[str, Callable[[Path], Result]] = {
    **{f"{sig.name.lower()}-r{r}": signal_probe(sig, r) for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP)
       for r in (0, 1)},
    "raise-r0-open": inject_probe("0:0:raise@open", False, "cannot use campaign"),
    "raise-r0-prepare": inject_probe("0:1:raise@prepare", True, "rank 0: Injected"),
    "raise-r0-check": inject_probe("0:1:raise@check", True, "rank 0: Injected", check=True),
    "raise-r0-run": inject_probe("0:1:raise@run", True, "rank 0: Injected"),
    "raise-r0-time": inject_probe("0:1:raise@time", True, "rank 0: Injected"),
    "raise-r0-write": inject_probe("0:2:raise@write", False, "cannot write a record"),
    "hang-r1-time": inject_probe("1:1:hang@time", False, "rank 1 did not report"),
    "hang-r0-open": inject_probe("0:0:hang@open", False, "rank 0 did not answer"),
    "store-torn": store_probe("torn"),
    "store-garbage": store_probe("garbage"),
    "store-foreign": store_probe("foreign"),
    "readonly": readonly_probe,
    "concurrent": concurrent_probe,
}


# Hostile sweep values: (what, the line(s) of a sweep file, the message it must give). ------------------------

SWEEP_BASE = """campaign = "c1"
machine = "cpu-slurm"
nodes = [1]
ranks_per_node = 2
out = "{out}"
{top}
[bench]
iters = 3
{bench}
[params]
algorithms = ["ring", "ringx4"]
seq = [4096]
{params}
"""
HOSTILE_SWEEP = [
    ("campaign climbing out", "campaign = '../../x'", "must be a plain directory name"),
    ("campaign absolute", "campaign = '/abs'", "must be a plain directory name"),
    ("campaign ..", "campaign = '..'", "must be a plain directory name"),
    ("campaign not a string", "campaign = 5", "must be a plain directory name"),
    ("machine as a path", "machine = '/etc/passwd.toml'", "--profile PATH"),
    ("machine relative path", "machine = '../jobs/profiles/local.toml'", "--profile PATH"),
    ("machine not a string", "machine = 3", "--profile PATH"),
    ("account with a space", "account = 'a b'", "may only contain"),
    ("account with $", "account = '$x'", "may only contain"),
    ("account with a newline", "account = \"abc\\n\"", "may only contain"),
    ("partition with ;", "partition = 'x;rm'", "may only contain"),
    ("qos with backticks", "qos = '`id`'", "may only contain"),
    ("out with a space", "out = 'a b'", "may only contain"),
    ("out with $", "out = '$HOME/x'", "may only contain"),
    ("out not a string", "out = 1", "out must be a directory path"),
    ("time_margin inf", "time_margin = inf", "time_margin must be a number from 1 to 100"),
    ("time_margin nan", "time_margin = nan", "time_margin must be a number from 1 to 100"),
    ("time_margin string", "time_margin = '2'", "time_margin must be a number from 1 to 100"),
    ("tag not a string", "tag = [1]", "tag must be a string"),
    ("nodes empty", "nodes = []", "at least one value"),
    ("nodes 0", "nodes = [0]", "integers from 1 to 100000"),
    ("nodes fractional", "nodes = [1.5]", "integers from 1 to 100000"),
    ("zip not a list", "zip = 5", "zip in"),
    ("exclude not tables", "exclude = 5", "exclude in"),
    ("bench not a table", "bench = 5", "is not valid TOML"),  # TOML itself refuses the [bench] after it
    ("timeout negative", "[bench]\ntimeout = -5", "timeout must be >= 1"),
    ("timeout nan", "[bench]\ntimeout = nan", "timeout must be a finite number"),
    ("timeout tiny", "[bench]\ntimeout = 1e-6", "timeout must be >= 1"),
    ("check_max_seq 0", "[bench]\ncheck_max_seq = 0", "check_max_seq must be >= 1"),
    ("peak_tflops negative", "[bench]\npeak_tflops = -1", "peak_tflops must be >= 0.001"),
    ("peak_tflops nan", "[bench]\npeak_tflops = nan", "peak_tflops must be a finite number"),
    ("warmup true", "[bench]\nwarmup = true", "warmup must be an integer"),
    ("iters 10**12", "[bench]\niters = 1000000000000", "iters must be <= 100000"),
    ("iters 100000 at 65536 tokens", "[bench]\niters = 100000\n[params]\nseq = [65536]", "exceeds 14 days"),
    ("batch 100000", "[params]\nbatch = 100000", "exceeds 14 days"),
    ("kv_heads 0", "[params]\nkv_heads = 0", "kv_heads must be >= 1"),
    ("heads 1e9", "[params]\nheads = 1e9", "heads must be <= 65536"),
    ("seq a string", "[params]\nseq = 'long'", "seq must be an integer"),
    ("seq empty", "[params]\nseq = []", "no points"),
    ("unknown key", "[params]\ndtpye = 'float32'", "did you mean 'dtype'?"),
    ("memory over the device", "machine = 'frontier'\nranks_per_node = 8\n[params]\nseq = [8388608]\nheads = 64",
     "GiB per rank, more than the"),
]


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """``os.environ`` with ``values`` set, restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def hostile_sweep_case(tmp: Path, what: str, lines: str, message: str) -> list[str]:
    """Problems with how one hostile value is handled by plan and render ([]: refused, with its message, no
    traceback, nothing written)."""
    from ringx_drivers.sweeps import commands

    fields = {"top": [], "bench": [], "params": []}
    section = "top"
    for line in lines.splitlines():  # "[bench]" and "[params]" switch the section the next lines go to
        if line in ("[bench]", "[params]"):
            section = line[1:-1]
        else:
            fields[section].append(line)
    text = SWEEP_BASE.format(out=tmp / "res", **{k: "\n".join(v) for k, v in fields.items()})
    for line in (x for v in fields.values() for x in v):  # a value given again replaces the base's
        key = line.split("=")[0].strip()
        text = "\n".join(x for x in text.splitlines() if not (x.split("=")[0].strip() == key and x != line)) + "\n"
    f = tmp / "hostile.toml"
    f.write_text(text)
    problems = []
    # a profile's site settings are given, so render reaches the hostile value (a render lacking them refuses
    # those first, all named in one message: a probe of its own in tests/test_sweep.py)
    site = {v: str(tmp / "site") for v in ("MEMBERWORK", "RINGX_ENV", "RINGX_NET_PLUGIN")}
    for cmd in ("plan", "render"):
        err, outp = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(outp), _environ(site):
                code = commands.main([cmd, str(f)])
        except Exception as e:  # noqa: BLE001 - exactly what must not happen
            problems.append(f"{cmd}: uncaught {type(e).__name__}: {e}")
            continue
        said = err.getvalue()
        if code != 2:
            problems.append(f"{cmd}: exit {code}, not refused")
        if message not in said:
            problems.append(f"{cmd}: message {message!r} not in {said.strip()[-300:]!r}")
        if (tmp / "res").exists() or Path(ROOT / "a b").exists():
            problems.append(f"{cmd}: left directories behind")
    return [f"{what}: {p}" for p in problems]


def sweep_probe(out: Path) -> Result:
    res = Result("", f"{len(HOSTILE_SWEEP)} hostile sweep values", "each refused at plan and render with its "
                 "message, no traceback, nothing written")
    for what, lines, message in HOSTILE_SWEEP:
        res.problems += hostile_sweep_case(out, what, lines, message)
    return res


PROBES: dict[str, Callable[[Path], Result]] = {**RUN_PROBES, "hostile-sweep": sweep_probe}


def run_probe(name: str) -> Result:
    with tempfile.TemporaryDirectory(prefix=f"probe-{name}-") as d:
        try:
            res = PROBES[name](Path(d))
        except Exception as e:  # noqa: BLE001 - a probe that cannot run is a failed probe, with the reason
            res = Result("", name, "", problems=[f"{type(e).__name__}: {e}"])
    res.name = name
    return res


def run_all(names: list[str], jobs: int = JOBS) -> list[Result]:
    """The probes, ``jobs`` at a time (most of a hang probe is waiting)."""
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(run_probe, names))


def table(results: list[Result]) -> str:
    rows = ["| probe | fault | bound | time to stop (s) | exit | records before -> after | lost | result |",
            "|---|---|---|---:|---:|---|---:|---|"]
    for r in results:
        stop = f"{r.stop_s:.1f}" if r.stop_s is not None else "went on" if r.exit_code is not None else "-"
        rows.append(f"| {r.name} | {r.fault} | {r.bound} | {stop} | {'' if r.exit_code is None else r.exit_code} "
                    f"| {r.before} -> {r.after} | {r.lost} | {'pass' if r.ok else 'FAIL: ' + '; '.join(r.problems)} |")
    return "\n".join(rows)


PAGE = """# Reliability: faults and hostile input (issue 15)

Written by `python tests/reliability_probe.py --write results/reliability.md` (the probes that
`tests/test_reliability.py` asserts) on {machine}.

Every run probe is `bench run` on 2 CPU ranks (gloo over loopback) under MPICH's `mpiexec`, `--timeout
{timeout}`, {jobs} probes at a time on a machine shared with other work, so the times include that load. *Time to
stop*: from the fault (the signal sent, or the injected fault's own timestamp) to the end of the job; for a
refusal at start, from the start. *Lost*: records the store showed at any moment before the end and did not
hold valid at the end (goal: 0). A hung or stopped rank is found by rank 0 within `--timeout` + 15 s, and by
the others within `--timeout` + 25 s; the documented bound is `--timeout` + 30 s ({stop_s} s here).

{table}

{summary}
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=JOBS, help=f"probes at a time (default {JOBS})")
    p.add_argument("--only", help="comma-separated probe names (default: all)")
    p.add_argument("--write", metavar="PATH", help="also write the page (results/reliability.md)")
    a = p.parse_args()
    names = a.only.split(",") if a.only else list(PROBES)
    t0 = time.monotonic()
    results = run_all(names, a.jobs)
    lost = sum(r.lost for r in results)
    summary = (f"{len(results)} probes, {sum(r.ok for r in results)} passed, {lost} records lost, "
               f"{time.monotonic() - t0:.0f} s in all.")
    print(table(results) + "\n\n" + summary)
    if a.write:
        import platform

        import torch

        try:
            mpich = "MPICH " + importlib.metadata.version("mpich")
        except importlib.metadata.PackageNotFoundError:
            mpich = "the environment's MPI"
        machine = (f"{platform.node()} ({os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}, torch {torch.__version__}, {mpich})")
        Path(a.write).write_text(PAGE.format(machine=machine, timeout=TIMEOUT, jobs=a.jobs, stop_s=STOP_S,
                                             table=table(results), summary=summary))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
