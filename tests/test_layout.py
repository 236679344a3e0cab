"""The package's layout as an import graph: no cycles, and research tooling (bench, selftest) kept off
the path an edit takes, both read from the source (every import statement, those inside functions
too) and observed in real processes (`edit --help`, an edit on the tiny model)."""

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hetcache_cli

PACKAGE = Path(hetcache_cli.__file__).parent
ROOT = PACKAGE.name  # "hetcache_cli"
RESEARCH = ("bench", "selftest")  # imported only by their commands, scripts and tests
RUNTIME = ("cli.edit", "pipeline", "cache", "io", "spec")
# spec's loader and its model-defaults file check each other's values; splitting them belongs to the spec
# rework for streaming (issue #23). Any other cycle fails.
KNOWN_CYCLES = [{"spec.load", "spec.model_defaults", "spec.schema"}]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@functools.cache
def import_graph(by_name: bool = True) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source. With `by_name`, strings that
    name a module count too: the lazy registries (`cli/app.py`'s COMMANDS, `cache/__init__.py`'s _LAZY,
    the Triton kernel modules `kernels/dispatch.py` builds on first use) import by name."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
            elif by_name and isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
                found.add(node.value)
        graph[name] = frozenset(m for m in found if m in modules and m != name)
    return graph


def cycles(graph: dict) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _short(name: str) -> str:
    return name.removeprefix(ROOT + ".")


def _is(name: str, parts: tuple[str, ...]) -> bool:
    short = _short(name)
    return any(short == p or short.startswith(p + ".") for p in parts)


def test_the_graph_sees_lazy_and_function_level_imports():
    graph = import_graph()
    assert f"{ROOT}.cache.hook" in graph[f"{ROOT}.cache"]  # by name, in _LAZY
    assert f"{ROOT}.cli.bench" in graph[f"{ROOT}.cli.app"]  # by name, in COMMANDS
    assert f"{ROOT}.selftest.checks" in graph[f"{ROOT}.cli.selftest"]  # inside the command function


def test_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    # Import statements only: a module a registry loads by name is a plug-in, and a plug-in may use its
    # loader (the Triton kernels ask `kernels/dispatch.py` whether they run interpreted).
    found = [{_short(m) for m in c} for c in cycles(import_graph(by_name=False))]
    unexpected = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not unexpected, f"modules that import each other (directly or around a loop): {unexpected}"


def test_runtime_modules_never_reach_research_tooling():
    graph = import_graph()
    todo = [m for m in graph if _is(m, RUNTIME)]
    assert len(todo) > 20
    came_from: dict[str, str | None] = {m: None for m in todo}
    while todo:
        m = todo.pop()
        for dep in graph[m]:
            if dep not in came_from:
                came_from[dep] = m
                todo.append(dep)
    bad = sorted(m for m in came_from if _is(m, RESEARCH))
    paths = []
    for m in bad:
        chain = [m]
        while came_from[chain[-1]] is not None:
            chain.append(came_from[chain[-1]])
        paths.append(" <- ".join(_short(c) for c in chain))
    assert not paths, f"the edit path imports research tooling: {paths}"


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE.parent), env.get("PYTHONPATH")]))
    return env


# Runs `hetcache ARGS` in a fresh interpreter and writes the package's modules it loaded, at exit.
# (`python -X importtime` would miss the commands: cli/app.py loads them with importlib.import_module,
# which importtime does not log.)
_RUN_AND_LIST = """
import atexit, sys
out = sys.argv.pop(1)
def _dump():
    with open(out, "w") as f:
        f.write("\\n".join(sorted(m for m in sys.modules if m.startswith("hetcache_cli"))))
atexit.register(_dump)
from hetcache_cli.cli.app import main
sys.argv[0] = "hetcache"
main()
"""


def modules_loaded_by(args: list, tmp_path: Path) -> list[str]:
    listing = tmp_path / "modules.txt"
    r = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST, str(listing), *map(str, args)],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return listing.read_text().split()


def test_edit_help_imports_no_research_tooling(tmp_path):
    imported = modules_loaded_by(["edit", "--help"], tmp_path)
    assert f"{ROOT}.cli.edit" in imported and f"{ROOT}.cli.bench" in imported  # every command registers
    assert not [m for m in imported if _is(m, RESEARCH)]


@pytest.mark.slow  # a tiny edit in a fresh interpreter
def test_an_edit_imports_no_research_tooling(small_clip, tiny_model_dir, tmp_path):
    args = [
        "edit", small_clip["video"], "--mask", small_clip["mask"], "--prompt", "a red ball",
        "--model", tiny_model_dir, "--steps", 2, "--schedule", "FP", "-o", tmp_path / "out.mp4", "--quiet",
    ]  # fmt: skip
    imported = modules_loaded_by(args, tmp_path)
    assert f"{ROOT}.cache.engine" in imported  # HetCache ran
    assert not [m for m in imported if _is(m, RESEARCH)]
