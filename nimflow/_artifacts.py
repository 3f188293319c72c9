"""Artifacts: named, versioned workflow outputs, and the runs that produced and consumed them.

A workflow output annotated `Annotated[T, artifact]` records a new version of the artifact for
every successful run. An input whose default is `artifact.query()` takes the latest version when
the run starts (or the one asked for), and the run records which version it read: that is the
lineage `nimflow artifacts show` prints.
"""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import UniqueConstraint, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from nimflow import _serialize
from nimflow._exceptions import UserInputError, WorkflowDefinitionError
from nimflow._store import Store

if TYPE_CHECKING:
    from nimflow._workflow import WorkflowSpec

REF_PREFIX = "@artifact:"  # how a command line names a version: @artifact:NAME[:VERSION]

# --------------------------------------------------------------------------------------------------
# Tables


class ArtifactVersion(SQLModel, table=True):
    """One version of an artifact: its value and the run that produced it."""

    __tablename__ = "artifact_version"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: str = Field(primary_key=True)  # "<name>:<version>"
    name: str = Field(index=True)
    version: int
    value: str  # JSON, serialized from the output's type hint like any output
    run_id: str = Field(index=True)
    workflow: str
    created_at: float = Field(default_factory=time.time, index=True)
    partitions: str = "{}"  # JSON: the artifact's labels


class ArtifactUse(SQLModel, table=True):
    """A run read an artifact version through one of its inputs (lineage)."""

    __tablename__ = "artifact_use"

    run_id: str = Field(primary_key=True)
    input: str = Field(primary_key=True)
    artifact_id: str = Field(index=True)  # ArtifactVersion.id
    created_at: float = Field(default_factory=time.time)


# --------------------------------------------------------------------------------------------------
# The user's objects


@dataclass(frozen=True)
class Artifact:
    """A named artifact. Annotate an output with it; query it as an input default."""

    name: str
    partitions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name or self.name.startswith("@"):
            raise WorkflowDefinitionError(
                f"artifact name {self.name!r}: give a non-empty name without ':' or a leading '@'."
            )

    def __hash__(self) -> int:
        return hash(self.name)

    def query(self, version: int | None = None) -> Any:
        """The latest version when the run starts, or `version`.

        Typed Any so that it type-checks as the default of an input of any type
        (`text: TextSample = TextSampleArtifact.query()`); the value is an ArtifactQuery."""
        return ArtifactQuery(self.name, version)


@dataclass(frozen=True)
class ArtifactQuery:
    """An input value that names an artifact version; resolved when the run starts."""

    name: str
    version: int | None = None

    def __repr__(self) -> str:
        return REF_PREFIX + self.name + ("" if self.version is None else f":{self.version}")

    @classmethod
    def parse(cls, text: str) -> ArtifactQuery:
        """`@artifact:NAME` or `@artifact:NAME:VERSION` (or without the @artifact: prefix)."""
        body = text.removeprefix(REF_PREFIX)
        name, _, version = body.partition(":")
        if not name or (version and not version.isdigit()):
            raise UserInputError(
                f"{text!r}: name an artifact version as @artifact:NAME or @artifact:NAME:VERSION "
                "(VERSION a number). List them with: nimflow artifacts ls"
            )
        return cls(name, int(version) if version else None)


def as_query(value: Any) -> ArtifactQuery | None:
    """The query a raw input value stands for, if it is one."""
    if isinstance(value, ArtifactQuery):
        return value
    if isinstance(value, str) and value.startswith(REF_PREFIX):
        return ArtifactQuery.parse(value)
    return None


# --------------------------------------------------------------------------------------------------
# Hooks for the run module


@dataclass(frozen=True)
class Consumed:
    input: str
    artifact_id: str


def resolve_artifact_inputs(
    wf: WorkflowSpec[..., Any], inputs: Mapping[str, Any], store: Store
) -> tuple[dict[str, Any], list[Consumed]]:
    """Replace artifact queries (given, or input defaults) by the stored values they name.

    Called before the inputs are validated; the values come back as JSON data, which validation
    turns into the input's type."""
    values = dict(inputs)
    for name, param in wf.signature.parameters.items():
        if name not in values and isinstance(param.default, ArtifactQuery):
            values[name] = param.default
    consumed: list[Consumed] = []
    for name, raw in list(values.items()):
        wanted = as_query(raw)
        if wanted is None:
            continue
        row = find_version(store, wanted)
        values[name] = json.loads(row.value)
        consumed.append(Consumed(name, row.id))
    return values, consumed


def record_lineage(run_id: str, consumed: list[Consumed], store: Store) -> None:
    """Record which artifact versions the run read (once its run row exists)."""
    if not consumed:
        return
    with store.session() as session:
        for use in consumed:
            session.merge(ArtifactUse(run_id=run_id, input=use.input, artifact_id=use.artifact_id))
        session.commit()


