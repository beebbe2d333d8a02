"""The package graph of dpglow is the DAG the README's layout section draws (every import counts,
also those inside functions), and no module grows past the size the style guide allows."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "dpglow"
# package -> the dpglow packages it may import (README "Layout" draws the same graph).
ALLOWED = {
    "flow": set(),
    "privacy": set(),
    "metrics": set(),
    "utils": set(),
    "data": {"utils"},
    "training": {"flow", "data", "utils"},
    "classifier": {"training", "metrics"},
    "refiner": {"flow", "metrics", "utils"},
    "privatization": {"flow", "privacy", "data", "classifier", "refiner", "utils"},
    "evaluation": {"flow", "privacy", "metrics", "data", "classifier", "privatization", "utils"},
    "benchmark": {"flow", "privacy", "data", "training", "privatization", "utils"},
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


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
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
    assert set(graph) == set(ALLOWED), "a package was added or removed: update ALLOWED and README"
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


def test_a_cycle_is_detected_by_the_graph():
    # The checker itself: a module importing a package above it shows up as an edge.
    source = "from dpglow.evaluation.rows import aligned_scores\nimport dpglow.flow.glow\n"
    tree_file = PACKAGE.parent / "dpglow" / "flow" / "__probe__.py"
    assert not tree_file.exists()
    tree_file.write_text(source)
    try:
        assert "evaluation" in package_graph()["flow"]
    finally:
        tree_file.unlink()


def test_no_module_is_longer_than_the_style_allows():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: split them by job ({long})"


def test_the_readme_draws_the_same_graph():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    for package, targets in ALLOWED.items():
        line = next((ln for ln in layout.splitlines() if ln.startswith(f"  {package} ->")), None)
        assert line is not None, f"README layout has no '  {package} -> ...' line"
        drawn = {t.strip() for t in line.split("->", 1)[1].split(",") if t.strip() not in ("", "-")}
        assert drawn == targets, (
            f"README draws {package} -> {sorted(drawn)}, code {sorted(targets)}"
        )
