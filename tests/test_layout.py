"""The tree's shape: no import loop between modules or packages of ``vpp``, ``optimizer`` and
``market`` (lazy imports inside functions count: they hide a loop, they do not remove it),
and every benchmark has a smoke mode that CI runs and imports nothing from the tests."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vpp", "optimizer", "market")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    found: set[str] = set()
    package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = name.split(".")[: None if package else -1]
                    base = base[: len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                found.add(module)
                found.update(f"{module}.{a.name}" for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph(depth: int | None) -> dict[str, set[str]]:
    """Import edges between modules (``depth`` None) or packages cut at ``depth`` parts."""
    mods = _modules()

    def cut(m: str) -> str:
        return ".".join(m.split(".")[:depth]) if depth else m

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        for dep in _imports(name, path):
            while dep and dep not in mods:
                dep = dep.rpartition(".")[0]
            if dep and cut(dep) != cut(name):
                graph.setdefault(cut(name), set()).add(cut(dep))
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
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
            strong(v)
    return out


@pytest.mark.parametrize("depth", [None, 2], ids=["modules", "packages"])
def test_no_import_loops(depth: int | None) -> None:
    assert _cycles(_graph(depth)) == []


def test_the_loop_finder_finds_a_loop() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _benchmark_scripts() -> list[Path]:
    """Scripts with a ``__main__`` (helpers such as the broker fixture have none)."""
    return [
        p
        for p in sorted((ROOT / "benchmarks").glob("*.py"))
        if '__name__ == "__main__"' in p.read_text()
    ]


def test_every_benchmark_has_a_smoke_mode_that_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    listed = set(re.search(r"for bench in ([^;]+);", ci).group(1).split())  # type: ignore[union-attr]
    # bare_milp is the optimizer benchmark's baseline child, run by its smoke mode
    scripts = {p.stem for p in _benchmark_scripts()} - {"bare_milp"}
    assert scripts <= listed, f"not smoke-run by .ci/run: {sorted(scripts - listed)}"
    for name in scripts:
        assert "--smoke" in (ROOT / "benchmarks" / f"{name}.py").read_text(), name


def test_benchmarks_import_nothing_from_the_tests() -> None:
    for path in (ROOT / "benchmarks").glob("*.py"):
        imported = _imports(f"benchmarks.{path.stem}", path)
        assert not any(m == "tests" or m.startswith("tests.") for m in imported), path.name


def _leaves(model: type, path: tuple[tuple[str, type], ...] = ()) -> Iterator[tuple[Any, str]]:
    from pydantic import BaseModel

    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, (*path, (name, ann)))
        else:
            yield path, name


def test_every_setting_is_read_somewhere() -> None:
    """A leaf setting is read if some module of the engine names it (``.name`` or
    ``"name"``) and also names its section (``.section`` or the section's class): a
    setting that is validated and documented but read nowhere (``scheduler.snapshot_every_s``
    was one) fails here instead of misleading an operator."""
    from vpp.config import Settings

    sources = [
        p.read_text()
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "config.py"
    ]
    unread = []
    for path, name in _leaves(Settings):
        owners = [re.escape(cls.__name__) for _, cls in path]
        owners += [r"\." + re.escape(section) + r"\b" for section, _ in path]
        owner = re.compile("|".join(owners)) if owners else None
        leaf = re.compile(r"[.'\"]" + re.escape(name) + r"\b")
        if not any(leaf.search(t) and (owner is None or owner.search(t)) for t in sources):
            unread.append(".".join([*(s for s, _ in path), name]))
    assert unread == []
