"""The package's layering, declared once and checked on every import (module-level and function-local).

A layer is a package (or a top-level module) of ``cmmd_dist``; a module may import its own layer and the
layers :data:`ALLOWED` lists for it, nothing above. Third-party frameworks stay in their layers
(:data:`FRAMEWORKS`), and no two modules import each other, directly or around a cycle.
``__main__`` modules are entry points: they belong to the ``cli`` layer wherever they sit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cmmd_dist"

# layer -> the layers it may import (besides itself and the root package, which holds only __version__)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "model": set(),
    "config": {"errors"},
    "storage": {"errors", "config"},
    "datasets": {"errors", "config", "storage"},
    "evaluation": {"errors", "config", "datasets", "model"},
    "tracking": {"errors", "config", "storage", "datasets", "evaluation", "model"},
    "train": {"errors", "config", "storage", "datasets", "evaluation", "model"},
    "tune": {"errors", "config", "storage", "datasets", "evaluation", "model", "train", "tracking"},
    "cli": {"errors", "config", "storage", "datasets", "evaluation", "model", "train", "tracking", "tune"},
}
# framework -> the layers that may import it
FRAMEWORKS: dict[str, set[str]] = {
    "mlflow": {"tracking"},
    "ray": {"train", "tune"},
    "argparse": {"cli"},
    "pyarrow": {"datasets", "storage"},
    "optuna": {"tune"},
    "boto3": {"storage"},
    "botocore": {"storage"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str | None:
    """``cmmd_dist.train.cv`` -> ``train``; ``cmmd_dist`` itself -> None; a ``__main__`` -> ``cli``."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "cli"
    return parts[1] if len(parts) > 1 else None


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports, function-local ones included: (line, dotted name)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # ``from cmmd_dist.x import y`` may name a submodule y
            out += [(node.lineno, f"{name}.{a.name}") for a in node.names
                    if (PACKAGE.parent / f"{name}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                    or (PACKAGE.parent / f"{name}.{a.name}".replace(".", "/") / "__init__.py").exists()]
    return out


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_violations(arrows: dict[str, set[str]] = ALLOWED) -> list[str]:
    bad = []
    for module, path in modules().items():
        here = layer_of(module)
        for line, name in imports_of(path):
            if not name.startswith("cmmd_dist"):
                top = name.split(".")[0]
                if top in FRAMEWORKS and here not in FRAMEWORKS[top]:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} imports {top}")
                continue
            there = layer_of(name)
            if there is None or there == here or here == "cli":
                continue
            if there not in arrows.get(here, set()):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} -> {there} ({name})")
    return bad


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan) over every cmmd_dist import, of two or more modules."""
    mods = modules()
    graph = {m: {n for _, n in imports_of(p) if n in mods and n != m} for m, p in mods.items()}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    for m in graph:
        graph[m] = {n for n in graph[m] if not (m.startswith(n + ".") and mods[n].name == "__init__.py")}
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_import_follows_the_declared_layers():
    assert layer_violations() == []


def test_no_import_cycles():
    assert import_cycles() == []


def test_every_module_belongs_to_a_declared_layer():
    assert sorted({layer_of(m) for m in modules()} - set(ALLOWED) - {None}) == []


def test_the_check_sees_an_arrow_added_the_wrong_way():
    """model may import nothing: with one arrow taken away from train, its imports of model are reported."""
    narrower = {k: set(v) for k, v in ALLOWED.items()}
    narrower["train"].discard("model")
    assert any(": train -> model " in line for line in layer_violations(narrower))
