"""OpenAI Batch files: reading and checking the input lines, building the output lines.

Input (one JSON object a line): ``{"custom_id", "method": "POST", "url": "/v1/...", "body"}``.
Output (one a line, in input order): ``{"id", "custom_id", "response": {"status_code",
"request_id", "body"} | null, "error": {"code", "message"} | null}``, the shape of the OpenAI
Batch API and of ``vllm run-batch``.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from nimflow._exceptions import UserInputError

SUPPORTED_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
_SHOWN = 10  # problems listed in one error message


@dataclass(frozen=True, slots=True)
class Request:
    """One input line, checked."""

    line: int  # 1-based line number in the input file
    custom_id: str
    url: str
    body: dict[str, Any]

    @property
    def supported(self) -> bool:
        return self.url in SUPPORTED_URLS


def _check(line_no: int, text: str) -> Request | str:
    """The request of one line, or what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return f"line {line_no}: not valid JSON ({error.msg} at column {error.colno})"
    except ValueError as error:  # e.g. an invalid surrogate
        return f"line {line_no}: not valid JSON ({error})"
    if not isinstance(data, dict):
        return f"line {line_no}: expected a JSON object, got {type(data).__name__}"
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return f"line {line_no}: missing custom_id (a non-empty string naming the request)"
    body = data.get("body")
    if not isinstance(body, dict):
        return f"line {line_no} ({custom_id}): missing body (a JSON object, the request sent to url)"
    method = data.get("method", "POST")
    url = data.get("url")
    if not isinstance(url, str):
        return f'line {line_no} ({custom_id}): missing url, e.g. "/v1/chat/completions"'
    if method != "POST":
        url = f"{method} {url}"  # answered as a per-line error, like an unsupported url
    return Request(line_no, custom_id, url, body)


