"""The one skeleton of a measuring driver (``bench run``, ``bench model``, ``bench kernels``, ``bench
collectives``; the serving driver to come): what every driver does alike, so that each driver's own file holds
only its points, its inputs, its timed callables and its record fields.

The life of a run, on every rank:

1. **open** (:meth:`Driver.open`): launch (``ringx.launch.init``), the MPI agreement group, the campaign (rank
   0 opens the store, claims the keys this run will write and records provenance), clean stop on Ctrl-C /
   SIGTERM, CPU pinning, and the failure recorder;
2. **stages**, per configuration (a group of cases that are timed side by side, :meth:`Driver.run`):
   points -> cases (already recorded? cannot run here?) -> group check -> inputs -> per case its stages
   (prepare, check, the untimed first call) -> warm-up and timed rounds, candidates interleaved
   (``bench.measure.timing``) -> one record per case -> one progress line for the configuration;
3. **teardown** (:meth:`Driver.close`): the claim released, the summary line, ``launch.finalize``.

A failure at any stage becomes a record and the run goes on (``bench/measure/failures.py``); a hung rank is
named and stops the run. A driver subclasses :class:`Driver` (or :class:`CaseDriver` for the staged loop)
and fills in the hooks marked "the driver's".

A new driver (e.g. serving: prefill and decode) is one file in bench/drivers/: a :class:`CaseDriver` subclass
with ``prog``/``command``/``kind``, its points (``configurations``, ``config``, ``label``), its inputs
(``inputs``: the model and KV cache shared by its candidates), its timed callables (``stages`` ending in the
untimed first call, which sets ``c.call``; candidates may be algorithms or a tensor-parallel baseline, as
``bench run``'s plugins are), its record fields (``record_fields``, ``finish``); a parser from the
option tables plus :func:`add_output_arguments`; ``main`` through :func:`mpi_main`; one line in
bench/__main__.py and its record kind in ringx_suite/records.py.

The output flags (``--out``, ``--campaign``, ``--tag``, ``--retry-failed``, ``--quiet``) are declared here once,
from ``bench.options.OUTPUT``; the record header (schema, kind, campaign, tag, run id, key, status) is built
here once (:meth:`Driver.header`).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ringx_drivers import options
from ringx_drivers.measure.failures import Inject, Recorder, maybe_inject, parse_inject, run_guarded
from ringx_drivers.measure.pinning import pin
from ringx_drivers.measure.ranks import Group, Progress, describe
from ringx_suite.cli import Parser, UserError, load_config

# ---------------------------------------------------------------------------------------------------------
# Command lines: one place for the output flags and the --config file


def add_output_arguments(parser: argparse.ArgumentParser, campaign: str = "default") -> None:
    """The output flags of every driver (``bench.options.OUTPUT``); ``campaign``: this driver's default."""
    options.add_arguments(parser.add_argument_group("output"), options.OUTPUT.values(), {"campaign": campaign})


def given_options(parser: Parser, argv: list[str] | None, valid: Iterable[str]) -> dict:
    """Flags over the ``--config`` file (when the parser has one): option name -> the value as given."""
    a = parser.parse_args(argv)
    config = getattr(a, "config", None)
    given = load_config(config, set(valid)) if config else {}
    return given | {k: v for k, v in vars(a).items() if v is not None and k != "config"}


def output_of(given: dict, campaign: str = "default") -> options.Output:
    """The checked output options (a campaign name that cannot escape its root)."""
    from ringx_suite.store import check_campaign_name

    out = options.Output.of(given, "", {"campaign": campaign})
    check_campaign_name(out.campaign)
    return out


def check_kernel(kernel: str | None) -> None:
    import ringx

    if kernel is not None and kernel not in ringx.KERNELS:
        raise UserError(f"--kernel {kernel!r}: choose one of {', '.join(ringx.KERNELS)}")


@dataclass(frozen=True)
class Invocation:
    """What one command line asks of a driver, checked: how to measure, where to write, the tests' fault."""

    settings: options.Settings
    output: options.Output
    argv: tuple[str, ...] = ()
    inject: Inject | None = None

    @classmethod
    def of(cls, given: dict, argv: Sequence[str], campaign: str = "default",
           settings_defaults: dict | None = None) -> Invocation:
        s = options.Settings.of(given, "", settings_defaults)
        check_kernel(s.kernel)
        return cls(s, output_of(given, campaign), tuple(argv), parse_inject(given.get("inject")))


# ---------------------------------------------------------------------------------------------------------
# Every rank: the skeleton


