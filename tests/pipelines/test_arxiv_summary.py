"""arxiv_summary.py end to end against the fake OpenAI server, over real HTTP.

In-process runs serve `nim-actor` with the fake server of the `fake_openai_factory` fixture
(`--server nim-actor=endpoint:URL`), so the tests can read its request log; the CLI tests run
`nimflow run ... --server nim-actor=fake` in a subprocess, as a user would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pipeline_support import (
    ADAPTER,
    CORRUPT_PDF,
    EXAMPLES,
    ArxivStub,
    empty_pdf,
    make_pdf,
    nimflow_cli,
    paper_text,
    query,
)

import nimflow as nf
from nimflow.testing import FakeServer

FakeFactory = Callable[..., FakeServer]


@pytest.fixture
def nim_fake(fake_openai_factory: FakeFactory) -> FakeServer:
    """A fake server that serves what the NIM actor serves: Llama 3 and the tutorial's adapter."""
    return fake_openai_factory(model="meta/llama3-8b-instruct", adapters=[ADAPTER])


def servers(fake: FakeServer) -> dict[str, str]:
    return {"nim-actor": f"endpoint:{fake.base_url}"}


def chat_requests(fake: FakeServer) -> list[Any]:
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


@pytest.fixture
def papers(tmp_path: Path) -> Path:
    """Three good papers, a corrupt one, an empty one and a long one."""
    folder = tmp_path / "papers"
    folder.mkdir()
    for n in range(1, 4):
        (folder / f"good-{n}.pdf").write_bytes(make_pdf(paper_text(n), title=f"Good paper {n}"))
    (folder / "corrupt.pdf").write_bytes(CORRUPT_PDF)
    (folder / "empty.pdf").write_bytes(empty_pdf())
    long_text = " ".join(paper_text(n) for n in range(100, 140))
    (folder / "long.pdf").write_bytes(make_pdf(long_text, title="A long paper", pages=3))
    return folder


def test_summaries_from_a_folder(
    arxiv_summary: ModuleType, nim_fake: FakeServer, papers: Path, nimflow_home: Path
) -> None:
    result = nf.run(
        arxiv_summary.batch_inference_wf,
        source=str(papers),
        batch_size=4,
        chars_max=600,
        servers=servers(nim_fake),
    )
    assert result.status == "succeeded"
    by_id = {s.id: s for s in result.outputs}
    assert list(by_id) == ["corrupt", "empty", "good-1", "good-2", "good-3", "long"]

    # The good papers are summarized from their own text, by the adapter.
    for n in range(1, 4):
        summary = by_id[f"good-{n}"]
        assert summary.error is None
        assert summary.title == f"Good paper {n}"
        assert f"Paper number {n} studies reasoning" in (summary.summary or "")
        assert summary.model == ADAPTER
    # The unreadable papers carry a clear error and were never sent to the model.
    assert by_id["corrupt"].summary is None
    assert by_id["corrupt"].error == "not a readable PDF (no pages: the file is damaged)"
    assert by_id["empty"].summary is None
    assert "no text layer" in (by_id["empty"].error or "")

    requests = chat_requests(nim_fake)
    assert len(requests) == 4
    assert {r.model for r in requests} == {ADAPTER}
    # The long paper reached the model cut at chars_max.
    (long_prompt,) = [r.prompt for r in requests if "Paper number 100 " in r.prompt]
    document = long_prompt.split("\n\n", 1)[1]
    assert len(document) == 600
    assert all(len(r.prompt.split("\n\n", 1)[1]) <= 600 for r in requests)

    # One row per paper in the summary table, readable with plain sqlite3.
    rows = query(
        nimflow_home,
        "select paper_id, title, url, summary, error, model, served_by, created from summary where run_id = ?",
        result.run_id,
    )
    assert sorted(r[0] for r in rows) == sorted(by_id)
    row = next(r for r in rows if r[0] == "good-1")
    assert row[1] == "Good paper 1"
    assert row[2] == (papers / "good-1.pdf").resolve().as_uri()
    assert row[3] == by_id["good-1"].summary
    assert row[4] is None and row[5] == ADAPTER
    assert row[6].startswith("endpoint ")
    assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", row[7])
    errors = dict(query(nimflow_home, "select paper_id, error from summary where error is not null"))
    assert set(errors) == {"corrupt", "empty"}


