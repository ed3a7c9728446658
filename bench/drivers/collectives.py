"""``ringx-bench collectives``: the network as the algorithms see it, nccl-tests style.

For each operation the algorithms use and each message size: time per call
(slowest rank per iteration, median of --iters after --warmup), algorithm
bandwidth algbw = bytes / time and bus bandwidth busbw = algbw x factor, with
nccl-tests' size convention and factors (n ranks: those of the op's group):

  op              bytes (the "size")               busbw factor
  broadcast       the buffer                       1
  reduce          the buffer                       1
  all_reduce      the buffer                       2(n-1)/n
  all_gather      the gathered output (n parts)    (n-1)/n
  reduce_scatter  the input (n parts)              (n-1)/n
  all_to_all      the input (n parts, one per peer) (n-1)/n
  sendrecv        what each rank sends to the next 1   (the ring exchange of ring attention)

Levels (--levels), the links the hierarchical algorithms use apart:

  world   all ranks in one group
  intra   each node's ranks in their intra-node group, every node at once (n = ranks per node)
  inter   the ranks of one local rank across the nodes, every such group at once (n = nodes)

Which ranks share a node: MPI's shared-memory split, or RINGX_RANKS_PER_NODE=k
(nodes of k consecutive ranks, to simulate nodes on one machine). intra and
inter need the same number of ranks on every node, more than one node, and
(intra) more than one rank per node.

Records go to the same store as `bench run` (kind "collective"), each with
its level and group_size.

Example: mpiexec -n 4 ringx-bench collectives --max-bytes 64M --campaign net
         RINGX_RANKS_PER_NODE=2 mpiexec -n 4 ringx-bench collectives --levels intra,inter
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

from ringx_costmodel.network import busbw_factor
from ringx_drivers import options
from ringx_drivers.driver import Driver, Invocation, add_output_arguments, given_options, mpi_main
from ringx_drivers.measure.ranks import describe
from ringx_suite.cli import Parser, UserError
from ringx_suite.dtypes import element_bytes

if TYPE_CHECKING:
    from ringx.topology import Topology

OPS = ("broadcast", "reduce", "all_reduce", "all_gather", "reduce_scatter", "all_to_all", "sendrecv")
LEVELS = ("world", "intra", "inter")
PROG = "ringx-bench collectives"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*", text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 1024, 64K, 16M, 1G)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def sizes(lo: int, hi: int, step: int, quantum: int) -> list[int]:
    """lo, lo*step, ... <= hi, each rounded down to a multiple of ``quantum`` (at least one quantum)."""
    out, s = [], lo
    while s <= hi:
        out.append(max(quantum, s - s % quantum))
        s *= step
    return sorted(set(out))


def layout_problem(level: str, topo: Topology | None, why_unknown: str = "") -> str:
    """Why the node layout cannot form ``level``'s groups ('' when it can). ``topo`` None: the layout is
    unknown, ``why_unknown`` says why (e.g. a RINGX_RANKS_PER_NODE that does not divide the ranks)."""
    if level == "world":
        return ""
    if topo is None:
        return why_unknown or "the ranks' node layout is unknown"
    counts = sorted({len(m) for m in topo.node_members})
    if topo.nodes == 1:
        return (f"all {topo.world} ranks share one node (RINGX_RANKS_PER_NODE=k simulates nodes of k ranks on one "
                "machine)")
    if len(counts) > 1:
        return (f"the {topo.nodes} nodes hold different numbers of ranks ({', '.join(map(str, counts))}); the levels "
                "need the same number on every node")
    if level == "intra" and counts[0] == 1:
        return f"each of the {topo.nodes} nodes holds one rank: no intra-node group to measure"
    return ""


def default_levels(topo: Topology | None) -> list[str]:
    """world, plus intra and inter where the topology forms them (more than one node, equal ranks per node)."""
    return [lv for lv in LEVELS if not layout_problem(lv, topo)]


def parse_levels(text: str | None) -> list[str] | None:
    """--levels as a list in LEVELS order (None: not given, the topology decides); ValueError names a bad one."""
    if text is None:
        return None
    asked = [x.strip() for x in text.split(",") if x.strip()]
    for lv in asked:
        if lv not in LEVELS:
            raise ValueError(f"unknown level {lv!r}; choose from {', '.join(LEVELS)}")
    if not asked:
        raise ValueError(f"--levels is empty; choose from {', '.join(LEVELS)}")
    return [lv for lv in LEVELS if lv in asked]


def group_size(level: str, topo: Topology | None, world: int) -> int:
    """Ranks in each group of ``level`` (a level the layout can form: see ``layout_problem``)."""
    if level == "world":
        return world
    assert topo is not None
    return topo.ranks_per_node if level == "intra" else topo.nodes


def level_group(level: str, world: int) -> tuple[tuple[int, ...], object]:
    """(the world ranks of this rank's group at ``level``, ascending; its process group, None: the default).

    The intra- and inter-node groups are built collectively on first use and kept until ``launch.finalize``
    (a reinit after a failure rebuilds them): every rank walks the same plan, so all build them together.
    """
    if level == "world":
        return tuple(range(world)), None
    from ringx import launch

    sub = launch.topology().intra if level == "intra" else launch.topology().inter
    return sub.ranks, sub.pg


def op_call(op: str, numel: int, dtype, device, rank: int, members: tuple[int, ...] | int, group=None):
    """A no-argument function performing one ``op`` on a ``numel``-element buffer.

    ``members``: the world ranks of the op's group, ascending (an int n: ranks 0..n-1, the whole world);
    ``group``: its process group (None: the default group). ``rank`` is this rank's world rank.
    """
    import torch
    import torch.distributed as dist

    from ringx.comm import all_gather_flat, reduce_scatter_flat

    if isinstance(members, int):
        members = tuple(range(members))
    n, me = len(members), members.index(rank)
    buf = torch.ones(numel, dtype=dtype, device=device)
    part = buf[: numel // n]
    recv = torch.empty_like(buf)
    root = members[0]
    nxt, prv = members[(me + 1) % n], members[(me - 1) % n]

    def sendrecv():
        if n > 1:
            for w in dist.batch_isend_irecv([dist.P2POp(dist.isend, buf, nxt, group),
                                             dist.P2POp(dist.irecv, recv, prv, group)]):
                w.wait()

    return {
        "broadcast": lambda: dist.broadcast(buf, root, group=group),
        "reduce": lambda: dist.reduce(buf, root, group=group),
        "all_reduce": lambda: dist.all_reduce(buf, group=group),
        "all_gather": lambda: all_gather_flat(buf, part, group=group),
        "reduce_scatter": lambda: reduce_scatter_flat(part, buf, group=group),
        "all_to_all": lambda: dist.all_to_all_single(recv, buf, group=group),
        "sendrecv": sendrecv,
    }[op]


SETTINGS = ("warmup", "iters", "timeout", "device")  # the skeleton's, with their one default each


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated (default: all)")
    p.add_argument("--levels", help="comma-separated from world, intra, inter (default: world alone on one node; "
                   "world,intra,inter when the ranks span several nodes with the same number on each, without "
                   "intra when that number is 1). intra: every node's ranks at once, each node in its own group; "
                   "inter: the ranks of each local rank across the nodes, all such groups at once")
    p.add_argument("--min-bytes", default="1K", help="smallest size (default 1K)")
    p.add_argument("--max-bytes", default="16M", help="largest size (default 16M)")
    p.add_argument("--step", type=int, default=4, help="size multiplier between points (default 4)")
    options.add_arguments(p, [options.PARAMS["dtype"]])
    options.add_arguments(p.add_argument_group("measurement"), [options.SETTINGS[k] for k in SETTINGS])
    add_output_arguments(p, campaign="collectives")
    return p


def make(argv: list[str], world: int) -> Collectives:
    """The checked command line (every rank alike, before any collective)."""
    p = build_parser()
    a = p.parse_args(argv)
    ops = [o for o in a.ops.split(",") if o]
    for o in ops:
        if o not in OPS:
            raise UserError(f"unknown op {o!r}; choose from {', '.join(OPS)}")
    try:
        asked_levels = parse_levels(a.levels)
        lo, hi = parse_size(a.min_bytes), parse_size(a.max_bytes)
    except ValueError as e:
        raise UserError(str(e)) from None
    if not 0 < lo <= hi:
        raise UserError(f"need 0 < --min-bytes <= --max-bytes, got {lo} and {hi}")
    if a.step < 2:
        raise UserError("--step must be >= 2")
    valid = {"ops", "levels", "min_bytes", "max_bytes", "step", "dtype", *SETTINGS, *options.OUTPUT}
    given = given_options(p, argv, valid)
    dtype = options.value(options.PARAMS["dtype"], given.get("dtype", options.PARAMS["dtype"].default), "--dtype")
    inv = Invocation.of(given, argv, campaign="collectives")
    return Collectives(inv, dtype, ops, asked_levels, lo, hi, a.step)


def main(argv: list[str] | None = None) -> int:
    return mpi_main(PROG, argv, make)


def _topology() -> tuple[Topology | None, str]:
    """(the default group's topology, '') or (None, why it is unknown); the same on every rank."""
    from ringx import launch

    try:
        return launch.topology(), ""
    except ValueError as e:  # RINGX_RANKS_PER_NODE that does not divide the ranks
        return None, str(e)


class Collectives(Driver):
    """Every (level, op, size) of the plan, one after the other."""

    prog, command, kind = "bench collectives", "collectives", "collective"

    def __init__(self, inv: Invocation, dtype: str, ops: list[str], asked_levels: list[str] | None,
                 lo: int, hi: int, step: int):
        super().__init__(inv)
        self.dtype, self.ops, self.asked_levels, self.lo, self.hi, self.step = dtype, ops, asked_levels, lo, hi, step

    def before_campaign(self) -> None:
        from ringx import launch

        self.topo, unknown = _topology()
        self.levels = self.asked_levels or default_levels(self.topo)
        for lv in self.levels:
            if why := layout_problem(lv, self.topo, unknown):  # every rank knows the same layout: all stop alike
                launch.finalize()
                raise UserError(f"--levels {lv} cannot run here: {why}")

    def open(self, **kw) -> None:  # no claims and no signal handler, as ever
        super().open(claims=False, signals=False)

    def run(self) -> None:
        import torch

        from ringx_drivers.measure.timing import time_iterations
        from ringx_suite.stats import stat_fields, summarize
        from ringx_suite.store import already_recorded, config_key, now

        s, P, rank, topo, levels = self.settings, self.P, self.rank, self.topo, self.levels
        ops, lo, hi, group, store = self.ops, self.lo, self.hi, self.group, self.store
        dt = getattr(torch, self.dtype)
        esize = element_bytes(self.dtype)
        # One size list for every level: multiples of P elements divide into any group's parts.
        plan = [(lv, op, b) for lv in levels for op in ops for b in sizes(lo, hi, self.step, esize * P)]
        progress = self.progress_for(len(plan))
        missing = [lv for lv in LEVELS if lv not in levels]
        why = "" if self.asked_levels or not missing else \
            f" (not {','.join(missing)}: {layout_problem(missing[-1], topo)})"
        progress.note(f"bench collectives: {len(ops)} ops x sizes {lo}-{hi} B on {P} ranks, levels "
                      f"{','.join(levels)}{why} -> {store.records_path}")

        for level, op, nbytes in plan:
            n = group_size(level, topo, P)
            cfg = {"op": op, "bytes": nbytes, "dtype": self.dtype, "world_size": P, "nodes": self.nodes,
                   "warmup": s.warmup, "iters": s.iters}
            if level != "world":  # world's key stays what it was before levels existed: old campaigns resume
                cfg.update(level=level, group_size=n)
            key = config_key(cfg)
            what = f"{op} {nbytes} B" + ("" if level == "world" else f" ({level}, groups of {n})")
            if already_recorded(self.done.get(key), self.output.retry_failed):
                progress.step(f"{what}: already recorded")
                continue
            # cfg holds level and group_size already off world: a dict merge keeps their place, as the record had
            rec = self.header(key, **({"written_at": "", "busbw_factor": busbw_factor(op, n)} | cfg
                                      | {"level": level, "group_size": n}))
            err = kind = None
            samples = []
            try:
                members, pg = level_group(level, P)
                call = op_call(op, nbytes // esize, dt, self.ctx.device, rank, members, pg)
                samples = time_iterations(call, s.warmup, s.iters, self.ctx.device)
            except Exception as e:  # noqa: BLE001 - failures are records
                kind, err = describe(e)
            votes = group.agree(err is None, {"error": err, "kind": kind}, waited=kind == "timeout")
            if votes is None:
                group.give_up(group.timeout_message(what))
            if not all(v["ok"] for v in votes):
                rec.update(status="failed", error="; ".join(f"rank {i}: {v['error']}" for i, v in enumerate(votes)
                                                            if not v["ok"]), written_at=now())
                if rank == 0:
                    store.append(rec)
                progress.step(f"{what}: FAILED")
                self.reinit()
                continue
            st = summarize(samples)
            algbw = nbytes / st["median"] / 1e9
            rec.update(written_at=now(), samples_s=samples,
                       **stat_fields(samples),
                       algbw_GBps=algbw, busbw_GBps=algbw * rec["busbw_factor"])
            if rank == 0:
                store.append(rec)
            tag = "" if len(levels) == 1 else f"{level:5s} "
            progress.step(f"{tag}{op:14s} {nbytes:>10d} B  {st['median'] * 1e6:10.1f} us  "
                          f"busbw {rec['busbw_GBps']:.3f} GB/s")
        progress.note(f"bench collectives: done -> {store.records_path}")


if __name__ == "__main__":
    sys.exit(main())