class Driver:
    """Launch, group, campaign, signals, pinning, recorder, claims and the record header: one driver's run."""

    prog = "bench run"  # the command as messages name it
    command = "run"  # `ringx-bench COMMAND`, recorded in the run's provenance
    kind = "attention"  # the records' kind (ringx_suite/records.py)

    def __init__(self, inv: Invocation):
        self.inv, self.settings, self.output = inv, inv.settings, inv.output
        self.counts = {"recorded": 0, "failed": 0, "skipped": 0}

    def open(self, claims: bool = True, signals: bool = True, launch_args: dict | None = None,
             timeout: float | None = None) -> None:
        """Launch and open the campaign (every rank). ``claims``: rank 0 claims the keys :meth:`pending` names
        (another run measuring the same points is refused); ``signals``: Ctrl-C / SIGTERM stop every rank at
        once; ``launch_args``: ``ringx.launch.init``'s device and backend (default: the settings')."""
        from ringx import launch

        s = self.settings
        timeout = s.timeout if timeout is None else timeout
        if launch_args is None:
            launch_args = {k: getattr(s, k) for k in ("device", "backend") if getattr(s, k) not in (None, "auto")}
        self.ctx = launch.init(timeout_s=timeout, **launch_args)
        self.rank, self.P = self.ctx.rank, self.ctx.world_size
        self.before_campaign()
        self.pinned = pin(self.ctx)
        self.group = Group(timeout, self.prog)
        inj = self.inv.inject
        self.store, self.run_id, self.done, self.nodes = self.group.open_campaign(
            self.output.out, self.output.campaign, ["-m", "ringx_bench", self.command, *self.inv.argv],
            pending=self.pending if claims else None,
            hook=(lambda: maybe_inject(inj, self.rank, 0, "open", self.prog)) if claims else None)
        if signals:
            interrupt_cleanly(self.store, self.rank, self.prog)
        self.failures = Recorder(self.group, self.store, self.reinit, self.counts, inj)

    def before_campaign(self) -> None:
        """The driver's: what must be known on every rank before the campaign opens (default: nothing)."""

    def pending(self, done: dict[str, str], nodes: int) -> set[str]:
        """The driver's: the keys this run will write (claimed for the run in the store)."""
        return set()

    def header(self, key: str, **fields) -> dict:
        """The start of every record: the common fields (ringx_suite/records.py), then the driver's, in order."""
        from ringx_suite.store import SCHEMA_VERSION

        return {"schema": SCHEMA_VERSION, "kind": self.kind, "campaign": self.store.campaign, "tag": self.output.tag,
                "run_id": self.run_id, "key": key, "status": "ok", "error": None, **fields}

    def progress_for(self, total: int, lines: bool = False) -> Progress:
        """Rank 0's progress (nothing with --quiet); ``lines``: one kept line per step, also on a terminal."""
        self.progress = Progress(total, self.output.quiet, self.rank == 0, lines)
        return self.progress

    def note_machine(self) -> None:
        """The run's machine notes: pinning, and CPU ranks sharing fewer cores (their times include it)."""
        if self.pinned:
            self.progress.note(f"{self.prog}: CPU ranks pinned, rank 0 to core(s) {self.pinned}")
        cores = os.cpu_count() or 1
        if self.ctx.device.type == "cpu" and self.P > cores and self.nodes == 1:
            self.progress.note(f"{self.prog}: note: {self.P} ranks share {cores} cores; times include that "
                               "contention")

    def write(self, rec: dict, index: int = 0) -> None:
        """Rank 0 appends the record (a store that cannot take it stops the run)."""
        self.failures.write(rec, index)

    def reinit(self) -> None:
        """A new process group (a collective may be half-done)."""
        from ringx import launch

        self.ctx = launch.reinit(self.ctx, self.settings.timeout)

    def close(self) -> None:
        """Teardown: the claim on this run's keys ends."""
        self.store.release()

    def main(self) -> None:
        """Every rank: the run, where a bug on one rank stops all of them, then teardown."""
        run_guarded(self.group, self.run)

    def run(self) -> None:
        raise NotImplementedError


@dataclass
class Case:
    """One candidate of a configuration: its record in the making and what measuring it gave.

    The attributes are what ``bench/measure/failures.py`` needs of a case (index, rec, label, result, votes)
    and what the staged loop fills in (call, stats); ``own``: the driver's (a plugin, ...)."""

    index: int  # position in the run's case list (--inject addresses it)
    point: object  # the driver's point (it has an ``algorithm``)
    rec: dict
    label: str  # "ALGORITHM DETAILS"
    layout: str = ""
    own: object = None
    call: Callable | None = None  # the timed callable
    stats: object = None
    result: dict = field(default_factory=dict)
    votes: list = field(default_factory=list)  # every rank's report of the last stage

    @property
    def algorithm(self) -> str:
        return self.point.algorithm


