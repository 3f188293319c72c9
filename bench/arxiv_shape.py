"""pipelines/arxiv_summary.py on generated documents, for the throughput benchmark.

    nimflow run bench/arxiv_shape.py --server nim-actor=endpoint:http://127.0.0.1:PORT/v1 --n 2000

The pipeline's own actor task (`generate_summary`: one map item per batch of 10 papers, its
papers summarized concurrently with `chat_many` through the actor's routed AsyncOpenAI client)
and its own `save_summaries` (one row per paper in the `summary` table). Only the loader is
replaced: `load_documents` returns the generated documents as Papers in batches, instead of
searching arXiv and reading PDFs, so the workload is the same on every machine and offline.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from pathlib import Path

import harness
import pydantic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))

import arxiv_summary
from arxiv_summary import Paper, PaperSummary, actor, generate_summary, save_summaries

import nimflow as nf

# The hand-written contenders send exactly the pipeline's request.
assert (harness.PROMPT, harness.SYSTEM_PROMPT, harness.MAX_TOKENS) == (
    arxiv_summary.PROMPT,
    arxiv_summary.SYSTEM_PROMPT,
    arxiv_summary.MAX_TOKENS,
), "bench/harness.py no longer mirrors the pipeline's prompt"
assert arxiv_summary.adapter_name(arxiv_summary.REPO_ID) == harness.MODEL


@nf.task(cache=True, cache_version="1")
def load_documents(n: int = 2_000, batch_size: int = 10) -> list[list[Paper]]:
    papers = [
        Paper(id=f"doc-{i}", title=f"Document {i}", url=f"https://example.org/doc/{i}", text=text)
        for i, text in enumerate(harness.make_documents(n))
    ]
    return [papers[i : i + batch_size] for i in range(0, len(papers), batch_size)]


@nf.workflow
def summarize_wf(
    n: int = 2_000, batch_size: int = 10, repo_id: str | None = arxiv_summary.REPO_ID
) -> list[PaperSummary]:
    pdfs = load_documents(n=n, batch_size=batch_size)
    summaries = nf.map_task(functools.partial(generate_summary, repo_id=repo_id))(arxiv_pdfs=pdfs)
    return save_summaries(summaries=summaries)


# The same map written by hand, as user code would: the batch's papers sent
# with asyncio.gather on the actor's AsyncOpenAI client (no chat_many), cache off by the caller.
@actor.task(cache=True, cache_version="1")
async def summarize_gather(arxiv_pdfs: list[Paper]) -> list[str]:
    client = nf.current_actor().client

    async def one(paper: Paper) -> str:
        response = await client.chat.completions.create(**harness.request_body(paper.text))
        return response.choices[0].message.content or ""

    return list(await asyncio.gather(*(one(paper) for paper in arxiv_pdfs)))


@nf.workflow
def gather_wf(n: int = 2_000, batch_size: int = 10) -> list[list[str]]:
    return nf.map_task(summarize_gather)(arxiv_pdfs=load_documents(n=n, batch_size=batch_size))


class Heading(pydantic.BaseModel):
    title: str
    summary: str


# `extract_many` over each batch: one JSON-schema completion per paper, parsed into `Heading`.
@actor.task(cache=True, cache_version="1")
async def extract_headings(arxiv_pdfs: list[Paper]) -> list[str]:
    results = await nf.llm.extract_many(
        [harness.PROMPT.format(text=paper.text) for paper in arxiv_pdfs],
        Heading,
        model=harness.MODEL,
        max_tokens=harness.MAX_TOKENS,
        ids=[paper.id for paper in arxiv_pdfs],
    )
    return [r.value.summary if r.value is not None else f"error: {r.error}" for r in results]


@nf.workflow
def extract_wf(n: int = 2_000, batch_size: int = 10) -> list[list[str]]:
    return nf.map_task(extract_headings)(arxiv_pdfs=load_documents(n=n, batch_size=batch_size))
