"""Write the sample papers in examples/papers/ as small PDFs (pymupdf, no embedded fonts).

    python examples/make_papers.py [OUTPUT_DIR]

The papers are short and fictional: people, institutions, places, dates and results are made up
for nimflow's examples, so that the summarization pipeline has something to read and the NER
pipeline has names, organizations, places and dates to find. The output is byte-for-byte the
same on every run (fixed metadata dates, no random document id), so regenerating the committed
files changes nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymupdf

PAGE = pymupdf.paper_rect("letter")
MARGIN = 72.0
WIDTH = PAGE.width - 2 * MARGIN
FICTION_NOTE = (
    "Note: this is a sample document written for the nimflow examples. The authors, institutions "
    "and results are fictional."
)


@dataclass(frozen=True)
class SamplePaper:
    slug: str  # the file name, and the paper's id in the pipeline
    title: str
    authors: tuple[str, ...]
    affiliations: tuple[str, ...]
    date: str  # as printed under the title
    pdf_date: str  # PDF metadata, D:YYYYMMDDHHmmSSZ
    sections: tuple[tuple[str, str], ...]  # (heading, paragraph)


PAPERS = (
    SamplePaper(
        slug="checking-each-step",
        title="Checking Each Step: Lightweight Verifiers for Arithmetic Reasoning in Small Language Models",
        authors=("Maria Okonkwo", "Tomas Lindqvist", "Hana Sato"),
        affiliations=(
            "Northbridge Institute of Technology, Oslo, Norway",
            "Kestrel Labs, Toronto, Canada",
        ),
        date="14 March 2024",
        pdf_date="D:20240314000000Z",
        sections=(
            (
                "Abstract",
                "Small language models often reach the right answer to a word problem for the wrong "
                "reason, or the wrong answer after one careless step. We train a verifier of 40 million "
                "parameters that reads one reasoning step at a time and flags steps whose arithmetic "
                "does not hold. Used to rerank sampled solutions, the verifier raises the accuracy of a "
                "1.3 billion parameter model on grade-school problems from 41.2% to 52.7%, at a cost of "
                "eight samples per problem. The verifier is cheap enough to run on the same GPU as the "
                "model it checks.",
            ),
            (
                "Introduction",
                "Chain-of-thought prompting asks a model to write out its intermediate steps before the "
                "answer. The steps make errors visible, yet nobody reads them at scale. Our question is "
                "whether a much smaller model can read them instead. Work on this project began in Oslo "
                "in January 2023 and continued at Kestrel Labs in Toronto from August 2023, where Hana "
                "Sato built the evaluation harness.",
            ),
            (
                "Method",
                "Each solution is split into steps at line breaks. For every step the verifier sees the "
                "problem, the previous steps and the current step, and predicts whether the step is "
                "correct. Training labels come from re-executing the arithmetic of each step with a "
                "calculator; steps without arithmetic are labeled by agreement with a reference "
                "solution. A solution's score is the lowest score of its steps, so one bad step is "
                "enough to reject it.",
            ),
            (
                "Results",
                "With one sample per problem the verifier cannot help, and accuracy stays at 41.2%. "
                "With eight samples, picking the solution with the best verifier score gives 52.7%, "
                "against 47.9% for majority voting over the final answers. Most remaining errors are "
                "misread problems rather than arithmetic slips, which a step verifier cannot see.",
            ),
            (
                "Conclusion",
                "A small step verifier is a practical way to spend extra inference compute on "
                "reasoning problems. We will release the training data in the spring of 2024.",
            ),
        ),
    ),
    SamplePaper(
        slug="warm-pools",
        title="Warm Pools: Keeping GPU Model Servers Ready Between Batch Jobs",
        authors=("Priya Raman", "Jonas Weber"),
        affiliations=(
            "Harbor Research Institute, Seattle, United States",
            "Rhine Valley University, Cologne, Germany",
        ),
        date="2 September 2023",
        pdf_date="D:20230902000000Z",
        sections=(
            (
                "Abstract",
                "Batch inference jobs that run every hour spend a surprising share of their time "
                "starting model servers: pulling images, loading weights into GPU memory and warming "
                "up kernels. We measure this cold-start cost for three open models and show that "
                "keeping a small pool of servers warm for a fixed time after each job removes 83% of "
                "it in a typical nightly workload, for a modest amount of idle GPU time.",
            ),
            (
                "Introduction",
                "A server for an eight billion parameter model takes between 90 seconds and several "
                "minutes to become ready, while the batch it serves may finish in less than a minute. "
                "Between June 2023 and August 2023 we logged every job of a shared cluster in Seattle "
                "and found that 61% of the jobs started a server that had been stopped less than ten "
                "minutes earlier.",
            ),
            (
                "Method",
                "A warm pool keeps each server running for a time to live after its last request. A "
                "new job that needs the same model, with the same configuration, adopts the running "
                "server instead of starting another. A small janitor process stops servers whose time "
                "to live has passed, even when no job is running.",
            ),
            (
                "Results",
                "With a time to live of fifteen minutes, the median job in our trace waits 4 seconds "
                "for a server instead of 112 seconds. Idle GPU time grows by 9%, which the cluster "
                "team in Cologne judged acceptable. Longer times to live helped little: jobs that "
                "arrive more than an hour apart gain nothing from a warm server.",
            ),
            (
                "Conclusion",
                "Warm pools are a simple, effective default for recurring batch inference. Jonas Weber "
                "presented an early version of this work in Berlin in May 2023.",
            ),
        ),
    ),
    SamplePaper(
        slug="cache-keys",
        title="Cache Keys for Reproducible Batch Inference",
        authors=("Lucas Ferreira", "Amara Osei", "Chen Wei"),
        affiliations=(
            "Atlantic Data Laboratory, Lisbon, Portugal",
            "Savanna Computing Institute, Nairobi, Kenya",
        ),
        date="21 November 2023",
        pdf_date="D:20231121000000Z",
        sections=(
            (
                "Abstract",
                "Caching the results of model calls saves money only if a cached answer is reused "
                "exactly when it is still valid. We describe cache keys for batch inference that "
                "combine the task's name, a version the author bumps by hand, the task's inputs and "
                "the identity of the model server. Over six months of pipelines at two sites, these "
                "keys avoided 71% of model calls without serving a single stale answer that we could "
                "find.",
            ),
            (
                "Introduction",
                "A team that reruns a pipeline after fixing its last step should not pay again for the "
                "first steps. A team that changes the model should get new answers. Both wishes are "
                "easy to state and easy to get wrong. Lucas Ferreira first described the problem at a "
                "workshop in Lisbon on 4 April 2023.",
            ),
            (
                "Method",
                "Inputs are turned into canonical JSON before they are hashed, so that the order of "
                "dictionary keys does not matter. The identity of the server includes the container "
                "image and the names of any adapters it serves. The source code of the task is hashed "
                "as well, but a change only produces a warning: authors decide when a change matters.",
            ),
            (
                "Results",
                "At the Nairobi site, where pipelines are rerun often after partial failures, 79% of "
                "calls were served from the cache; in Lisbon the figure was 63%. Manual review by "
                "Amara Osei and Chen Wei of 500 cached answers found none that a fresh call would have "
                "changed in substance.",
            ),
            (
                "Conclusion",
                "Explicit versions, canonical inputs and server identity make caching safe enough to be "
                "on by default.",
            ),
        ),
    ),
    SamplePaper(
        slug="reading-tables",
        title="Reading Tables Is Harder Than Reading Prose: A Small Study of Document Question Answering",
        authors=("Sofia Marchetti", "Daniel Brooks"),
        affiliations=(
            "Lakeside University, Chicago, United States",
            "Meridian Institute for Language Research, Dublin, Ireland",
        ),
        date="7 June 2024",
        pdf_date="D:20240607000000Z",
        sections=(
            (
                "Abstract",
                "Language models answer questions about the prose of a report far better than "
                "questions about its tables. We built 300 questions over 40 public annual reports, "
                "half answerable from prose and half only from tables, and found that four open models "
                "answer 78% of the prose questions but only 46% of the table questions when the report "
                "is given as extracted text.",
            ),
            (
                "Introduction",
                "Text extracted from a PDF keeps the words of a table but loses its structure: the "
                "cells of a row end up on separate lines, far from their column headers. We asked how "
                "much this costs, and whether simple repairs help. The study ran from February 2024 to "
                "April 2024, with annotation done in Dublin.",
            ),
            (
                "Method",
                "Each report was converted with a standard text extractor. For the table questions we "
                "compared three inputs: the raw extracted text, the text with tables rewritten as one "
                "line per row, and the text with tables rewritten as Markdown. Answers were graded by "
                "two annotators, Sofia Marchetti and Daniel Brooks, who agreed on 94% of the cases.",
            ),
            (
                "Results",
                "One line per row raised table accuracy from 46% to 58%; Markdown tables reached 64%. "
                "Prose accuracy did not change. The largest gains were on questions that compare two "
                "columns, such as revenue in 2022 against revenue in 2023.",
            ),
            (
                "Conclusion",
                "Before summarizing or questioning documents with a language model, it pays to keep "
                "the structure of their tables.",
            ),
        ),
    ),
)


# --------------------------------------------------------------------------------------------------
# Layout: lines of (font, size, text), wrapped to the page width, flowed over as many pages as needed.

BODY = ("helv", 10.0)
HEADING = ("hebo", 11.0)
TITLE = ("hebo", 15.0)
AUTHORS = ("helv", 10.5)
AFFILIATION = ("heit", 9.5)
LINE_HEIGHT = 1.35

Line = tuple[tuple[str, float], str]


def wrap(text: str, font: tuple[str, float]) -> list[str]:
    """Greedy word wrap, measured with the font's own metrics."""
    name, size = font
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and pymupdf.get_text_length(candidate, fontname=name, fontsize=size) > WIDTH:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def layout(paper: SamplePaper) -> list[Line]:
    lines: list[Line] = []

    def add(text: str, font: tuple[str, float]) -> None:
        lines.extend((font, line) for line in wrap(text, font))

    def gap() -> None:
        lines.append((BODY, ""))

    add(paper.title, TITLE)
    gap()
    add(", ".join(paper.authors), AUTHORS)
    for affiliation in paper.affiliations:
        add(affiliation, AFFILIATION)
    add(paper.date, AFFILIATION)
    for heading, paragraph in paper.sections:
        gap()
        add(heading, HEADING)
        add(paragraph, BODY)
    gap()
    add(FICTION_NOTE, AFFILIATION)
    return lines