def test_second_run_is_fully_cached(
    arxiv_summary: ModuleType, nim_fake: FakeServer, papers: Path, nimflow_home: Path
) -> None:
    inputs: dict[str, Any] = {"source": str(papers), "batch_size": 2}
    first = nf.run(arxiv_summary.batch_inference_wf, servers=servers(nim_fake), **inputs)
    assert len(chat_requests(nim_fake)) == 4
    nim_fake.clear_log()
    after_first = before_rows(nimflow_home, first.run_id)

    second = nf.run(arxiv_summary.batch_inference_wf, servers=servers(nim_fake), **inputs)
    assert second.outputs == first.outputs
    assert nim_fake.requests == []  # not even a model list: no summary needed the server
    hits = query(
        nimflow_home,
        "select task, cache_hit from taskrun where run_id = ? and task in (?, ?) and (item is not null or task = ?)",
        second.run_id,
        "arxiv_summary.load_arxiv",
        "arxiv_summary.generate_summary",
        "arxiv_summary.load_arxiv",
    )
    assert sorted(hits) == [("arxiv_summary.generate_summary", 1)] * 3 + [("arxiv_summary.load_arxiv", 1)]
    # The rerun leaves the result table as it was: one row per paper and model, from the first run.
    table = "select paper_id, model, run_id, title, url, summary, error, served_by, created from summary"
    assert len(after_first) == 6
    assert query(nimflow_home, table) == after_first


def before_rows(home: Path, run_id: str) -> list[tuple[Any, ...]]:
    rows = query(
        home, "select paper_id, model, run_id, title, url, summary, error, served_by, created from summary"
    )
    assert {r[2] for r in rows} == {run_id}
    return rows


def test_a_changed_folder_is_read_again(
    arxiv_summary: ModuleType, nim_fake: FakeServer, papers: Path, nimflow_home: Path
) -> None:
    first = nf.run(arxiv_summary.batch_inference_wf, source=str(papers), servers=servers(nim_fake))
    (papers / "good-1.pdf").write_bytes(make_pdf(paper_text(77), title="Good paper 1, revised"))
    second = nf.run(arxiv_summary.batch_inference_wf, source=str(papers), servers=servers(nim_fake))
    before = {s.id: s for s in first.outputs}["good-1"]
    after = {s.id: s for s in second.outputs}["good-1"]
    assert after.title == "Good paper 1, revised"
    assert "Paper number 77" in (after.summary or "") and "Paper number 77" not in (before.summary or "")
    # The table holds the paper's new summary in place of the old one, written by the second run.
    rows = query(nimflow_home, "select run_id, title, summary from summary where paper_id = ?", "good-1")
    assert rows == [(second.run_id, "Good paper 1, revised", after.summary)]
    assert query(nimflow_home, "select count(*) from summary") == [(len(first.outputs),)]


def test_another_model_adds_rows_of_its_own(
    arxiv_summary: ModuleType, nim_fake: FakeServer, papers: Path, nimflow_home: Path
) -> None:
    adapter = nf.run(arxiv_summary.batch_inference_wf, source=str(papers), servers=servers(nim_fake))
    base = nf.run(
        arxiv_summary.batch_inference_wf, source=str(papers), repo_id=None, servers=servers(nim_fake)
    )
    counts = dict(query(nimflow_home, "select model, count(*) from summary group by model"))
    assert counts == {ADAPTER: len(adapter.outputs), "meta/llama3-8b-instruct": len(base.outputs)}


def test_base_model_instead_of_the_adapter(
    arxiv_summary: ModuleType, nim_fake: FakeServer, papers: Path
) -> None:
    result = nf.run(
        arxiv_summary.batch_inference_wf, source=str(papers), repo_id=None, servers=servers(nim_fake)
    )
    assert {s.model for s in result.outputs} == {"meta/llama3-8b-instruct"}
    assert {r.model for r in chat_requests(nim_fake)} == {"meta/llama3-8b-instruct"}


def test_an_adapter_the_server_lacks_fails_clearly_and_is_not_cached(
    arxiv_summary: ModuleType, nim_fake: FakeServer, papers: Path, nimflow_home: Path
) -> None:
    with pytest.raises(nf.RunFailedError) as failed:
        nf.run(
            arxiv_summary.batch_inference_wf,
            source=str(papers),
            repo_id="someone/missing-adapter",
            servers=servers(nim_fake),
        )
    message = str(failed.value)
    assert "model 'missing-adapter' is not served by actor 'nim-actor'" in message
    assert ADAPTER in message  # it says what the server does serve
    assert query(
        nimflow_home, "select count(*) from cacheentry where task = ?", "arxiv_summary.generate_summary"
    ) == [(0,)]
    assert query(nimflow_home, "select count(*) from summary") == [(0,)]


