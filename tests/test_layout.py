"""The package graph of dpglow is the DAG docs/architecture.md draws (every import counts, also
those inside functions), and no module grows past the size the style guide allows."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "dpglow"
# package -> the dpglow packages it may import (docs/architecture.md draws the same graph).
ALLOWED = {
    "flow": set(),
    "privacy": set(),
    "metrics": set(),
    "utils": set(),
    "data": {"utils"},
    "training": {"flow", "data", "utils"},
    "classifier": {"flow", "metrics", "utils"},
    "refiner": {"flow", "metrics", "utils"},
    "privatizers": {"flow", "privacy", "metrics", "data", "classifier", "refiner", "utils"},
    "release": {"flow", "privacy", "data", "privatizers", "utils"},
    "evaluation": {"flow", "privacy", "metrics", "data", "classifier", "privatizers", "utils"},
    "audit": {"flow", "data", "privatizers", "release", "utils"},
    "benchmark": {"flow", "privacy", "data", "training", "privatizers", "release", "utils"},
}
MAX_MODULE_LINES = 400


def _imports(path: Path, module: str) -> set[str]:
    """The dpglow modules ``path`` (module ``module``) imports, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            else:
                found.add(node.module or "")
    return {name for name in found if name.split(".")[0] == "dpglow"}


def package_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if len(parts) < 3:  # dpglow/__init__.py
            continue
        package = parts[1]
        for name in _imports(path, ".".join(parts)):
            target = name.split(".")[1] if name.count(".") else None
            if target and target != package:
                graph.setdefault(package, set()).add(target)
        graph.setdefault(package, set())
    return graph


def test_packages_import_only_what_the_layout_allows():
    graph = package_graph()
    assert set(graph) == set(ALLOWED), (
        "a package was added or removed: update ALLOWED and docs/architecture.md"
    )
    extra = {pkg: sorted(graph[pkg] - ALLOWED[pkg]) for pkg in graph if graph[pkg] - ALLOWED[pkg]}
    assert not extra, f"imports outside the layout's DAG: {extra}"


def test_the_allowed_graph_is_acyclic():
    done, active = set(), set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in active, f"import cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        active.add(node)
        for target in sorted(ALLOWED[node]):
            visit(target, (*path, node))
        active.discard(node)
        done.add(node)

    for package in ALLOWED:
        visit(package, ())


def test_a_cycle_is_detected_by_the_graph(tmp_path):
    # The checker itself, on a copy of the package (never writing into the source tree): a
    # module importing a package above it shows up as an edge.
    copy = tmp_path / "dpglow"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = "from dpglow.evaluation.rows import aligned_scores\nimport dpglow.flow.glow\n"
    (copy / "flow" / "probe.py").write_text(source)
    assert "evaluation" in package_graph(copy)["flow"]
    assert "evaluation" not in package_graph()["flow"]


def test_no_module_is_longer_than_the_style_allows():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: split them by job ({long})"


def test_the_architecture_page_draws_the_same_graph():
    page = (ROOT / "docs" / "architecture.md").read_text()
    graph = page[page.index("## The package graph") :]
    for package, targets in ALLOWED.items():
        line = next((ln for ln in graph.splitlines() if ln.startswith(f"  {package} ->")), None)
        assert line is not None, f"docs/architecture.md has no '  {package} -> ...' line"
        drawn = {t.strip() for t in line.split("->", 1)[1].split(",") if t.strip() not in ("", "-")}
        assert drawn == targets, (
            f"docs/architecture.md draws {package} -> {sorted(drawn)}, code {sorted(targets)}"
        )