@dataclass(frozen=True)
class Stage:
    """One per-case stage: what it is called in failure messages, the work, whether a failure there may
    leave a collective half-done (then the process group is re-initialised)."""

    what: str
    run: Callable[[], None]
    broke_group: bool


class CaseDriver(Driver):
    """The staged loop: configurations of candidates, each configuration measured side by side.

    The driver's hooks: :meth:`configurations`, :meth:`config`, :meth:`label`, :meth:`record_fields`,
    :meth:`inputs`, :meth:`stages`, :meth:`finish`; optionally :meth:`unrunnable`, :meth:`check_group`,
    :meth:`after_timing`, :meth:`release`, :meth:`describe_point`, :meth:`outcome`."""

    inputs_what = "making the inputs of"  # the failure message's words for :meth:`inputs`
    config_seed = 0  # one seed per configuration (its candidates share one float64 reference), after its inputs

    # -- the driver's ---------------------------------------------------------------------------------------

    def configurations(self) -> list[tuple[int, list]]:
        """(repeat, the points of one configuration) in run order: the points of one are timed side by side."""
        raise NotImplementedError

    def config(self, pt, rep: int, nodes: int) -> dict:
        """The configuration fields of the point's record; their hash is its key."""
        raise NotImplementedError

    def label(self, pt) -> str:
        """'ALGORITHM DETAILS' for messages."""
        raise NotImplementedError

    def record_fields(self, pt) -> dict:
        """The driver's fields between the header and the configuration (their order is the record's)."""
        return {}

    def layout(self, pt) -> str:
        import ringx

        return ringx.ALGORITHMS[pt.algorithm].layout(pt.causal)

    def unrunnable(self, pt) -> tuple[str, str | None, str] | None:
        """(status, failure, error) for a point that cannot run here (recorded so, not run), else None."""
        return None

    def check_group(self, cases: list[Case]) -> list[Case]:
        """A check of the whole configuration before its inputs; the cases that passed (default: all)."""
        return cases

    def inputs(self, cases: list[Case]):
        """What the configuration's candidates share (the same data for all of them)."""
        raise NotImplementedError

    def stages(self, c: Case, shared) -> list[Stage]:
        """The case's stages before timing, in order; the last is normally its untimed first call."""
        raise NotImplementedError

    def after_timing(self, live: list[Case]) -> list:
        """Per live case, what the driver measured beside the rounds' times (default: nothing)."""
        return [None] * len(live)

    def finish(self, c: Case, samples: list[float], extra, group_id: str | None, shared) -> str:
        """Complete and write the case's record; the outcome for the progress line ("12.3 ms")."""
        raise NotImplementedError

    def release(self, cases: list[Case]) -> None:
        """Free what the configuration held (default: nothing)."""

    def describe_point(self, pt) -> str:
        """The configuration's words in its progress line (default: the label without the algorithm)."""
        return self.label(pt).split(" ", 1)[-1]

    # -- the skeleton ---------------------------------------------------------------------------------------

    def pending(self, done: dict[str, str], nodes: int) -> set[str]:
        from ringx_suite.store import already_recorded, config_key

        keys = {config_key(self.config(pt, rep, nodes)) for rep, pts in self.configurations() for pt in pts}
        return {k for k in keys if not already_recorded(done.get(k), self.output.retry_failed)}

    def start(self, total: int) -> None:
        """The driver's: its first lines (what it will do), after the progress exists."""

    def run(self) -> None:
        plan = self.configurations()
        total = sum(len(pts) for _, pts in plan)
        self.progress_for(total, lines=True)  # one line per configuration, kept
        self.failures.progress = self  # failures reach the configuration's progress line through self.step
        self.start(total)
        index = 0
        for rep, pts in plan:
            self.outcomes: list[str] = []
            cases = []
            for pt in pts:
                cases.append(self.case(index, pt, rep))
                index += 1
            self.measure([c for c in cases if c is not None])
            self.progress.step(f"{self.describe_point(pts[0])}{f' r{rep}' if rep else ''}: "
                               + "; ".join(self.outcomes), count=len(pts))
        n = self.counts
        self.progress.note(f"{self.prog}: {n['recorded']} recorded, {n['failed']} failed, {n['skipped']} already "
                           f"in the store -> {self.store.records_path}")
        self.close()

    def step(self, text: str) -> None:
        """A case's outcome ("LABEL: what"), kept for its configuration's line (the recorder calls this)."""
        label, _, what = text.partition(": ")
        self.outcomes.append(f"{label.split(' ', 1)[0]} {what}")

    def case(self, index: int, pt, rep: int) -> Case | None:
        """The case's record skeleton, or None when it is already recorded or cannot run here (recorded so)."""
        from ringx_suite.store import already_recorded, config_key, now

        config = self.config(pt, rep, self.nodes)
        key = config_key(config)
        label = self.label(pt)
        prior = self.done.get(key)
        if already_recorded(prior, self.output.retry_failed):
            self.counts["skipped"] += 1
            self.step(f"{label}: already recorded ({prior})")
            return None
        rec = self.header(key, failure=None, written_at="", device=self.ctx.device.type, **self.record_fields(pt),
                          **config)
        refused = self.unrunnable(pt)
        if refused:  # the same on every rank, so no agreement is needed
            status, failure, error = refused
            rec.update(status=status, failure=failure, error=error, written_at=now())
            self.write(rec, index)
            if status == "failed":
                self.counts["failed"] += 1
            self.step(f"{label}: {'FAILED' if status == 'failed' else status} ({error})")
            return None
        return Case(index, pt, rec, label, self.layout(pt), self.own(pt))

    def own(self, pt):
        """The driver's per-case object (default: none)."""
        return None

    def measure(self, cases: list[Case]) -> None:
        """Group check, inputs, each case's stages (each may fail alone), then all timed side by side."""
        if not cases:
            return
        shared = None
        try:
            cases = self.check_group(cases)
            if not cases:
                return
            err = None
            try:  # one set of inputs for the whole configuration: the candidates see the same data
                shared = self.inputs(cases)
            except Exception as e:  # noqa: BLE001 - every failure becomes a record
                err = describe(e)
            if not self.failures.settle_all(cases, err, self.inputs_what, broke_group=False):
                return
            self.config_seed += 1  # counted alike on every rank: only configurations whose inputs all ranks made
            live = [c for c in cases if all(self.failures.stage(c, s.run, s.what, s.broke_group)
                                            for s in self.stages(c, shared))]
            if not live:
                return
            err = samples = extra = None
            try:
                from ringx_drivers.measure.timing import time_round_robin

                calls = [self.failures.injecting(c.index, c.call) for c in live]
                samples = time_round_robin(calls, self.settings.warmup, self.settings.iters, self.ctx.device)
                extra = self.after_timing(live)
            except Exception as e:  # noqa: BLE001
                err = describe(e)
            if not self.failures.settle_all(live, err, "timing", broke_group=True):
                return
            group_id = uuid.uuid4().hex[:12] if len(live) > 1 else None
            for c, s, x in zip(live, samples, extra):
                self.outcomes.append(f"{c.algorithm} {self.finish(c, s, x, group_id, shared)}")
                self.write(c.rec, c.index)
                self.counts["recorded"] += 1
        finally:
            shared = None
            self.release(cases)


