"""Tests for the collab_qa data (arena.environments.collab_qa.world) and the BM25 search tool (arena.environments.collab_qa.retrieval)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter

import pytest
from pydantic import ValidationError

from arena.environments.collab_qa import retrieval
from arena.environments.collab_qa.retrieval import BM25Index, cached_index, tokenize
from arena.environments.collab_qa.world import (
    ATTRIBUTES,
    KINDS,
    CorpusDoc,
    DataFormatError,
    QADataset,
    QuestionRecord,
    WorldConfig,
    extract_answer,
    generate_world,
    known_fact_lines,
    load_dataset,
    parse_question,
    read_jsonl,
    save_dataset,
)


@pytest.fixture(scope="module")
def world() -> QADataset:
    return generate_world(WorldConfig())


# ----- the generated world ---------------------------------------------------------------------------------
def test_world_is_deterministic_from_its_seed(world):
    assert generate_world(WorldConfig()) == world
    other = generate_world(WorldConfig(seed=1))
    assert other.questions != world.questions
    assert {f.entity for f in other.facts} != {f.entity for f in world.facts}


def test_default_world_sizes_and_splits(world):
    assert len(world.facts) == 30 * 3 + 10 * 2 + 30 * 3 + 10 * 2 == 220
    assert {name: len(docs) for name, docs in world.corpora.items()} == {"compounds": 90, "people": 90}
    assert world.splits() == {"train": 126, "test": 54, "ood": 54 + 40}
    assert sum(f.known for f in world.facts) == 110
    assert all(q.domain == KINDS[q.meta["kind"]][0] for q in world.questions)


def test_every_fact_is_stated_in_its_own_corpus_only(world):
    for f in world.facts:
        own = [d for d in world.corpora[f.domain] if extract_answer(d.display(), f.entity, f.attribute) == f.value]
        assert own, f"no document states {f}"
        other = next(n for n in world.corpora if n != f.domain)
        assert not any(f.entity in d.display() for d in world.corpora[other])
    # distractors: some documents name an entity but state none of its facts
    distractors = [d for d in world.corpora["people"] if d.title.startswith("Notes on")]
    assert len(distractors) == 10
    for d in distractors:
        name = d.title.removeprefix("Notes on ")
        assert all(extract_answer(d.text, name, a) is None for a in ATTRIBUTES)


def test_generated_names_share_no_word(world):
    entities = {f.entity for f in world.facts}
    words = Counter(w.lower() for e in entities for w in e.split())
    assert len(entities) == 80 and max(words.values()) == 1
    # values that are entities (birthplaces, sources) are other entities of the world
    assert {f.value for f in world.facts if f.attribute in ("birthplace", "source")} <= entities


def test_splits_separate_facts_templates_and_kinds(world):
    by_split = {s: world.split(s) for s in ("train", "test", "ood")}
    key = lambda q: (q.meta["entity"], q.meta["attribute"])  # noqa: E731
    train, test = {key(q) for q in by_split["train"]}, {key(q) for q in by_split["test"]}
    assert not train & test
    for q in by_split["train"] + by_split["test"]:
        assert q.meta["kind"] not in ("town", "organism")
        assert q.meta["template"] < len(ATTRIBUTES[q.meta["attribute"]].questions) - 1
    ood_kinds = [q for q in by_split["ood"] if q.meta["kind"] in ("town", "organism")]
    unseen_template = [q for q in by_split["ood"] if q.meta["kind"] not in ("town", "organism")]
    assert len(ood_kinds) == 40 and {key(q) for q in unseen_template} == test
    assert all(q.meta["template"] == len(ATTRIBUTES[q.meta["attribute"]].questions) - 1 for q in unseen_template)
    train_texts = {q.question for q in by_split["train"]}
    assert not train_texts & {q.question for q in by_split["ood"]}


def test_a_split_within_entities_asks_every_test_question_about_an_entity_trained_on(world):
    """``test_split: within_entities`` moves questions between train and test so that no entity has all its
    facts in test, and changes nothing else: the split sizes, the train and test wordings, the facts."""
    cfg = WorldConfig(known_by="entity", test_fraction=0.6, test_split="within_entities")
    ds, default = generate_world(cfg), generate_world(cfg.text_world())
    train, test, ood = (ds.split(s) for s in ("train", "test", "ood"))
    trained_on = {q.meta["entity"] for q in train}
    assert test and all(q.meta["entity"] in trained_on for q in test)
    # the default split of the same world leaves some entities to test alone (what this split is for)
    default_trained = {q.meta["entity"] for q in default.split("train")}
    assert any(q.meta["entity"] not in default_trained for q in default.split("test"))
    assert {s: len(ds.split(s)) for s in ("train", "test", "ood")} == {s: len(default.split(s)) for s in ("train", "test", "ood")}
    wordings = lambda d: sorted(q.question for q in d.split("train") + d.split("test"))  # noqa: E731
    assert wordings(ds) == wordings(default) and ds.facts == default.facts and ds.corpora == default.corpora
    key = lambda q: (q.meta["entity"], q.meta["attribute"])  # noqa: E731
    assert {key(q) for q in ood if q.meta["kind"] not in cfg.ood_kinds} == {key(q) for q in test}
    assert not {key(q) for q in train} & {key(q) for q in test}


def test_a_split_within_entities_that_cannot_hold_its_test_fraction_is_refused():
    # 30 persons and 30 compounds of 3 facts keep 60 in train: 120 test questions at most, 0.7 asks 126
    with pytest.raises(ValidationError, match="at most 120 test questions.*0.7 asks for 126"):
        WorldConfig(test_split="within_entities", test_fraction=0.7)
    assert WorldConfig(test_split="within_entities", test_fraction=2 / 3).test_split == "within_entities"


def test_the_default_split_leaves_a_worlds_json_as_it_was():
    """Models and worlds cached before ``test_split`` are keyed by the world's JSON: at its default it is left out."""
    assert "test_split" not in WorldConfig().model_dump_json()
    assert json.loads(WorldConfig(test_split="within_entities").model_dump_json())["test_split"] == "within_entities"
    assert WorldConfig(test_split="within_entities").text_world() == WorldConfig()


