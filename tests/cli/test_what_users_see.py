"""What a user sees: the last progress frame, counts, widths, outputs, the cache, secrets, errors."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from nimflow._store import ActorReplica, Store

from .support import nimflow

FAILING = textwrap.dedent(
    """
    import nimflow as nf

    @nf.task(cache=True)
    def square(x: int) -> int:
        if x == 2:
            raise ValueError("two is not allowed " + "and this message is long " * 6)
        return x * x

    @nf.task
    def total(xs: list[int]) -> int:
        return sum(xs)

    @nf.workflow
    def wf(xs: list[int] = [1, 2]) -> int:
        return total(xs=nf.map_task(square)(x=xs))

    @nf.workflow
    def one(xs: list[int] = [3]) -> list[int]:
        return nf.map_task(square)(x=xs)
    """
)
SPINNER = re.compile("[\u2800-\u28ff]")  # rich's dots spinner


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "failing.py"
    path.write_text(FAILING)
    return path


def test_the_last_frame_marks_failed_and_skipped_nodes_and_says_failed_once(pipeline: Path) -> None:
    result = nimflow("run", str(pipeline), "wf", cwd=pipeline.parent)
    assert result.returncode == 1
    assert not SPINNER.search(result.stdout), result.stdout
    assert re.search(r"✗ map_square .*2/2 1 failed", result.stdout), result.stdout
    assert re.search(r"- total .*0/1 skipped", result.stdout), result.stdout
    assert "failed failed" not in result.stdout
    # Piped: the long message stays on one line instead of wrapping at 80 columns.
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("failed map_square[1]")]
    assert len(line) > 150 and line.endswith("and this message is long")


def test_counts_are_singular_for_one(pipeline: Path) -> None:
    result = nimflow("run", str(pipeline), "one", cwd=pipeline.parent)
    assert result.returncode == 0, result.stderr
    assert "✓ map_square" in result.stdout
    assert "1 node, 1 map item, 0 cache hits, 0 failures, 0 tokens" in result.stdout


def test_outputs_are_readable_by_default_and_json_with_json(pipeline: Path) -> None:
    assert nimflow("run", str(pipeline), "one", "--xs", "[3, 4]", cwd=pipeline.parent).returncode == 0
    human = nimflow("outputs", cwd=pipeline.parent)
    as_json = nimflow("outputs", "--json", cwd=pipeline.parent)
    assert human.stdout == "- 9\n- 16\n"
    assert as_json.stdout == "[\n  9,\n  16\n]\n"


def test_names_and_urls_are_never_cut_at_80_columns(tmp_path: Path) -> None:
    task = "a_pipeline_module_with_a_long_name.a_task_with_an_even_longer_name_than_that"
    url = "http://127.0.0.1:65000/v1/with/a/long/path/that/goes/on"
    store = Store.open()
    try:
        from nimflow._store import CacheEntry

        store.add(CacheEntry(key="k", task=task, cache_version="1", source_hash="h", output="1"))
        store.add(ActorReplica(id="vllm-actor-with-a-long-name/0", actor="vllm-actor-with-a-long-name",
                               replica=0, kind="endpoint", handle=url, base_url=url, config_hash="c0ffee",
                               model="google/gemma-7b-it", ttl_seconds=900))  # fmt: skip
    finally:
        store.close()
    cache = nimflow("cache", "ls", cwd=tmp_path, terminal_columns=80)
    assert task in cache.stdout and "…" not in cache.stdout
    actors = nimflow("actors", "ls", cwd=tmp_path, terminal_columns=80)
    assert "vllm-actor-with-a-long-name" in actors.stdout and url in actors.stdout
    assert "…" not in actors.stdout
    cleared = nimflow("cache", "clear", task, "--yes", cwd=tmp_path)  # pasted back as shown
    assert cleared.returncode == 0 and "removed 1 cached result of" in cleared.stdout


def test_cache_clear_asks_and_needs_a_task_or_all(pipeline: Path) -> None:
    cwd = pipeline.parent
    assert nimflow("run", str(pipeline), "one", "--xs", "[5, 6]", cwd=cwd).returncode == 0
    bare = nimflow("cache", "clear", cwd=cwd)
    assert bare.returncode == 2 and "error: give a task name" in bare.stderr and "--all" in bare.stderr
    refused = nimflow("cache", "clear", "--all", cwd=cwd, stdin="n\n")
    assert refused.returncode == 1 and "Delete all 2 cached results?" in refused.stdout
    assert "nothing was deleted" in refused.stderr
    assert "failing.square" in nimflow("cache", "ls", cwd=cwd).stdout
    agreed = nimflow("cache", "clear", "--all", cwd=cwd, stdin="y\n")
    assert agreed.returncode == 0 and "removed 2 cached results" in agreed.stdout
    unknown = nimflow("cache", "clear", "nope", "--yes", cwd=cwd)
    assert unknown.returncode == 1 and "no cached results for task 'nope'" in unknown.stderr


def test_secret_create_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = nimflow("secret", "create", "MY_KEY", cwd=tmp_path, stdin="one")
    assert first.returncode == 0, first.stderr
    again = nimflow("secret", "create", "MY_KEY", cwd=tmp_path, stdin="two")
    assert again.returncode == 1 and "stored already; add --force" in again.stderr
    forced = nimflow("secret", "create", "MY_KEY", "--force", cwd=tmp_path, stdin="two")
    assert forced.returncode == 0, forced.stderr


def test_one_error_style_and_the_usage_line(tmp_path: Path) -> None:
    usage = nimflow("show", "--bogus", cwd=tmp_path)
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: No such option") and "nimflow show --help" in usage.stderr
    missing = nimflow("outputs", "abc", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: no run 'abc'")
    for result in (usage, missing):
        assert "Error:" not in result.stderr and "╭" not in result.stderr and "Traceback" not in result.stderr
    helped = nimflow("run", "--help", cwd=tmp_path)
    assert "Usage: nimflow run [OPTIONS] [FILE [WORKFLOW]]" in helped.stdout


def test_a_missing_secret_names_the_server_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    from nimflow._exceptions import SecretMissingError
    from nimflow.actors.containers import plan_container
    from nimflow.actors.servers import VLLM

    # What `nimflow run pipelines/ner.py` meets without HF_TOKEN once a Docker engine answers.
    monkeypatch.delenv("HF_TOKEN", raising=False)
    spec = VLLM(model="google/gemma-7b-it", hf_token="HF_TOKEN")
    with pytest.raises(SecretMissingError) as caught:
        plan_container("vllm-actor", 0, spec, port=8000, ttl=0, host_network=True)
    message = str(caught.value)
    assert "needs the secret HF_TOKEN" in message
    assert "--server vllm-actor=fake" in message and "--server vllm-actor=endpoint:URL" in message
