"""``ringx-bench COMMAND``: the ringx-bench drivers."""

from __future__ import annotations

import sys

# name -> (module under this package, help)
COMMANDS = {
    "demo": ("demo", "the README's main command: overhead table, a local ring-vs-ringX campaign, its table"),
    "quick": ("quick", "ring vs ringX on local CPU ranks, with overhead vs the bare kernel"),
    "overhead": ("overhead", "the library's host time at tiny shapes: per call at one rank, per step at P ranks, "
                 "per decoded token against tp"),
    "run": ("drivers.attention", "the benchmark driver (under mpiexec/srun): records into a campaign store"),
    "model": ("drivers.step", "a whole training step (Llama-3-shaped decoder or ViT), sequence sharded over "
              "the ranks, every algorithm side by side"),
    "infer": ("drivers.infer", "serving: context-parallel prefill and decode with a sharded KV cache, every "
              "algorithm and the tp baseline side by side (TTFT, TPOT)"),
    "trace": ("drivers.trace", "one traced call per algorithm and rank (forward, fwd+bwd) as Chrome/Perfetto "
              "trace files; the figure: ringx-bench timeline"),
    "collectives": ("drivers.collectives", "nccl-tests-style busbw of the collectives the algorithms use"),
    "kernels": ("drivers.kernels", "TFLOP/s of every local kernel by block length, mask, dtype and GQA ratio"),
    "selftest": ("selftest", "what to run first on a new node: every kernel and algorithm against float64"),
    "preflight": ("preflight", "the check a sweep job runs on its allocation before any point (MPI world, "
                  "selftest, network)"),
    "sweep": ("sweeps.commands", "jobs from a sweep file: plan, render, submit, local, status, predict"),
    "summary": ("summary", "a campaign's records as markdown tables"),
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help") or sys.argv[1] not in COMMANDS:
        print("usage: ringx-bench COMMAND [options]   (COMMAND --help for its options)\n\ncommands:")
        for name, (_, doc) in COMMANDS.items():
            print(f"  {name:12s} {doc}")
        if len(sys.argv) >= 2 and sys.argv[1] not in ("-h", "--help"):
            print(f"\nunknown command {sys.argv[1]!r}", file=sys.stderr)
            return 2
        return 0
    return module(sys.argv[1]).main(sys.argv[2:])


def module(name: str):
    """The module that implements command ``name`` (imported only when run: torch is heavy)."""
    import importlib

    return importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")


if __name__ == "__main__":
    sys.exit(main())