def ledger_totals(st) -> dict:
    """Bytes sent and received and calls over a CallStats' forward and backward ledgers (zeros without one)."""
    ledgers = [st.forward, st.backward] if st else []
    return {"sent": sum(x.sent for x in ledgers), "received": sum(x.received for x in ledgers),
            "calls": sum(x.calls for x in ledgers)}


def per_rank_fields(votes: list[dict]) -> dict:
    """Every rank's traffic of a case's first call, as the record's per-rank lists."""
    return {"bytes_sent_per_rank": [v["sent"] for v in votes],
            "bytes_received_per_rank": [v["received"] for v in votes],
            "comm_calls_per_rank": [v["calls"] for v in votes]}


# ---------------------------------------------------------------------------------------------------------
# The model drivers' set-up (bench model, bench infer): one preset, one model replicated from rank 0


def model_parser(prog: str, description: str | None, model_options, points_title: str, point_options,
                 check_max_seq: int, **parser_args) -> Parser:
    """The command line of a driver of bench/models (``bench model``, ``bench infer``): ``--config``, the model's
    options (the preset's values unless given), the driver's points, every setting (all, as a sweep passes them;
    the check's length defaulting to the driver's own), the output flags and the tests' hidden ``--inject``."""
    p = Parser(prog=prog, description=description, **parser_args)
    p.add_argument("--config", help="TOML or JSON file with any of the options below (flags override it)")
    options.add_arguments(p.add_argument_group("model (the preset's values unless given)"), model_options)
    options.add_arguments(p.add_argument_group(points_title), point_options)
    options.add_arguments(p.add_argument_group("measurement"), options.SETTINGS.values(),
                          {"check_max_seq": check_max_seq})
    add_output_arguments(p)
    p.add_argument("--inject", help=argparse.SUPPRESS)  # tests only: RANK:CASE:KIND[@PHASE], as bench run's
    return p


