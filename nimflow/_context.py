"""What a task can ask about the run it is part of: its id, and nimflow's database."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlmodel import Session

from nimflow._store import Store


@dataclass(frozen=True)
class RunContext:
    run_id: str
    store: Store


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar("nimflow_run", default=None)


def current_run_id() -> str | None:
    """The id of the run executing the calling task; None outside a run."""
    ctx = _current.get()
    return ctx.run_id if ctx else None


@contextmanager
def session() -> Iterator[Session]:
    """A sqlmodel Session on nimflow's database: the run's own inside a task, else the default one.

    Tables a pipeline defines (SQLModel classes with table=True) are created on first use, so
    results can live beside the runs that produced them.
    """
    ctx = _current.get()
    store = ctx.store if ctx else Store.open()
    store.ensure_tables()
    try:
        with store.session() as db:
            yield db
    finally:
        if ctx is None:
            store.close()


@contextmanager
def bind_run(run_id: str, store: Store) -> Iterator[None]:
    token = _current.set(RunContext(run_id, store))
    try:
        yield
    finally:
        _current.reset(token)
