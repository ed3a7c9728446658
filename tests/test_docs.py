"""The examples in the README work as written."""

from __future__ import annotations

import re
from pathlib import Path

from bench import sweeps as sweep

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_sweep_example_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMBERWORK", str(tmp_path / "memberwork"))  # the README tells Frontier users to set it
    block = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    f = tmp_path / "sweep.toml"
    f.write_text(block)
    sw = sweep.load(f)
    assert [j.nodes for j in sw.jobs] == [1, 2, 4, 8] and all(j.ranks_per_node == 8 for j in sw.jobs)
    # 5 algorithms x 2 zipped (seq, heads) pairs, minus zigzag at 262144
    assert all(len(j.points) == 9 for j in sw.jobs)
    assert sw.out == tmp_path / "memberwork" / "abc123" / "ringx-runs"  # scratch, not the checkout


def test_readme_names_every_bench_command():
    from bench.__main__ import COMMANDS

    for name in COMMANDS:
        assert f"bench {name}" in README, f"README does not mention `python -m bench {name}`"


EXAMPLE_SWEEPS = {"model-demo.toml"}  # sweeps to copy, with no committed campaign (tests/test_sweep_model.py runs
#                                      the same points small)


def test_shipped_sweep_files_load_and_match_their_campaigns():
    # the demo's and the slow-link run's sweeps; each campaign's committed records came from its file
    root = Path(__file__).resolve().parent.parent
    for f in sorted((root / "jobs" / "sweeps").glob("*.toml")):
        sw = sweep.load(f)
        assert sw.jobs and all(j.points for j in sw.jobs), f
        committed = (root / "results" / sw.campaign / "records.jsonl").exists()
        assert committed != (f.name in EXAMPLE_SWEEPS), (f"{f.name}: no results/{sw.campaign}" if not committed else
                                                         f"{f.name}: results/{sw.campaign} exists; not an example")
    assert EXAMPLE_SWEEPS <= {f.name for f in (root / "jobs" / "sweeps").glob("*.toml")}


def test_results_readme_schema_tables_come_from_the_record_definitions():
    from ringx_suite.records import schema_markdown

    text = (Path(__file__).resolve().parent.parent / "results" / "README.md").read_text()
    for kind in ("common", "attention", "collective", "kernel", "model"):
        assert schema_markdown(kind) in text, f"results/README.md's {kind} table differs from ringx_suite/records.py"


def test_layers_import_downwards_only():
    # ringx <- costmodel <- ringx_suite-using bench and analysis; bench and analysis never import each other
    root = Path(__file__).resolve().parent.parent
    rules = {"ringx": ("bench", "analysis", "ringx_suite", "costmodel"),
             "ringx_suite": ("bench", "analysis", "costmodel"),
             "costmodel": ("bench", "analysis", "ringx_suite"), "bench": ("analysis",), "analysis": ("bench",)}
    for pkg, forbidden in rules.items():
        for f in (root / pkg).rglob("*.py"):
            for m in re.finditer(r"^\s*(?:from|import)\s+([a-z_]+)", f.read_text(), re.M):
                assert m.group(1) not in forbidden, f"{f.relative_to(root)} imports {m.group(1)}"
