"""Data for ``collab_qa``: a generated world of facts, and the JSONL formats real data uses.

One format for everything. A data set is a directory::

    questions.jsonl          one question per line (:class:`QuestionRecord`)
    corpora/<tool>.jsonl     one corpus per search tool (:class:`CorpusDoc`); the
                             file name without ``.jsonl`` names the tool
    facts.jsonl              optional, generated worlds only (:class:`FactRecord`)

Real data (BioASQ, PopQA, ... converted to these lines) and a generated world
saved with :func:`save_dataset` load through the same :func:`load_dataset`;
a malformed line fails with the file, the line number and the field named
(:class:`DataFormatError`). docs/collab_qa_data.md documents the formats.

The generated world (:func:`generate_world`, deterministic from
``WorldConfig.seed``) has two domains, one corpus (one search tool) each:

- ``people``: persons (birthplace, occupation, birth year) and towns (region,
  founding year); a person's birthplace is one of the towns.
- ``compounds``: compounds (condition treated, discovery year, source
  organism) and organisms (habitat, group); a compound's source is one of the
  organisms.

Names are generated from syllables (``Varo Quell``, ``Drelomycin``,
``Pellara vostii``), so no question can be answered from real-world
knowledge. Every fact is stated in at least one document of its domain's
corpus, in one of several sentence templates; documents also carry filler
sentences, and distractor documents mention entities without stating any
attribute.

Questions and splits. Each fact of a person or compound gets one question,
in the ``train`` or ``test`` split (``test_fraction`` of them in test), worded
with one of its attribute's in-distribution templates. ``test_split`` picks the
test facts: at random among all of them (``facts``), or so that every entity
keeps at least one fact in train (``within_entities``): then every test question
is about an entity that training asks about, and what a policy learns about an
entity (that it knows it, or not) can carry to the entity's other facts. The ``ood`` split holds
what training never shows: every test fact asked with its attribute's held-out
template (the last template of each attribute), and every fact about the
unseen entity kinds (``ood_kinds``, default towns and organisms).

Known facts. A fraction ``known_fraction`` of all facts (exactly, rounded) is
marked ``known``: what a tiny model is pre-trained on, so "does the model know
this" is a fact of the data, not a guess. :func:`known_fact_lines` gives them
as plain training text ("The birthplace of Varo Quell is Tessin.").

Bots use :func:`parse_question` and :func:`extract_answer` to read the
generated world's question and sentence templates.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

QUESTIONS_FILE = "questions.jsonl"
CORPORA_DIR = "corpora"
FACTS_FILE = "facts.jsonl"


# ----- the JSONL formats ------------------------------------------------------------------------------
class DataFormatError(ValueError):
    """A data file is malformed; the message names the file, the line and the field."""


def _nonblank(v: str) -> str:
    if not v.strip():
        raise ValueError("must not be empty")
    return v


class _Line(BaseModel):
    # unknown keys are errors (a typo such as "answer" must not pass silently); put anything else in "meta"
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuestionRecord(_Line):
    """One question: ``{"id", "question", "answers": [...], "domain"?, "split"?, "meta"?}``.

    ``answers`` lists every accepted answer (the score is the best match);
    ``domain`` names the corpus that holds the answer, where known; ``split``
    (e.g. train/test/ood) selects questions for a game.
    """

    id: str
    question: str
    answers: list[str] = Field(min_length=1)
    domain: str | None = None
    split: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    _check_text = field_validator("id", "question")(_nonblank)

    @field_validator("answers")
    @classmethod
    def _check_answers(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            if not a.strip():
                raise ValueError(f"answer {i} is empty")
        return v


class CorpusDoc(_Line):
    """One document of a tool's corpus: ``{"id", "title"?, "text", "meta"?}``."""

    id: str
    title: str | None = None
    text: str
    meta: dict[str, Any] = Field(default_factory=dict)

    _check_text = field_validator("id", "text")(_nonblank)

    def display(self) -> str:
        """The text a search indexes and shows: ``title: text`` (or the text alone)."""
        return f"{self.title}: {self.text}" if self.title else self.text


