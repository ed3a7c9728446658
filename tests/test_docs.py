"""The examples in the README work as written."""

from __future__ import annotations

import re
from pathlib import Path

from bench import sweep

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_sweep_example_loads(tmp_path):
    block = re.search(r"```toml\n(.*?)```", README, re.S).group(1)
    f = tmp_path / "sweep.toml"
    f.write_text(block)
    sw = sweep.load(f)
    assert [j.nodes for j in sw.jobs] == [1, 2, 4, 8] and all(j.ranks_per_node == 8 for j in sw.jobs)
    # 5 algorithms x 2 zipped (seq, heads) pairs, minus zigzag at 262144
    assert all(len(j.points) == 9 for j in sw.jobs)


def test_readme_names_every_bench_command():
    from bench.__main__ import COMMANDS

    for name in COMMANDS:
        assert f"bench {name}" in README, f"README does not mention `python -m bench {name}`"


def test_shipped_sweep_files_load_and_match_their_campaigns():
    # the demo's and the slow-link run's sweeps; each campaign's committed records came from its file
    root = Path(__file__).resolve().parent.parent
    for f in sorted((root / "jobs" / "sweeps").glob("*.toml")):
        sw = sweep.load(f)
        assert sw.jobs and all(j.points for j in sw.jobs), f
        assert (root / "results" / sw.campaign / "records.jsonl").exists(), f"{f.name}: no results/{sw.campaign}"
