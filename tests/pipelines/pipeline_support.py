"""Helpers for the pipelines' tests: loading the pipelines, PDFs made with pymupdf, an arXiv stub,
the CLI in a subprocess and plain sqlite3 queries.

The pipelines are loaded once per process under their file stem (as `nimflow run` names them),
because they define SQLModel tables, which can be declared only once per process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape

import pymupdf

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
EXAMPLES = ROOT / "examples"
ADAPTER = "OrpoLlama-3-8B-Instruct"  # what NIM serves the tutorial's LoRA adapter as


def load_pipeline(name: str) -> ModuleType:
    # Pipelines import their sibling modules (results, text_samples) as `nimflow run` lets them.
    if str(PIPELINES) not in sys.path:
        sys.path.insert(0, str(PIPELINES))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PIPELINES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------
# PDFs


def make_pdf(body: str, title: str = "", pages: int = 1) -> bytes:
    """A small PDF whose text layer is `body` (spread over `pages` pages); `title` goes to the metadata."""
    doc: Any = pymupdf.open()  # type: ignore[no-untyped-call]
    words = body.split()
    per_page = -(-len(words) // pages) if words else 0
    for index in range(pages):
        page = doc.new_page()
        chunk = " ".join(words[index * per_page : (index + 1) * per_page])
        if chunk:
            lines = [" ".join(chunk.split()[i : i + 12]) for i in range(0, len(chunk.split()), 12)]
            page.insert_text((72, 72), lines, fontname="helv", fontsize=9)
    if title:
        doc.set_metadata({"title": title})
    data: bytes = doc.tobytes(garbage=4, deflate=True)
    doc.close()
    return data


def empty_pdf() -> bytes:
    """A valid PDF with a blank page and no text layer, like a scan without OCR."""
    return make_pdf("")


CORRUPT_PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nthis is not a PDF any more\n"


def paper_text(n: int) -> str:
    return (
        f"Paper number {n} studies reasoning in language models. "
        f"We propose method {n} and evaluate it carefully on three benchmarks. "
        f"Our results improve accuracy by {n} points over the baseline. "
        "We discuss limitations and future work in the last section."
    )


# --------------------------------------------------------------------------------------------------
# A stub of the arXiv API: Atom XML for /api/query, PDFs for /pdf/<id>


@dataclass
class StubPaper:
    id: str
    title: str
    pdf: bytes | None  # None: the entry has no PDF link
    pdf_statuses: list[int] = field(default_factory=list)  # answered (in order) before the PDF itself


class ArxivStub:
    """A real HTTP server on 127.0.0.1 answering like export.arxiv.org and arxiv.org/pdf."""

    def __init__(self) -> None:
        self.papers: list[StubPaper] = []
        self.requests: list[str] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="arxiv-stub", daemon=True
        )

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/query"

    def add(
        self, paper_id: str, title: str, pdf: bytes | None, pdf_statuses: list[int] | None = None
    ) -> None:
        self.papers.append(StubPaper(paper_id, title, pdf, list(pdf_statuses or [])))

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append(request.path)
        parsed = urlparse(request.path)
        if parsed.path == "/api/query":
            query = parse_qs(parsed.query)
            start = int(query.get("start", ["0"])[0])
            size = int(query.get("max_results", ["10"])[0])
            self._send(request, 200, self._feed(start, size), "application/atom+xml")
            return
        if parsed.path.startswith("/pdf/"):
            wanted = parsed.path[len("/pdf/") :]
            paper = next((p for p in self.papers if p.id == wanted and p.pdf is not None), None)
            if paper is None:
                self._send(request, 404, b"not found", "text/plain")
                return
            with self._lock:
                status = paper.pdf_statuses.pop(0) if paper.pdf_statuses else 200
            if status != 200:
                self._send(request, status, b"try again later", "text/plain")
                return
            assert paper.pdf is not None
            self._send(request, 200, paper.pdf, "application/pdf")
            return
        self._send(request, 404, b"not found", "text/plain")

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def _feed(self, start: int, size: int) -> bytes:
        entries = []
        for paper in self.papers[start : start + size]:
            pdf_link = (
                f'<link title="pdf" href="{self.url}/pdf/{paper.id}" rel="related" type="application/pdf"/>'
                if paper.pdf is not None
                else ""
            )
            entries.append(
                f"""<entry>
    <id>http://arxiv.org/abs/{paper.id}</id>
    <updated>2024-03-02T10:00:00Z</updated>
    <published>2024-03-01T10:00:00Z</published>
    <title>{escape(paper.title)}</title>
    <summary>An abstract.</summary>
    <author><name>Ada Example</name></author>
    <link href="http://arxiv.org/abs/{paper.id}" rel="alternate" type="text/html"/>
    {pdf_link}
    <arxiv:primary_category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
  </entry>"""
            )
        feed = f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
      xmlns:arxiv="http://arxiv.org/schemas/atom">
  <title>arXiv Query</title>
  <id>http://arxiv.org/api/stub</id>
  <updated>2024-03-02T00:00:00Z</updated>
  <opensearch:totalResults>{len(self.papers)}</opensearch:totalResults>
  <opensearch:startIndex>{start}</opensearch:startIndex>
  <opensearch:itemsPerPage>{size}</opensearch:itemsPerPage>
  {"".join(entries)}
</feed>
"""
        return feed.encode()

    def __enter__(self) -> ArxivStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


# --------------------------------------------------------------------------------------------------
# Running the CLI and reading the database


def nimflow_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`python -m nimflow ARGS` in a subprocess from the repository root (as a user would run it)."""
    return subprocess.run(
        [sys.executable, "-m", "nimflow", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def query(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows from nimflow's SQLite database with the plain sqlite3 module."""
    with contextlib.closing(sqlite3.connect(home / "nimflow.db")) as db:
        return db.execute(sql, params).fetchall()
