"""Implementations that are not built in, under the same harness as ours: a user's own (a plugin) and the field's
(the peers, bench/peers/, shipped as plugins of the same contract). docs/plugins.md is the user's page.

The contract: a callable ``fn(q, k, v, *, causal: bool, group) -> out`` on this rank's shard ``(batch, seq_local,
heads, head_dim)`` (K and V may have fewer heads), differentiable, found either

- installed: an entry point of the group ``ringx.algorithms``, whose name is the algorithm's name; or
- given: ``--plugin [NAME=]module:attr`` or ``--plugin [NAME=]path/to/file.py:attr`` (NAME: default ``attr``).

Optional attributes of ``fn``:
- ``layout``: a ringx layout name, or ``{"full": ..., "causal": ...}`` (None for one it does not take); default
  contiguous;
- ``masks``: mask kinds it also takes, e.g. ``("window", "docs")``; such a call gets ``mask=`` (a ``ringx.Mask``)
  in place of ``causal=``;
- ``returns_lse``: it returns ``(out, lse)``;
- ``memory_like``: the built-in whose buffers it holds, for memory estimates; default ring;
- ``unavailable``: why it cannot run here, or a function of the device type ("cpu", "cuda") giving that or None;
  recorded ``skipped`` with the reason.

A plugin that cannot be loaded (its name is a built-in's, its import fails, the attribute is missing or not
callable) is still a candidate, with its problem: the drivers record it ``failed`` in one line and go on.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "ringx.algorithms"
FLAG_HELP = ("algorithms from outside, comma-separated, each [NAME=]MODULE:ATTR or [NAME=]FILE:ATTR (FILE a Python "
             "file; the contract: docs/plugins.md); each joins the candidates. Installed plugins, such as the field's "
             "implementations (tcp-allgather, tcp-ring, rfa-ring, rfa-zigzag, rfa-stripe), are named in --algorithms")


class PluginError(RuntimeError):
    """A plugin broke the contract (wrong shape or dtype, not differentiable): its case fails with this line."""


@dataclass(frozen=True)
class Plugin:
    name: str
    source: str  # where it came from, for messages and records: "entry point mod:attr", "--plugin path:attr"
    fn: Callable | None = None
    layouts: tuple[str | None, str | None] = ("contiguous", "contiguous")  # (full, causal); None: not taken
    masks: frozenset[str] = field(default_factory=frozenset)  # mask kinds beyond full and causal
    returns_lse: bool = False
    memory_like: str = "ring"
    failure: str | None = None  # it cannot be loaded: recorded failed
    unavailable: str | Callable[[str], str | None] | None = None  # why it cannot run (here: of the device type)

    def why_not(self, device_type: str) -> str | None:
        """Why it cannot run on this device type (recorded skipped), or None."""
        return self.unavailable(device_type) if callable(self.unavailable) else self.unavailable

    def layout(self, causal_layout: bool) -> str:
        return self.layouts[causal_layout]

    @property
    def family(self) -> str:
        """A record's family: ``peer`` for the field's implementations the suite ships, ``plugin`` for a user's."""
        return "peer" if "ringx_drivers.peers." in self.source else "plugin"

    def record_fields(self) -> dict:
        """A record's fields that say what it ran: its family and where it came from."""
        return {"family": self.family, "plugin_source": self.source}

    def refusal(self, device_type: str, masks) -> tuple[str, str | None, str] | None:
        """(status, failure, error) when it cannot run here: it could not be loaded (failed), it is not available
        on this device type, or it does not take one of ``masks`` (ringx.Mask; skipped, with the reason); else
        None."""
        if self.failure:
            return "failed", "plugin", self.failure
        why = self.why_not(device_type)
        if why:
            return "skipped", None, why
        for m in masks:
            if not self.takes(m):
                plain = [k for k, lay in zip(("full", "causal"), self.layouts) if lay is not None]
                return "skipped", None, f"{self.name} does not take mask {m.short()} (its masks: " \
                    + ", ".join([*plain, *sorted(self.masks)]) + ")"
        return None

    def takes(self, mask) -> bool:
        """Whether it takes this ringx.Mask: full and causal where it has their layout, other kinds it names."""
        if self.layouts[mask.causal_layout] is None:
            return False
        return mask.plain is not None or mask.kind in self.masks

    def call(self, q, k, v, mask, group):
        """One call on this rank's shard, its output checked against the contract."""
        kw = {"causal": bool(mask.plain)} if mask.plain is not None else {"mask": mask}
        got = self.fn(q, k, v, group=group, **kw)
        out = got[0] if self.returns_lse else got
        if not hasattr(out, "shape") or tuple(out.shape) != tuple(q.shape) or out.dtype != q.dtype:
            what = f"{tuple(out.shape)} {out.dtype}" if hasattr(out, "shape") else type(out).__name__
            raise PluginError(f"{self.name} returned {what}, expected q's shape and dtype {tuple(q.shape)} {q.dtype}")
        if q.requires_grad and not out.requires_grad:
            raise PluginError(f"{self.name} is not differentiable: its output does not require grad")
        return out


