"""The results store: a campaign directory of JSON Lines records plus run provenance.

Layout (documented in docs/records.md)::

    <root>/<campaign>/records/<run_id>.jsonl   the records of one run, appended and fsynced by its rank 0
    <root>/<campaign>/runs/<run_id>.json       provenance of each run that wrote records
    <root>/<campaign>/records.jsonl            older campaigns' single file (still read)
    <root>/<campaign>/claims/<run_id>.json     the keys a running run is measuring, locked while it lives

Each run writes its own file, so concurrent jobs of one campaign on a shared
parallel filesystem never append to the same file (appends from several nodes
are not atomic on NFS, and not safe to assume on Lustre); every reader merges
all files. A record is flushed and fsynced before the next case starts, so a
killed run loses at most the record in flight. Readers validate every line:
torn, corrupt or foreign lines are counted, reported and never trusted.

One writer per point: a run claims the keys it is about to measure (:func:`claim`), and a second run
wanting any of them is refused, naming the holder. Jobs of one sweep measure disjoint points, so they
still run side by side.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ringx_suite.cli import UserError
from ringx_suite.records import SCHEMA_VERSION, validate

__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "already_recorded", "config_key", "now", "validate"]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


class StoreError(UserError):
    """A campaign that cannot be used as asked (bad name, no records); the message is for the user."""


class Busy(StoreError):
    """Another living run is measuring some of the points this run would measure."""


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
        self.claim: Claim | None = None  # the keys this run measures (rank 0 of a run)

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
            try:
                data = path.read_bytes()
            except OSError:
                out.note("unreadable file")
                continue
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

    def new_run(self, provenance: dict, keys: set[str] | None = None) -> str:
        """Start a run: its id, its claim on ``keys`` (Busy if a living run holds any of them), its provenance
        file and its (empty) record file. Fails early if not writable."""
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        (self.dir / "runs").mkdir(parents=True, exist_ok=True)
        (self.dir / "records").mkdir(parents=True, exist_ok=True)
        if keys is not None:
            self.claim = claim(self.dir, run_id, keys, " ".join(provenance.get("command", [])))
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

    def release(self) -> None:
        """The run is over: its claim ends (a killed run's ends with its process)."""
        if self.claim:
            self.claim.release()

    def quiesce(self, timeout: float = 2.0) -> None:
        """Wait (briefly) for a write in progress to finish, then hold writes off (before exiting)."""
        self._lock.acquire(timeout=timeout)


# Claims: one writer per point. --------------------------------------------------------------------------
CLAIM_WAIT_S = 30.0  # the longest a run waits for another to finish checking its claim


@dataclass
class Claim:
    """The keys a running run measures: a file under CAMPAIGN/claims/ that its process keeps locked."""

    path: Path
    fd: int | None

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock
            self.fd = None


def _no_locks(e: OSError) -> bool:
    """The filesystem has no flock (some Lustre and NFS mounts): claims fall back to host and pid."""
    return e.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)


def _held(path: Path, holder: dict) -> bool:
    """Whether the run that wrote a claim still lives: its lock is held (the kernel drops it when the process
    ends, even when killed); without file locks, its pid on this host, or any holder on another host."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError as e:
        if not _no_locks(e):
            raise
    finally:
        os.close(fd)
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
        return True
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True


class _Exclusive:
    """CAMPAIGN/claims/.lock held while a run checks and writes its claim (a no-op without file locks)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self):
        end = time.monotonic() + CLAIM_WAIT_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > end:
                    raise StoreError(f"{self.path} has been locked by another run for {CLAIM_WAIT_S:.0f}s") from None
                time.sleep(0.05)
            except OSError as e:
                if _no_locks(e):
                    return self
                raise

    def __exit__(self, *exc):
        os.close(self.fd)


def claim(campaign_dir: Path, run_id: str, keys: set[str], command: str = "") -> Claim:
    """Claim ``keys`` for this run, or raise Busy naming the living run that holds some of them.

    Claims of runs that ended (or were killed) are removed on the way.
    """
    cdir = campaign_dir / "claims"
    cdir.mkdir(parents=True, exist_ok=True)
    with _Exclusive(cdir / ".lock"):
        for other in sorted(cdir.glob("*.json")):
            try:
                holder = json.loads(other.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                holder = {}
            if not _held(other, holder):
                other.unlink(missing_ok=True)  # its run is over: a stale claim
                continue
            overlap = keys & set(holder.get("keys", []))
            if overlap:
                raise Busy(f"campaign {campaign_dir}: {len(overlap)} of the {len(keys)} records this run would "
                           f"measure are being measured by run {holder.get('run_id')} (host {holder.get('host')}, "
                           f"pid {holder.get('pid')}, since {holder.get('since')}: {holder.get('command', '')}). "
                           "Two runs of the same points would each slow the other: wait for it to finish, or "
                           "measure other points. A claim ends with its process, even a killed one; if that run "
                           f"is gone and its claim stays (a lost node), remove {other}")
        path = cdir / f"{run_id}.json"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not _no_locks(e):
                os.close(fd)
                raise
        os.write(fd, json.dumps({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                                 "since": now(), "command": command, "keys": sorted(keys)}).encode())
        os.fsync(fd)
    return Claim(path, fd)


def already_recorded(prior: str | None, retry_failed: bool) -> bool:
    """Resume: skip a configuration whose latest record is ok, or failed unless failures are retried."""
    return prior == "ok" or (prior == "failed" and not retry_failed)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