def render(paper: SamplePaper) -> bytes:
    doc: Any = pymupdf.open()  # type: ignore[no-untyped-call]
    bottom = PAGE.height - MARGIN
    page = None
    y = bottom
    for (name, size), text in layout(paper):
        step = size * LINE_HEIGHT
        if page is None or y + step > bottom:
            page = doc.new_page(width=PAGE.width, height=PAGE.height)
            y = MARGIN
        y += step
        if text:
            page.insert_text((MARGIN, y), text, fontname=name, fontsize=size)
    for each in doc:
        each.clean_contents()  # one content stream per page keeps the files a few KB
    doc.set_metadata(
        {
            "title": paper.title,
            "author": ", ".join(paper.authors),
            "subject": "nimflow sample paper (fictional)",
            "creator": "examples/make_papers.py",
            "producer": "PyMuPDF",
            "creationDate": paper.pdf_date,
            "modDate": paper.pdf_date,
        }
    )
    data: bytes = doc.tobytes(garbage=4, deflate=True, no_new_id=True)
    doc.close()
    return data


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "papers"
    out.mkdir(parents=True, exist_ok=True)
    for paper in PAPERS:
        path = out / f"{paper.slug}.pdf"
        data = render(paper)
        path.write_bytes(data)
        print(f"wrote {path} ({len(data) / 1024:.1f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