def test_known_fact_lines(world):
    lines = list(known_fact_lines(world))
    known = [f for f in world.facts if f.known]
    assert len(lines) == len(known) == 110
    assert all(re.fullmatch(r"The [a-z ]+ of [A-Z][\w ]+ is [\w ]+\.", line) for line in lines)
    f = known[0]
    assert f"of {f.entity} is {f.value}." in lines[0]
    assert len(list(known_fact_lines(world, include_unknown=True))) == 220
    assert list(known_fact_lines(generate_world(WorldConfig(known_fraction=0.0)))) == []
    assert len(list(known_fact_lines(generate_world(WorldConfig(known_fraction=1.0))))) == 220


def test_knowledge_by_fact_or_by_entity(world):
    def by_entity(ds):
        out: dict[str, set[bool]] = {}
        for f in ds.facts:
            out.setdefault(f.entity, set()).add(f.known)
        return out

    # by fact (the default): an entity may be known in one attribute and not another
    assert any(len(v) == 2 for v in by_entity(world).values())
    ds = generate_world(WorldConfig(known_by="entity"))
    assert all(len(v) == 1 for v in by_entity(ds).values())  # all of an entity's facts, or none
    known = sum(f.known for f in ds.facts)
    # whole entities until the share is reached: at most one entity's facts (3) over it
    assert round(0.5 * len(ds.facts)) <= known < round(0.5 * len(ds.facts)) + 3
    assert {f.entity for f in ds.facts if f.known} & {f.entity for f in ds.facts if not f.known} == set()
    # every split asks about known and unknown entities
    for split in ("train", "test", "ood"):
        flags = {q.meta["known"] for q in ds.split(split)}
        assert flags == {True, False}, split


