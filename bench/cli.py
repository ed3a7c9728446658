"""Shared pieces of the MPI-launched commands: rank-0-only errors, config files, progress."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
import tomllib
from pathlib import Path

RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "PALS_RANKID", "MV2_COMM_WORLD_RANK")


def env_rank() -> int:
    """This process's MPI rank from the launcher's environment (0 when not launched by MPI)."""
    for var in RANK_VARS:
        if var in os.environ:
            return int(os.environ[var])
    return 0


class Parser(argparse.ArgumentParser):
    """argparse whose errors are printed once (by rank 0), not once per rank."""

    def error(self, message: str):
        if env_rank() == 0:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def split_list(value, kind=str) -> list:
    """'a,b' or ['a', 'b'] or a scalar -> list of ``kind``."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        items = [x for x in value.split(",") if x.strip()]
    else:
        items = [value]
    return [kind(x.strip()) if isinstance(x, str) else kind(x) for x in items]


def parse_bool(x) -> bool:
    if isinstance(x, bool):
        return x
    s = str(x).lower()
    if s in ("1", "true", "yes", "causal"):
        return True
    if s in ("0", "false", "no", "full", "non-causal"):
        return False
    raise ValueError(f"not a boolean: {x!r}")


def load_config(parser: Parser, path: str, valid: set[str]) -> dict:
    """Keys of a TOML or JSON config file; unknown keys are rejected with the nearest valid one."""
    p = Path(path)
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except OSError as e:
        parser.error(f"cannot read config {path}: {e.strerror}")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        parser.error(f"config {path} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}")
    out = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in valid:
            near = difflib.get_close_matches(k, sorted(valid), n=1)
            parser.error(f"unknown key {key!r} in {path}" + (f"; did you mean {near[0]!r}?" if near else ""))
        out[k] = value
    return out


class Progress:
    """Rank 0's progress: one rewritten line on a terminal, plain lines in batch logs."""

    def __init__(self, total: int, quiet: bool, enabled: bool):
        self.total, self.quiet, self.enabled = total, quiet, enabled
        self.start = time.monotonic()
        self.done = 0
        self.tty = sys.stdout.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        if self.quiet or not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        line = f"[{self.done}/{self.total}] {what} | elapsed {elapsed:.0f}s, ETA {eta:.0f}s"
        if self.tty:
            print("\r\033[K" + line, end="" if self.done < self.total else "\n", flush=True)
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        if self.enabled and not self.quiet:
            print(("\n" if self.tty and 0 < self.done < self.total else "") + text, flush=True)


class Group:
    """MPI-side agreement that does not depend on torch's (possibly broken) process group."""

    def __init__(self, timeout: float):
        from mpi4py import MPI

        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.deadline = timeout + 30.0

    def agree(self, ok: bool, info: dict) -> list[dict] | None:
        """Every rank's (ok, info), or None if some rank did not report within the deadline."""
        import numpy as np

        mine = np.array([1 if ok else 0], dtype=np.int32)
        every = np.zeros(self.size, dtype=np.int32)
        req = self.comm.Iallgather(mine, every)
        t_end = time.monotonic() + self.deadline
        while not req.Test():
            if time.monotonic() > t_end:
                return None
            time.sleep(0.01)
        return self.comm.allgather({"ok": ok, **info})

    def open_campaign(self, out: str, campaign: str, command: list[str]):
        """(store, run_id, done, nodes): rank 0 opens the store and writes the run's provenance; every rank
        learns the run id, what the store already holds (key -> status) and how many nodes the run spans."""
        from bench import provenance
        from bench.store import Store

        store = Store(out, campaign)
        hosts = self.comm.allgather(provenance.local_host())
        run_id = self.comm.bcast(store.new_run(provenance.collect(hosts, command)) if self.rank == 0 else None, root=0)
        done = self.comm.bcast(store.done() if self.rank == 0 else None, root=0)
        return store, run_id, done, len({h["node"] for h in hosts})

    def give_up(self, message: str) -> None:
        print(f"bench run (rank {self.rank}): {message}", file=sys.stderr, flush=True)
        self.comm.Abort(1)


def describe(e: BaseException) -> tuple[str, str]:
    import torch

    if isinstance(e, torch.OutOfMemoryError):
        return "oom", f"out of memory: {e}"
    return "exception", f"{type(e).__name__}: {e}"