def record_artifact_outputs(wf: WorkflowSpec[..., Any], outputs: Any, run_id: str, store: Store) -> list[str]:
    """A new version of each artifact the workflow's return hint names; returns their ids."""
    recorded = []
    for artifact, hint, value in _annotated_outputs(wf, outputs):
        text = _serialize.dumps(value, hint, f"artifact {artifact.name} of workflow {wf.name}")
        recorded.append(add_version(store, artifact, text, run_id, wf.name))
    return recorded


def output_artifacts(wf: WorkflowSpec[..., Any]) -> list[Artifact]:
    """The artifacts a workflow produces (from `Annotated[T, artifact]` in its return hint)."""
    return [artifact for artifact, _hint, _index in _annotations(wf)]


def _annotations(wf: WorkflowSpec[..., Any]) -> list[tuple[Artifact, Any, int | None]]:
    """(artifact, the value's type, tuple position or None) for the return hint's annotations."""
    try:
        hint = typing.get_type_hints(wf.fn, include_extras=True).get("return", Any)
    except Exception:  # the workflow itself reports unresolvable hints
        return []
    found: list[tuple[Artifact, Any, int | None]] = [(a, t, None) for a, t in _artifacts_of(hint)]
    if typing.get_origin(hint) is tuple:
        for index, element in enumerate(typing.get_args(hint)):
            found.extend((a, t, index) for a, t in _artifacts_of(element))
    return found


def _artifacts_of(hint: Any) -> list[tuple[Artifact, Any]]:
    if typing.get_origin(hint) is not typing.Annotated:
        return []
    inner, *extras = typing.get_args(hint)
    return [(extra, inner) for extra in extras if isinstance(extra, Artifact)]


def _annotated_outputs(wf: WorkflowSpec[..., Any], outputs: Any) -> list[tuple[Artifact, Any, Any]]:
    return [
        (artifact, hint, outputs if index is None else outputs[index])
        for artifact, hint, index in _annotations(wf)
    ]


# --------------------------------------------------------------------------------------------------
# Store access


def add_version(store: Store, artifact: Artifact, value: str, run_id: str, workflow: str) -> str:
    """Insert the next version; the unique (name, version) makes concurrent producers take turns."""
    for _ in range(20):
        with store.session() as session:
            latest = session.exec(
                select(func.max(ArtifactVersion.version)).where(ArtifactVersion.name == artifact.name)
            ).one()
            version = (latest or 0) + 1
            row = ArtifactVersion(
                id=f"{artifact.name}:{version}",
                name=artifact.name,
                version=version,
                value=value,
                run_id=run_id,
                workflow=workflow,
                partitions=json.dumps(dict(artifact.partitions), sort_keys=True),
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another run took this version number: take the next
                session.rollback()
                continue
            return row.id
    raise UserInputError(f"could not record a version of artifact {artifact.name}: too many writers at once.")


def find_version(store: Store, wanted: ArtifactQuery) -> ArtifactVersion:
    with store.session() as session:
        query = select(ArtifactVersion).where(ArtifactVersion.name == wanted.name)
        if wanted.version is None:
            query = query.order_by(col(ArtifactVersion.version).desc()).limit(1)
        else:
            query = query.where(ArtifactVersion.version == wanted.version)
        row = session.exec(query).first()
    if row is None:
        which = "no version yet" if wanted.version is None else f"no version {wanted.version}"
        raise UserInputError(
            f"artifact {wanted.name} has {which}. Run the workflow that produces it first, "
            "or see what exists with: nimflow artifacts ls"
        )
    return row


def versions(store: Store, name: str | None = None, since: float | None = None) -> list[ArtifactVersion]:
    """Versions, oldest first: all, of one artifact, or created at or after `since`."""
    with store.session() as session:
        query = select(ArtifactVersion)
        if name is not None:
            query = query.where(ArtifactVersion.name == name)
        if since is not None:
            query = query.where(ArtifactVersion.created_at >= since)
        return list(
            session.exec(query.order_by(col(ArtifactVersion.created_at), col(ArtifactVersion.version)))
        )


def consumers(store: Store, artifact_ids: list[str]) -> dict[str, list[str]]:
    """Run ids that read each version."""
    found: dict[str, list[str]] = {i: [] for i in artifact_ids}
    if not artifact_ids:
        return found
    with store.session() as session:
        rows = session.exec(
            select(ArtifactUse)
            .where(col(ArtifactUse.artifact_id).in_(artifact_ids))
            .order_by(col(ArtifactUse.created_at))
        )
        for row in rows:
            found[row.artifact_id].append(row.run_id)
    return found


__all__ = [
    "Artifact",
    "ArtifactQuery",
    "ArtifactUse",
    "ArtifactVersion",
    "Consumed",
    "add_version",
    "as_query",
    "consumers",
    "find_version",
    "output_artifacts",
    "record_artifact_outputs",
    "record_lineage",
    "resolve_artifact_inputs",
    "versions",
]
