"""Loading papers for arxiv_summary.py: arXiv search (against a local stub), PDFs, text, batches.

Tasks called outside a workflow are plain functions, so these call load_arxiv directly.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
import tenacity
from pipeline_support import CORRUPT_PDF, ArxivStub, empty_pdf, make_pdf, paper_text

import nimflow as nf


@pytest.fixture
def no_download_wait(arxiv_summary: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Download retries without the backoff, so the tests stay fast (the attempts stay the same)."""
    monkeypatch.setattr(arxiv_summary._get.retry, "wait", tenacity.wait_none())


def write_pdfs(folder: Path, pdfs: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in pdfs.items():
        (folder / name).write_bytes(data)
    return folder


# -- a local folder ------------------------------------------------------------------------------


def test_local_folder_in_batches_with_titles(arxiv_summary: ModuleType, tmp_path: Path) -> None:
    folder = write_pdfs(
        tmp_path / "papers",
        {f"p{n}.pdf": make_pdf(paper_text(n), title=f"Title {n}") for n in range(1, 6)}
        | {"notes.txt": b"not a pdf, not read", "UPPER.PDF": make_pdf(paper_text(9))},
    )
    batches = arxiv_summary.load_arxiv(source=str(folder), batch_size=2)
    assert [[p.id for p in batch] for batch in batches] == [["UPPER", "p1"], ["p2", "p3"], ["p4", "p5"]]
    p1 = batches[0][1]
    assert p1.title == "Title 1"
    assert p1.url == (folder / "p1.pdf").resolve().as_uri()
    assert "Paper number 1 studies reasoning" in p1.text
    assert p1.error is None
    # No title in the PDF's metadata: its first line stands in.
    assert batches[0][0].title.startswith("Paper number 9 studies")


def test_top_k_caps_a_folder(arxiv_summary: ModuleType, tmp_path: Path) -> None:
    folder = write_pdfs(tmp_path / "papers", {f"p{n}.pdf": make_pdf(paper_text(n)) for n in range(1, 5)})
    batches = arxiv_summary.load_arxiv(source=str(folder), top_k=3, batch_size=10)
    assert [p.id for p in batches[0]] == ["p1", "p2", "p3"]


def test_corrupt_and_empty_pdfs_carry_their_error(arxiv_summary: ModuleType, tmp_path: Path) -> None:
    folder = write_pdfs(
        tmp_path / "papers",
        {"a-good.pdf": make_pdf(paper_text(1)), "b-corrupt.pdf": CORRUPT_PDF, "c-empty.pdf": empty_pdf()},
    )
    (good, corrupt, empty) = arxiv_summary.load_arxiv(source=str(folder))[0]
    assert good.error is None and good.text
    assert corrupt.text == ""
    assert corrupt.error is not None and corrupt.error.startswith("not a readable PDF")
    assert empty.text == ""
    assert empty.error == "the PDF has no text layer (a scan, or blank pages); nothing to summarize"


def test_text_is_cut_at_chars_max(arxiv_summary: ModuleType, tmp_path: Path) -> None:
    long_text = " ".join(paper_text(n) for n in range(60))  # about 13,000 characters over 4 pages
    folder = write_pdfs(tmp_path / "papers", {"long.pdf": make_pdf(long_text, pages=4)})
    (paper,) = arxiv_summary.load_arxiv(source=str(folder), chars_max=1000)[0]
    assert len(paper.text) == 1000
    assert paper.text.startswith("Paper number 0 studies reasoning")
    (full,) = arxiv_summary.load_arxiv(source=str(folder), chars_max=100_000)[0]
    assert len(full.text) > 12_000
    assert full.text.startswith(paper.text)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"source": "does/not/exist"}, "--source does/not/exist: no such folder"),
        ({"batch_size": 0}, "--batch-size must be at least 1, not 0"),
        ({"top_k": -1}, "--top-k must be at least 1, not -1"),
        ({"chars_max": 0}, "--chars-max must be at least 1, not 0"),
    ],
)
def test_bad_inputs_say_what_to_fix(
    arxiv_summary: ModuleType, inputs: dict[str, object], message: str
) -> None:
    with pytest.raises(nf.UserInputError, match=message):
        arxiv_summary.load_arxiv(**inputs)


def test_folder_without_pdfs(arxiv_summary: ModuleType, tmp_path: Path) -> None:
    folder = write_pdfs(tmp_path / "papers", {"readme.txt": b"hello"})
    with pytest.raises(nf.UserInputError, match=r"the folder holds no \.pdf files"):
        arxiv_summary.load_arxiv(source=str(folder))


def test_fingerprint_follows_the_folders_content(arxiv_summary: ModuleType, tmp_path: Path) -> None:
    folder = write_pdfs(tmp_path / "papers", {"a.pdf": make_pdf(paper_text(1))})
    first = arxiv_summary.fingerprint_source(str(folder))
    assert arxiv_summary.fingerprint_source(str(folder)) == first
    (folder / "a.pdf").write_bytes(make_pdf(paper_text(2)))
    assert arxiv_summary.fingerprint_source(str(folder)) != first
    assert arxiv_summary.fingerprint_source(None) == ""


# -- arXiv, through the arxiv client pointed at the stub -------------------------------------------


