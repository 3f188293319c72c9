"""The pipelines' result tables: two processes saving the same new key at once both succeed (the
second finds the row the first inserted between its read and its insert), on SQLite and PostgreSQL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text
from sqlmodel import Field, Session, SQLModel

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "pipelines"))
from results import save_results  # a pipelines module, imported as `nimflow run` imports it


class RaceResult(SQLModel, table=True):
    __tablename__ = "race_result"
    id: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    summary: str


def test_a_key_saved_by_another_process_meanwhile_is_left_alone(store_url: str) -> None:
    ours, theirs = create_engine(store_url), create_engine(store_url)
    try:
        RaceResult.__table__.create(ours)  # type: ignore[attr-defined]
        raced: list[bool] = []

        # Right after our lookup found no row, the other process inserts the same key and commits.
        @event.listens_for(ours, "after_cursor_execute")
        def other_process_inserts(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and not raced:
                raced.append(True)
                with theirs.begin() as other:
                    other.execute(
                        text("INSERT INTO race_result (id, model, summary) VALUES ('p1', 'm', 'theirs')")
                    )

        rows = [{"id": "p1", "model": "m", "summary": "ours"}, {"id": "p2", "model": "m", "summary": "ours"}]
        with Session(ours) as db:
            save_results(db, RaceResult, rows, compare=("summary",))
            db.commit()
        assert raced == [True]
        with Session(theirs) as db:
            found = db.execute(select(RaceResult.id, RaceResult.summary).order_by(RaceResult.id)).all()  # type: ignore[arg-type]
        assert [tuple(r) for r in found] == [("p1", "theirs"), ("p2", "ours")]  # the first writer's row stays
    finally:
        ours.dispose()
        theirs.dispose()