class FactRecord(_Line):
    """One fact of a generated world: ``{"entity", "kind", "domain", "attribute", "value", "known"}``."""

    entity: str
    kind: str
    domain: str
    attribute: str
    value: str
    known: bool = False

    _check_text = field_validator("entity", "kind", "domain", "attribute", "value")(_nonblank)


R = TypeVar("R", bound=BaseModel)


def read_jsonl(path: str | Path, record: type[R]) -> list[R]:
    """Every non-blank line of ``path`` as a ``record``; DataFormatError names file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    out: list[R] = []
    ids: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            try:
                rec = record.model_validate(obj)
            except ValidationError as e:
                problems = [f"field {'.'.join(str(x) for x in err['loc']) or '(record)'!r}: {err['msg']}" for err in e.errors()[:3]]
                raise DataFormatError(f"{path}:{lineno}: " + "; ".join(problems)) from None
            rid = getattr(rec, "id", None)
            if rid is not None:
                if rid in ids:
                    raise DataFormatError(f"{path}:{lineno}: field 'id': duplicate id {rid!r} (first on line {ids[rid]})")
                ids[rid] = lineno
            out.append(rec)
    if not out:
        raise DataFormatError(f"{path}: the file holds no records")
    return out


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json(exclude_defaults=True) + "\n")


@dataclass(frozen=True)
class QADataset:
    """Questions, one corpus per search tool and (generated worlds) the facts behind them."""

    questions: tuple[QuestionRecord, ...]
    corpora: dict[str, tuple[CorpusDoc, ...]]
    facts: tuple[FactRecord, ...] = ()
    #: a one-line description of each corpus, shown to the players (defaults to the name)
    descriptions: dict[str, str] = field(default_factory=dict)

    def split(self, name: str | None) -> list[QuestionRecord]:
        """The questions of one split (``None``: all questions, in file order)."""
        return [q for q in self.questions if name is None or q.split == name]

    def splits(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = {}
        for q in self.questions:
            counts[q.split] = counts.get(q.split, 0) + 1
        return counts

    def describe(self, tool: str) -> str:
        return self.descriptions.get(tool, tool)


def save_dataset(ds: QADataset, directory: str | Path) -> Path:
    """Write ``ds`` as ``questions.jsonl``, ``corpora/<tool>.jsonl`` and (with facts) ``facts.jsonl``."""
    d = Path(directory)
    write_jsonl(d / QUESTIONS_FILE, ds.questions)
    for name, docs in ds.corpora.items():
        write_jsonl(d / CORPORA_DIR / f"{name}.jsonl", docs)
    if ds.facts:
        write_jsonl(d / FACTS_FILE, ds.facts)
    return d


def load_dataset(directory: str | Path) -> QADataset:
    """Read a data set directory (see the module docstring); DataFormatError on anything malformed."""
    d = Path(directory)
    if not d.is_dir():
        raise DataFormatError(f"{d}: no such data directory")
    questions = tuple(read_jsonl(d / QUESTIONS_FILE, QuestionRecord))
    files = sorted((d / CORPORA_DIR).glob("*.jsonl"))
    if not files:
        raise DataFormatError(f"{d / CORPORA_DIR}: no corpus files (<tool>.jsonl), one per search tool, are needed")
    corpora = {f.stem: tuple(read_jsonl(f, CorpusDoc)) for f in files}
    facts = tuple(read_jsonl(d / FACTS_FILE, FactRecord)) if (d / FACTS_FILE).is_file() else ()
    descriptions = {name: DOMAIN_DESCRIPTIONS[name] for name in corpora if name in DOMAIN_DESCRIPTIONS and facts}
    return QADataset(questions=questions, corpora=corpora, facts=facts, descriptions=descriptions)


# ----- the generated world: its vocabulary ------------------------------------------------------------
@dataclass(frozen=True)
class Attribute:
    """An attribute of one entity kind, with the words used to ask and state it."""

    name: str
    #: "The {phrase} of {entity} is {value}." (known-fact lines)
    phrase: str
    #: question templates with ``{name}``; the last one is held out for the ood split
    questions: tuple[str, ...]
    #: document sentence templates with ``{name}`` and ``{value}``
    statements: tuple[str, ...]
    #: a regular expression every value of this attribute matches (used to read documents)
    value_pattern: str


_TOWN = r"[A-Z][a-z]+"
_YEAR = r"[0-9]{3,4}"
_LOWER = r"[a-z]+(?: [a-z]+)*"
_BINOMIAL = r"[A-Z][a-z]+ [a-z]+"

ATTRIBUTES: dict[str, Attribute] = {
    a.name: a
    for a in [
        Attribute(
            "birthplace",
            "birthplace",
            ("Where was {name} born?", "What is the birthplace of {name}?", "In which town did {name} come into the world?"),
            ("{name} was born in {value}.", "{name} is a native of {value}.", "Records place the birth of {name} in {value}."),
            _TOWN,
        ),
        Attribute(
            "occupation",
            "occupation",
            ("What was the occupation of {name}?", "What did {name} do for a living?", "Which profession did {name} practise?"),
            ("{name} worked as a {value}.", "By trade, {name} was a {value}.", "{name} made a living as a {value}."),
            _LOWER,
        ),
        Attribute(
            "birth_year",
            "birth year",
            ("In what year was {name} born?", "When was {name} born?", "What is the year of birth of {name}?"),
            ("{name} was born in the year {value}.", "The year {value} saw the birth of {name}.", "{name} came into the world in {value}."),
            _YEAR,
        ),
        Attribute(
            "region",
            "region",
            ("In which region is the town of {name}?", "Where is the town of {name} located?", "{name} lies in which region?"),
            ("{name} is a town in the region of {value}.", "The town of {name} lies in {value}.", "{name} sits among the hills of {value}."),
            _TOWN,
        ),
        Attribute(
            "founded",
            "founding year",
            ("When was the town of {name} founded?", "In what year was the town of {name} founded?", "What is the founding year of {name}?"),
            ("{name} was founded in {value}.", "The founding of {name} dates to {value}.", "Settlers established {name} in {value}."),
            _YEAR,
        ),
        Attribute(
            "treats",
            "condition treated",
            ("What condition does {name} treat?", "What is {name} used to treat?", "{name} is a treatment for which condition?"),
            ("{name} is used to treat {value}.", "Doctors prescribe {name} for {value}.", "{name} is a remedy for {value}."),
            _LOWER,
        ),
        Attribute(
            "discovered",
            "discovery year",
            ("When was {name} discovered?", "In what year was {name} discovered?", "What year saw the discovery of {name}?"),
            ("{name} was discovered in {value}.", "The discovery of {name} dates to {value}.", "Chemists first isolated {name} in {value}."),
            _YEAR,
        ),
        Attribute(
            "source",
            "source organism",
            ("Which organism produces {name}?", "What is the natural source of {name}?", "{name} is isolated from which organism?"),
            ("{name} is produced by {value}.", "{name} is extracted from {value}.", "The natural source of {name} is {value}."),
            _BINOMIAL,
        ),
        Attribute(
            "habitat",
            "habitat",
            ("Where does {name} live?", "What is the habitat of {name}?", "In what kind of place is {name} found?"),
            ("{name} lives in {value}.", "{name} is found in {value}.", "The habitat of {name} is {value}."),
            _LOWER,
        ),
        Attribute(
            "group",
            "group",
            ("What kind of organism is {name}?", "What type of organism is {name}?", "{name} belongs to which group of organisms?"),
            ("{name} is a {value}.", "{name} is classified as a {value}.", "Biologists describe {name} as a {value}."),
            _LOWER,
        ),
    ]
}

#: entity kind -> (domain, its attributes)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "person": ("people", ("birthplace", "occupation", "birth_year")),
    "town": ("people", ("region", "founded")),
    "compound": ("compounds", ("treats", "discovered", "source")),
    "organism": ("compounds", ("habitat", "group")),
}
DOMAINS: tuple[str, ...] = ("people", "compounds")
DOMAIN_DESCRIPTIONS = {
    "people": "people (birthplace, occupation, birth year) and towns (region, founding year)",
    "compounds": "compounds (condition treated, discovery year, source organism) and organisms (habitat, group)",
}

# consonant-initial values only, so "a {value}" reads right
OCCUPATIONS = (
    "baker",
    "cartographer",
    "glassblower",
    "weaver",
    "potter",
    "surveyor",
    "bookbinder",
    "clockmaker",
    "tanner",
    "miller",
    "stonemason",
    "brewer",
    "printer",
    "navigator",
    "composer",
    "physician",
    "botanist",
    "sculptor",
    "lens grinder",
    "rope maker",
)
CONDITIONS = (
    "migraine",
    "gout",
    "anemia",
    "insomnia",
    "asthma",
    "eczema",
    "malaria",
    "arthritis",
    "hypertension",
    "tinnitus",
    "psoriasis",
    "vertigo",
    "bronchitis",
    "scurvy",
)
HABITATS = (
    "salt marshes",
    "alpine meadows",
    "cave pools",
    "coral reefs",
    "peat bogs",
    "river deltas",
    "desert springs",
    "kelp forests",
    "volcanic soils",
    "tundra ponds",
)
GROUPS = ("fungus", "bacterium", "moss", "lichen", "sponge", "fern", "diatom")
YEARS = {"birth_year": (1650, 1990), "founded": (800, 1700), "discovered": (1890, 2020)}
#: every year a page may state (redrawn_world's ``wide_years``): what the year pattern of the pages matches
WIDE_YEARS = (100, 2999)

_FILLERS = {
    "person": ("{name} is mentioned in several regional archives.", "Letters written by {name} survive in a private collection."),
    "town": ("{name} holds a market every spring.", "Travellers often describe {name} as quiet."),
    "compound": ("{name} has been studied in several laboratories.", "The structure of {name} was described in a short paper."),
    "organism": ("{name} is rarely seen by casual observers.", "Specimens of {name} are kept in a museum collection."),
}
_DISTRACTORS = {
    "people": (
        "{a} and {b} corresponded for many years.",
        "A portrait of {a} once hung beside one of {b}.",
        "{a} is sometimes confused with {b} in old catalogues.",
    ),
    "compounds": (
        "{a} and {b} were compared in a small trial.",
        "Early samples of {a} were stored next to {b}.",
        "{a} is sometimes confused with {b} in old catalogues.",
    ),
}

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "tr", "st", "th", "vr")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_CODAS = ("", "", "", "l", "n", "r", "s", "ll", "nd", "rn", "st")
_COMPOUND_SUFFIXES = ("mycin", "azole", "idine", "oxin", "amine", "ostat", "ethol")
_SPECIES_SUFFIXES = ("ii", "ensis", "ata", "ica", "oides")


# ----- the generated world: config and generation ------------------------------------------------------
class WorldConfig(BaseModel):
    """Shape of a generated world. The defaults build (with both BM25 indexes) in well under a second."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    persons: int = Field(30, ge=2, description="people domain: persons (3 facts each)")
    towns: int = Field(10, ge=2, description="people domain: towns, the persons' birthplaces (2 facts each)")
    compounds: int = Field(30, ge=2, description="compounds domain: compounds (3 facts each)")
    organisms: int = Field(10, ge=2, description="compounds domain: organisms, the compounds' sources (2 facts each)")
    docs_per_entity: int = Field(2, ge=1, le=5, description="documents about each entity; every fact is stated in at least one")
    distractor_docs: int = Field(10, ge=0, description="documents per corpus that mention entities but state no fact")
    known_fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of all facts marked known (pre-training text)")
    known_by: Literal["fact", "entity"] = Field(
        "fact",
        description="what is known or not as a whole: each fact on its own, or every fact of an entity together "
        "(whole entities, in random order, until the share of known facts reaches known_fraction)",
    )
    test_fraction: float = Field(0.3, ge=0.0, le=1.0, description="share of person/compound facts whose question is in test")
    ood_kinds: tuple[str, ...] = Field(("town", "organism"), description="entity kinds asked about only in the ood split")
    test_split: Literal["facts", "within_entities"] = Field(
        "facts",
        description="which facts are asked in test: any (facts), or never an entity's last one in train "
        "(within_entities: every test question is about an entity training asks about)",
    )

    @field_validator("ood_kinds")
    @classmethod
    def _check_kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for k in v:
            if k not in KINDS:
                raise ValueError(f"unknown entity kind {k!r}; kinds: {sorted(KINDS)}")
        return v

    @model_validator(mode="after")
    def _check_sizes(self) -> WorldConfig:
        if self.persons + self.towns + self.compounds + self.organisms > 20_000:
            raise ValueError("a generated world holds at most 20000 entities (names would start to run out)")
        if self.test_split == "within_entities":
            counts = {"person": self.persons, "town": self.towns, "compound": self.compounds, "organism": self.organisms}
            in_dist = [(counts[k], len(KINDS[k][1])) for k in counts if k not in self.ood_kinds]
            n_test = round(self.test_fraction * sum(n * attrs for n, attrs in in_dist))
            most = sum(n * (attrs - 1) for n, attrs in in_dist)
            if n_test > most:
                raise ValueError(
                    f"test_split 'within_entities' keeps one fact of each entity in train: at most {most} test questions, "
                    f"but test_fraction {self.test_fraction:g} asks for {n_test} (lower test_fraction or use test_split 'facts')"
                )
        return self

    @model_serializer(mode="wrap")
    def _split_only_when_set(self, handler: Any) -> dict[str, Any]:
        # the models and worlds cached before test_split keep their keys (the JSON of the config)
        out = handler(self)
        if self.test_split == "facts":
            out.pop("test_split", None)
        return out

    def text_world(self) -> WorldConfig:
        """This world with the default ``test_split``: the same entities, facts, documents and question
        wordings (the split moves questions between train and test, not words), for what depends on the
        world's text alone (its tokenizer, reading, pre-training) and so is shared by both splits."""
        return self.model_copy(update={"test_split": "facts"})


