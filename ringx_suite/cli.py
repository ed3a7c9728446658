"""The one way to build command lines across bench and analysis.

- :class:`Parser`: argparse whose errors are printed once (by rank 0 under MPI), with subcommands whose
  options are scoped to them (:meth:`Parser.commands`).
- :class:`UserError`: a mistake of the user's (bad value, missing campaign); :func:`main` prints it as one
  line, ``PROG: error: ...``, and exits 2. Never a traceback for a user mistake.
- TOML/JSON configuration files with unknown keys rejected by the nearest valid name.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "PALS_RANKID", "MV2_COMM_WORLD_RANK")


class UserError(ValueError):
    """A problem with what the user asked for; its message says what and how to fix it."""


def env_rank() -> int:
    """This process's MPI rank from the launcher's environment (0 when not launched by MPI)."""
    for var in RANK_VARS:
        if var in os.environ:
            try:
                return int(os.environ[var])
            except ValueError:
                return 0
    return 0


class Parser(argparse.ArgumentParser):
    """argparse whose errors are printed once (by rank 0), not once per rank."""

    def __init__(self, *args, **kw):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message: str):
        if env_rank() == 0:
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    def commands(self, dest: str = "command") -> argparse._SubParsersAction:
        """Subcommands, each with its own options (``sub.add_parser(name, help=..., description=...)``)."""
        return self.add_subparsers(dest=dest, required=True, parser_class=Parser, metavar="COMMAND")


def main(prog: str, fn: Callable[[], int]) -> int:
    """Run ``fn``; a UserError (or an interrupt) becomes one line on stderr instead of a traceback."""
    try:
        return fn()
    except UserError as e:
        if env_rank() == 0:
            print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


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


def nearest(key: str, valid) -> str:
    near = difflib.get_close_matches(key, sorted(valid), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


def load_config(path: str, valid: set[str]) -> dict:
    """Keys of a TOML or JSON config file; unknown keys are rejected with the nearest valid one."""
    p = Path(path)
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config {path} is not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must hold a table of options")
    out = {}
    for key, value in data.items():
        k = key.replace("-", "_")
        if k not in valid:
            raise UserError(f"unknown key {key!r} in {path}{nearest(k, valid)}")
        out[k] = value
    return out
