"""``ringx-bench COMMAND``: the suite's one command (installed by ``pip install .``), from any directory.

It holds every command of the drivers (``ringx_drivers``, the folder bench/: run, model, sweep, summary, ...) and of
analysis (``ringx_analysis``, the folder analysis/: figures, table, report, and the cost model's predict, map,
curve, validate) under their own names. The two layers never import each other, so their commands meet here, above
both; no name is in both (tests/test_install.py checks it). ``python -m ringx_bench`` is the same command.
"""

from __future__ import annotations

import sys

PROG = "ringx-bench"


def _commands() -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(the drivers' commands: name -> (module, help); analysis's: name -> help). Names only: nothing heavy imported."""
    from ringx_analysis.__main__ import commands as analysis_commands
    from ringx_drivers.__main__ import COMMANDS

    return COMMANDS, analysis_commands()


def usage() -> str:
    bench, analysis = _commands()
    lines = [f"usage: {PROG} COMMAND [options]   ({PROG} COMMAND --help for its options)", "",
             "benchmarks and campaigns:"]
    lines += [f"  {name:12s} {doc}" for name, (_, doc) in bench.items()]
    lines += ["", "analysis and the cost model:"]
    lines += [f"  {name:12s} {doc}" for name, doc in analysis.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    bench, analysis = _commands()
    name = argv[0]
    if name in bench:
        from ringx_drivers.__main__ import module

        return module(name).main(argv[1:])
    if name in analysis:
        from ringx_analysis.__main__ import main as analysis_main

        return analysis_main(argv, prog=PROG)
    from ringx_suite.cli import nearest

    print(f"{usage()}\n\n{PROG}: unknown command {name!r}{nearest(name, [*bench, *analysis])}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
