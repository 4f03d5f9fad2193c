"""The layout shows the architecture: modules import each other without cycles (function-level
imports included), few modules sit at the top level, and no verb or the training loop branches on
the kind of data (the modality registry answers)."""

from __future__ import annotations

import ast
from pathlib import Path

import vqdraw

SRC = Path(vqdraw.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """vqdraw module -> the vqdraw modules it imports anywhere in its body."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _assert_acyclic(graph: dict[str, set[str]], what: str, skip) -> None:
    """Depth-first search; ``skip(a, b)``: an edge a -> b that is not a dependency."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            raise AssertionError(f"{what} cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            if not skip(node, nxt):
                visit(nxt, stack + [node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])


def test_no_import_cycles():
    graph = _imports()
    assert len(graph) > 50
    # a package importing its own submodules is not a cycle
    _assert_acyclic(graph, "import", lambda a, b: b.startswith(a + "."))


def _package_of(module: str) -> str:
    """``vqdraw.core.model`` -> ``vqdraw.core``; a top-level module is its own node."""
    parts = module.split(".")
    is_package = (SRC.parent.joinpath(*parts) / "__init__.py").is_file()
    return ".".join(parts[:2]) if len(parts) > 2 or is_package else module


def test_packages_form_layers_without_cycles():
    """One node per subpackage (and per top-level module): the graph of imports between them,
    function-level imports included, has no cycle, so the packages form layers."""
    graph: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        src = _package_of(module)
        graph.setdefault(src, set()).update(t for t in map(_package_of, targets) if t != src)
    assert "vqdraw.core" in graph and "vqdraw.modalities" in graph
    # the package root re-exports the public API
    _assert_acyclic(graph, "package", lambda a, b: "vqdraw" in (a, b))


def test_at_most_twelve_top_level_modules():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 12, top


def test_no_modality_branches_in_the_verbs_or_the_training_loop():
    places = [*(SRC / "cli").glob("*.py"), SRC / "training" / "train.py", SRC / "loop.py"]
    for path in places:
        text = path.read_text()
        for word in ("is_text", "is_volume", "is_audio"):
            assert word not in text, f"{path.name} branches on {word}"


def test_only_the_cli_prints():
    """The library reports progress through a callback (:mod:`vqdraw.progress`) and warnings through
    :mod:`warnings`; only ``cli/`` writes to the terminal: no print(), tqdm or sys.stdout/stderr."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{where}: print()")
            elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                    "tqdm" in (a.name or "") for a in node.names) or isinstance(node, ast.ImportFrom) and \
                    (node.module or "").startswith("tqdm"):
                offenders.append(f"{where}: tqdm")
            elif isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr") and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                offenders.append(f"{where}: sys.{node.attr}")
    assert not offenders, "\n".join(offenders)


def test_no_function_takes_more_than_ten_parameters():
    """Settings travel as small dataclasses (TrainConfig, FitOptions, Runtime, Hooks, PriorTraining...),
    not as long keyword lists threaded through layers (self/cls not counted; *args/**kw count one)."""
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                count = len(names) + bool(a.vararg) + bool(a.kwarg) - (names[:1] in (["self"], ["cls"]))
                if count > 10:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {count}")
    assert not long, "\n".join(long)
