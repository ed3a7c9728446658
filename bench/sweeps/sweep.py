"""A sweep once loaded (spec.py): its jobs, each a shape (nodes x ranks per node) and its points."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ringx_suite.cli import UserError
from ringx_suite.store import Store

from . import profiles
from .kinds import KINDS, PointKind
from .schedulers import Scheduler


class SweepError(UserError):
    """A problem with the sweep file, reported before anything is submitted."""


@dataclass
class Job:
    nodes: int
    ranks_per_node: int
    points: list
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
    driver: str = "run"  # a key of kinds.KINDS: what the points are and which bench command runs them
    plugins: tuple[str, ...] = ()  # ``plugins = [...]``: the --plugin specs every job passes (files absolute)
    external: dict = field(default_factory=dict)  # the plugins by name (theirs and installed ones the points name)
    _call_s: dict = field(default_factory=dict, init=False, repr=False)  # estimate's cache per (job, point)

    @property
    def kind(self) -> PointKind:
        return KINDS[self.driver]

    @property
    def scheduler(self) -> Scheduler:
        return self.profile.scheduler

    def limit_s(self, estimate_s: float) -> float:
        """A job's time limit: the estimate (start-up allowance included, see estimate.py) times the margin,
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

    def keys(self, job: Job) -> dict:
        """Record key -> point, for every point and repeat of a job (as its driver will write them)."""
        return {self.kind.key(pt, job.ranks, job.nodes, rep, self.bench): pt
                for pt in job.points for rep in range(self.bench["repeats"])}
