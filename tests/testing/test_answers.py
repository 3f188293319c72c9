"""The deterministic answers: summaries, NER spans and JSON-schema instances."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pydantic
import pytest

from nimflow.testing._answers import count_tokens, cut_tokens, document_text, summarize
from nimflow.testing._ner import extract_entities
from nimflow.testing._schema import schema_instance

SENTENCE = (
    "Tim Cook, the CEO of Apple Inc., met Sundar Pichai of Google in Paris on 12 March 2024 "
    "before visiting Stanford University in California."
)


def test_summary_skips_the_instruction_and_keeps_three_sentences() -> None:
    text = "Summarize this paper in two sentences.\n\nFirst point. Second point! Third point? Fourth."
    assert summarize(text) == "First point. Second point! Third point?"
    assert summarize("Summarize:\nOne. Two.") == "One. Two."
    assert summarize("Just one line without an instruction.") == "Just one line without an instruction."
    assert document_text("Body text.\n\nSummarize the text above.") == "Body text."
    assert summarize("   ") == "OK."


def test_summary_is_capped_for_documents_without_sentences() -> None:
    words = " ".join(f"w{i}" for i in range(5000))
    assert count_tokens(summarize(words)) == 120


def test_cut_tokens_keeps_spacing() -> None:
    assert cut_tokens("a  b\nc d", 3) == "a  b\nc"
    assert cut_tokens("a b", 10) == "a b"
    assert cut_tokens("a b", 0) == ""


def test_ner_heuristics_on_a_sample_sentence() -> None:
    entities = extract_entities(SENTENCE)
    assert entities.persons == ["Tim Cook", "Sundar Pichai"]
    assert entities.organizations == ["Apple Inc.", "Google", "Stanford University"]
    assert entities.locations == ["Paris", "California"]
    assert entities.dates == ["12 March 2024"]


def test_ner_more_forms() -> None:
    entities = extract_entities(
        "In 2023, Dr. Smith joined the Massachusetts Institute of Technology in Boston. "
        "Ada Lovelace visited New York in March 2024; Bank of America agreed on 2024-01-05."
    )
    assert entities.persons == ["Smith", "Ada Lovelace"]
    assert entities.organizations == ["Massachusetts Institute of Technology", "Bank of America"]
    assert entities.locations == ["Boston", "New York"]
    assert entities.dates == ["2023", "March 2024", "2024-01-05"]


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Author(pydantic.BaseModel):
    name: str
    affiliation: str | None = None
    h_index: Annotated[int, pydantic.Field(ge=3, le=7)]


class Paper(pydantic.BaseModel):
    title: Annotated[str, pydantic.Field(max_length=20)]
    summary: str
    authors: Annotated[list[Author], pydantic.Field(min_length=3)]
    keywords: Annotated[list[str], pydantic.Field(max_length=1)]
    color: Color
    mood: Literal["happy", "sad"]
    score: Annotated[float, pydantic.Field(gt=0, lt=1)]
    pages: Annotated[int, pydantic.Field(multiple_of=5, ge=12)]
    accepted: bool
    extra: dict[str, int]
    tags: Annotated[set[str], pydantic.Field(min_length=2)]
    pair: tuple[int, str]
    nothing: None = None


class Node(pydantic.BaseModel):
    label: str
    children: list[Node] = []


class Entities(pydantic.BaseModel):
    persons: list[str]
    organizations: list[str]
    locations: list[str]
    dates: list[str]


class Span(pydantic.BaseModel):
    text: str
    label: Literal["PER", "ORG", "LOC"]


class Spans(pydantic.BaseModel):
    entities: list[Span]


@pytest.mark.parametrize("model", [Paper, Node, Entities, Spans, Author])
def test_schema_instances_validate(model: type[pydantic.BaseModel]) -> None:
    schema = model.model_json_schema()
    instance = schema_instance(schema, SENTENCE + " The sky is blue. It has 42 pages.")
    model.model_validate(instance)
    assert schema_instance(schema, SENTENCE) == schema_instance(schema, SENTENCE)  # deterministic


def test_schema_strings_come_from_the_input() -> None:
    paper = Paper.model_validate(schema_instance(Paper.model_json_schema(), SENTENCE + " The sky is blue."))
    assert paper.summary.startswith("Tim Cook")
    assert paper.color is Color.BLUE  # the enum value the text mentions
    assert [a.name for a in paper.authors] == ["Tim Cook", "Sundar Pichai", "Tim Cook"]
    assert paper.authors[0].affiliation == "Apple Inc."


def test_ner_schemas_get_entities() -> None:
    entities = Entities.model_validate(schema_instance(Entities.model_json_schema(), SENTENCE))
    assert entities == Entities(**extract_entities(SENTENCE).__dict__)
    spans = Spans.model_validate(schema_instance(Spans.model_json_schema(), SENTENCE))
    assert [(s.text, s.label) for s in spans.entities] == [
        ("Tim Cook", "PER"),
        ("Sundar Pichai", "PER"),
        ("Apple Inc.", "ORG"),
        ("Google", "ORG"),
        ("Stanford University", "ORG"),
        ("Paris", "LOC"),
        ("California", "LOC"),
    ]


def test_hand_written_schema() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "n": {"type": ["integer", "null"], "exclusiveMinimum": 100},
            "const": {"const": 7},
            "list": {"type": "array", "items": {"$ref": "#/definitions/item"}, "minItems": 2, "maxItems": 2},
            "short": {"type": "string", "minLength": 500},
        },
        "required": ["when", "n"],
        "definitions": {"item": {"allOf": [{"type": "object", "properties": {"x": {"type": "boolean"}}}]}},
    }
    instance = schema_instance(schema, "One sentence here.")
    assert instance["when"] == "2024-01-01T00:00:00Z"
    assert instance["n"] > 100
    assert instance["const"] == 7
    assert instance["list"] == [{"x": True}, {"x": True}]
    assert len(instance["short"]) >= 500
