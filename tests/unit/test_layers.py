"""ppufo's packages import one way, low to high, and no module imports itself back.

Order (a package may import its own layer and the ones before it):
utils, chips < io < data < demo < arch < loss, optimizer, metric < engine < inference < nas < ablation < cli.
inference (Paddle Inference predictor, gallery, serving) sits below nas because the chip search
times subnets with that predictor; nothing in inference needs the search. ablation (studies of
the article's claims) drives training and evaluation in worker processes. Imports inside
functions count too: a lazy import is still a dependency.
"""
import ast
import os
import re

import pytest

import ppufo

PACKAGE = os.path.dirname(os.path.abspath(ppufo.__file__))
LAYERS = [("utils", "chips"), ("io",), ("data",), ("demo",), ("arch",), ("loss", "optimizer", "metric"),
          ("engine",), ("inference",), ("slim",), ("nas",), ("ablation",), ("cli",)]
RANK = {pkg: i for i, group in enumerate(LAYERS) for pkg in group}


def module_files():
    for folder, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                yield ".".join(parts), path


MODULES = dict(module_files())


def resolve(importer, node):
    """Absolute names of the ppufo modules an import statement loads (a package means its
    __init__; ``from pkg import name`` means pkg.name where that is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "ppufo"]
    if node.level:
        is_package = MODULES[importer].endswith("__init__.py")
        base = importer.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "ppufo":
        return []
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names]


def imports_of(name):
    with open(MODULES[name]) as f:
        tree = ast.parse(f.read(), MODULES[name])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.update(t for t in resolve(name, node) if t in MODULES and t != name)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: ppufo/__init__.py itself


def upward_imports(graph):
    bad = []
    for m, targets in graph.items():
        for t in targets:
            lm, lt = layer(m), layer(t)
            if lm is None or lt is None:
                continue
            if lm not in RANK or lt not in RANK:
                bad.append(f"{m} -> {t}: package not in the layer list")
            elif RANK[lt] > RANK[lm]:
                bad.append(f"{m} ({lm}) -> {t} ({lt})")
    return sorted(bad)


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_package_is_in_the_layer_order():
    packages = {layer(m) for m in MODULES} - {None}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS"


def test_no_package_imports_a_higher_layer():
    assert upward_imports(GRAPH) == []


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    graph = {m: set(t) for m, t in GRAPH.items()}
    graph["ppufo.utils.config"].add("ppufo.engine.trainer")
    assert upward_imports(graph) == ["ppufo.utils.config (utils) -> ppufo.engine.trainer (engine)"]
    assert any({"ppufo.utils.config", "ppufo.engine.trainer"} <= set(c) for c in cycles(graph))


@pytest.mark.parametrize("folder", ["tools", "deploy", "benchmark", "tests", "test_tipc"])
def test_nothing_edits_the_import_path(folder):
    root = os.path.join(os.path.dirname(PACKAGE), folder)
    edit = re.compile(r"sys\.path\.(insert|append|extend)\(|sys\.path\s*=")
    hits = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")
            and edit.search(open(os.path.join(d, f)).read())]
    assert hits == [], "install the package (pip install -e .) instead of editing the import path"