@dataclass
class _Entity:
    kind: str
    name: str
    values: dict[str, str]


class _Names:
    """Unique generated names: no two entities share a word."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.used: set[str] = set()

    def _syllables(self, n: int) -> str:
        r = self.rng
        parts = [_ONSETS[int(r.integers(len(_ONSETS)))] + _VOWELS[int(r.integers(len(_VOWELS)))] for _ in range(n)]
        return "".join(parts) + _CODAS[int(r.integers(len(_CODAS)))]

    def _fresh(self, make) -> str:
        for _ in range(10_000):
            name = make()
            words = name.lower().split()
            if not any(w in self.used for w in words) and all(len(w) >= 4 for w in words):
                self.used.update(words)
                return name
        raise RuntimeError("ran out of generated names; use a smaller world")

    def person(self) -> str:
        return self._fresh(lambda: f"{self._syllables(2).capitalize()} {self._syllables(int(self.rng.integers(1, 3))).capitalize()}")

    def place(self) -> str:
        return self._fresh(lambda: self._syllables(int(self.rng.integers(2, 4))).capitalize())

    def compound(self) -> str:
        sfx = _COMPOUND_SUFFIXES[int(self.rng.integers(len(_COMPOUND_SUFFIXES)))]
        return self._fresh(lambda: (self._syllables(2) + sfx).capitalize())

    def organism(self) -> str:
        sfx = _SPECIES_SUFFIXES[int(self.rng.integers(len(_SPECIES_SUFFIXES)))]
        return self._fresh(lambda: f"{self._syllables(2).capitalize()} {self._syllables(1).rstrip('aeiou')}{sfx}")


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _year(rng: np.random.Generator, attr: str) -> str:
    lo, hi = YEARS[attr]
    return str(int(rng.integers(lo, hi + 1)))


def _entities(cfg: WorldConfig, rng: np.random.Generator) -> list[_Entity]:
    names = _Names(rng)
    regions = [names.place() for _ in range(max(3, cfg.towns // 3))]
    towns = [_Entity("town", names.place(), {}) for _ in range(cfg.towns)]
    for t in towns:
        t.values = {"region": _pick(rng, regions), "founded": _year(rng, "founded")}
    organisms = [_Entity("organism", names.organism(), {}) for _ in range(cfg.organisms)]
    for o in organisms:
        o.values = {"habitat": _pick(rng, HABITATS), "group": _pick(rng, GROUPS)}
    persons = [_Entity("person", names.person(), {}) for _ in range(cfg.persons)]
    for p in persons:
        p.values = {
            "birthplace": _pick(rng, towns).name,
            "occupation": _pick(rng, OCCUPATIONS),
            "birth_year": _year(rng, "birth_year"),
        }
    compounds = [_Entity("compound", names.compound(), {}) for _ in range(cfg.compounds)]
    for c in compounds:
        c.values = {
            "treats": _pick(rng, CONDITIONS),
            "discovered": _year(rng, "discovered"),
            "source": _pick(rng, organisms).name,
        }
    return persons + towns + compounds + organisms


def _entity_docs(e: _Entity, n_docs: int, rng: np.random.Generator) -> list[CorpusDoc]:
    attrs = list(KINDS[e.kind][1])
    order = [attrs[i] for i in rng.permutation(len(attrs))]
    per_doc: list[list[str]] = [[] for _ in range(n_docs)]
    for i, a in enumerate(order):  # every fact in at least one document
        per_doc[i % n_docs].append(a)
    for doc_attrs in per_doc:  # some facts repeated in another document, in other words
        for a in attrs:
            if a not in doc_attrs and rng.random() < 0.25:
                doc_attrs.append(a)
    docs = []
    for doc_attrs in per_doc:
        sentences = [_pick(rng, ATTRIBUTES[a].statements).format(name=e.name, value=e.values[a]) for a in doc_attrs]
        if not sentences or rng.random() < 0.5:
            sentences.append(_pick(rng, _FILLERS[e.kind]).format(name=e.name))
        sentences = [sentences[i] for i in rng.permutation(len(sentences))]
        docs.append(CorpusDoc(id="?", title=e.name, text=" ".join(sentences)))
    return docs


def _corpora(entities: list[_Entity], cfg: WorldConfig, rng: np.random.Generator) -> dict[str, tuple[CorpusDoc, ...]]:
    """Each domain's corpus: the documents about its entities and its distractors, shuffled, numbered."""
    corpora: dict[str, tuple[CorpusDoc, ...]] = {}
    for domain in DOMAINS:
        members = [e for e in entities if KINDS[e.kind][0] == domain]
        docs = [d for e in members for d in _entity_docs(e, cfg.docs_per_entity, rng)]
        for _ in range(cfg.distractor_docs):
            a, b = (members[int(i)] for i in rng.choice(len(members), size=2, replace=False))
            docs.append(CorpusDoc(id="?", title=f"Notes on {a.name}", text=_pick(rng, _DISTRACTORS[domain]).format(a=a.name, b=b.name)))
        docs = [docs[i] for i in rng.permutation(len(docs))]
        corpora[domain] = tuple(d.model_copy(update={"id": f"{domain}-{i:04d}"}) for i, d in enumerate(docs))
    return corpora


