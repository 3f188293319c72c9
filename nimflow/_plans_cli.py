"""The command line of launch plans and artifacts: `serve`, `launchplans ...`, `artifacts ...`."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nimflow import _artifacts
from nimflow._exceptions import UserInputError
from nimflow._launchplans import (
    LaunchPlan,
    OnArtifact,
    describe,
    last_planned,
    launches,
    plans_in,
    register,
    schedule_from_text,
    set_active,
    states,
)
from nimflow._store import Run, Store

console = Console()
launchplans_app = typer.Typer(help="List launch plans; activate or deactivate them.", no_args_is_help=True)
artifacts_app = typer.Typer(help="List artifact versions and their lineage.", no_args_is_help=True)


def add_commands(app: typer.Typer) -> None:
    """Hang `serve`, `launchplans` and `artifacts` on the main command line."""
    app.command("serve")(serve)
    app.add_typer(launchplans_app, name="launchplans")
    app.add_typer(artifacts_app, name="artifacts")


def _when(stamp: float | None) -> str:
    return "" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _load_plans(files: list[Path]) -> tuple[list[LaunchPlan], dict[str, str]]:
    from nimflow._loader import load_module

    plans: list[LaunchPlan] = []
    where: dict[str, str] = {}
    for file in files:
        found = plans_in(load_module(file))
        if not found:
            raise UserInputError(
                f"{file} declares no launch plan. Declare one: nf.LaunchPlan(workflow, name, ...)"
            )
        for plan in found:
            if plan.name in where and next(p for p in plans if p.name == plan.name) is not plan:
                raise UserInputError(
                    f"launch plan {plan.name!r} is declared in {where[plan.name]} and {file}."
                )
            if plan.name not in where:
                plans.append(plan)
                where[plan.name] = str(file)
    return plans, where


# --------------------------------------------------------------------------------------------------
# nimflow serve


def serve(
    files: Annotated[list[Path], typer.Argument(help="Pipeline files that declare nf.LaunchPlan(...).")],
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server", metavar="ACTOR=SPEC", help="Serve an actor another way (as in `run`). Repeatable."
        ),
    ] = None,
) -> None:
    """Run the launch plans of FILES (schedules, triggers).

    Until Ctrl-C or SIGTERM; a run in progress is recorded as cancelled.
    """
    import anyio

    from nimflow._serve import Scheduler, serve_until_signalled
    from nimflow.actors.overrides import parse_actor_flags

    logging.basicConfig(level=os.environ.get("NIMFLOW_LOG", "WARNING").upper(), format="%(message)s")
    plans, where = _load_plans(files)
    servers = parse_actor_flags(server=server or [])
    store = Store.open()
    try:
        scheduler = Scheduler(plans, store, files=where, servers=servers, console=console)
        anyio.run(serve_until_signalled, scheduler)
    finally:
        store.close()
    console.print("scheduler stopped")


# --------------------------------------------------------------------------------------------------
# nimflow launchplans


@launchplans_app.command("ls")
def launchplans_ls(
    file: Annotated[Path | None, typer.Argument(help="List (and register) the plans of this file.")] = None,
) -> None:
    """Launch plans: schedule or trigger, active, last and next launch."""
    store = Store.open()
    try:
        if file is not None:
            plans, where = _load_plans([file])
            for plan in plans:
                register(store, plan, where[plan.name])
            names = [p.name for p in plans]
        known = states(store)
        if file is None:
            names = sorted(known)
        table = Table("plan", "workflow", "when", "active", "last launch", "next launch")
        for name in names:
            state = known[name]
            recent = launches(store, name, limit=1)
            last = f"{_when(recent[0].claimed_at)} {recent[0].status}" if recent else ""
            when = schedule_from_text(state.schedule)
            if isinstance(when, OnArtifact):
                upcoming = f"on the next {when.artifact.name}"
            else:
                upcoming = _when(when.next_after(state.first_seen, last_planned(store, name)))
            if not state.active:
                upcoming = "(inactive)"
            table.add_row(
                name,
                state.workflow,
                describe(state.schedule),
                "yes" if state.active else "no",
                last,
                upcoming,
            )
        console.print(table)
    finally:
        store.close()


@launchplans_app.command("activate")
def activate(name: Annotated[str, typer.Argument(help="The launch plan's name.")]) -> None:
    """Let `nimflow serve` start this plan again (it takes effect at once)."""
    _set(name, True)


@launchplans_app.command("deactivate")
def deactivate(name: Annotated[str, typer.Argument(help="The launch plan's name.")]) -> None:
    """Stop `nimflow serve` from starting this plan (runs in progress go on)."""
    _set(name, False)


def _set(name: str, active: bool) -> None:
    store = Store.open()
    try:
        set_active(store, name, active)
    finally:
        store.close()
    console.print(f"launch plan {name} is {'active' if active else 'inactive'}")


# --------------------------------------------------------------------------------------------------
# nimflow artifacts


@artifacts_app.command("ls")
def artifacts_ls(name: Annotated[str | None, typer.Argument(help="Only this artifact.")] = None) -> None:
    """Artifact versions, newest last: producer run and consumer runs."""
    store = Store.open()
    try:
        rows = _artifacts.versions(store, name)
        used = _artifacts.consumers(store, [r.id for r in rows])
    finally:
        store.close()
    if name is not None and not rows:
        raise UserInputError(f"artifact {name} has no versions yet.")
    table = Table("artifact", "version", "created", "producer run", "consumer runs")
    for row in rows:
        table.add_row(row.name, str(row.version), _when(row.created_at), row.run_id, ", ".join(used[row.id]))
    console.print(table)


@artifacts_app.command("show")
def artifacts_show(
    ref: Annotated[
        str, typer.Argument(metavar="NAME[:VERSION]", help="An artifact; default: its latest version.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """One artifact version: its value, the run that produced it and the runs that read it."""
    store = Store.open()
    try:
        row = _artifacts.find_version(store, _artifacts.ArtifactQuery.parse(ref))
        consumer_ids = _artifacts.consumers(store, [row.id])[row.id]
        with store.session() as session:
            producer = session.get(Run, row.run_id)
            consumer_runs = [session.get(Run, run_id) for run_id in consumer_ids]
    finally:
        store.close()
    info = {
        "artifact": row.name,
        "version": row.version,
        "created": _when(row.created_at),
        "partitions": json.loads(row.partitions),
        "producer": {
            "run": row.run_id,
            "workflow": row.workflow,
            "status": producer.status if producer else None,
        },
        "consumers": [
            {"run": run.id, "workflow": run.workflow, "status": run.status}
            for run in consumer_runs
            if run is not None
        ],
        "value": json.loads(row.value),
    }
    if as_json:
        console.print_json(json.dumps(info))
        return
    console.print(f"[bold]{escape(row.id)}[/] created {info['created']}")
    console.print(f"producer: run {row.run_id} ({row.workflow})")
    if info["consumers"]:
        for consumer in info["consumers"]:
            console.print(f"consumer: run {consumer['run']} ({consumer['workflow']}, {consumer['status']})")
    else:
        console.print("consumers: none yet")
    if info["partitions"]:
        console.print(f"partitions: {json.dumps(info['partitions'])}")
    console.print("value:")
    console.print_json(row.value)


__all__ = ["add_commands", "artifacts_app", "launchplans_app", "serve"]
