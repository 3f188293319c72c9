"""One writer thread that batches the store's writes.

SQLite allows one writer at a time. Instead of every task opening its own transaction (and
contending for the lock thousands of times a second in a big map), finished rows go onto a
queue that a single thread drains, committing whatever has piled up in one transaction. A crash
loses at most the rows still on the queue: items in flight, and those of the last window.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlmodel import SQLModel

from nimflow._bulk import write_rows

if TYPE_CHECKING:
    from nimflow._store import Store


# While a writer lives, a thread that waits for the GIL gets it within 1 ms instead of Python's
# default 5 ms. The event loop of a busy run holds the GIL almost all the time, and a commit gives
# it up at each SQLite call (begin, each statement, commit): at 5 ms a wait, with the other threads
# of the run contending too, commits took 130-400 ms and the commit lag's p99 was 350-570 ms; at
# 1 ms it was 64-82 ms (bench/durability.py). A waiter asks the holder to let go only when there
# is one, so a thread running alone pays nothing.
_SWITCH_INTERVAL = 0.001
_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = sys.getswitchinterval()


def _shorten_switch_interval() -> None:
    global _switch_users, _switch_before
    with _switch_lock:
        if _switch_users == 0:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_before, _SWITCH_INTERVAL))
        _switch_users += 1


def _restore_switch_interval() -> None:
    """When the last writer closes: the interval as it was before the first."""
    global _switch_users
    with _switch_lock:
        _switch_users -= 1
        if _switch_users == 0:
            sys.setswitchinterval(_switch_before)


class Writer:
    """Drains queued writes in batches, one transaction per batch."""

    _MAX_BATCH = 5_000
    # Back-pressure: when rows come faster than the database takes them, producers wait here
    # instead of the backlog (and the process's memory) growing with every finished item.
    _MAX_QUEUED = 20_000
    # A batch gathers for this long after its first row. Committing each row as it comes costs a
    # transaction per item, and under a busy event loop every transaction waits for the GIL several
    # times: the writer then fell seconds behind. One transaction per window keeps up at any rate
    # and bounds the commit lag by the window plus one commit.
    _WINDOW = 0.02

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=self._MAX_QUEUED)
        self._error: BaseException | None = None
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nimflow-db-writer", daemon=True)
        _shorten_switch_interval()
        self._thread.start()

    def insert(self, model: type[SQLModel], row: dict[str, Any]) -> None:
        self._queue.put(("insert", (model, row)))

    def upsert(self, model: type[SQLModel], row: dict[str, Any]) -> None:
        self._queue.put(("upsert", (model, row)))

    def update(self, model: type[SQLModel], key: Any, values: dict[str, Any]) -> None:
        self._queue.put(("update", (model, key, values)))

    def flush(self) -> None:
        """Block until everything queued so far is committed; re-raise a failed write."""
        done = threading.Event()
        self._queue.put(("barrier", done))
        self._wake.set()
        done.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._queue.put(("stop", None))
            self._thread.join()
            _restore_switch_interval()

    def _loop(self) -> None:
        while True:
            ops = [self._queue.get()]
            if ops[0][0] not in ("barrier", "stop"):
                self._wake.wait(self._WINDOW)
                self._wake.clear()
            while len(ops) < self._MAX_BATCH:
                try:
                    ops.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(kind == "stop" for kind, _ in ops)
            try:
                self._commit([op for op in ops if op[0] in ("insert", "upsert", "update")])
            except BaseException as exc:  # surfaced by the next flush()
                self._error = exc
            for kind, payload in ops:
                if kind == "barrier":
                    payload.set()
            if stop:
                return

    def _commit(self, ops: list[tuple[str, Any]]) -> None:
        if not ops:
            return
        # Rows of one kind, table and set of columns go in one executemany (which takes its columns
        # from the first row). Inserts and upserts first, then updates in their order: an update
        # refers to a row inserted earlier, possibly in this same batch.
        groups: dict[tuple[str, Any, frozenset[str]], list[dict[str, Any]]] = {}
        updates: list[tuple[Any, Any, dict[str, Any]]] = []
        for kind, payload in ops:
            if kind == "update":
                updates.append(payload)
            else:
                model, row = payload
                groups.setdefault((kind, model, frozenset(row)), []).append(row)
        with self._store.engine.begin() as conn:
            for (kind, model, _columns), rows in groups.items():
                write_rows(conn, model.__table__, rows, upsert=kind == "upsert")
            for model, key, values in updates:
                pk = next(iter(model.__table__.primary_key.columns))
                conn.execute(update(model.__table__).where(pk == key).values(**values))