def generate_world(cfg: WorldConfig | None = None) -> QADataset:
    """The generated world for ``cfg`` (see the module docstring); the same config gives the same world."""
    cfg = cfg or WorldConfig()
    rng = np.random.default_rng(cfg.seed)
    entities = _entities(cfg, rng)

    corpora = _corpora(entities, cfg, rng)
    facts = [FactRecord(entity=e.name, kind=e.kind, domain=KINDS[e.kind][0], attribute=a, value=e.values[a]) for e in entities for a in KINDS[e.kind][1]]
    n_known = round(cfg.known_fraction * len(facts))
    if cfg.known_by == "fact":
        known = set(int(i) for i in rng.permutation(len(facts))[:n_known])
    else:  # whole entities: a model may learn that it knows a name, as people know a famous one
        of_entity: dict[str, list[int]] = {}
        for i, f in enumerate(facts):
            of_entity.setdefault(f.entity, []).append(i)
        known = set()
        for j in rng.permutation(len(entities)):
            if len(known) >= n_known:
                break
            known.update(of_entity[entities[int(j)].name])
    facts = [f.model_copy(update={"known": i in known}) for i, f in enumerate(facts)]

    in_dist = [i for i, f in enumerate(facts) if f.kind not in cfg.ood_kinds]
    n_test = round(cfg.test_fraction * len(in_dist))
    order = [in_dist[int(i)] for i in rng.permutation(len(in_dist))]
    if cfg.test_split == "facts":
        test = set(order[:n_test])
    else:  # the same draw, skipping a fact that would leave its entity with none in train
        left = {f.entity: 0 for f in facts}
        for i in in_dist:
            left[facts[i].entity] += 1
        test = set()
        for i in order:
            if len(test) == n_test:
                break
            if left[facts[i].entity] > 1:
                test.add(i)
                left[facts[i].entity] -= 1
    questions: list[QuestionRecord] = []

    def ask(f: FactRecord, template: int, split: str) -> None:
        attr = ATTRIBUTES[f.attribute]
        questions.append(
            QuestionRecord(
                id=f"q{len(questions):05d}",
                question=attr.questions[template].format(name=f.entity),
                answers=[f.value],
                domain=f.domain,
                split=split,
                meta={"entity": f.entity, "kind": f.kind, "attribute": f.attribute, "known": f.known, "template": template},
            )
        )

    for i, f in enumerate(facts):
        n_templates = len(ATTRIBUTES[f.attribute].questions)
        if f.kind in cfg.ood_kinds:
            ask(f, int(rng.integers(n_templates)), "ood")
        else:
            ask(f, int(rng.integers(n_templates - 1)), "test" if i in test else "train")
            if i in test:
                ask(f, n_templates - 1, "ood")
    return QADataset(
        questions=tuple(questions),
        # name order, as load_dataset reads corpora/*.jsonl, so a saved world plays exactly like this one
        corpora=dict(sorted(corpora.items())),
        facts=tuple(facts),
        descriptions={d: DOMAIN_DESCRIPTIONS[d] for d in DOMAINS},
    )


