"""The public surface is `nimflow` alone, and the engine core stays apart from what serves actors."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import nimflow
from nimflow import _exceptions

PACKAGE = Path(nimflow.__file__).parent
# The engine core: it talks to actors only through the protocols in nimflow._resources.
CORE = {
    "nimflow._attempt",
    "nimflow._cache",
    "nimflow._graph",
    "nimflow._recorder",
    "nimflow._resources",
    "nimflow._result_cache",
    "nimflow._scheduler",
    "nimflow._serialize",
    "nimflow._status",
    "nimflow._store",
    "nimflow._task",
    "nimflow._workflow",
}


def test_all_names_every_public_name_once_sorted_and_importable() -> None:
    names = nimflow.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n)), "keep __all__ sorted"
    assert len(set(names)) == len(names)
    assert not [n for n in names if n.startswith("_")]
    for name in names:
        assert getattr(nimflow, name) is not None, name
    assert set(_exceptions.__all__) <= set(names)  # every nimflow exception is public
    assert set(dir(nimflow)) >= set(names)


def test_llm_and_testing_are_reachable_as_attributes() -> None:
    assert nimflow.llm.chat_many is importlib.import_module("nimflow.llm").chat_many
    assert nimflow.testing.FakeServer is importlib.import_module("nimflow.testing").FakeServer


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(module: str) -> set[str]:
    """The nimflow modules `module` imports anywhere (function bodies included), but not the
    ones imported only for type checking."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nimflow"):
            found.add(node.module)
            for alias in node.names:  # `from nimflow import _serialize` names a module
                if _is_module(f"{node.module}.{alias.name}"):
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nimflow"))
    return found - {"nimflow"}


def test_the_core_imports_nothing_of_actors_llm_or_testing_and_is_free_of_circles() -> None:
    for module in sorted(CORE):
        outside = [
            m for m in _imports(module) if m.startswith(("nimflow.actors", "nimflow.llm", "nimflow.testing"))
        ]
        assert not outside, f"{module} imports {outside}"
    assert not {"nimflow._task", "nimflow._workflow", "nimflow._run"} & _imports("nimflow._graph")
    # No circle through a core module, function-level imports included.
    for start in sorted(CORE | {"nimflow._run"}):
        seen: set[str] = set()
        todo = list(_imports(start))
        while todo:
            module = todo.pop()
            assert module != start, f"{start} imports itself through {sorted(seen)}"
            if module in seen:
                continue
            seen.add(module)
            todo.extend(_imports(module))
