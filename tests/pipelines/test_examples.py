"""The sample data under examples/: the PDFs match their generator, and both pipelines read them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pipeline_support import EXAMPLES


def test_make_papers_reproduces_the_committed_pdfs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_papers.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in tmp_path.glob("*.pdf"))
    committed = sorted(p.name for p in (EXAMPLES / "papers").glob("*.pdf"))
    assert made == committed and len(made) >= 3
    for name in made:
        data = (tmp_path / name).read_bytes()
        assert len(data) < 10_000  # a few KB each
        # Byte for byte: fixed dates and no random document id. After a pymupdf upgrade changes
        # its output, run `python examples/make_papers.py` and commit the result.
        assert data == (EXAMPLES / "papers" / name).read_bytes(), name


def test_sample_papers_have_text_and_titles(arxiv_summary: ModuleType) -> None:
    (batch,) = arxiv_summary.load_arxiv(source=str(EXAMPLES / "papers"))
    assert len(batch) >= 3
    for paper in batch:
        assert paper.error is None
        assert paper.title != paper.id  # from the PDF's metadata
        assert 1000 < len(paper.text) < 8000
        assert "fictional" in paper.text


def test_sample_texts_load(ner: ModuleType) -> None:
    texts = ner.load_texts(file=str(EXAMPLES / "texts.jsonl"))
    assert len(texts) == len({t.id for t in texts}) >= 5