def value_pools(ds: QADataset) -> dict[str, tuple[str, ...]]:
    """What each attribute's value may be in ``ds``'s world: its vocabulary (occupations, conditions,
    habitats, groups) or ``ds``'s own names (a birthplace among its towns, a source among its organisms, a
    region among its regions). Years are drawn from :data:`YEARS` instead (:func:`draw_value`)."""
    regions = sorted({f.value for f in ds.facts if f.attribute == "region"})
    towns = tuple(sorted({f.entity for f in ds.facts if f.kind == "town"}))
    pools: dict[str, tuple[str, ...]] = {
        "occupation": OCCUPATIONS,
        "treats": CONDITIONS,
        "habitat": HABITATS,
        "group": GROUPS,
        "birthplace": towns,
        "source": tuple(sorted({f.entity for f in ds.facts if f.kind == "organism"})),
        "region": tuple(regions),
    }
    if len(pools["region"]) < 2:  # one region in use: the towns' names stand in as the other places
        pools["region"] += towns
    return pools


def draw_value(pools: dict[str, tuple[str, ...]], attribute: str, rng: np.random.Generator) -> str:
    """A value of ``attribute`` drawn uniformly from its pool (:func:`value_pools`), or a year in its range."""
    return _year(rng, attribute) if attribute in YEARS else _pick(rng, pools[attribute])


