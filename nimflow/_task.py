"""@task: registers a plain function as a workflow node, and keeps it callable as itself."""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

from nimflow import _cache
from nimflow._exceptions import WorkflowDefinitionError
from nimflow._graph import current_builder
from nimflow._resources import ActorRef

__all__ = ["TaskOptions", "TaskSpec", "default_name", "task"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(eq=False)
class TaskSpec(Generic[P, R]):
    """A decorated function and how to run it. Calling it outside a workflow calls the function."""

    fn: Callable[P, R]
    name: str
    cache: bool = False
    cache_version: str = "0"
    cache_ignore: frozenset[str] = frozenset()
    retries: int = 0
    timeout: float | None = None
    actor: ActorRef | None = None
    signature: inspect.Signature = field(init=False)
    input_hints: dict[str, Any] = field(init=False)
    return_hint: Any = field(init=False)
    is_async: bool = field(init=False)
    source_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.signature = inspect.signature(self.fn)
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise WorkflowDefinitionError(
                    f"task {self.name!r}: *args and **kwargs cannot be cached or mapped; "
                    "give every input a name and a type hint."
                )
        hints = _type_hints(self.fn)
        self.input_hints = {name: hints.get(name, Any) for name in self.signature.parameters}
        self.return_hint = hints.get("return", Any)
        unknown = self.cache_ignore - set(self.signature.parameters)
        if unknown:
            raise WorkflowDefinitionError(
                f"task {self.name!r}: cache_ignore names {sorted(unknown)} that are not inputs "
                f"(inputs: {list(self.signature.parameters)})."
            )
        if self.retries < 0:
            raise WorkflowDefinitionError(
                f"task {self.name!r}: retries must be 0 or more, not {self.retries}."
            )
        self.is_async = inspect.iscoroutinefunction(self.fn)
        self.source_hash = _cache.source_hash(self.fn)
        self.__doc__ = self.fn.__doc__
        self.__wrapped__ = self.fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        builder = current_builder()
        if builder is None:
            return self.fn(*args, **kwargs)
        return builder.add_task(self, self.bind(args, kwargs))  # type: ignore[return-value]

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """All inputs by name, defaults filled in; a clear error for a wrong call."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise WorkflowDefinitionError(f"task {self.name!r} called with the wrong inputs: {exc}") from exc
        bound.apply_defaults()
        return dict(bound.arguments)

    @property
    def output_arity(self) -> int | None:
        """The length of a fixed-size tuple output (so the workflow can unpack it), else None."""
        hint = self.return_hint
        if typing.get_origin(hint) is tuple:
            items = typing.get_args(hint)
            if items and items[-1] is not Ellipsis:
                return len(items)
        return None

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def default_name(fn: Callable[..., Any]) -> str:
    """`file_stem.qualname`: the same whether the file is run by path or imported as a package module."""
    module = fn.__module__
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None) or "__main__"
        module = Path(main_file).stem
    return f"{module.rsplit('.', 1)[-1]}.{fn.__qualname__}"


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # a hint naming something not importable at decoration time
        raise WorkflowDefinitionError(
            f"cannot resolve the type hints of {fn.__qualname__}: {exc}. "
            "Import the types the hints name at module level."
        ) from exc


class TaskOptions(TypedDict, total=False):
    """The options of `@nf.task(...)` and `@actor.task(...)`, written once for both."""

    name: str | None  # default `module.function`; part of the cache key
    cache: bool  # reuse results across runs (default False)
    cache_version: str  # bump it to recompute after a change (default "0")
    cache_ignore: Iterable[str]  # inputs left out of the cache key
    retries: int  # further attempts after a failure (default 0)
    timeout: float | None  # seconds per attempt (default none)


@overload
def task(fn: Callable[P, R], /) -> TaskSpec[P, R]: ...


@overload
def task(
    fn: None = None, /, *, actor: ActorRef | None = None, **options: Unpack[TaskOptions]
) -> Callable[[Callable[P, R]], TaskSpec[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None, /, *, actor: ActorRef | None = None, **options: Unpack[TaskOptions]
) -> TaskSpec[P, R] | Callable[[Callable[P, R]], TaskSpec[P, R]]:
    """Make `fn` a task: `@task` or `@task(cache=True, cache_version="1", retries=2, timeout=60)`.

    The name defaults to `module.function` (the module's last dotted part); it is part of the
    cache key, so renaming a task starts a fresh cache unless `name=` keeps the old one.
    """

    def decorate(f: Callable[P, R]) -> TaskSpec[P, R]:
        return TaskSpec(
            fn=f,
            name=options.get("name") or default_name(f),
            cache=options.get("cache", False),
            cache_version=str(options.get("cache_version", "0")),
            cache_ignore=frozenset(options.get("cache_ignore", ())),
            retries=options.get("retries", 0),
            timeout=options.get("timeout"),
            actor=actor,
        )

    return decorate(fn) if fn is not None else decorate
