"""Read a campaign's records into one tidy pandas DataFrame, joined with run provenance."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ringx_suite.records import column_types
from ringx_suite.store import Store

DEFAULT_ROOT = Path("runs")  # a bare campaign name means runs/NAME, nothing else
PROVENANCE = {"git_commit": "commit", "git_dirty": "dirty", "date": "run_date", "nodes": "run_nodes"}


class EmptyCampaign(ValueError):
    """No usable records where records were expected."""


def _paths(source) -> list[Path]:
    """Campaign directories or exported Parquet files; a bare name is looked up under runs/ only."""
    items = [source] if isinstance(source, str | Path) else list(source)
    out = []
    for item in items:
        p = Path(item)
        if p.is_file() and p.name == "records.jsonl":
            p = p.parent
        if p.suffix == ".parquet" and p.is_file():
            out.append(p)
            continue
        if not p.is_dir() and len(p.parts) == 1 and (DEFAULT_ROOT / p).is_dir():
            p = DEFAULT_ROOT / p
        if not p.is_dir():
            raise EmptyCampaign(f"no campaign at {item}: expected a campaign directory (e.g. runs/local-demo or "
                                "results/cpu-sample), its records.jsonl or an exported .parquet file")
        out.append(p)
    return out


def _provenance(store: Store) -> pd.DataFrame:
    rows = []
    for d in store.runs():
        sw = d.get("software") or {}
        cpus = [c for c in (d.get("cpus_per_node") or {}).values() if c]
        rpn = list((d.get("ranks_per_node") or {}).values())
        rows.append({"run_id": d["run_id"], **{new: d.get(old) for old, new in PROVENANCE.items()},
                     "hosts": ",".join(d.get("hosts", [])), "torch": sw.get("torch"),
                     "mpi_library": sw.get("mpi_library"), "devices": ",".join(d.get("devices", [])) or "cpu",
                     "slurm_job_id": (d.get("slurm") or {}).get("job_id"), "python": sw.get("python"),
                     "mpi4py": sw.get("mpi4py"), "cuda": sw.get("cuda"), "hip": sw.get("hip"), "nccl": sw.get("nccl"),
                     "run_ranks_per_node": max(rpn) if rpn else None, "run_cpus_per_node": min(cpus) if cpus else None})
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
        store = Store.at(path)
        reading = store.read()
        if reading.skipped:
            warnings.warn(f"{path}: {reading.summary()} (corrupt, torn or foreign; not used)", stacklevel=2)
        if not reading.records:
            continue
        df = pd.DataFrame(reading.records)
        df["campaign_path"] = str(path)
        prov = _provenance(store)
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
    df = _collective_levels(df)
    for c, dtype in column_types().items():
        if c not in df:
            continue
        if dtype == "Int64":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
        elif dtype == "float64":
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
        else:
            df[c] = df[c].astype(dtype)
    if "written_at" in df:
        df["written_at"] = pd.to_datetime(df["written_at"], errors="coerce", utc=True)
    return df


def _collective_levels(df: pd.DataFrame) -> pd.DataFrame:
    """Collective records from before `level` and `group_size` existed ran over every rank: level "world",
    group_size = world_size, so they never mix with intra- or inter-node measurements."""
    coll = df["kind"] == "collective" if "kind" in df else pd.Series(False, index=df.index)
    if not coll.any():
        return df
    df = df.copy()
    for c in ("level", "group_size"):
        if c not in df:
            df[c] = pd.Series([None] * len(df), index=df.index, dtype=object)
    df.loc[coll & df["level"].isna(), "level"] = "world"
    old = coll & df["group_size"].isna()
    df.loc[old, "group_size"] = df.loc[old, "world_size"]
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
