"""Named-entity spans found by simple, deterministic heuristics.

Good enough to make NER pipelines produce plausible output against the fake server:

- dates: regexes for "12 March 2024", "March 12, 2024", "March 2024", "2024-03-12", "2023";
- candidate names: runs of capitalized words (joined by "of", "for", "and", "&", "de");
- organizations: a run containing a suffix such as Inc, Corp, University, Institute, Labs,
  or a well-known name (Google, NVIDIA, ...);
- locations: a run in a small list of places, or a single word after "in", "at", "from";
- persons: the remaining runs of two to four name-like words, or one word after a title (Dr.).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
_DATE = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:{_MONTHS})\.?,?\s+\d{{4}}"
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"
    rf"|(?:{_MONTHS})\.?\s+\d{{4}}"
    r"|\d{4}-\d{2}-\d{2}"
    r"|(?:1[89]|20)\d{2})\b"
)
_CAPITALIZED = re.compile(r"[A-Z][\w&'.-]*")


def _words(text: str) -> list[str]:
    return text.split()


_CONNECTORS = frozenset({"of", "for", "and", "&", "de", "du", "la", "von", "van"})
_TITLES = frozenset({"Mr", "Mrs", "Ms", "Dr", "Prof", "Professor", "Sir", "President", "CEO", "Senator"})
_PLACE_PREPOSITIONS = frozenset({"in", "at", "from", "near", "to"})
_STOPWORDS = frozenset(
    _words("""A An The This That These Those It Its He She We They I You His Her Our Their In On At For From
    To Of By With As And But Or If When While After Before During Since Although However Moreover
    Here There Today Yesterday Tomorrow Also Then Thus Yet Such Each Every Some Many Most All
    Monday Tuesday Wednesday Thursday Friday Saturday Sunday Abstract Introduction Conclusion
    Summary Summarize Extract Text Figure Table Section Chapter We Our Please""")
) | frozenset(_MONTHS.split("|"))
_ORG_SUFFIXES = frozenset(
    _words("""Inc Inc. Corp Corp. Corporation Co Co. Ltd Ltd. LLC GmbH AG SA plc PLC University Institute
    Institution Labs Lab Laboratory Laboratories Foundation Company Group Bank Agency Association
    Society Council Ministry Department College School Hospital Center Centre Committee Commission
    Press Systems Technologies Research Academy Organization Organisation Union Party Airlines""")
)
_KNOWN_ORGS = frozenset(
    _words("""Google Microsoft Apple Amazon Meta OpenAI NVIDIA Nvidia IBM Intel Facebook DeepMind Anthropic
    Tesla Netflix Samsung Sony MIT NASA NATO UNESCO FDA WHO Harvard Stanford Reuters Oracle AMD
    Alphabet Twitter Uber Airbnb Baidu Alibaba Tencent Huawei Mistral Cohere HuggingFace""")
) | {"Hugging Face", "United Nations", "European Union", "World Bank"}
_KNOWN_PLACES = frozenset(
    _words("""Paris London Berlin Tokyo Beijing Shanghai Delhi Mumbai Moscow Rome Madrid Lisbon Vienna Zurich
    Geneva Amsterdam Brussels Dublin Stockholm Oslo Helsinki Copenhagen Warsaw Prague Athens Istanbul
    Cairo Lagos Nairobi Sydney Melbourne Toronto Vancouver Montreal Chicago Boston Seattle Austin
    Denver Atlanta Miami Dallas Houston Washington California Texas Florida Oregon Massachusetts
    France Germany Italy Spain Portugal England Scotland Ireland Britain Japan China India Russia
    Brazil Canada Mexico Australia Africa Europe Asia America Kenya Nigeria Egypt Israel Korea
    Switzerland Sweden Norway Finland Denmark Poland Austria Belgium Netherlands Greece Turkey
    Singapore Seoul Taiwan Vietnam Indonesia Argentina Chile Peru Colombia""")
) | {
    "New York",
    "San Francisco",
    "Los Angeles",
    "Mountain View",
    "Palo Alto",
    "Santa Clara",
    "Hong Kong",
    "United States",
    "United Kingdom",
    "South Korea",
    "New Delhi",
    "Silicon Valley",
}


@dataclass(frozen=True)
class Entities:
    persons: list[str] = field(default_factory=list)
    organizations: list[str] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[str]:
        return list(getattr(self, kind))

    def labelled(self) -> list[tuple[str, str]]:
        """(span, kind) pairs in a stable order: persons, organizations, locations, dates."""
        return [(span, kind) for kind in ENTITY_KINDS for span in getattr(self, kind)]


ENTITY_KINDS = ("persons", "organizations", "locations", "dates")


def _add(bucket: list[str], span: str) -> None:
    if span and span not in bucket:
        bucket.append(span)


def _ends_phrase(word: str) -> bool:
    """Punctuation after ``word`` ends a name ("Cook, the CEO"); "Inc." and "J." do not."""
    if word[-1] in ",;:!?)]\"'":
        return True
    bare = word.rstrip(".")
    return word.endswith(".") and len(bare) > 1 and bare not in _TITLES and word not in _ORG_SUFFIXES


def _runs(text: str) -> list[tuple[str, str]]:
    """Runs of capitalized words as (run, word before it)."""
    words = text.split()
    runs: list[tuple[str, str]] = []
    i = 0
    while i < len(words):
        word = words[i].strip("\"'()[]{},;:!?")
        if not _CAPITALIZED.fullmatch(word) or word.rstrip(".") in _STOPWORDS | _TITLES:
            i += 1
            continue
        before = words[i - 1].strip("\"'()[],;:").rstrip(".") if i else ""
        run = [word]
        j = i + 1
        # A run stops at punctuation that ends a phrase ("Cook, the CEO").
        while j < len(words) and not _ends_phrase(words[j - 1]):
            nxt = words[j].strip("\"'()[]{},;:!?")
            name_like = _CAPITALIZED.fullmatch(nxt) is not None and nxt.rstrip(".") not in _STOPWORDS
            # "University of Oxford" is one name, "Sundar Pichai of Google" two.
            if name_like or (
                nxt in _CONNECTORS
                and run[-1] in _ORG_SUFFIXES
                and j + 1 < len(words)
                and _CAPITALIZED.fullmatch(words[j + 1].strip("\"'()[]{},;:!?"))
                and not re.search(r"[,;:]$", words[j])
            ):
                run.append(nxt)
                j += 1
            else:
                break
        if run[-1] in _CONNECTORS:
            run.pop()
        span = " ".join(run)
        # Keep "Inc." and "Corp." whole; drop a sentence's final period otherwise.
        if span.endswith(".") and span.rsplit(" ", 1)[-1] not in _ORG_SUFFIXES:
            span = span[:-1]
        runs.append((span, before))
        i = j
    return runs


def extract_entities(text: str) -> Entities:
    """Person-, organization-, location- and date-like spans of ``text``, in order of appearance."""
    entities = Entities()
    for match in _DATE.finditer(text):
        _add(entities.dates, " ".join(match.group().split()))
    for span, before in _runs(_DATE.sub(" , ", text)):
        tokens = span.split()
        orgish = len(tokens) > 1 and any(t in _ORG_SUFFIXES for t in tokens)
        if orgish or span in _KNOWN_ORGS or tokens[0] in _KNOWN_ORGS:
            # Runs never span a lowercase word, so a known first word ("Google DeepMind") is an org.
            _add(entities.organizations, span)
        elif span in _KNOWN_PLACES:
            _add(entities.locations, span)
        elif before in _TITLES:
            _add(entities.persons, span)
        elif len(tokens) == 1 and before in _PLACE_PREPOSITIONS:
            _add(entities.locations, span)
        elif (
            2 <= len(tokens) <= 4
            and not set(tokens) & _CONNECTORS
            and all(t.rstrip(".").isalpha() for t in tokens)
        ):
            _add(entities.persons, span)
    return entities