class ModelDriver(CaseDriver):
    """``bench model`` and ``bench infer``: a plan's candidates (``plan.algorithms``) side by side at each of its
    lengths, on one model replicated from rank 0, the dtype resolved on the device. The driver's: ``point`` (its
    (algorithm, length) class) and ``lengths``."""

    inputs_what = "building the model of"
    point: type  # made as point(algorithm, length)

    def __init__(self, inv: Invocation, plan, dtype: str):
        super().__init__(inv)
        self.plan, self.asked_dtype = plan, dtype
        self.references: dict = {}  # the unsharded float64 reference of the configuration being checked

    def lengths(self) -> tuple[int, ...]:
        raise NotImplementedError

    def before_campaign(self) -> None:
        from ringx_drivers.points import compute_dtype

        self.dtype = compute_dtype(self.asked_dtype, self.ctx.device.type)

    def configurations(self) -> list[tuple[int, list]]:
        return [(rep, [self.point(n, s) for n in self.plan.algorithms]) for s in self.lengths()
                for rep in range(self.settings.repeats)]


def replicated_model(cfg, *, seed: int, device, world: int, dtype=None, **build):
    """The model built alike on every rank from one seed (cast to ``dtype`` if given), then its parameters
    broadcast from rank 0 so every rank holds the same bits whatever the device's initialisation does."""
    import torch.distributed as dist

    from ringx_drivers import models

    model = models.build(cfg, seed=seed, device=device, **build)
    if dtype is not None:
        model = model.to(dtype)
    if world > 1:
        for p in model.parameters():
            dist.broadcast(p.data, src=0)
    return model


# ---------------------------------------------------------------------------------------------------------
# Process-level plumbing shared by the drivers


def interrupt_cleanly(store, rank: int, prog: str = "bench run") -> None:
    """Ctrl-C / SIGTERM: every rank stops at once, with one line from rank 0 and no traceback.

    A rank blocked inside a collective never returns to Python, so a Python-level handler would not run: the
    C-level handler writes the signal to a pipe, and a thread reading it ends the process (after letting a
    record write in progress finish, so the store stays intact).
    """
    import threading

    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)

    def watch() -> None:
        sig = os.read(r, 1)
        store.quiesce()
        if rank == 0:
            name = "interrupted" if sig and sig[0] == signal.SIGINT else "terminated"
            print(f"\n{prog}: {name}; the records written so far are in {store.records_path}", file=sys.stderr,
                  flush=True)
        os._exit(130 if sig and sig[0] == signal.SIGINT else 143)

    threading.Thread(target=watch, daemon=True, name="ringx-interrupt").start()


def check_slurm_world(world: int, rank: int, prog: str = "bench run") -> None:
    """Refuse N copies of rank 0 (an MPI that does not see srun's tasks) with the likely cause."""
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS")
    if not tasks or not tasks.isdigit():
        return
    tasks = int(tasks)
    if world == 1 and tasks > 1:
        procid = os.environ.get("SLURM_PROCID", "0")
        if procid == "0":
            print(f"{prog}: error: srun started {tasks} tasks but MPI sees 1 rank in each: {tasks} copies of "
                  "rank 0 would write one store. Launch with `srun --mpi=pmi2` (or pmix, as your MPI needs), or "
                  "install mpi4py built against the machine's MPI (MPICC=cc pip install --no-binary mpi4py "
                  "mpi4py).", file=sys.stderr, flush=True)
        sys.exit(2)
    if world == tasks and os.environ.get("SLURM_PROCID", str(rank)) != str(rank):
        print(f"{prog}: warning: MPI rank {rank} is Slurm task {os.environ['SLURM_PROCID']}", file=sys.stderr)


def mpi_main(prog: str, argv: list[str] | None, make: Callable[[list[str], int], Driver]) -> int:
    """A driver's ``main``: under MPI, ``make(argv, world)`` checks every user mistake (before any collective),
    then the driver opens, runs on every rank and tears down."""
    from ringx_suite.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)

    def go() -> int:
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        check_slurm_world(world.Get_size(), world.Get_rank(), prog.removeprefix("python -m "))
        driver = make(argv, world.Get_size())
        import torch  # noqa: F401 - imported now in any case: frozen below with the rest

        # What is imported by now lives as long as the process: the collector need never scan it again (a full
        # collection over torch's objects costs ~0.4 s, and the drivers collect between configurations).
        gc.freeze()
        driver.open()
        driver.main()
        from ringx import launch

        launch.finalize()
        return 0

    return cli_main(prog, go)
