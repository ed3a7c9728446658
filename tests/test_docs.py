"""The README and docs/ work as written: examples load, commands are documented, links resolve, tables match."""

from __future__ import annotations

import re
from pathlib import Path

from ringx_drivers import sweeps as sweep

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_docs_sweep_example_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMBERWORK", str(tmp_path / "memberwork"))  # the page tells Frontier users to set it
    page = (ROOT / "docs" / "sweeps-and-clusters.md").read_text()
    block = re.search(r"```toml\n(.*?)```", page, re.S).group(1)
    f = tmp_path / "sweep.toml"
    f.write_text(block)
    sw = sweep.load(f)
    assert [j.nodes for j in sw.jobs] == [1, 2, 4, 8] and all(j.ranks_per_node == 8 for j in sw.jobs)
    # 5 algorithms x 2 zipped (seq, heads) pairs, minus zigzag at 262144
    assert all(len(j.points) == 9 for j in sw.jobs)
    assert sw.out == tmp_path / "memberwork" / "abc123" / "ringx-runs"  # scratch, not the checkout


def test_docs_name_every_bench_command():
    from ringx_drivers.__main__ import COMMANDS

    text = (ROOT / "docs" / "benchmarking.md").read_text()
    for name in COMMANDS:
        assert f"| `bench {name}` |" in text, f"docs/benchmarking.md's command table lacks `ringx-bench {name}`"


def _anchors(page: Path) -> set[str]:
    # GitHub's heading slugs: lower case, punctuation dropped, spaces to hyphens
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_readme_is_short_and_every_doc_link_resolves():
    lines = len(README.read_text().splitlines())
    assert lines <= 200, f"the README is the short entry point (issue 19): {lines} lines; move detail into docs/"
    for page in [README, ROOT / "results" / "README.md", *DOCS]:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if "://" in target:
                continue
            dest = (page.parent / target) if target else page
            assert dest.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
            if anchor:
                assert anchor in _anchors(dest), f"{page.relative_to(ROOT)} links to {target}#{anchor}: no such heading"


def test_readme_links_every_doc_page():
    text = README.read_text()
    for page in DOCS:
        assert f"(docs/{page.name})" in text, f"README does not link docs/{page.name}"


EXAMPLE_SWEEPS = {"model-demo.toml", "infer-demo.toml", "masks-demo.toml"}  # sweeps to copy, with no committed campaign
#                                      (tests/test_sweep_model.py, test_sweep_infer.py plan the same points)


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


def test_records_page_schema_tables_come_from_the_record_definitions():
    from ringx_suite.records import KINDS, schema_markdown

    text = (ROOT / "docs" / "records.md").read_text()
    for kind in ("common", *KINDS):
        assert schema_markdown(kind) in text, f"docs/records.md's {kind} table differs from ringx_suite/records.py"


def test_layers_import_downwards_only():
    # folders (installed as): ringx <- costmodel (ringx_costmodel) <- ringx_suite-using bench (ringx_drivers) and
    # analysis (ringx_analysis), which never import each other
    root = Path(__file__).resolve().parent.parent
    top = ("ringx_bench",)  # the command above every layer
    rules = {"ringx": ("ringx_drivers", "ringx_analysis", "ringx_suite", "ringx_costmodel", *top),
             "ringx_suite": ("ringx_drivers", "ringx_analysis", "ringx_costmodel", *top),
             "costmodel": ("ringx_drivers", "ringx_analysis", "ringx_suite", *top),
             "bench": ("ringx_analysis", *top), "analysis": ("ringx_drivers", *top)}
    for pkg, forbidden in rules.items():
        for f in (root / pkg).rglob("*.py"):
            for m in re.finditer(r"^\s*(?:from|import)\s+([a-z_]+)", f.read_text(), re.M):
                assert m.group(1) not in forbidden, f"{f.relative_to(root)} imports {m.group(1)}"
