"""Summarize arXiv papers with Llama 3 (and a LoRA adapter) served by NVIDIA NIM; results in SQLite.

    nimflow run pipelines/arxiv_summary.py [--query reasoning] [--top-k 100] [--batch-size 10]
    nimflow run pipelines/arxiv_summary.py --source examples/papers --server nim-actor=fake

`load_arxiv` searches arXiv (or reads the PDFs of a local folder with `--source`), extracts the
text of each paper with pymupdf and returns batches of papers. `generate_summary` runs on a warm
NIM actor: each batch is one map item, and its papers are summarized concurrently through the
actor's OpenAI client. `save_summaries` writes one row per paper and model to the `summary`
table (keyed by paper id and model: a rerun leaves it as it was).

A paper that cannot be read (a corrupt or empty PDF, a missing PDF link) is kept with its error:
it is not sent to the model, its row says why, and the other papers go on. Those problems are
properties of the paper, so caching them is right. Problems that may go away on their own (the
network, an overloaded server) fail the task instead, so nothing transient is cached: run the
same command again and it resumes from what is cached.
"""

import functools
import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import BaseModel
from results import save_results
from sqlmodel import Field, SQLModel
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

import nimflow as nf
from nimflow.llm import chat_many

log = logging.getLogger(__name__)

REPO_ID = "Samhita/OrpoLlama-3-8B-Instruct"  # the tutorial's LoRA adapter (ORPO fine-tune of Llama 3 8B)
# The arXiv query API. ARXIV_API_URL points the same search code at a mirror or a test stub.
ARXIV_API_URL = "https://export.arxiv.org/api/query"
DOWNLOAD_ATTEMPTS = 4
SYSTEM_PROMPT = "You are a helpful assistant that summarizes research papers for a busy reader."
PROMPT = (
    "Summarize the following paper in a few sentences: its question, its method and its findings.\n\n{text}"
)
MAX_TOKENS = 512
# Errors that belong to one paper's text (too long for the model, refused as invalid): kept with
# the paper like an unreadable PDF. Any other model error fails the batch so that it is not cached.
PAPER_ERRORS = frozenset({"ContextLengthError", "BadRequestError"})


class Paper(BaseModel):
    """One paper as the pipeline passes it around: its text, or why there is none."""

    id: str
    title: str
    url: str
    text: str = ""
    error: str | None = None


class PaperSummary(BaseModel):
    id: str
    title: str
    url: str
    summary: str | None
    error: str | None = None
    model: str
    served_by: str


class Summary(SQLModel, table=True):
    """One row per paper and model: `sqlite3 .nimflow/nimflow.db 'select title, summary from summary'`.

    Keyed by (paper_id, model), the model being the adapter when one is used: a rerun leaves the
    rows as they were (with the run that wrote them), a paper whose text changed gets its new
    summary, and another model or adapter adds rows of its own."""

    __tablename__ = "summary"

    paper_id: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    title: str
    url: str
    summary: str | None = None
    error: str | None = None
    served_by: str
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))


nim = nf.NIM(
    image="nvcr.io/nim/meta/llama3-8b-instruct:1.0.0",
    secrets=nf.NIMSecrets(ngc_api_key="NGC_API_KEY", hf_token="HF_TOKEN"),
    hf_repo_ids=[REPO_ID],  # LoRA adapters, served as models named after their folder
    env={"NIM_PEFT_SOURCE": "/home/nvs/loras"},
    gpu=1,
    mem="20Gi",
    shm_size="16Gi",
)
# (1, 4): the 10 batches of top_k=100 papers wait on one 1-GPU replica; a 4-GPU node serves 4 at once.
actor = nf.ActorEnvironment(name="nim-actor", server=nim, replica_count=(1, 4), ttl_seconds=900)


# --------------------------------------------------------------------------------------------------
# Loading papers


@nf.task
def fingerprint_source(source: str | None = None) -> str:
    """A digest of the PDFs in `source` ("" for arXiv). Not cached: it is how load_arxiv's cache
    notices that the folder changed."""
    if source is None:
        return ""
    digest = hashlib.sha256()
    for path in local_pdfs(source):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@nf.task(cache=True, cache_version="1")
