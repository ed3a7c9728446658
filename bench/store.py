"""The results store: one campaign directory of JSON Lines records plus run provenance.

Layout (documented in results/README.md)::

    <root>/<campaign>/records.jsonl        one record per line, appended and fsynced
    <root>/<campaign>/runs/<run_id>.json   provenance of each run that wrote records

Only rank 0 writes. A record is flushed and fsynced before the next case
starts, so a killed run loses at most the record in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "skipped")

# Required fields per record kind: name -> allowed types.
_NUM = (int, float)
COMMON = {"schema": int, "kind": str, "campaign": str, "run_id": str, "key": str, "status": str,
          "error": (str, type(None)), "written_at": str, "world_size": int, "nodes": int}
ATTENTION = {"algorithm": str, "seq": int, "seq_per_rank": int, "scaling": str, "batch": int, "heads": int,
             "kv_heads": int, "head_dim": int, "dtype": str, "causal": bool, "mode": str, "repeat": int,
             "warmup": int, "iters": int}
TIMED = {"samples_s": list, "median_s": _NUM, "min_s": _NUM, "max_s": _NUM, "mean_s": _NUM, "std_s": _NUM,
         "p10_s": _NUM, "p90_s": _NUM, "flops": _NUM, "flops_convention": str, "tflops_per_rank": _NUM,
         "kernel": str, "layout": str, "bytes_sent_per_rank": list, "bytes_received_per_rank": list,
         "comm_calls_per_rank": list, "mem_peak_bytes_per_rank": list}
COLLECTIVE = {"op": str, "bytes": int, "dtype": str, "busbw_factor": _NUM}
COLLECTIVE_TIMED = {"samples_s": list, "median_s": _NUM, "algbw_GBps": _NUM, "busbw_GBps": _NUM}


def config_key(config: dict) -> str:
    """A stable id for a configuration: what must match for a record to count as done."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def validate(rec: dict) -> list[str]:
    """Problems with a record against the schema ([] when valid)."""
    want = dict(COMMON)
    kind = rec.get("kind")
    if kind == "attention":
        want |= ATTENTION | (TIMED if rec.get("status") == "ok" else {})
    elif kind == "collective":
        want |= COLLECTIVE | (COLLECTIVE_TIMED if rec.get("status") == "ok" else {})
    else:
        return [f"unknown kind {kind!r}"]
    problems = [f"missing {k}" for k in want if k not in rec]
    problems += [f"{k} has type {type(rec[k]).__name__}" for k, t in want.items()
                 if k in rec and not isinstance(rec[k], t)]
    if rec.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema {rec.get('schema')} != {SCHEMA_VERSION}")
    if rec.get("status") not in STATUSES:
        problems.append(f"status {rec.get('status')!r} not in {STATUSES}")
    return problems


class Store:
    """A campaign's records. Read on every rank; written by rank 0 only."""

    def __init__(self, root: str | Path, campaign: str):
        if not campaign or "/" in campaign or campaign.startswith("."):
            raise ValueError(f"campaign name {campaign!r} must be a plain directory name")
        self.dir = Path(root) / campaign
        self.campaign = campaign
        self.records_path = self.dir / "records.jsonl"

    def records(self) -> list[dict]:
        """Every readable record; a torn last line (killed writer) is skipped."""
        if not self.records_path.exists():
            return []
        out = []
        for line in self.records_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def done(self) -> dict[str, str]:
        """key -> latest status."""
        return {r["key"]: r["status"] for r in self.records() if "key" in r}

    def new_run(self, provenance: dict) -> str:
        run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        (self.dir / "runs").mkdir(parents=True, exist_ok=True)
        path = self.dir / "runs" / f"{run_id}.json"
        path.write_text(json.dumps({"run_id": run_id, **provenance}, indent=1) + "\n")
        return run_id

    def append(self, rec: dict) -> None:
        problems = validate(rec)
        if problems:
            raise ValueError(f"refusing to write an invalid record: {'; '.join(problems)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.records_path, "a") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())


def already_recorded(prior: str | None, retry_failed: bool) -> bool:
    """Resume: skip a configuration whose latest record is ok, or failed unless failures are retried."""
    return prior == "ok" or (prior == "failed" and not retry_failed)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