def of(name: str, fn, source: str) -> Plugin:
    """A plugin from its callable and optional attributes (a problem with them is the plugin's failure)."""
    import ringx

    if not callable(fn):
        return Plugin(name, source, failure=f"plugin {name} ({source}) is not callable")
    lay = getattr(fn, "layout", "contiguous")
    layouts = (lay, lay) if isinstance(lay, str) else (lay.get("full"), lay.get("causal")) \
        if isinstance(lay, dict) else (None, None)
    if not all(x is None or isinstance(x, str) and _is_layout(x) for x in layouts) or layouts == (None, None):
        return Plugin(name, source, failure=f"plugin {name}: layout {lay!r} is not a ringx layout name or "
                      "{'full': ..., 'causal': ...}")
    like = getattr(fn, "memory_like", "ring")
    if like not in ringx.ALGORITHMS:
        return Plugin(name, source, failure=f"plugin {name}: memory_like {like!r} is not a built-in algorithm")
    return Plugin(name, source, fn, layouts, frozenset(getattr(fn, "masks", ()) or ()),
                  bool(getattr(fn, "returns_lse", False)), like,
                  unavailable=getattr(fn, "unavailable", None) or None)


def _is_layout(name: str) -> bool:
    from ringx.layouts import local_divisor

    try:
        local_divisor(name)
    except ValueError:
        return False
    return True


def _load(name: str, target: str, source: str) -> Plugin:
    """``module:attr`` or ``path/to/file.py:attr`` imported, as a plugin named ``name``."""
    import ringx

    if name in ringx.ALGORITHMS:
        return Plugin(name, source, failure=f"plugin {name} ({source}) has the name of a built-in algorithm: "
                      "rename it")
    where, sep, attr = target.rpartition(":")
    if not sep or not where or not attr:
        return Plugin(name, source, failure=f"plugin {name}: {target!r} is not module:attr or path.py:attr")
    try:
        if where.endswith(".py"):
            path = Path(where).resolve()
            spec = importlib.util.spec_from_file_location(f"ringx_plugin_{path.stem}", path)
            if spec is None or not path.is_file():
                raise FileNotFoundError(f"no file {where}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        fn = getattr(module, attr)
    except Exception as e:  # noqa: BLE001 - any failure to import is the plugin's, said in one line
        return Plugin(name, source, failure=f"plugin {name} ({source}) cannot be loaded: {type(e).__name__}: {e}")
    return of(name, fn, source)


def parse_spec(spec: str) -> tuple[str, str]:
    """(name, target) of a ``--plugin`` value ``[NAME=]target``."""
    name, eq, target = spec.partition("=")
    if not eq:
        target = spec
        name = target.rpartition(":")[2]
    return name.strip(), target.strip()


def installed() -> dict[str, str]:
    """Entry-point name -> its target, of every installed plugin (nothing imported)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load(names: list[str], specs: list[str] = ()) -> dict[str, Plugin]:
    """The plugins among ``names`` (installed ones, by entry point) and every ``--plugin`` spec, loaded. A spec's
    name wins over an installed plugin of the same name."""
    out: dict[str, Plugin] = {}
    for spec in specs:
        name, target = parse_spec(spec)
        out[name] = _load(name, target, f"--plugin {spec}")
    eps = installed()
    for n in names:
        if n not in out and n in eps:
            out[n] = _load(n, eps[n], f"entry point {eps[n]}")
    return out


def load_apart(names: list[str], specs: list[str], prog: str, quiet: bool = False) -> dict[str, Plugin]:
    """:func:`load`, less any plugin named like a built-in: that name runs the built-in, and rank 0 says so in one
    line on stderr unless ``quiet`` (every rank loads alike, before any process group exists)."""
    import ringx

    from .cli import env_rank

    out = {}
    for n, p in load(names, specs).items():
        if n not in ringx.ALGORITHMS:
            out[n] = p
        elif env_rank() == 0 and not quiet:
            print(f"{prog}: {p.failure}; {n} runs as the built-in", file=sys.stderr, flush=True)
    return out


__all__ = ["FLAG_HELP", "GROUP", "Plugin", "PluginError", "installed", "load", "load_apart", "of", "parse_spec"]