def load_arxiv(
    query: str = "reasoning",
    top_k: int = 100,
    batch_size: int = 10,
    chars_max: int = 8000,
    source: str | None = None,
    source_digest: str = "",
) -> list[list[Paper]]:
    """Papers in batches of `batch_size`, each with at most `chars_max` characters of text.

    `source_digest` is there for the cache key only: when the PDFs in `source` change, so does
    the key, and the folder is read again."""
    for name, value in (("top_k", top_k), ("batch_size", batch_size), ("chars_max", chars_max)):
        if value < 1:
            raise nf.UserInputError(f"--{name.replace('_', '-')} must be at least 1, not {value}.")
    papers = read_folder(source, top_k, chars_max) if source else search_arxiv(query, top_k, chars_max)
    return [papers[i : i + batch_size] for i in range(0, len(papers), batch_size)]


def search_arxiv(query: str, top_k: int, chars_max: int) -> list[Paper]:
    import arxiv  # here: it brings requests, feedparser and lxml, which a cached rerun never needs

    client = arxiv.Client(page_size=min(top_k, 100), delay_seconds=3.0, num_retries=3)
    client.query_url_format = os.environ.get("ARXIV_API_URL", ARXIV_API_URL) + "?{}"
    search = arxiv.Search(query=query, max_results=top_k, sort_by=arxiv.SortCriterion.Relevance)
    try:
        results = list(client.results(search))
    finally:
        client._session.close()  # the client never closes its requests session itself
    if not results:
        raise nf.UserInputError(f"arXiv found no papers for --query {query!r}; try another query.")
    papers: list[Paper] = []
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=10.0)) as http:
        for position, result in enumerate(results, start=1):
            paper = Paper(id=result.get_short_id(), title=result.title, url=result.entry_id)
            if result.pdf_url is None:
                paper.error = "arXiv lists no PDF for this paper"
            else:
                data = download_pdf(http, paper, result.pdf_url)
                if data is not None:
                    fill_text(paper, data, chars_max)
            print_progress(position, len(results), paper)
            papers.append(paper)
    return papers


def read_folder(source: str, top_k: int, chars_max: int) -> list[Paper]:
    paths = local_pdfs(source)[:top_k]
    papers: list[Paper] = []
    for position, path in enumerate(paths, start=1):
        paper = Paper(id=path.stem, title=path.stem, url=path.resolve().as_uri())
        fill_text(paper, path.read_bytes(), chars_max)
        print_progress(position, len(paths), paper)
        papers.append(paper)
    return papers


def local_pdfs(source: str) -> list[Path]:
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise nf.UserInputError(f"--source {source}: no such folder. Pass a folder that holds PDF files.")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".pdf")
    if not paths:
        raise nf.UserInputError(f"--source {source}: the folder holds no .pdf files.")
    return paths


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in (408, 429, 500, 502, 503, 504)
    return isinstance(exc, httpx.TransportError)  # connection refused or reset, timeouts


@retry(
    retry=retry_if_exception(_retryable),
    stop=stop_after_attempt(DOWNLOAD_ATTEMPTS),
    wait=wait_exponential(multiplier=0.5, max=8.0),
    reraise=True,
)
def _get(http: httpx.Client, url: str) -> bytes:
    response = http.get(url)
    response.raise_for_status()
    return response.content


def download_pdf(http: httpx.Client, paper: Paper, url: str) -> bytes | None:
    """The PDF's bytes; None (with paper.error set) when the paper has no PDF to give.

    Failures that may pass (network, 5xx, 429) raise after the retries, so they are not cached."""
    try:
        return _get(http, url)
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if _retryable(exc):
            raise RuntimeError(
                f"paper {paper.id}: downloading {url} kept failing (HTTP {status}) after "
                f"{DOWNLOAD_ATTEMPTS} attempts; arXiv may be busy. Run the same command again later."
            ) from exc
        paper.error = f"the PDF could not be downloaded: HTTP {status} from {url}"
        return None
    except httpx.TransportError as exc:
        raise RuntimeError(
            f"paper {paper.id}: downloading {url} failed after {DOWNLOAD_ATTEMPTS} attempts "
            f"({type(exc).__name__}: {exc}). Check the network and run the same command again."
        ) from exc


