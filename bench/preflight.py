"""``ringx-bench preflight``: the short check every sweep job runs on its allocation before any point.

Launched with the job's own launcher line (so with the same ranks, nodes,
binding and environment as the points), it checks, in order:

1. the MPI world against Slurm's: as many MPI ranks as Slurm started tasks
   (N copies of rank 0 mean an MPI that does not see srun's tasks), on as many
   nodes as the job holds, the same number on each node, MPI rank = Slurm task;
2. the devices: on a GPU machine every rank's torch is a GPU build and sees a GPU;
3. ``bench selftest`` on every rank's device: every kernel of the sweep's dtypes
   with the sweep's algorithms against float64, across all ranks;
4. the network transport (``--network libfabric``): with NCCL_DEBUG=INFO written
   to a file per rank, NCCL/RCCL must report the libfabric plugin ("Using network
   AWS Libfabric"), never its socket transport.

Rank 0 writes the verdict to ``--record`` (JSON: ok, each check with its detail),
which ``bench sweep status`` shows; the exit status is 1 when any check failed,
and the job script then stops without running a point.
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

from ringx_suite.cli import Parser

NET_LINE = re.compile(r"Using network (.+?)\s*$", re.M)
PLUGIN_NAMES = {"libfabric": re.compile(r"libfabric|ofi", re.I)}


def build_parser() -> Parser:
    p = Parser(prog="ringx-bench preflight", description=__doc__)
    p.add_argument("--record", required=True, help="JSON file the verdict goes to (rank 0 writes it)")
    p.add_argument("--job", default="", help="the sweep job's name (N4x8), kept in the record")
    p.add_argument("--nodes", type=int, required=True, help="nodes the job asked for")
    p.add_argument("--ranks-per-node", type=int, required=True, help="ranks per node the job asked for")
    p.add_argument("--gpus-per-node", type=int, default=0, help="the profile's GPUs per node (0: CPU ranks)")
    p.add_argument("--network", default="", choices=["", "libfabric"], help="transport NCCL/RCCL must use")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtypes", help="dtypes of the selftest (default: the device's)")
    p.add_argument("--algorithms", help="algorithms of the selftest (default: every one)")
    p.add_argument("--seq-per-rank", type=int, default=128, help="tokens per rank in the checks (default 128)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a rank waits on its peers (default 120)")
    return p


def world_problems(mpi_size: int, ranks: list[dict], env: dict, nodes: int, ranks_per_node: int) -> list[str]:
    """What is wrong with the MPI world, given every rank's {rank, procid, node} and Slurm's variables."""
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    job_nodes = env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    want = nodes * ranks_per_node
    out = []
    if tasks and tasks.isdigit() and int(tasks) != mpi_size:
        if mpi_size == 1:
            out.append(f"Slurm started {tasks} tasks but MPI sees 1 rank in each ({tasks} copies of rank 0): launch "
                       "with the MPI's PMI (srun --mpi=pmi2, pmix or cray_shasta) or use an mpi4py built against "
                       "the machine's MPI")
        else:
            out.append(f"Slurm started {tasks} tasks but MPI sees {mpi_size} ranks")
    if mpi_size != want:
        out.append(f"the job asked for {nodes} node(s) x {ranks_per_node} = {want} ranks, MPI sees {mpi_size}")
    per_node: dict[str, int] = {}
    for r in ranks:
        per_node[r["node"]] = per_node.get(r["node"], 0) + 1
    if len(per_node) != nodes and len(ranks) == mpi_size:
        out.append(f"the ranks run on {len(per_node)} node(s), the job asked for {nodes}")
    if job_nodes and job_nodes.isdigit() and int(job_nodes) != len(per_node) and len(ranks) == mpi_size:
        out.append(f"Slurm gave the step {job_nodes} node(s), the ranks run on {len(per_node)}")
    if len(set(per_node.values())) > 1:
        out.append("ranks per node differ: " + ", ".join(f"{n}: {c}" for n, c in sorted(per_node.items())))
    moved = [r for r in ranks if r.get("procid") is not None and str(r["procid"]) != str(r["rank"])]
    if moved:
        out.append(f"MPI rank {moved[0]['rank']} is Slurm task {moved[0]['procid']} (ranks are not in Slurm's order)")
    return out


def network_verdict(logs: list[str], network: str, nodes: int) -> tuple[bool, str]:
    """(ok, detail) from the NCCL_DEBUG=INFO logs of the ranks: the transport each reported."""
    used = sorted({m.strip() for text in logs for m in NET_LINE.findall(text)})
    want = PLUGIN_NAMES[network]
    if any("socket" in u.lower() for u in used):
        return False, (f"NCCL/RCCL uses its socket transport ('Using network {', '.join(used)}'): the {network} "
                       "plugin did not load; put its lib/ directory first on LD_LIBRARY_PATH ([stack] plugin_path) "
                       "and check that it matches the NCCL/RCCL of this torch")
    if used and all(want.search(u) for u in used):
        return True, f"NCCL/RCCL uses {', '.join(used)}"
    if used:
        return False, f"NCCL/RCCL uses {', '.join(used)}, not the {network} plugin"
    if nodes > 1:
        return False, f"no rank's NCCL log says which network it uses (NCCL_DEBUG=INFO): cannot confirm {network}"
    return True, "one node: NCCL/RCCL named no network (none is needed within a node)"


def _local() -> dict:
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {"node": os.environ.get("SLURMD_NODENAME") or socket.gethostname(), "procid": os.environ.get("SLURM_PROCID"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "hip": torch.version.hip, "gpus": gpus,
            "python": sys.executable}


def _nccl_log(network_dir: Path) -> str:
    return "".join(Path(p).read_text(errors="replace") for p in glob.glob(str(network_dir / f"*.{os.getpid()}.log")))


def run(a) -> int:
    record = Path(a.record)
    uses_nccl = a.gpus_per_node > 0 and a.device != "cpu"
    network_dir = record.parent / "nccl" / record.stem if (a.network and uses_nccl) else None
    if network_dir is not None:  # before torch is imported: NCCL reads these when it starts
        network_dir.mkdir(parents=True, exist_ok=True)
        os.environ["NCCL_DEBUG"] = "INFO"
        os.environ["NCCL_DEBUG_SUBSYS"] = "INIT,NET"
        os.environ["NCCL_DEBUG_FILE"] = str(network_dir / "nccl.%h.%p.log")
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    started = time.time()
    mine = {"rank": rank, **_local()}
    ranks = comm.allgather(mine)
    checks: list[dict] = []

    def add(name: str, ok: bool, detail: str) -> bool:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        return ok

    world = world_problems(size, ranks, dict(os.environ), a.nodes, a.ranks_per_node)
    nodes = len({r["node"] for r in ranks})
    under_slurm = "in Slurm's order" if os.environ.get("SLURM_STEP_NUM_TASKS") else "not under a Slurm step"
    go = add("MPI world against Slurm", not world, "; ".join(world) or f"{size} rank(s) on {nodes} node(s), "
             f"{under_slurm}")
    if go and a.gpus_per_node and a.device != "cpu":
        bad = [r for r in ranks if not r["gpus"]]
        detail = (f"rank {bad[0]['rank']} on {bad[0]['node']}: torch {bad[0]['torch']} ({bad[0]['python']}) sees no "
                  f"GPU{' (a CPU-only build)' if not (bad[0]['cuda'] or bad[0]['hip']) else ''}" if bad else
                  f"every rank sees a GPU (torch {ranks[0]['torch']}, "
                  f"{'ROCm ' + str(ranks[0]['hip']) if ranks[0]['hip'] else 'CUDA ' + str(ranks[0]['cuda'])})")
        go = add("GPUs", not bad, detail)
    if go:
        go = _selftest_and_network(a, comm, add, network_dir, nodes)
    ok = all(c["ok"] for c in checks)
    if rank == 0 and (size > 1 or os.environ.get("SLURM_PROCID", "0") == "0"):
        rec = {"job": a.job, "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "ok": ok,
               "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": round(time.time() - started, 1),
               "ranks": size, "nodes": nodes, "python": mine["python"], "torch": mine["torch"], "checks": checks}
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f".{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rec, indent=1) + "\n")
        tmp.replace(record)
        for c in checks:
            print(f"bench preflight: {'ok' if c['ok'] else 'FAILED'}: {c['check']}: {c['detail']}", flush=True)
        print(f"bench preflight: {'passed' if ok else 'FAILED: no point will run'} ({record})", flush=True)
    return 0 if ok else 1


def _selftest_and_network(a, comm, add, network_dir: Path | None, nodes: int) -> bool:
    from ringx_drivers import selftest

    st = selftest.build_parser().parse_args(
        ["--device", a.device, "--seq-per-rank", str(a.seq_per_rank), "--timeout", str(a.timeout), "--speed-seq",
         "512", *(["--dtypes", a.dtypes] if a.dtypes else []), *(["--algorithms", a.algorithms] if a.algorithms
                                                                  else [])])
    failed, problem, rows, ctx = 0, "", [], None
    try:
        from ringx import launch

        ctx = launch.init(timeout_s=a.timeout, **({} if a.device == "auto" else {"device": a.device}))
        rows, failed, _ = selftest.check(st, ctx)
    except Exception as e:  # noqa: BLE001 - any failure (NCCL cannot start, a kernel raises) is the verdict
        problem = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    results = comm.allgather((failed, problem, rows))
    problems = [p for _, p, _ in results if p]
    total = sum(f for f, _, _ in results)
    bad_rows = sorted({r[0] + " " + r[2] + ": " + r[7] for _, _, rs in results for r in rs if r[7] != "ok"})
    if problems:
        detail = f"{len(problems)} rank(s) raised; first: {problems[0]}"
    elif total:
        detail = f"{total} check(s) failed: " + "; ".join(bad_rows)
    else:
        detail = f"{sum(r[3] for r in results[0][2])} algorithm checks passed on every rank (" + ", ".join(
            f"{r[0]} {r[2]}" for r in results[0][2]) + ")"
    ok = add("bench selftest on every rank's device", not problems and not total, detail)
    if network_dir is not None:
        logs = comm.allgather(_nccl_log(network_dir))
        ok = add(f"network transport ({a.network})", *network_verdict(logs, a.network, nodes)) and ok
    if ctx is not None:
        from ringx import launch

        launch.finalize()
    return ok


def main(argv: list[str] | None = None) -> int:
    from ringx_suite.cli import main as cli_main

    a = build_parser().parse_args(argv)
    return cli_main("ringx-bench preflight", lambda: run(a))


if __name__ == "__main__":
    sys.exit(main())