def test_question_and_answer_templates_read_back(world):
    for q in world.questions:
        assert parse_question(q.question) == (q.meta["entity"], q.meta["attribute"])
    assert parse_question("Please help: Where was Varo Quell born? Thanks") == ("Varo Quell", "birthplace")
    assert parse_question("Where was Varo Quell born?") == ("Varo Quell", "birthplace")
    assert parse_question("What is the capital of France") is None
    text = "Varo Quell was born in the year 1843. Varo Quell was born in Tessin."
    assert extract_answer(text, "Varo Quell", "birth_year") == "1843"
    assert extract_answer(text, "Varo Quell", "birthplace") == "Tessin"
    assert extract_answer(text, "Mira Toss", "birthplace") is None
    assert extract_answer("Quell was born in Tessin.", "Varo Quell", "birthplace") is None


def test_world_config_is_validated():
    with pytest.raises(ValidationError, match="unknown entity kind"):
        WorldConfig(ood_kinds=("dragon",))
    with pytest.raises(ValidationError):
        WorldConfig(persons=1)
    with pytest.raises(ValidationError):
        WorldConfig(known_fraction=1.5)
    with pytest.raises(ValidationError):
        WorldConfig(sizes=3)


def test_default_world_and_indexes_build_fast(tmp_path):
    start = time.perf_counter()
    ds = generate_world(WorldConfig(seed=123))
    for docs in ds.corpora.values():
        BM25Index.build([d.id for d in docs], [d.display() for d in docs])
    assert time.perf_counter() - start < 2.0


# ----- JSONL formats ------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(world, tmp_path):
    save_dataset(world, tmp_path / "w")
    assert sorted(p.name for p in (tmp_path / "w" / "corpora").iterdir()) == ["compounds.jsonl", "people.jsonl"]
    back = load_dataset(tmp_path / "w")
    assert back.questions == world.questions
    assert back.corpora == world.corpora and list(back.corpora) == list(world.corpora)
    assert back.facts == world.facts
    assert back.describe("people") == world.describe("people") != "people"
    assert list(known_fact_lines(back)) == list(known_fact_lines(world))


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD_Q = json.dumps({"id": "a", "question": "Who?", "answers": ["x"]})


@pytest.mark.parametrize(
    "bad_line, field, message",
    [
        ('{"id": "b", "question": "Why?", "answers": ["y"]', None, "not valid JSON"),
        ('["not", "an", "object"]', None, "expected a JSON object"),
        ('{"id": "b", "question": "Why?"}', "answers", "Field required"),
        ('{"id": "b", "question": "Why?", "answers": []}', "answers", "at least 1 item"),
        ('{"id": "b", "question": "Why?", "answers": ["  "]}', "answers", "answer 0 is empty"),
        ('{"id": "b", "question": "", "answers": ["y"]}', "question", "must not be empty"),
        ('{"id": "b", "question": "Why?", "answer": ["y"]}', "answer", "Extra inputs are not permitted"),
        ('{"id": "b", "question": "Why?", "answers": "y"}', "answers", "valid list"),
        ('{"id": "a", "question": "Why?", "answers": ["y"]}', "id", "duplicate id 'a' (first on line 1)"),
    ],
)
def test_question_loader_names_file_line_and_field(tmp_path, bad_line, field, message):
    path = _write(tmp_path / "questions.jsonl", [GOOD_Q, "", bad_line])
    with pytest.raises(DataFormatError) as err:
        read_jsonl(path, QuestionRecord)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ")
    assert message in text
    if field:
        assert f"field '{field}'" in text