def redrawn_world(cfg: WorldConfig, seed: int, avoid_true: bool = False, new_names: float = 0.0, wide_years: float = 0.0) -> QADataset:
    """The world of ``cfg`` (``ds``), its entities with every value drawn anew, and corpora written for them (no questions).

    The names are ``ds``'s own (whole tokens of a tokenizer trained on its text); each value is drawn
    uniformly from its attribute's vocabulary (occupations, conditions, habitats, groups, a year in the
    attribute's range) or from ``ds``'s own names (a birthplace among its towns, a source among its
    organisms, a region among its regions), independently of the true value: a page of a redrawn world
    says nothing about the world, so what is on it can only be read. ``avoid_true`` never draws a
    fact's true value; a model trained on such pages learns that the true value is the one answer that is
    never right (reading the world's own pages afterwards, it was right on none of its unknown facts while
    reading 41% of redrawn pages right). ``new_names``: the share of name values (birthplace, source,
    region) that are a newly generated name instead of one of ``ds``'s: with four towns, a model can
    score a quarter of birthplaces from the prior alone, and learned to ignore the town on the page
    (the same answer whichever town it stated). ``wide_years``: the share of years drawn from
    :data:`WIDE_YEARS` instead of the attribute's range, so a year's first digits cannot be guessed either.
    Deterministic in ``seed``."""
    ds = cached_world(cfg)
    rng = np.random.default_rng(seed)
    kinds = {f.entity: f.kind for f in ds.facts}
    true = {(f.entity, f.attribute): f.value for f in ds.facts}
    pools = value_pools(ds)

    names = _Names(rng)
    names.used.update(w for e in kinds for w in e.lower().split())
    new = {"birthplace": names.place, "region": names.place, "source": names.organism}

    def draw(entity: str, attr: str) -> str:
        for _ in range(100):
            if attr in new and new_names > 0 and rng.random() < new_names:
                return new[attr]()
            if attr in YEARS and wide_years > 0 and rng.random() < wide_years:
                return str(int(rng.integers(WIDE_YEARS[0], WIDE_YEARS[1] + 1)))
            v = draw_value(pools, attr, rng)
            if not (avoid_true and v == true.get((entity, attr))):
                return v
        raise ValueError(f"no value of {attr!r} other than {true.get((entity, attr))!r} to draw")

    entities = [_Entity(k, e, {a: draw(e, a) for a in KINDS[k][1]}) for e, k in kinds.items()]
    corpora = _corpora(entities, cfg, rng)
    facts = tuple(FactRecord(entity=e.name, kind=e.kind, domain=KINDS[e.kind][0], attribute=a, value=v) for e in entities for a, v in e.values.items())
    return QADataset(questions=(), corpora=dict(sorted(corpora.items())), facts=facts, descriptions=dict(ds.descriptions))