def test_arxiv_search_downloads_and_batches(arxiv_summary: ModuleType, arxiv_stub: ArxivStub) -> None:
    for n in range(1, 4):
        arxiv_stub.add(f"2403.0000{n}v1", f"Reasoning   paper\n {n}", make_pdf(paper_text(n)))
    batches = arxiv_summary.load_arxiv(query="reasoning", top_k=3, batch_size=2)
    assert [[p.id for p in b] for b in batches] == [["2403.00001v1", "2403.00002v1"], ["2403.00003v1"]]
    first = batches[0][0]
    assert first.title == "Reasoning paper 1"  # whitespace collapsed by the arxiv client
    assert first.url == "http://arxiv.org/abs/2403.00001v1"
    assert "Paper number 1 studies reasoning" in first.text
    searches = [r for r in arxiv_stub.requests if r.startswith("/api/query")]
    assert len(searches) == 1
    assert "search_query=reasoning" in searches[0] and "max_results=3" in searches[0]
    assert sorted(r for r in arxiv_stub.requests if r.startswith("/pdf/")) == [
        "/pdf/2403.00001v1",
        "/pdf/2403.00002v1",
        "/pdf/2403.00003v1",
    ]


def test_arxiv_top_k_limits_the_search(arxiv_summary: ModuleType, arxiv_stub: ArxivStub) -> None:
    for n in range(1, 6):
        arxiv_stub.add(f"2403.0000{n}v1", f"Paper {n}", make_pdf(paper_text(n)))
    batches = arxiv_summary.load_arxiv(query="reasoning", top_k=2)
    assert [p.id for p in batches[0]] == ["2403.00001v1", "2403.00002v1"]
    assert len([r for r in arxiv_stub.requests if r.startswith("/pdf/")]) == 2


@pytest.mark.usefixtures("no_download_wait")
def test_arxiv_download_is_retried(arxiv_summary: ModuleType, arxiv_stub: ArxivStub) -> None:
    arxiv_stub.add("2403.00001v1", "Flaky", make_pdf(paper_text(1)), pdf_statuses=[503, 429])
    (paper,) = arxiv_summary.load_arxiv(query="reasoning", top_k=1)[0]
    assert paper.error is None and "Paper number 1" in paper.text
    assert arxiv_stub.requests.count("/pdf/2403.00001v1") == 3


@pytest.mark.usefixtures("no_download_wait")
def test_arxiv_download_that_keeps_failing_fails_the_task(
    arxiv_summary: ModuleType, arxiv_stub: ArxivStub
) -> None:
    """Not cached as a paper error: it may work next time, so the task fails and is not cached."""
    arxiv_stub.add("2403.00001v1", "Down", make_pdf(paper_text(1)), pdf_statuses=[503] * 10)
    with pytest.raises(RuntimeError, match=r"paper 2403.00001v1: downloading .* kept failing \(HTTP 503\)"):
        arxiv_summary.load_arxiv(query="reasoning", top_k=1)
    assert arxiv_stub.requests.count("/pdf/2403.00001v1") == arxiv_summary.DOWNLOAD_ATTEMPTS


def test_arxiv_paper_problems_stay_with_the_paper(arxiv_summary: ModuleType, arxiv_stub: ArxivStub) -> None:
    arxiv_stub.add("2403.00001v1", "Good", make_pdf(paper_text(1)))
    arxiv_stub.add("2403.00002v1", "Gone", make_pdf(paper_text(2)), pdf_statuses=[404])
    arxiv_stub.add("2403.00003v1", "No PDF link", None)
    arxiv_stub.add("2403.00004v1", "Corrupt", CORRUPT_PDF)
    good, gone, no_link, corrupt = arxiv_summary.load_arxiv(query="reasoning", top_k=4)[0]
    assert good.error is None
    assert gone.error is not None and gone.error.startswith("the PDF could not be downloaded: HTTP 404")
    assert no_link.error == "arXiv lists no PDF for this paper"
    assert corrupt.error is not None and corrupt.error.startswith("not a readable PDF")
    assert arxiv_stub.requests.count("/pdf/2403.00002v1") == 1  # a 404 is not retried


def test_arxiv_without_results(arxiv_summary: ModuleType, arxiv_stub: ArxivStub) -> None:
    with pytest.raises(nf.UserInputError, match="arXiv found no papers for --query 'nothing'"):
        arxiv_summary.load_arxiv(query="nothing")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (
            b"<html><body>Too many requests</body></html>",
            "not a readable PDF (it starts with b'<html><body>Too ",
        ),
        (b"", "not a readable PDF (it starts with b'')"),
        (bytes(range(256)), "not a readable PDF (it starts with b'\\x00\\x01"),
        (b"%PDF-1.7\n" + bytes(range(256)), "not a readable PDF (FileDataError"),
        (CORRUPT_PDF, "not a readable PDF (no pages: the file is damaged)"),
    ],
)
def test_what_is_not_a_pdf(arxiv_summary: ModuleType, data: bytes, error: str) -> None:
    paper = arxiv_summary.Paper(id="x", title="x", url="file:///x.pdf")
    arxiv_summary.fill_text(paper, data, chars_max=100)
    assert paper.text == ""
    assert paper.error.startswith(error)
