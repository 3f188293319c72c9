"""Named-entity recognition with Gemma served by vLLM, structured output, results in SQLite.

    nimflow run pipelines/ner.py                                   # the built-in sample sentences
    nimflow run pipelines/ner.py --text "Ada Lovelace met Charles Babbage in London in 1833."
    nimflow run pipelines/ner.py --file examples/texts.jsonl       # one {"id": ..., "text": ...} per line
    nimflow run pipelines/ner.py --server vllm-actor=fake          # no GPU: the fake OpenAI server
    nimflow run pipelines/ner.py --sample @artifact:TextSample     # the latest published sample
    nimflow serve pipelines/ner.py --server vllm-actor=fake        # the launch plans, until Ctrl-C

Each text is one map item on a warm vLLM actor. The model answers with JSON constrained by the
`EntityExtraction` schema; `nimflow.llm.extract` validates it and asks again when the output was
cut short. A text whose answer never validates fails on its own: the others are stored, and the
run lists the failure. The results go to the `entities` table, keyed by text id, text digest
and model: a rerun leaves the table as it was, another model adds its own rows.

As in the tutorial, two launch plans run it on a schedule: `upstream_wf` (text_samples.py)
publishes a `TextSample` artifact every minute, and `ner_wf` runs on each new version of it.
"""

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
from pydantic import BaseModel
from results import save_results
from sqlmodel import Field, SQLModel
from text_samples import SAMPLE_TEXTS, TextSample, TextSampleArtifact, get_text, upstream_wf

import nimflow as nf
from nimflow.llm import extract

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "Find the named entities in the user's text: people, organizations, locations and dates. "
    "Copy each entity exactly as it is written in the text, once. Answer with JSON only."
)
# Room for the JSON answer. A cut answer is asked for again with twice the room, up to the limit:
# the server's context (--max-model-len=2000) must hold the text and the answer together.
MAX_TOKENS = 512
MAX_TOKENS_LIMIT = 1024
# A few texts whose answers do not validate should not throw away the rest, but when most fail
# (a broken server, a model without structured output) the run should fail.
MIN_SUCCESS_RATIO = 0.5

class EntityExtraction(BaseModel):
    persons: list[str] = pydantic.Field(description="Names of people, as written in the text.")
    organizations: list[str] = pydantic.Field(description="Companies, institutions, agencies, teams.")
    locations: list[str] = pydantic.Field(description="Cities, countries, regions, places.")
    dates: list[str] = pydantic.Field(description="Dates and periods, as written in the text.")


class TextItem(BaseModel):
    id: str
    text: str


class TextEntities(BaseModel):
    id: str
    text: str
    entities: EntityExtraction
    model: str
    served_by: str


class Entities(SQLModel, table=True):
    """One row per text and model: `sqlite3 .nimflow/nimflow.db 'select text_id, entities from entities'`.

    Keyed by (text_id, text_sha256, model): a rerun leaves the rows as they were (with the run
    that wrote them), another model adds its own, and another text under a reused id (every
    `--text` is id "text") gets its own row. The text id is only ever a column value, never a
    file name or a path."""

    __tablename__ = "entities"

    text_id: str = Field(primary_key=True)
    text_sha256: str = Field(primary_key=True)
    model: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    text: str
    entities: str  # EntityExtraction as JSON
    served_by: str
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))


vllm = nf.VLLM(model="google/gemma-7b-it", args=["--dtype=half", "--max-model-len=2000"], hf_token="HF_TOKEN")
# (1, 2): gemma-7b in half precision fits one 24 GB GPU; a second one halves a long extraction.
actor = nf.ActorEnvironment(name="vllm-actor", server=vllm, replica_count=(1, 2), ttl_seconds=300)


@nf.task
def load_texts(
    text: str | None = None, file: str | None = None, sample: TextSample | None = None
) -> list[TextItem]:
    """The texts to read: `--text`, the lines of `--file`, a published sample, or the built-in ones.

    Not cached: the file may change between runs, and reading it costs nothing next to the model."""
    if sum(given is not None for given in (text, file, sample)) > 1:
        raise nf.UserInputError("give one of --text, --file and --sample, not several.")
    if sample is not None:
        return [TextItem(id=sample.id, text=sample.text)]
    if text is not None:
        if not text.strip():
            raise nf.UserInputError("--text is empty.")
        return [TextItem(id="text", text=text)]
    if file is not None:
        return read_jsonl(Path(file))
    return [TextItem(id=f"sample-{i}", text=t) for i, t in enumerate(SAMPLE_TEXTS, start=1)]


