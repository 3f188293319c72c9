"""`nimflow actors ...` and `nimflow secret ...` (typer apps the main CLI registers)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nimflow import secrets
from nimflow._exceptions import NimflowError
from nimflow.actors.janitor import expires_at

__all__ = ["actors_app", "secret_app"]

actors_app = typer.Typer(help="Model server replicas kept warm for actor tasks.", no_args_is_help=True)
secret_app = typer.Typer(help="Secrets for model servers (NGC_API_KEY, HF_TOKEN, ...).", no_args_is_help=True)

_console = Console()
_err = Console(stderr=True)


def _fail(exc: NimflowError) -> typer.Exit:
    _err.print(f"[red]error:[/] {exc}", highlight=False)
    return typer.Exit(1)


def _rows() -> list[object]:
    from sqlmodel import select

    from nimflow._store import ActorReplica, Store

    store = Store.open()
    try:
        with store.session() as session:
            return list(session.exec(select(ActorReplica).order_by(ActorReplica.actor, ActorReplica.replica)))  # type: ignore[arg-type]
    finally:
        store.close()


def _expires(last_used: float, ttl: float, status: str) -> str:
    if status == "in_use":
        return "in use"
    left = expires_at(last_used, ttl, status) - time.time()
    if left <= 0:
        return "now"
    minutes, seconds = divmod(int(left), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


@actors_app.command("ls")
def actors_ls() -> None:
    """Replicas nimflow started and keeps warm: name, replica, container or pid, URL, config, expires-in."""
    from nimflow._store import ActorReplica

    rows = [r for r in _rows() if isinstance(r, ActorReplica)]
    if not rows:
        _console.print("no actor replicas are running")
        return
    table = Table("actor", "replica", "kind", "container / pid / node", "url", "model", "config", "expires in")
    for row in rows:
        handle = row.handle[:12] if row.kind == "docker" else row.handle.split("@")[0]
        if row.kind == "ray":
            from nimflow.actors.launchers.ray import describe_handle

            handle = describe_handle(row.handle)
        table.add_row(
            row.actor, str(row.replica), row.kind, handle, row.base_url, row.model, row.config_hash,
            _expires(row.last_used, row.ttl_seconds, row.status),
        )  # fmt: skip
    _console.print(table)


@actors_app.command("stop")
def actors_stop(
    name: Annotated[str | None, typer.Argument(help="The actor whose replicas to stop.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every replica.")] = False,
) -> None:
    """Stop an actor's replicas now (or all of them with --all)."""
    from nimflow._store import ActorReplica, Store
    from nimflow.actors.janitor import stop_row

    if (name is None) == (not all_):
        _err.print("give an actor name, or --all (not both)")
        raise typer.Exit(2)
    rows = [r for r in _rows() if isinstance(r, ActorReplica) and (all_ or r.actor == name)]
    if not rows:
        known = sorted({r.actor for r in _rows() if isinstance(r, ActorReplica)})
        _console.print(
            f"no replicas of {name!r} are running" + (f" (running: {', '.join(known)})" if known else "")
        )
        return
    store = Store.open()
    try:
        for row in rows:
            try:
                stop_row(store, row)
            except NimflowError as exc:
                raise _fail(exc) from None
            where = row.handle.split("|")[1] if row.kind == "ray" else row.handle.split("@")[0][:12]
            _console.print(f"stopped {row.id} ({row.kind} {where})")
    finally:
        store.close()


@actors_app.command("kubernetes")
def actors_kubernetes(
    file: Annotated[Path, typer.Argument(help="A Python file that defines a @workflow.")],
    workflow: Annotated[str | None, typer.Argument(help="Needed only when FILE defines several.")] = None,
) -> None:
    """Print the Kubernetes objects (YAML) each actor's replicas would be; nothing is created."""
    from nimflow.actors.kubernetes import plan_text

    try:
        typer.echo(plan_text(file, workflow), nl=False)
    except NimflowError as exc:
        raise _fail(exc) from None


@secret_app.command("create")
def secret_create(
    name: Annotated[str, typer.Argument(help="e.g. NGC_API_KEY or HF_TOKEN")],
) -> None:
    """Store a secret; the value is read from a hidden prompt, or from stdin when piped."""
    if sys.stdin.isatty():
        value = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=False)
    else:
        value = sys.stdin.read().strip()
    try:
        secrets.set_secret(name, value)
    except NimflowError as exc:
        raise _fail(exc) from None
    _console.print(f"stored {name} in {secrets.secret_store_path()}")


@secret_app.command("ls")
def secret_ls() -> None:
    """Names of the stored secrets (values are never shown)."""
    try:
        names = secrets.list_secrets()
    except NimflowError as exc:
        raise _fail(exc) from None
    for name in names:
        _console.print(name)
    if not names:
        _console.print("no secrets stored")


@secret_app.command("delete")
def secret_delete(name: str) -> None:
    """Remove a stored secret."""
    try:
        removed = secrets.delete_secret(name)
    except NimflowError as exc:
        raise _fail(exc) from None
    if not removed:
        _err.print(f"no stored secret named {name}")
        raise typer.Exit(1)
    _console.print(f"deleted {name}")
