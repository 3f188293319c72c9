"""`nimflow actors ...` and `nimflow secret ...` (typer apps the main CLI registers)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nimflow import secrets
from nimflow._console import make_console, print_table
from nimflow._exceptions import NimflowError, UserInputError
from nimflow._store import ActorReplica, Store
from nimflow.actors import records
from nimflow.actors.environment import ActorEnvironment
from nimflow.actors.janitor import expires_at

__all__ = ["actors_app", "secret_app"]

actors_app = typer.Typer(help="Model server replicas kept warm for actor tasks.", no_args_is_help=True)
secret_app = typer.Typer(help="Secrets for model servers (NGC_API_KEY, HF_TOKEN, ...).", no_args_is_help=True)

_console = make_console()
_err = make_console(stderr=True)


def _fail(exc: NimflowError) -> typer.Exit:
    _err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)  # messages may hold [brackets]
    return typer.Exit(1)


def _rows(actor: str | None = None) -> list[ActorReplica]:
    store = Store.open()
    try:
        return records.list_replicas(store, actor)
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
    """Replicas nimflow started and keeps warm: name, replica, container or pid, URL, config, the actor's
    min/max replicas, expires-in."""
    rows = _rows()
    if not rows:
        _console.print("no actor replicas are running")
        return
    table = Table(
        "actor",
        "replica",
        "kind",
        "container / pid / node",
        "url",
        "model",
        "gpus",
        "config",
        "min/max",
        "expires in",
    )
    for row in rows:
        handle = row.handle[:12] if row.kind == "docker" else row.handle.split("@")[0]
        if row.kind == "ray":
            from nimflow.actors.launchers.ray import describe_handle

            handle = describe_handle(row.handle)
        table.add_row(
            row.actor, str(row.replica), row.kind, handle, row.base_url, row.model, row.gpus or "-", row.config_hash,
            f"{row.min_replicas}/{row.max_replicas}" if row.max_replicas else "-",
            _expires(row.last_used, row.ttl_seconds, row.status),
        )  # fmt: skip
    print_table(_console, table)  # actor names and URLs whole, at any width


@actors_app.command("plan")
def actors_plan(
    file: Annotated[Path, typer.Argument(help="A Python file that defines a @workflow.")],
    workflow: Annotated[str | None, typer.Argument(help="Needed only when FILE defines several.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    kubernetes: Annotated[
        bool, typer.Option("--kubernetes", help="Print the Kubernetes objects instead (YAML).")
    ] = False,
    server: Annotated[
        list[str] | None,
        typer.Option("--server", metavar="ACTOR=SPEC", help="Serve an actor another way, as in run."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", metavar="ACTOR=NAME", help="The model an actor serves, as in run."),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", metavar="ACTOR=SECRET_NAME", help="The secret holding an endpoint's key."),
    ] = None,
    request_timeout: Annotated[
        list[str] | None,
        typer.Option("--request-timeout", metavar="ACTOR=SECONDS", help="Bound each model request."),
    ] = None,
    placement: Annotated[
        list[str] | None,
        typer.Option("--placement", metavar="ACTOR=ray[:ADDRESS]", help="Place an actor on Ray, as in run."),
    ] = None,
) -> None:
    """What `nimflow run FILE` would start for each actor, without starting anything (no secret is read)."""
    from nimflow._loader import pick_workflow
    from nimflow.actors.overrides import check_overrides, parse_actor_flags
    from nimflow.actors.plan import plan_actors

    if kubernetes:
        from nimflow.actors.kubernetes import plan_text

        typer.echo(plan_text(file, workflow), nl=False)
        return
    try:
        flags = parse_actor_flags(
            server=server or [],
            model=model or [],
            api_key=api_key or [],
            request_timeout=request_timeout or [],
        )
        wf = pick_workflow(file, workflow)
        if placement:
            from nimflow.actors.launchers.ray import place

            place(wf, placement)
        envs = {n.task.actor.name: n.task.actor for n in wf.build() if n.task.actor is not None}
        check_overrides(flags, envs.values())
        store = Store.open()
        try:
            plans = plan_actors([e for e in envs.values() if isinstance(e, ActorEnvironment)], flags, store)
        finally:
            store.close()
    except NimflowError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(plans, indent=2))
        return
    if not plans:
        _console.print(f"{file} uses no actors: nothing would be started")
    for plan in plans:
        _console.print(f"[bold]{escape(plan['actor'])}[/]: {escape(plan['server'])}", highlight=False)
        for key, value in plan.items():
            if key in ("actor", "server", "notes", "containers", "ray_replicas"):
                continue
            _console.print(f"  {key}: {value}", highlight=False, markup=False)
        for what, listed in (("container", "containers"), ("ray replica", "ray_replicas")):
            for item in plan.get(listed, []):
                _console.print(f"  {what} {item['name']}:", highlight=False, markup=False)
                for key, value in item.items():
                    if key != "name":
                        _console.print(f"    {key}: {value}", highlight=False, markup=False)
        for note in plan["notes"]:
            _console.print(f"  note: {note}", highlight=False, markup=False)


@actors_app.command("stop")
def actors_stop(
    name: Annotated[str | None, typer.Argument(help="The actor whose replicas to stop.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Stop every replica.")] = False,
) -> None:
    """Stop an actor's replicas now (or all of them with --all)."""
    from nimflow.actors.janitor import stop_row

    if (name is None) == (not all_):
        _err.print("[red]error:[/] give an actor name, or --all (not both)")
        raise typer.Exit(2)
    rows = _rows(None if all_ else name)
    if not rows:
        known = sorted({r.actor for r in _rows()})
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
    force: Annotated[bool, typer.Option("--force", help="Replace a stored secret of that name.")] = False,
) -> None:
    """Store a secret; the value is read from a hidden prompt, or from stdin when piped."""
    if not force and name in secrets.list_secrets():
        raise _fail(UserInputError(f"a secret named {name} is stored already; add --force to replace it."))
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
def secret_delete(name: Annotated[str, typer.Argument(help="The secret's name.")]) -> None:
    """Remove a stored secret."""
    try:
        removed = secrets.delete_secret(name)
    except NimflowError as exc:
        raise _fail(exc) from None
    if not removed:
        _err.print(f"no stored secret named {name}")
        raise typer.Exit(1)
    _console.print(f"deleted {name}")