def read_jsonl(path: Path) -> list[TextItem]:
    """One JSON object per line with an `id` (string or integer) and a non-empty `text`.

    A duplicate id is an error, not a silent pick: the id is how results are found again, and two
    texts under one id would make one of them unreachable (or hide a mistake in the file)."""
    if not path.is_file():
        raise nf.UserInputError(f"--file {path}: no such file. Pass a JSONL file of {{'id', 'text'}} lines.")
    items: list[TextItem] = []
    first_line: dict[str, int] = {}
    duplicates: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise nf.UserInputError(f"{where}: not valid JSON ({exc.msg}).") from None
        if not isinstance(record, dict):
            raise nf.UserInputError(f"{where}: expected an object with 'id' and 'text'.")
        text_id, text = record.get("id"), record.get("text")
        if isinstance(text_id, bool) or not isinstance(text_id, str | int) or str(text_id) == "":
            raise nf.UserInputError(f"{where}: 'id' must be a non-empty string or an integer.")
        if not isinstance(text, str) or not text.strip():
            raise nf.UserInputError(f"{where}: 'text' must be a non-empty string.")
        key = str(text_id)
        if key in first_line:
            duplicates.append(f"{key!r} (lines {first_line[key]} and {number})")
        else:
            first_line[key] = number
        items.append(TextItem(id=key, text=text))
    if duplicates:
        raise nf.UserInputError(
            f"{path}: duplicate text ids: {', '.join(duplicates[:5])}"
            + (f" and {len(duplicates) - 5} more" if len(duplicates) > 5 else "")
            + ". Give every text its own id."
        )
    if not items:
        raise nf.UserInputError(f"{path}: the file holds no texts.")
    return items


@actor.task(cache=True, cache_version="1")
async def named_entity_recognition(item: TextItem) -> TextEntities:
    llm = nf.current_actor()
    entities = await extract(
        item.text,
        EntityExtraction,
        instructions=INSTRUCTIONS,
        max_tokens=MAX_TOKENS,
        max_tokens_limit=MAX_TOKENS_LIMIT,
        item_id=item.id,
    )
    return TextEntities(
        id=item.id, text=item.text, entities=entities, model=llm.model, served_by=llm.served_by
    )


@nf.task
def save_entities(texts: list[TextItem], results: list[TextEntities | None]) -> list[TextEntities]:
    """One row per text and model in the `entities` table (kept as it is on a rerun); returns what was found."""
    run_id = nf.current_run_id() or "none"
    found = [r for r in results if r is not None]
    created = datetime.now(UTC)
    rows = [
        {
            "text_id": r.id,
            "text_sha256": hashlib.sha256(r.text.encode()).hexdigest(),
            "model": r.model,
            "run_id": run_id,
            "text": r.text,
            "entities": r.entities.model_dump_json(),
            "served_by": r.served_by,
            "created": created,
        }
        for r in found
    ]
    with nf.session() as db:
        save_results(db, Entities, rows, compare=("entities",))
        db.commit()
    for item, result in zip(texts, results, strict=True):
        if result is None:
            log.warning("text %r has no entities: its extraction failed (see `nimflow show`)", item.id)
    return found


@nf.workflow
def ner_wf(
    text: str | None = None, file: str | None = None, sample: TextSample | None = None
) -> list[TextEntities]:
    """Find persons, organizations, locations and dates in `text`, the texts of `file`, a published
    `sample` (`--sample @artifact:TextSample`), or the built-in samples."""
    texts = load_texts(text=text, file=file, sample=sample)
    results = nf.map_task(named_entity_recognition, min_success_ratio=MIN_SUCCESS_RATIO)(item=texts)
    return save_entities(texts=texts, results=results)


# --------------------------------------------------------------------------------------------------
# Launch plans, for `nimflow serve pipelines/ner.py`

upstream_plan = nf.LaunchPlan(upstream_wf, "text-sample-every-minute", schedule=nf.FixedRate(timedelta(minutes=1)))
ner_plan = nf.LaunchPlan(
    ner_wf,
    "ner-on-text-sample",
    inputs={"sample": TextSampleArtifact.query()},
    trigger=nf.OnArtifact(TextSampleArtifact),
)

__all__ = ["SAMPLE_TEXTS", "TextSample", "get_text", "ner_plan", "ner_wf", "upstream_plan", "upstream_wf"]
