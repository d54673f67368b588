"""The package's import graph, read from source with `ast` (nothing is imported or run).

Data flows one way, bottom up (docs/architecture.md):

    models -> io -> sim -> export -> stream -> train -> gui -> commands -> cli

(training sits above the pipeline: it denoises its validation frames through it).

A module may import its own layer and the layers below it, never one above, and
there is no import cycle between modules, whether the import sits at the top of
a file or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "livedenoise"
LAYERS = ["errors", "progress", "models", "io", "sim", "export", "stream", "train", "gui", "commands", "cli"]
"""Subpackages (and top-level modules) from the bottom of the data path to the top."""


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (resolved to the longest existing module name)."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{f}: use absolute imports"
                names = [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m:
                    edges[m].add(n)
    return edges


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # livedenoise/__init__.py: the version, nothing else
        return 0
    head = parts[1]
    if head == "__main__":
        return LAYERS.index("cli")
    assert head in LAYERS, f"{module}: subpackage {head!r} has no place in LAYERS; add it where it belongs in the data path"
    return LAYERS.index(head)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    found = cycles(imports(modules()))
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_flow_bottom_up_along_the_data_path():
    against = sorted(
        f"{m} imports {t}" for m, ts in imports(modules()).items() for t in ts if layer(t) > layer(m)
    )
    assert not against, "imports against the layering:\n" + "\n".join(against)


def test_the_model_layer_imports_nothing_above_it():
    edges = imports(modules())
    up = [f"{m} -> {t}" for m, ts in edges.items() if m.startswith("livedenoise.models") for t in ts
          if t.count(".") and t.split(".")[1] in ("export", "stream", "gui", "commands", "train", "sim", "io")]
    assert not up, "\n".join(up)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path):
    """The graph reader itself: a planted cycle and a planted upward import are found."""
    edges = {"livedenoise.models.a": {"livedenoise.models.b"}, "livedenoise.models.b": {"livedenoise.models.a"},
             "livedenoise.io.c": set()}
    assert cycles(edges) == [["livedenoise.models.a", "livedenoise.models.b"]]
    assert layer("livedenoise.models.card") < layer("livedenoise.stream.ring") < layer("livedenoise.commands.serve")
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from livedenoise.stream.ring import Ring\n")
    names = [n for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom)]
    assert names and names[0].module == "livedenoise.stream.ring"  # imports inside functions count