def read_requests(lines: Iterable[str], model: str | None = None) -> Iterator[Request]:
    """Requests from lines, checked as they stream by; a body without ``model`` gets ``model``
    (when None it stays without: the serving actor's model fills it in)."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        checked = _check(number, text)
        if isinstance(checked, str):
            raise UserInputError(f"{checked}. Fix that line and run again; nothing was sent.")
        if model is not None and "model" not in checked.body:
            checked.body["model"] = model
        yield checked


def models_of(requests: Iterable[Request], into: dict[str, None]) -> None:
    """The models the bodies name, first seen first (at most 32: enough for a fake server to serve)."""
    for request in requests:
        name = request.body.get("model")
        if isinstance(name, str) and len(into) < 32:
            into.setdefault(name, None)


def validate_file(path: Path, models: dict[str, None] | None = None) -> tuple[int, list[str]]:
    """One streaming pass over the file: (number of requests, problems). Duplicate custom_ids are
    named with all their lines. The custom_ids go to an on-disk index (a temporary SQLite file),
    so memory stays flat whatever the number of lines. The models the bodies name are collected
    into ``models``."""
    problems: list[str] = []
    count = 0
    with open_input(path) as handle, _IdIndex(path.parent) as index:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            checked = _check(number, text)
            if isinstance(checked, str):
                problems.append(checked)
                continue
            count += 1
            if models is not None:
                models_of([checked], models)
            index.add(checked.custom_id, number)
        room = max(_SHOWN - len(problems), 1)  # what the error message lists, the count last
        shown, total = index.duplicates(room)
        if total > room:
            shown = shown[: room - 1]
        problems.extend(
            f"custom_id {custom_id!r} appears on lines {', '.join(map(str, lines))}"
            for custom_id, lines in shown
        )
        if total > len(shown):
            problems.append(f"{total - len(shown)} more custom_id(s) appear on several lines")
    return count, problems


class _IdIndex:
    """custom_ids and their lines in a temporary SQLite file beside the input (or in the temp
    folder when that is not writable): a dict of 1M ids would cost ~100 MB."""

    _BATCH = 5_000

    def __init__(self, folder: Path) -> None:
        try:
            fd, name = tempfile.mkstemp(prefix=".nimflow-ids.", suffix=".sqlite", dir=folder)
        except OSError:
            fd, name = tempfile.mkstemp(prefix="nimflow-ids.", suffix=".sqlite")
        os.close(fd)
        self._path = Path(name)
        self._db = sqlite3.connect(name)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-8000")  # 8 MB of pages at most
        self._db.execute("CREATE TABLE ids (custom_id TEXT NOT NULL, line INTEGER NOT NULL)")
        self._pending: list[tuple[str, int]] = []

    def __enter__(self) -> _IdIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self._db.close()
        self._path.unlink(missing_ok=True)

    def add(self, custom_id: str, line: int) -> None:
        self._pending.append((custom_id, line))
        if len(self._pending) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO ids VALUES (?, ?)", self._pending)
        self._pending.clear()

    def duplicates(self, limit: int) -> tuple[list[tuple[str, list[int]]], int]:
        """The first ``limit`` custom_ids given more than once (with their lines), and how many
        custom_ids are given more than once."""
        self._flush()
        self._db.execute(
            "CREATE TABLE twice AS SELECT custom_id, min(line) AS first FROM ids "
            "GROUP BY custom_id HAVING count(*) > 1"
        )
        (total,) = self._db.execute("SELECT count(*) FROM twice").fetchone()
        shown = []
        for custom_id, lines in self._db.execute(
            "SELECT t.custom_id, group_concat(i.line) FROM (SELECT * FROM twice ORDER BY first LIMIT ?) t "
            "JOIN ids i ON i.custom_id = t.custom_id GROUP BY t.custom_id ORDER BY t.first",
            (limit,),
        ):
            shown.append((str(custom_id), sorted(int(n) for n in str(lines).split(","))))
        return shown, int(total)


def problems_error(path: Path, problems: list[str]) -> UserInputError:
    shown = "\n  ".join(problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return UserInputError(
        f"{path}: {len(problems)} problem(s) in the input file, nothing was sent:\n  {shown}{more}\n"
        "Each line must be a JSON object with a unique custom_id, a url and a body; fix the lines and "
        "run again (answers already stored are kept)."
    )


def open_input(path: Path) -> IO[str]:
    try:
        return path.open(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(
            f"input file {path} does not exist; give the path of an OpenAI Batch .jsonl file."
        ) from None
    except OSError as error:
        raise UserInputError(f"cannot read input file {path}: {error.strerror}.") from None


def output_line(request: Request, response: dict[str, Any] | None, error: dict[str, Any] | None) -> str:
    """One output line; ``id`` is stable for a custom_id, so a rerun writes the same file."""
    digest = hashlib.blake2b(request.custom_id.encode(), digest_size=12).hexdigest()
    return json.dumps(
        {"id": f"batch_req_{digest}", "custom_id": request.custom_id, "response": response, "error": error},
        separators=(",", ":"),
    )


def line_failed(line: str) -> bool:
    """Whether an output line goes to the errors file: an error, or a response of 4xx/5xx."""
    data = json.loads(line)
    response = data.get("response")
    return data.get("error") is not None or response is None or int(response.get("status_code", 0)) >= 400


def unsupported_error(request: Request) -> dict[str, Any]:
    return {
        "code": "invalid_url",
        "message": f"{request.url!r} is not supported; use one of {', '.join(SUPPORTED_URLS)} with POST.",
    }


class AtomicWriter:
    """Lines written to a temporary file beside ``path``, renamed over it on ``commit()``: the
    output is never seen half-written, and a failed run leaves the previous file as it was.

    The writer holds a lock on its temporary file while it lives, so the next writer of the same
    path removes the temporary files of writers that died (``kill -9``) and leaves a running
    one's alone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel when this process ends
        self._temp = Path(temp)
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        self.lines = 0

    def write(self, line: str) -> None:
        self._file.write(line)
        self._file.write("\n")
        self.lines += 1

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._temp, self.path)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._temp.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Remove the temporary files of dead writers of ``path`` (their lock is gone)."""
    for temp in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        try:
            fd = os.open(temp, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live writer holds it
        finally:
            os.close(fd)
        temp.unlink(missing_ok=True)
