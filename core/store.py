"""The results store: a campaign directory of JSON Lines records plus run provenance.

Layout (documented in results/README.md)::

    <root>/<campaign>/records/<run_id>.jsonl   the records of one run, appended and fsynced by its rank 0
    <root>/<campaign>/runs/<run_id>.json       provenance of each run that wrote records
    <root>/<campaign>/records.jsonl            older campaigns' single file (still read)

Each run writes its own file, so concurrent jobs of one campaign on a shared
parallel filesystem never append to the same file (appends from several nodes
are not atomic on NFS, and not safe to assume on Lustre); every reader merges
all files. A record is flushed and fsynced before the next case starts, so a
killed run loses at most the record in flight. Readers validate every line:
torn, corrupt or foreign lines are counted, reported and never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from core.cli import UserError
from core.records import SCHEMA_VERSION, validate

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "already_recorded", "config_key", "now", "validate"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


class StoreError(UserError):
    """A campaign that cannot be used as asked (bad name, no records); the message is for the user."""


def check_campaign_name(campaign: str) -> str:
    """A campaign is one plain directory name: letters, digits and ._+- (so it cannot escape its root)."""
    if not isinstance(campaign, str) or not NAME.fullmatch(campaign) or campaign in (".", ".."):
        raise StoreError(f"campaign name {campaign!r} must be a plain directory name of letters, digits and ._+- "
                         "(no spaces, slashes or leading dot)")
    return campaign


def config_key(config: dict) -> str:
    """A stable id for a configuration: what must match for a record to count as done."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Reading:
    """What a read of the store found: valid records, and the lines it could not trust."""

    records: list[dict] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> lines

    def note(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        """'' when every line was valid, else one line naming what was skipped."""
        if not self.skipped:
            return ""
        return "skipped " + ", ".join(f"{n} {why} line(s)" for why, n in sorted(self.skipped.items()))


class Store:
    """A campaign's records. Read on every rank; each run's file is written by its rank 0 only."""

    def __init__(self, root: str | Path, campaign: str):
        self.campaign = check_campaign_name(campaign)
        self.dir = Path(root) / campaign
        self.run_id: str | None = None
        self._lock = threading.Lock()  # an interrupt waits for a write in progress

    @classmethod
    def at(cls, path: str | Path) -> Store:
        """The store of an existing campaign directory."""
        p = Path(path)
        if p.is_file() and p.name == "records.jsonl":
            p = p.parent
        if not p.is_dir():
            raise StoreError(f"no campaign at {path}: expected a campaign directory (e.g. runs/local-demo)")
        return cls(p.resolve().parent, p.resolve().name)

    @property
    def records_path(self) -> Path:
        """Where this run writes (its own file), or the campaign's records directory before a run starts."""
        return self.dir / "records" / f"{self.run_id}.jsonl" if self.run_id else self.dir / "records"

    def files(self) -> list[Path]:
        legacy = self.dir / "records.jsonl"
        return ([legacy] if legacy.exists() else []) + sorted((self.dir / "records").glob("*.jsonl"))

    def read(self) -> Reading:
        """Every valid record of every run's file, and counts of the lines that were not."""
        out = Reading()
        for path in self.files():
            data = path.read_bytes()
            for raw in data.split(b"\n"):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    out.note("corrupt or torn")
                    continue
                problems = validate(rec)
                if problems:
                    out.note("foreign or invalid" if isinstance(rec, dict) else "non-record")
                    continue
                out.records.append(rec)
        return out

    def records(self) -> list[dict]:
        return self.read().records

    def done(self) -> dict[str, str]:
        """key -> latest status, from valid records only."""
        return {r["key"]: r["status"] for r in self.records()}

    def new_run(self, provenance: dict) -> str:
        """Start a run: its id, its provenance file and its (empty) record file. Fails early if not writable."""
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        (self.dir / "runs").mkdir(parents=True, exist_ok=True)
        (self.dir / "records").mkdir(parents=True, exist_ok=True)
        (self.dir / "runs" / f"{run_id}.json").write_text(json.dumps({"run_id": run_id, **provenance}, indent=1)
                                                          + "\n")
        self.run_id = run_id
        self.records_path.touch()
        return run_id

    def runs(self) -> list[dict]:
        """Every readable provenance file."""
        out = []
        for f in sorted((self.dir / "runs").glob("*.json")):
            try:
                d = json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(d, dict):
                out.append({"run_id": f.stem, **d})
        return out

    def append(self, rec: dict) -> None:
        problems = validate(rec)
        if problems:
            raise ValueError(f"refusing to write an invalid record: {'; '.join(problems)}")
        if self.run_id is None:
            raise RuntimeError("Store.append before new_run")
        line = json.dumps(rec, separators=(",", ":"), allow_nan=False)
        with self._lock, open(self.records_path, "ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # a killed writer may have left a partial line: start on a fresh one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def quiesce(self, timeout: float = 2.0) -> None:
        """Wait (briefly) for a write in progress to finish, then hold writes off (before exiting)."""
        self._lock.acquire(timeout=timeout)


def already_recorded(prior: str | None, retry_failed: bool) -> bool:
    """Resume: skip a configuration whose latest record is ok, or failed unless failures are retried."""
    return prior == "ok" or (prior == "failed" and not retry_failed)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
