"""A JSON instance valid for a JSON schema, with strings taken from the input text.

Covers what pydantic and hand-written schemas use: object (properties, required,
additionalProperties), array (items, prefixItems, minItems, maxItems, uniqueItems), string
(minLength, maxLength, format date / date-time / time / email / uri / uuid), integer and
number (minimum, maximum, exclusive bounds, multipleOf), boolean, null, enum, const, anyOf /
oneOf (first non-null branch), allOf (merged), type lists and $ref to #/$defs or
#/definitions. ``pattern`` is not honoured.

Property names steer the content: persons / organizations / locations / dates (and their
synonyms) get the entities found in the text, an array of {text, label} objects gets one
item per entity, "summary"-like strings get the summary, "title"-like strings a short phrase.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ._answers import iter_sentences, summarize
from ._ner import ENTITY_KINDS, Entities, extract_entities

_MAX_DEPTH = 8
_DEFAULT_ITEMS = 2
_MAX_ENTITY_ITEMS = 25
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")

_ENTITY_FIELDS = {
    "persons": {"persons", "person", "people", "names", "personnames", "individuals", "per", "authors"},
    "organizations": {
        "organizations", "organization", "organisations", "organisation", "orgs", "org",
        "companies", "company", "institutions", "affiliations", "affiliation", "employer",
    },
    "locations": {"locations", "location", "places", "place", "cities", "countries", "gpe", "loc", "geo"},
    "dates": {"dates", "date", "times", "years", "when"},
}  # fmt: skip
_FIELD_KIND = {name: kind for kind, names in _ENTITY_FIELDS.items() for name in names}
_LABEL_HINTS = {
    "persons": ("per", "people"),
    "organizations": ("org", "company"),
    "locations": ("loc", "gpe", "place", "geo"),
    "dates": ("date", "time"),
}
_LABEL_NAMES = {
    "persons": "PERSON",
    "organizations": "ORGANIZATION",
    "locations": "LOCATION",
    "dates": "DATE",
}
_TEXT_FIELDS = ("text", "name", "entity", "span", "value", "mention", "word")
_LABEL_FIELDS = ("label", "type", "category", "kind", "entity_type", "tag")
_PERSON_NAME_FIELDS = {"name", "author", "fullname", "speaker", "who"}
_SUMMARY_FIELDS = {"summary", "abstract", "description", "tldr", "answer", "content", "body", "explanation"}
_TITLE_FIELDS = {"title", "name", "headline", "topic", "subject", "label"}
_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "fake@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


class _Builder:
    def __init__(self, root: Mapping[str, Any], text: str) -> None:
        self.root = root
        self.text = text
        self._entities: Entities | None = None
        self._sentences: list[str] | None = None
        self._next_sentence = 0
        self._next_span: dict[str, int] = {}

    # -- sources of strings, computed on first use -------------------------------------------
    @property
    def entities(self) -> Entities:
        if self._entities is None:
            self._entities = extract_entities(self.text)
        return self._entities

    def sentence(self) -> str:
        """The next sentence of the text, cycling, so sibling strings differ."""
        if self._sentences is None:
            self._sentences = [s for _, s in zip(range(32), iter_sentences(self.text), strict=False)]
            self._sentences = self._sentences or ["OK."]
        sentence = self._sentences[self._next_sentence % len(self._sentences)]
        self._next_sentence += 1
        return sentence

    def span(self, kind: str) -> str | None:
        """The next entity of ``kind``, cycling (None when the text has none)."""
        spans = self.entities.of_kind(kind)
        if not spans:
            return None
        position = self._next_span.get(kind, 0)
        self._next_span[kind] = position + 1
        return spans[position % len(spans)]

    # -- schema plumbing -----------------------------------------------------------------------
    def resolve(self, schema: Any) -> Mapping[str, Any]:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema and seen < 32:
            ref = str(schema["$ref"])
            target: Any = self.root
            for part in ref.lstrip("#/").split("/") if ref != "#" else []:
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest}
            seen += 1
        if not isinstance(schema, Mapping):
            return {}
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                branch = self.resolve(sub)
                merged["properties"] = {**merged.get("properties", {}), **branch.get("properties", {})}
                merged["required"] = [*merged.get("required", []), *branch.get("required", [])]
                merged.update({k: v for k, v in branch.items() if k not in ("properties", "required")})
            return merged
        return schema

    def build(self, schema: Any, name: str = "", depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.choose(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [self.resolve(o) for o in schema[key]]
                non_null = [o for o in options if o.get("type") != "null"] or options
                return self.build(
                    {**{k: v for k, v in schema.items() if k != key}, **non_null[0]}, name, depth
                )
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((t for t in kind if t != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self.object(schema, depth)
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "integer":
            return int(self.number(schema, integer=True))
        if kind == "number":
            return self.number(schema, integer=False)
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.string(schema, name)

    # -- one builder per JSON type ----------------------------------------------------------
    def object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        result: dict[str, Any] = {}
        for prop, sub in properties.items():
            # Deep (recursive) schemas stop at the required properties.
            if depth < _MAX_DEPTH or prop in required:
                result[prop] = self.build(sub, prop, depth + 1)
        return result

    def array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", 1_000_000))
        prefix = list(schema.get("prefixItems", []))
        items = self.resolve(schema.get("items", {}))
        values: list[Any]
        kind = _FIELD_KIND.get(_key(name))
        if kind is not None and items.get("type", "string") == "string" and "enum" not in items:
            values = self.entities.of_kind(kind)
        elif (pairs := self.entity_items(items, depth)) is not None:
            values = pairs
        else:
            count = max(low, len(prefix), 0 if depth >= _MAX_DEPTH else min(_DEFAULT_ITEMS, high))
            values = [
                self.build(prefix[i] if i < len(prefix) else items, name, depth + 1) for i in range(count)
            ]
        values = values[:high]
        while len(values) < low:
            values.append(self.build(items, name, depth + 1))
        if schema.get("uniqueItems"):
            values = self.unique(values, items, name, depth, low)
        return values

    def unique(
        self, values: list[Any], items: Mapping[str, Any], name: str, depth: int, low: int
    ) -> list[Any]:
        kept: list[Any] = []
        for value in values:
            if value not in kept:
                kept.append(value)
        for attempt in range(low * 4):
            if len(kept) >= low:
                break
            extra = self.build(items, name, depth + 1)
            if isinstance(extra, str):
                extra = f"{extra} {attempt + 2}"  # sentences cycle; make the extra one distinct
            if extra not in kept:
                kept.append(extra)
        return kept

    def entity_items(self, items: Mapping[str, Any], depth: int) -> list[Any] | None:
        """For [{text, label}] schemas: one item per entity found; None when it is not such a schema."""
        props: Mapping[str, Any] = items.get("properties", {})
        text_field = next((f for f in _TEXT_FIELDS if f in props), None)
        label_field = next((f for f in _LABEL_FIELDS if f in props), None)
        if text_field is None or label_field is None or items.get("type", "object") != "object":
            return None
        label_schema = self.resolve(props[label_field])
        enum = label_schema.get("enum")
        if enum is None and label_schema.get("anyOf"):
            enum = next(
                (self.resolve(o).get("enum") for o in label_schema["anyOf"] if "enum" in self.resolve(o)),
                None,
            )
        result = []
        for span, kind in self.entities.labelled()[:_MAX_ENTITY_ITEMS]:
            if enum:
                label = next((v for v in enum if str(v).lower().startswith(_LABEL_HINTS[kind])), None)
                if label is None:
                    continue
            else:
                label = _LABEL_NAMES[kind]
            item = self.object(items, depth)
            item[text_field] = span
            item[label_field] = label
            result.append(item)
        return result

    def choose(self, options: list[Any]) -> Any:
        """The enum value the text mentions first (deterministic), else the first one."""
        lowered = self.text.lower()
        found = [(lowered.find(str(o).lower()), i) for i, o in enumerate(options) if str(o).strip()]
        hits = sorted((pos, i) for pos, i in found if pos >= 0)
        return options[hits[0][1]] if hits else options[0]

    def string(self, schema: Mapping[str, Any], name: str) -> str:
        key = _key(name)
        fmt = schema.get("format")
        value: str
        if fmt in _FORMATS:
            value = _FORMATS[str(fmt)]
        elif key in _FIELD_KIND:
            value = self.span(_FIELD_KIND[key]) or self.sentence()
        elif key in _PERSON_NAME_FIELDS and (person := self.span("persons")) is not None:
            value = person
        elif key in _SUMMARY_FIELDS:
            value = summarize(self.text)
        elif key in _TITLE_FIELDS:
            value = " ".join(self.sentence().split()[:8]).rstrip(".,;:")
        else:
            value = self.sentence()
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        while len(value) < low:
            value = f"{value} {self.sentence()}".strip()
        if high is not None and len(value) > int(high):
            value = value[: int(high)].rstrip() if int(high) > 0 else ""
            value = value.ljust(low, ".")
        return value

    def number(self, schema: Mapping[str, Any], integer: bool) -> float:
        low = schema.get("minimum", -math.inf)
        high = schema.get("maximum", math.inf)
        step = 1.0 if integer else 0.5
        if "exclusiveMinimum" in schema:
            low = max(low, schema["exclusiveMinimum"] + (1 if integer else 1e-6))
        if "exclusiveMaximum" in schema:
            high = min(high, schema["exclusiveMaximum"] - (1 if integer else 1e-6))
        if integer:
            low, high = (
                math.ceil(low) if low != -math.inf else low,
                math.floor(high) if high != math.inf else high,
            )
        found = _NUMBER.search(self.text)
        value = float(found.group()) if found else 1.0
        if integer:
            value = float(round(value))
        multiple = schema.get("multipleOf")
        if multiple:
            value = math.ceil(value / multiple) * multiple
            if value > high:
                value = math.floor(high / multiple) * multiple
            if value < low:
                value = math.ceil(low / multiple) * multiple
            return float(value)
        if not low <= value <= high:
            value = low if low != -math.inf else high - step if high != math.inf else 1.0
            if low != -math.inf and high != math.inf:
                value = low + (high - low) / 2 if not integer else float(low)
        return value


def schema_instance(schema: Mapping[str, Any], text: str) -> Any:
    """A JSON value valid for ``schema`` whose strings come from ``text`` (deterministic)."""
    return _Builder(schema, text).build(schema)


__all__ = ["ENTITY_KINDS", "schema_instance"]
