"""Read a campaign's records into one tidy pandas DataFrame, joined with run provenance."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

SCHEMA = 1
# Upgraders from older schema versions to the next one: {version: function(record) -> record}.
UPGRADES: dict[int, callable] = {}

INT = ["world_size", "nodes", "seq", "seq_per_rank", "batch", "heads", "kv_heads", "head_dim", "repeat", "warmup",
       "iters", "bytes"]
FLOAT = ["median_s", "min_s", "max_s", "mean_s", "std_s", "p10_s", "p90_s", "flops", "tflops_per_rank",
         "peak_tflops", "mfu", "algbw_GBps", "busbw_GBps", "busbw_factor", "check_max_error"]
PROVENANCE = {"git_commit": "commit", "git_dirty": "dirty", "date": "run_date", "nodes": "run_nodes"}


class EmptyCampaign(ValueError):
    """No usable records where records were expected."""


def _paths(source) -> list[Path]:
    items = [source] if isinstance(source, str | Path) else list(source)
    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            p = p / "records.jsonl"
        elif p.suffix == ".parquet" and p.exists():
            out.append(p)
            continue
        elif not p.exists() and (Path("results") / str(item) / "records.jsonl").exists():
            p = Path("results") / str(item) / "records.jsonl"
        if not p.exists():
            raise EmptyCampaign(f"no campaign at {item}: expected a campaign directory holding records.jsonl "
                                "(e.g. results/cpu-sample), a records.jsonl file or an exported .parquet file")
        out.append(p)
    return out


def _read(path: Path) -> tuple[list[dict], int, dict[int, int]]:
    recs, corrupt, newer = [], 0, {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            corrupt += 1
            continue
        if not isinstance(rec, dict) or "kind" not in rec:
            corrupt += 1
            continue
        v = rec.get("schema", 0)
        while v in UPGRADES:
            rec, v = UPGRADES[v](rec), v + 1
        if v != SCHEMA:
            newer[v] = newer.get(v, 0) + 1
            continue
        recs.append(rec)
    return recs, corrupt, newer


def _provenance(path: Path) -> pd.DataFrame:
    rows = []
    for f in sorted((path.parent / "runs").glob("*.json")):
        try:
            d = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        sw = d.get("software", {})
        rows.append({"run_id": d.get("run_id", f.stem), **{new: d.get(old) for old, new in PROVENANCE.items()},
                     "hosts": ",".join(d.get("hosts", [])), "torch": sw.get("torch"),
                     "mpi_library": sw.get("mpi_library"), "devices": ",".join(d.get("devices", [])) or "cpu",
                     "slurm_job_id": (d.get("slurm") or {}).get("job_id")})
    return pd.DataFrame(rows)


def load(source: str | Path | Iterable[str | Path], kind: str | None = None) -> pd.DataFrame:
    """Every record of one or more campaigns (directories, records.jsonl or exported .parquet files) as a
    typed DataFrame.

    Corrupt or truncated lines are skipped and counted in a warning; records of a schema this code
    does not know are skipped and named. ``kind`` keeps only "attention" or "collective" records.
    Raises EmptyCampaign when nothing usable is left.
    """
    frames = []
    for path in _paths(source):
        if path.suffix == ".parquet":
            frames.append(read_parquet(path))
            continue
        recs, corrupt, newer = _read(path)
        if corrupt:
            warnings.warn(f"{path}: skipped {corrupt} corrupt or truncated line(s)", stacklevel=2)
        for v, n in newer.items():
            warnings.warn(f"{path}: skipped {n} record(s) of schema {v}; this analysis reads schema {SCHEMA}",
                          stacklevel=2)
        if not recs:
            continue
        df = pd.DataFrame(recs)
        df["campaign_path"] = str(path.parent)
        prov = _provenance(path)
        if not prov.empty and "run_id" in df:
            df = df.merge(prov, on="run_id", how="left")
        frames.append(df)
    if not frames:
        raise EmptyCampaign(f"no usable records in {source}")
    df = pd.concat(frames, ignore_index=True)
    if kind is not None:
        df = df[df["kind"] == kind].reset_index(drop=True)
        if df.empty:
            raise EmptyCampaign(f"no {kind} records in {source}")
    for c in INT:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in FLOAT:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    if "causal" in df:
        df["causal"] = df["causal"].astype("boolean")
    for c in ("status", "kind", "algorithm", "family", "dtype", "mode", "scaling", "layout", "kernel", "op", "failure",
              "kernel_requested", "tag", "error"):
        if c in df:
            df[c] = df[c].astype("string")
    if "written_at" in df:
        df["written_at"] = pd.to_datetime(df["written_at"], errors="coerce", utc=True)
    return df


# ------------------------------------------------------------------------------------------ Parquet
# records.jsonl stays the store of record; Parquet is a columnar copy that loads fast for large
# campaigns. Nested dicts (ledger, errors) have no fixed schema, so they travel as JSON text and
# the metadata names those columns for the reader.

_JSON_COLUMNS = b"ringx.json_columns"


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ValueError("Parquet needs pyarrow: pip install pyarrow (or: pip install -e '.[analysis]')") from None
    return pyarrow


def _is_nested(v) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, dict | list) for x in v))


def export_parquet(source, out: str | Path) -> tuple[Path, int]:
    """Write ``load(source)`` (every record, typed, with provenance) to one Parquet file."""
    pa = _pyarrow()
    df = load(source).copy()
    nested = [c for c in df.columns if df[c].map(_is_nested).any()]
    for c in nested:
        df[c] = df[c].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else json.dumps(v))
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _JSON_COLUMNS: json.dumps(nested).encode()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pa.parquet.write_table(table, tmp)
    tmp.replace(out)  # a reader never sees half a file
    return out, len(df)


def read_parquet(path: Path) -> pd.DataFrame:
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise EmptyCampaign(f"{path}: not a readable Parquet file ({e})") from None
    nested = json.loads((table.schema.metadata or {}).get(_JSON_COLUMNS, b"[]"))
    df = table.to_pandas()
    for c in nested:
        df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else None)
    for c in df.columns:  # list columns come back as numpy arrays; the JSON reader gives lists
        if df[c].map(lambda v: hasattr(v, "tolist") and getattr(v, "ndim", 0) == 1).any():
            df[c] = df[c].map(lambda v: v.tolist() if hasattr(v, "tolist") else v)
    return df
