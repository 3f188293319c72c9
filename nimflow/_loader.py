"""Load a pipeline file and pick its workflow, with errors that say what to do."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from nimflow._exceptions import UserInputError
from nimflow._workflow import WorkflowSpec


def load_module(path: str | Path) -> Any:
    file = Path(path)
    if not file.is_file():
        hint = " (a folder: name the .py file inside it)" if file.is_dir() else ""
        raise UserInputError(
            f"no such file: {file}{hint}. Pass the path of a Python file that defines a @workflow."
        )
    if file.suffix != ".py":
        raise UserInputError(
            f"{file} is not a .py file. Pass the path of a Python file that defines a @workflow."
        )
    name = file.stem
    # Sibling modules of the pipeline import the way they do under `python FILE`.
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        tb = "".join(traceback.format_exception(exc))
        raise UserInputError(f"{file} failed to import:\n{tb}\nFix the error above and run again.") from exc
    return module


def workflows_in(module: Any) -> dict[str, WorkflowSpec[..., Any]]:
    """The workflows the file defines itself (imported ones are left out, as pyflyte does)."""
    found: dict[str, WorkflowSpec[..., Any]] = {}
    for attr, value in vars(module).items():
        if isinstance(value, WorkflowSpec) and value.fn.__module__ == module.__name__:
            found[attr] = value
    return found


def pick_workflow(path: str | Path, name: str | None) -> WorkflowSpec[..., Any]:
    module = load_module(path)
    found = workflows_in(module)
    if not found:
        raise UserInputError(f"{path} defines no @workflow. Decorate a function with @nimflow.workflow.")
    if name is None:
        if len(found) > 1:
            raise UserInputError(
                f"{path} defines several workflows: {', '.join(sorted(found))}. Name one: "
                f"nimflow run {path} {sorted(found)[0]}"
            )
        return next(iter(found.values()))
    if name not in found:
        raise UserInputError(f"{path} has no workflow {name!r}; it defines: {', '.join(sorted(found))}.")
    return found[name]