@functools.lru_cache(maxsize=8)
def cached_world(cfg: WorldConfig | None = None) -> QADataset:
    """:func:`generate_world`, once per process and config (worlds are immutable)."""
    return generate_world(cfg or WorldConfig())


def fact_sentence(f: FactRecord) -> str:
    attr = ATTRIBUTES.get(f.attribute)
    phrase = attr.phrase if attr else f.attribute.replace("_", " ")
    return f"The {phrase} of {f.entity} is {f.value}."


def known_fact_lines(ds: QADataset, include_unknown: bool = False) -> Iterator[str]:
    """The known facts (all facts with ``include_unknown``) as plain training text, one sentence each."""
    for f in ds.facts:
        if f.known or include_unknown:
            yield fact_sentence(f)


# ----- reading the generated world's templates (for bots) ---------------------------------------------
@functools.lru_cache(maxsize=1)
def _question_patterns() -> list[tuple[re.Pattern, str, int]]:
    out = []
    for attr in ATTRIBUTES.values():
        for i, t in enumerate(attr.questions):
            rx = re.escape(t).replace(re.escape("{name}"), r"(?P<name>[A-Z][\w'-]*(?: [\w'-]+)*?)")
            out.append((re.compile(rf"(?<![\w'-]){rx}"), attr.name, i))
    return out


def parse_question(text: str) -> tuple[str, str] | None:
    """``(entity name, attribute)`` for a question in ``text`` worded with one of the generated
    world's templates (the text may hold more than the question), else None."""
    for rx, attr, _ in _question_patterns():
        m = rx.search(text)
        if m:
            return m.group("name"), attr
    return None


def extract_answer(text: str, entity: str, attribute: str) -> str | None:
    """The value of ``attribute`` for ``entity`` if ``text`` states it in one of the world's
    sentence templates, else None."""
    attr = ATTRIBUTES.get(attribute)
    if attr is None:
        return None
    for t in attr.statements:
        rx = re.escape(t).replace(re.escape("{name}"), re.escape(entity))
        rx = rx.replace(re.escape("{value}"), f"(?P<value>{attr.value_pattern})")
        m = re.search(rf"(?<![\w-]){rx}", text)
        if m:
            return m.group("value")
    return None


def fact_table(ds: QADataset) -> dict[tuple[str, str], FactRecord]:
    """(entity, attribute) -> fact, for bots that know a world."""
    return {(f.entity, f.attribute): f for f in ds.facts}