def test_corpus_and_directory_errors(tmp_path):
    path = _write(tmp_path / "d" / "corpora" / "wiki.jsonl", ['{"id": "1", "text": "ok"}', '{"id": "2", "title": "T"}'])
    with pytest.raises(DataFormatError, match=r"wiki.jsonl:2: field 'text': Field required"):
        read_jsonl(path, CorpusDoc)
    _write(tmp_path / "d" / "questions.jsonl", [GOOD_Q])
    with pytest.raises(DataFormatError, match=r"wiki.jsonl:2: field 'text'"):
        load_dataset(tmp_path / "d")
    _write(tmp_path / "e" / "questions.jsonl", [GOOD_Q])
    with pytest.raises(DataFormatError, match="no corpus files"):
        load_dataset(tmp_path / "e")
    _write(tmp_path / "f" / "questions.jsonl", ["", "  "])
    with pytest.raises(DataFormatError, match="holds no records"):
        load_dataset(tmp_path / "f")
    with pytest.raises(DataFormatError, match="no such data directory"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataFormatError, match="questions.jsonl: no such file"):
        load_dataset(tmp_path / "d" / "corpora")


# ----- retrieval ----------------------------------------------------------------------------------------------
def test_tokenize_drops_case_punctuation_and_stop_words():
    assert tokenize("Where was Varo Quell born? In 1843, the_end") == ["varo", "quell", "born", "1843", "end"]


def test_bm25_finds_the_entity_documents(world):
    docs = world.corpora["people"]
    index = BM25Index.build([d.id for d in docs], [d.display() for d in docs])
    q = next(q for q in world.split("train") if q.domain == "people")
    hits = index.search(q.question, k=3)
    assert 1 <= len(hits) <= 3
    assert q.meta["entity"] in hits[0][1]
    assert [h[2] for h in hits] == sorted((h[2] for h in hits), reverse=True) and hits[-1][2] > 0
    assert any(extract_answer(text, q.meta["entity"], q.meta["attribute"]) == q.answers[0] for _, text, _ in hits)
    assert index.search("zzzz qqqq", k=3) == []
    assert index.search("the of was", k=3) == []  # stop words only
    assert index.search(q.question, k=0) == []
    assert len(index.search("born", k=1000)) <= len(docs)


def test_index_is_cached_on_disk_by_content(tmp_path, monkeypatch):
    ids, texts = ["a", "b", "c"], ["Varo Quell was born in Tessin.", "Mira Toss was a baker.", "Tessin lies in Orvane."]
    retrieval.clear_memory_cache()
    first = cached_index(ids, texts, cache_dir=tmp_path)
    key = retrieval.corpus_key(ids, texts)
    folder = tmp_path / "indexes" / f"bm25-{key}"
    assert (folder / retrieval.META_FILE).is_file()
    assert json.loads((folder / retrieval.META_FILE).read_text())["documents"] == 3
    assert cached_index(ids, texts, cache_dir=tmp_path) is first  # same process: same object

    retrieval.clear_memory_cache()

    def no_build(*a, **k):
        raise AssertionError("the index was rebuilt instead of loaded from disk")

    monkeypatch.setattr(BM25Index, "build", no_build)
    loaded = cached_index(ids, texts, cache_dir=tmp_path)
    assert loaded is not first
    assert loaded.search("Tessin born", 3) == first.search("Tessin born", 3)
    assert [h[0] for h in loaded.search("Tessin born", 3)] == ["a", "c"]

    # another corpus (one text changed) has another key, so it is built, not loaded
    with pytest.raises(AssertionError, match="rebuilt"):
        cached_index(ids, texts[:2] + ["Tessin lies in Vell."], cache_dir=tmp_path)
    monkeypatch.undo()
    retrieval.clear_memory_cache()
    assert retrieval.corpus_key(ids, texts[:2] + ["Tessin lies in Vell."]) != key


def test_index_rejects_bad_corpora():
    with pytest.raises(ValueError, match="empty corpus"):
        BM25Index.build([], [])
    with pytest.raises(ValueError, match="duplicate document id 'a'"):
        BM25Index.build(["a", "a"], ["x y", "y z"])
    with pytest.raises(ValueError, match="2 ids but 1 texts"):
        BM25Index.build(["a", "b"], ["x y"])
