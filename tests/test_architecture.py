"""The shape of the code: layers, one direction of dependency, public surfaces, no cycles.

core      ipad_mdm.* (config, db, crypto, mobileconfig, hooks, web helpers, jobs, …)
protocol  mdm
features  profiles, vpn, compliance, document_gateway, reports, console
root      ipad_mdm.app / cli / tasks / wsgi / packages — the only modules that know every package
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FEATURES = ("profiles", "declarative", "apps", "vpn", "compliance", "document_gateway", "reports", "console", "ade", "webhooks")
PACKAGES = ("ipad_mdm", "mdm") + FEATURES
COMPOSITION_ROOT = {"ipad_mdm.app", "ipad_mdm.cli", "ipad_mdm.tasks", "ipad_mdm.wsgi", "ipad_mdm.packages"}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            is_pkg = parts[-1] == "__init__"
            if is_pkg:
                parts = parts[:-1]
            yield ".".join(parts), path, is_pkg


def _imports(name: str, path: Path, is_pkg: bool, *, top_level_only: bool):
    """(target module, imported names, line) for every absolute or relative import."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    package = name if is_pkg else name.rpartition(".")[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, (), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, tuple(a.name for a in node.names), node.lineno


def _layer(module: str) -> str:
    top = module.split(".")[0]
    if module in COMPOSITION_ROOT:
        return "root"
    return {"ipad_mdm": "core", "mdm": "protocol"}.get(top, "feature" if top in FEATURES else "other")


def test_dependencies_point_down_and_features_use_public_surfaces():
    problems = []
    for name, path, is_pkg in _modules():
        layer, own = _layer(name), name.split(".")[0]
        for target, names, line in _imports(name, path, is_pkg, top_level_only=False):
            top = target.split(".")[0]
            if top not in PACKAGES or top == own:
                continue
            tlayer = _layer(target)
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if tlayer == "root" and layer != "root":
                problems.append(f"{where}: nothing but the composition root may import it")
            if layer == "core" and tlayer in ("protocol", "feature"):
                problems.append(f"{where}: the core never names mdm or a feature")
            if layer == "protocol" and tlayer == "feature":
                problems.append(f"{where}: mdm never depends on a feature")
            if layer in ("protocol", "feature") and tlayer in ("protocol", "feature"):
                # Other packages only through their __init__ surface.
                if target != top:
                    problems.append(f"{where}: use `from {top} import …` (its public surface)")
                else:
                    surface = set(importlib.import_module(top).__all__)
                    missing = [n for n in names if n not in surface]
                    if missing:
                        problems.append(f"{where}: {missing} not in {top}.__all__")
    assert problems == [], "\n".join(problems)


def test_no_import_cycles():
    """Module level imports (what runs at import time) form no cycle, and the packages form a
    directed acyclic graph."""
    graph: dict[str, set[str]] = {}
    package_graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    names = {n for n, _, _ in _modules()}
    for name, path, is_pkg in _modules():
        edges = graph.setdefault(name, set())
        for target, imported, _line in _imports(name, path, is_pkg, top_level_only=True):
            if target.split(".")[0] not in PACKAGES:
                continue
            for candidate in [f"{target}.{n}" for n in imported] + [target]:
                if candidate in names:
                    edges.add(candidate)
                    break
            if name not in COMPOSITION_ROOT and target.split(".")[0] != name.split(".")[0]:
                package_graph[name.split(".")[0]].add(target.split(".")[0])
        # A package's __init__ running its submodules is how packages load, not a cycle.
        graph[name] = {t for t in edges if not (is_pkg and t.startswith(name + "."))}

    def find_cycle(g):
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(n):
            state[n] = 1
            stack.append(n)
            for m in sorted(g.get(n, ())):
                if state.get(m) == 1:
                    return stack[stack.index(m):] + [m]
                if state.get(m) is None:
                    found = visit(m)
                    if found:
                        return found
            stack.pop()
            state[n] = 2
            return None

        for n in sorted(g):
            if state.get(n) is None:
                found = visit(n)
                if found:
                    return found
        return None

    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle(package_graph) is None, " -> ".join(find_cycle(package_graph))


@pytest.mark.parametrize("package", ("mdm",) + FEATURES)
def test_every_package_has_a_manifest_and_a_surface(package):
    module = importlib.import_module(package)
    assert module.MANIFEST.name == package
    assert "register" in module.__all__ and "MANIFEST" in module.__all__
    for ref in module.MANIFEST.models + module.MANIFEST.jobs:
        importlib.import_module(ref)


def test_modules_stay_small():
    big = [(str(p.relative_to(ROOT)), n) for _name, p, _ in _modules()
           if (n := len(p.read_text().splitlines())) > 600]
    assert big == []


def test_cli_table_matches_the_manifests():
    """`ipad-mdm` loads package commands lazily from packages.CLI_COMMANDS: the table names exactly
    the manifests' CLI groups, each under its own command name."""
    from ipad_mdm.manifest import resolve
    from ipad_mdm.packages import CLI_COMMANDS, manifests

    assert sorted(CLI_COMMANDS.values()) == sorted(ref for m in manifests() for ref in m.cli)
    for name, ref in CLI_COMMANDS.items():
        assert resolve(ref).name == name, ref