def test_summaries_of_arxiv_search_results(
    arxiv_summary: ModuleType, nim_fake: FakeServer, arxiv_stub: ArxivStub, nimflow_home: Path
) -> None:
    arxiv_stub.add("2403.00001v1", "Reasoning with verifiers", make_pdf(paper_text(1)))
    arxiv_stub.add("2403.00002v1", "Corrupt on arrival", CORRUPT_PDF)
    arxiv_stub.add("2403.00003v1", "Reasoning with caches", make_pdf(paper_text(3)))
    result = nf.run(
        arxiv_summary.batch_inference_wf, query="reasoning", top_k=3, batch_size=2, servers=servers(nim_fake)
    )
    by_id = {s.id: s for s in result.outputs}
    assert by_id["2403.00001v1"].url == "http://arxiv.org/abs/2403.00001v1"
    assert by_id["2403.00001v1"].title == "Reasoning with verifiers"
    assert "Paper number 1 studies" in (by_id["2403.00001v1"].summary or "")
    assert "Paper number 3 studies" in (by_id["2403.00003v1"].summary or "")
    assert by_id["2403.00002v1"].error == "not a readable PDF (no pages: the file is damaged)"
    assert len(chat_requests(nim_fake)) == 2
    rows = query(nimflow_home, "select paper_id, url from summary order by paper_id")
    assert rows[0] == ("2403.00001v1", "http://arxiv.org/abs/2403.00001v1")


# -- the command line, with the fake server started by the actor pool ------------------------------


def run_id_of(output: str) -> str:
    match = re.search(r"run ([0-9a-f]{12}) succeeded", output)
    assert match, output
    return match.group(1)


def test_cli_with_the_sample_papers_and_the_fake_server(nimflow_home: Path) -> None:
    """The README's first command: no GPU, no Docker, no internet."""
    done = nimflow_cli(
        "run", "pipelines/arxiv_summary.py", "--source", "examples/papers", "--server", "nim-actor=fake"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "fake server (answers are not from a model)" in output
    run_id = run_id_of(output)

    shown = nimflow_cli("outputs", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    summaries = json.loads(shown.stdout)
    samples = sorted(p.stem for p in (EXAMPLES / "papers").glob("*.pdf"))
    assert [s["id"] for s in summaries] == samples
    assert all(s["summary"] and s["error"] is None for s in summaries)
    assert all("fake server" in s["served_by"] for s in summaries)

    rows = query(nimflow_home, "select paper_id, title, summary from summary where run_id = ?", run_id)
    assert sorted(r[0] for r in rows) == samples
    titles = {r[0]: r[1] for r in rows}
    assert titles["warm-pools"] == "Warm Pools: Keeping GPU Model Servers Ready Between Batch Jobs"

    again = nimflow_cli(
        "run", "pipelines/arxiv_summary.py", "--source", "examples/papers", "--server", "nim-actor=fake"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 failures" in again.stdout and "cache hits" in again.stdout


def test_cli_without_a_gpu_server_names_the_alternatives(nimflow_home: Path, tmp_path: Path) -> None:
    """No Docker engine answers: the error says how to run without one, and nothing falls back."""
    done = nimflow_cli(
        "run",
        "pipelines/arxiv_summary.py",
        "--source",
        "examples/papers",
        env={
            "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
            "NGC_API_KEY": "unused",
            "HF_TOKEN": "unused",
        },
    )
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0, output
    assert "--server nim-actor=fake" in output
    assert "--server nim-actor=endpoint:URL" in output
    assert query(nimflow_home, "select count(*) from summary") == [(0,)]


def test_a_paper_too_long_for_the_model_keeps_its_error(
    arxiv_summary: ModuleType, fake_openai_factory: FakeFactory, papers: Path
) -> None:
    """A context-length error belongs to that paper (like an unreadable PDF); the batch goes on."""
    small = fake_openai_factory(model="meta/llama3-8b-instruct", adapters=[ADAPTER], max_model_len=700)
    result = nf.run(
        arxiv_summary.batch_inference_wf, source=str(papers), chars_max=4000, servers=servers(small)
    )
    by_id = {s.id: s for s in result.outputs}
    assert by_id["long"].summary is None
    assert "the prompt is too long for model 'OrpoLlama-3-8B-Instruct'" in (by_id["long"].error or "")
    assert all(by_id[f"good-{n}"].summary for n in range(1, 4))