def fill_text(paper: Paper, data: bytes, chars_max: int) -> None:
    """Set the paper's text (at most chars_max characters) and title, or its error."""
    if b"%PDF-" not in data[:1024]:  # e.g. an HTML error page: MuPDF would read it as a document
        paper.error = f"not a readable PDF (it starts with {data[:16]!r})"
        return
    import pymupdf  # here, not at the top: its import takes 0.6 s that a cached run never needs

    try:
        with pymupdf.open(stream=data, filetype="pdf") as doc:  # type: ignore[no-untyped-call]
            if doc.needs_pass:
                paper.error = "the PDF is password-protected"
                return
            if doc.page_count == 0:
                paper.error = "not a readable PDF (no pages: the file is damaged)"
                return
            parts: list[str] = []
            size = 0
            for page in doc.pages():  # stop early: only the first chars_max characters are kept
                text = page.get_text()
                parts.append(text)
                size += len(text)
                if size >= chars_max:
                    break
            title = (doc.metadata or {}).get("title") or ""
    except Exception as exc:  # pymupdf raises FileDataError, RuntimeError, ValueError for bad files
        paper.error = f"not a readable PDF ({type(exc).__name__}: {exc})"
        return
    text = "".join(parts).strip()
    if not text:
        paper.error = "the PDF has no text layer (a scan, or blank pages); nothing to summarize"
        return
    paper.text = text[:chars_max]
    if paper.title == paper.id:  # a local file: the PDF's own title, else its first line
        paper.title = title.strip() or text.splitlines()[0].strip()[:200]


def print_progress(position: int, total: int, paper: Paper) -> None:
    status = f"error: {paper.error}" if paper.error else f"{len(paper.text)} characters"
    print(f"[{position}/{total}] {paper.id}: {status}", flush=True)


# --------------------------------------------------------------------------------------------------
# Summarizing on the NIM actor


def adapter_name(repo_id: str | None) -> str | None:
    """NIM serves a LoRA adapter under the name of its folder: the repo id's last part."""
    return repo_id.rstrip("/").rsplit("/", 1)[-1] if repo_id else None


@actor.task(cache=True, cache_version="1")
async def generate_summary(arxiv_pdfs: list[Paper], repo_id: str | None) -> list[PaperSummary]:
    llm = nf.current_actor()  # .client (AsyncOpenAI routed to the replicas), .model, .served_by
    model = adapter_name(repo_id) or llm.model
    readable = [paper for paper in arxiv_pdfs if paper.error is None]
    answers = await chat_many(
        [PROMPT.format(text=paper.text) for paper in readable],
        system=SYSTEM_PROMPT,
        model=model,
        max_tokens=MAX_TOKENS,
        ids=[paper.id for paper in readable],
    )
    failed = [a for a in answers if a.error is not None and a.error_type not in PAPER_ERRORS]
    if failed:
        raise nf.LLMError(
            f"{len(failed)} of {len(answers)} papers of this batch could not be summarized; "
            f"first: {failed[0].error}"
        )
    answer_of = iter(answers)  # in the order of `readable`
    summaries = []
    for paper in arxiv_pdfs:
        answer = next(answer_of) if paper.error is None else None
        summaries.append(
            PaperSummary(
                id=paper.id,
                title=paper.title,
                url=paper.url,
                summary=answer.text if answer is not None else None,
                error=paper.error or (answer.error if answer is not None else None),
                model=model,
                served_by=llm.served_by,
            )
        )
    return summaries


# --------------------------------------------------------------------------------------------------
# Saving


@nf.task
def save_summaries(summaries: list[list[PaperSummary]]) -> list[PaperSummary]:
    """One row per paper and model in the `summary` table (kept as it is on a rerun); returns the summaries."""
    flat = [summary for batch in summaries for summary in batch]
    run_id = nf.current_run_id() or "none"
    created = datetime.now(UTC)
    rows = [
        {
            "run_id": run_id,
            "paper_id": s.id,
            "title": s.title,
            "url": s.url,
            "summary": s.summary,
            "error": s.error,
            "model": s.model,
            "served_by": s.served_by,
            "created": created,
        }
        for s in flat
    ]
    with nf.session() as db:
        save_results(db, Summary, rows, compare=("title", "url", "summary", "error"))
        db.commit()
    for s in flat:
        if s.error is not None:
            log.warning("paper %s (%s) was not summarized: %s", s.id, s.title, s.error)
    return flat


@nf.workflow
def batch_inference_wf(
    query: str = "reasoning",
    top_k: int = 100,
    batch_size: int = 10,
    source: str | None = None,
    repo_id: str | None = REPO_ID,
    chars_max: int = 8000,
) -> list[PaperSummary]:
    """Summarize the top_k arXiv papers for `query` (or the PDFs in `source`) with NIM.

    `repo_id` picks the LoRA adapter the summaries come from; pass `--repo-id null` for the base model.
    """
    digest = fingerprint_source(source=source)
    pdfs = load_arxiv(
        query=query,
        top_k=top_k,
        batch_size=batch_size,
        chars_max=chars_max,
        source=source,
        source_digest=digest,
    )
    summaries = nf.map_task(functools.partial(generate_summary, repo_id=repo_id))(arxiv_pdfs=pdfs)
    return save_summaries(summaries=summaries)
