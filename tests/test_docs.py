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
        if f.name.startswith("seed-"):  # the seeds' experiments, for a cluster: tests/test_seed_experiments.py
            continue
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
    # folders (installed as): ringx <- ringx_suite <- costmodel (ringx_costmodel) <- bench (ringx_drivers) and
    # analysis (ringx_analysis), which never import each other
    root = Path(__file__).resolve().parent.parent
    top = ("ringx_bench",)  # the command above every layer
    rules = {"ringx": ("ringx_drivers", "ringx_analysis", "ringx_suite", "ringx_costmodel", *top),
             "ringx_suite": ("ringx_drivers", "ringx_analysis", "ringx_costmodel", *top),
             "costmodel": ("ringx_drivers", "ringx_analysis", *top),
             "bench": ("ringx_analysis", *top), "analysis": ("ringx_drivers", *top)}
    for pkg, forbidden in rules.items():
        for f in (root / pkg).rglob("*.py"):
            for m in re.finditer(r"^\s*(?:from|import)\s+([a-z_]+)", f.read_text(), re.M):
                assert m.group(1) not in forbidden, f"{f.relative_to(root)} imports {m.group(1)}"


FOLDERS = {"ringx": "ringx", "ringx_suite": "ringx_suite", "costmodel": "ringx_costmodel", "bench": "ringx_drivers",
           "analysis": "ringx_analysis"}


def import_graph() -> dict[str, set[str]]:
    """Module -> the suite's modules it imports, at any depth of its code (inside functions too), by installed name.
    Importing ``a.b.c`` from outside package ``a.b`` runs ``a.b``'s ``__init__`` first, so it counts as an edge to
    each such package too."""
    import ast

    mods: dict[str, Path] = {}
    for folder, name in FOLDERS.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = [name, *f.relative_to(ROOT / folder).with_suffix("").parts]
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {}
    for mod, f in mods.items():
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets |= {base} | {f"{base}.{a.name}" for a in node.names}
        edges = set()
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                p = ".".join(parts[:i])
                if p in mods and p != mod and not (package + ".").startswith(p + "."):
                    edges.add(p)
        graph[mod] = edges
    return graph


def test_no_import_cycle_even_inside_functions():
    graph = import_graph()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, path + [m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_bench_depends_one_way_drivers_on_points_on_options():
    """Drivers use points and sweeps; sweeps use points; points use neither (nor the driver skeleton)."""
    graph = import_graph()
    below = {"ringx_drivers.points": ("ringx_drivers.drivers", "ringx_drivers.driver", "ringx_drivers.sweeps"),
             "ringx_drivers.sweeps": ("ringx_drivers.drivers",),
             "ringx_drivers.measure": ("ringx_drivers.drivers", "ringx_drivers.points", "ringx_drivers.sweeps")}
    for mod, edges in graph.items():
        for low, forbidden in below.items():
            if mod == low or mod.startswith(low + "."):
                bad = [e for e in edges if any(e == x or e.startswith(x + ".") for x in forbidden)]
                assert not bad, f"{mod} imports {bad}"


def test_help_speaks_to_users_not_of_source_files():
    """Every subcommand's --help explains the command; the map of source files is docs/README.md's."""
    import ringx_bench
    from tests.cli import run_cli

    drivers, analysis = ringx_bench._commands()
    sweep_commands = ["sweep " + c for c in ("plan", "render", "submit", "local", "status", "predict")]
    source = re.compile(r"\b[\w/]+\.py\b|\b(?:bench|analysis|costmodel|ringx_suite|ringx)/\w|skeleton|this file")
    for command in [*drivers, *analysis, *sweep_commands]:
        proc = run_cli(*command.split(), "--help")
        assert proc.returncode == 0, (command, proc.stderr)
        found = source.findall(proc.stdout)
        assert not found, f"ringx-bench {command} --help names {found}"
