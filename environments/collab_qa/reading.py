"""Reading as a skill: pages the model never saw, in the prompt the game shows after a search.

A model that cannot read a page it has never seen gains nothing from searching, and self-play then
teaches it never to search. Two things here (issue 13, item 1):

The reading probe (:func:`reading_probe`). For facts whose value the model was never taught, the
model is put in the game's own state right after a SEARCH with the right query (the question
itself, as the scripted teachers search): the asker alone with the tool of the fact's domain, and the
helper holding that tool in the collaborative game, asked the question. The search is the game's
real one (BM25 over the corpus, ``results_per_search`` results, the game's rendering); the move's
keyword (``ANSWER:`` / ``REPLY:``) is written for the model, which then decodes greedily; the score is
exact match of what it wrote with the value. Only facts whose page the search returns count (the
probe measures reading, not retrieval). Which facts (``facts``):

- ``held_out``: every fact of fresh worlds of the model's world's shape, generated from seeds no
  stage uses (:data:`PROBE_SEED`), none of whose entities shares a word with the model's world.
  Never seen anywhere, by construction. The fresh worlds' names are cut by the QA tokenizer into
  pieces, as no name of the model's own world is.
- ``redrawn``: facts of the model's own world redrawn (:func:`reading_worlds` from :data:`PROBE_SEED`):
  its names, every value drawn anew, so pages no stage shows and values no stage ties to the fact.
- ``unknown``: the model's world's unknown facts asked in the test and ood splits (the ood split in
  its held-out wording), the ones play needs read. No stage ever has their value as a target (reading
  redrawn pages, only by chance: their values are drawn independently of the truth); their
  pages can appear as context (the counterfactual reading changes only the asked fact's value on a
  page, and demonstrations show three results).

Fresh-page reading (:func:`fresh_reading_examples`, ``reading_source="fresh"`` of
:class:`~arena.environments.collab_qa.knowledge.KnowledgeConfig`). Every example is drawn anew: a
fact of a freshly generated world (entities and values drawn by the world generator from its
vocabularies, seeds from :data:`FRESH_SEED` on, entities sharing no word with the model's world),
its question searched with the game's real BM25 over that world's corpus, shown in the game's
prompts after the search (the asker alone with the tool, the helper holding it), answered by
``ANSWER: <value>`` / ``REPLY: <value>``. No page repeats, so the value can only be copied off it.
``reading_source="redrawn"`` reads the model's own world instead, every value drawn anew for each page
(:func:`~arena.environments.collab_qa.world.redrawn_world`): the world's names, whole tokens of its
tokenizer, where fresh worlds' names are cut into pieces.

The relay (:func:`relay_probe`, :func:`relay_examples`). In the collaborative game a search's answer
reaches the final answer in hops, each a move the model must make right: the asker writes the question
to a helper (``ask``), the helper searches it (``query``), reads the page (``reply``), and the asker
answers what the helper replied (``relay``); alone, the asker searches the question itself (``search``).
The relay probe scores each hop by exact match, the model forced to make the hop's move in the game's own
state, on the model's world redrawn, asked in the trained wordings or the held-out one. Relay examples teach the same hops
on other redraws, the keyword in the prompt (the copy is taught, the choice of move is not); they are
mixed into stage 1 (``relay`` of :class:`~arena.environments.collab_qa.knowledge.KnowledgeConfig`).
Without them the warm start copied the question to a helper exactly 38% of the time, the helper's query
37%, and the asker answered the helper's value 21% (seed 0 of the 3-seed run with reading kept).

    score = reading_probe(model_dir, knowledge_config, facts="held_out")   # 0.0 .. 1.0
    hops = relay_probe(model_dir, knowledge_config)   # {"search": .., "ask": .., "query": .., "reply": .., "relay": ..}
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from arena.environments.collab_qa.world import ATTRIBUTES, QADataset, QuestionRecord, WorldConfig, cached_world, extract_answer, generate_world, redrawn_world

GAME = "collab_qa-v0"
#: fresh-page reading draws worlds with seeds ``world.seed + FRESH_SEED + k``; the probe's held-out worlds
#: ``world.seed + PROBE_SEED + k``. Far from each other and from ``reading_source="other"`` (+1000 + k).
FRESH_SEED = 1_000_000
PROBE_SEED = 2_000_000

ProbeFacts = Literal["held_out", "redrawn", "unknown"]
ReadingSource = Literal["fresh", "redrawn"]


@dataclass(frozen=True)
class ProbeItem:
    """One reading test: the game's observation for ``seat`` right after the search, and the move it must
    make (``keyword``: ANSWER for the asker, REPLY for a helper) with the gold value in ``question.answers``.
    A relay test (:func:`relay_reads`) names its ``hop`` and, where what must follow the keyword is not the
    value (a message, a query: the question's own text), that ``target``."""

    question: QuestionRecord
    seat: str
    keyword: str
    observation: str
    target: str | None = None
    hop: str = "reply"

    @property
    def gold(self) -> list[str]:
        """What an exact match is scored against."""
        return [self.target] if self.target is not None else list(self.question.answers)


# ----- the game's state right after the right search -----------------------------------------------------
def _words(ds: QADataset) -> set[str]:
    return {w for f in ds.facts for w in f.entity.lower().split()}


def _bank_of(ds: QADataset):
    """A bank over ``ds`` whose BM25 indexes live in memory only (fresh worlds are many, and used once)."""
    from arena.environments.collab_qa.retrieval import BM25Index
    from arena.environments.collab_qa.rules import QABank

    bank = QABank(ds)
    for tool, docs in ds.corpora.items():
        bank._indexes[tool] = BM25Index.build([d.id for d in docs], [d.display() for d in docs])
    return bank


class _Table:
    """The two games whose prompts are read after a search, on the shape of ``world``, played on any bank."""

    def __init__(self, world: WorldConfig, game_kwargs: Mapping[str, Any] | None = None):
        from arena.registry import make

        extra = dict(game_kwargs or {})  # the game's other options (results_per_search, search_cost, ...)
        corpora = cached_world(world).corpora
        self.alone = {
            d: make(GAME, **{**extra, "helpers": 0, "asker_tool": d, "domain": d, "split": None, "question_index": 0, "world": world}) for d in corpora
        }
        self.group = make(GAME, **{**extra, "split": None, "question_index": 0, "world": world})
        self._extra, self._world = extra, world
        self._beside: dict[tuple[str, int], Any] = {}  # (domain, helpers) -> the asker with its tool beside helpers

    def first_look(self, bank: Any, question: QuestionRecord, domain: str, seed: int, helpers: int = 0) -> str:
        """The asker's observation with the tool of ``domain``, before any move: alone, or beside ``helpers`` helpers."""
        if helpers:
            from arena.registry import make

            key = (domain, helpers)
            if key not in self._beside:
                kwargs = {**self._extra, "helpers": helpers, "asker_tool": domain, "domain": domain, "split": None, "question_index": 0}
                self._beside[key] = make(GAME, **kwargs, world=self._world)
            game = self._beside[key]
        else:
            game = self.alone[domain]
        game.reset(seed=seed)
        game.bank, game.question = bank, question
        return game.observe_text("asker")

    def after_search(self, bank: Any, question: QuestionRecord, domain: str, seed: int) -> list[tuple[str, str, str]]:
        """(keyword, seat, observation) right after ``SEARCH: <question>`` in ``bank``'s corpus of ``domain``:
        the asker alone with that tool, and the helper holding it, asked the question by the asker."""
        alone = self.alone[domain]
        alone.reset(seed=seed)
        alone.bank, alone.question = bank, question
        alone.apply("asker", f"SEARCH: {question.question}")
        out = [("ANSWER", "asker", alone.observe_text("asker"))]
        group = self.group
        group.reset(seed=seed)  # the helpers' labels are drawn as in play
        group.bank, group.question = bank, question
        for n, helper in sorted(group.seat_of.items()):
            if group.tools.get(helper) == domain:
                group.apply("asker", f"ASK helper {n}: {question.question}")
                group.apply(helper, f"SEARCH: {question.question}")
                out.append(("REPLY", helper, group.observe_text(helper)))
        return out

    def relay(self, bank: Any, question: QuestionRecord, domain: str, seed: int, detour: bool = False, hedge: bool = False) -> list[ProbeItem]:
        """Every hop of a search's answer to the final answer (:data:`RELAY_HOPS`), each the game's state
        before the move and the move's keyword: the asker alone writes the question as its query
        (``search``); in the collaborative game the asker writes it to the helper holding the tool
        (``ask``; with ``detour`` after the other helper said it does not know), that helper searches it
        (``query``) and, where the search found the page, replies with the value (``reply``; hedged with
        ``hedge``), and the asker answers what the helper replied (``relay``; ``ANSWER (unsure)`` after a
        hedged reply)."""
        from arena.environments.collab_qa.bots import HEDGE_PREFIX, IDK

        text, value = question.question, question.answers[0]
        alone = self.alone[domain]
        alone.reset(seed=seed)
        alone.bank, alone.question = bank, question
        out = [ProbeItem(question, "asker", "SEARCH", alone.observe_text("asker"), text, "search")]
        group = self.group
        group.reset(seed=seed)
        group.bank, group.question = bank, question
        right = next(n for n, h in sorted(group.seat_of.items()) if group.tools.get(h) == domain)
        helper = group.seat_of[right]
        others = [n for n in sorted(group.seat_of) if n != right]
        if detour and others:
            group.apply("asker", f"ASK helper {others[0]}: {text}")
            group.apply(group.seat_of[others[0]], f"REPLY: {IDK}")
        out.append(ProbeItem(question, "asker", f"ASK helper {right}", group.observe_text("asker"), text, "ask"))
        group.apply("asker", f"ASK helper {right}: {text}")
        out.append(ProbeItem(question, helper, "SEARCH", group.observe_text(helper), text, "query"))
        group.apply(helper, f"SEARCH: {text}")
        searched = group.observe_text(helper)
        if not _found(searched, question):
            return out
        out.append(ProbeItem(question, helper, "REPLY", searched, None, "reply"))
        group.apply(helper, f"REPLY: {HEDGE_PREFIX}{value}" if hedge else f"REPLY: {value}")
        out.append(ProbeItem(question, "asker", "ANSWER (unsure)" if hedge else "ANSWER", group.observe_text("asker"), None, "relay"))
        return out


def result_lines(observation: str) -> list[str]:
    """The search results shown in ``observation``, one line each, in the game's order."""
    return [line for line in observation.splitlines() if line.startswith("[private]   ")]


def _found(observation: str, question: QuestionRecord) -> bool:
    """The search results in ``observation`` state the asked fact (so it can be read)."""
    results = result_lines(observation)
    return any(extract_answer(r, question.meta["entity"], question.meta["attribute"]) == question.answers[0] for r in results)


def _questions(ds: QADataset, rng: np.random.Generator, templates: int, exclude: set[str]) -> list[QuestionRecord]:
    """A question per fact of ``ds`` (entities sharing a word with ``exclude`` left out), in one of the first
    ``templates`` wordings of its attribute, drawn by ``rng`` (``templates=0``: the held-out wording, the
    attribute's last, which the ood split asks in and no stage trains)."""
    out = []
    for i, f in enumerate(ds.facts):
        if exclude & set(f.entity.lower().split()):
            continue
        wordings = ATTRIBUTES[f.attribute].questions[:templates] if templates else ATTRIBUTES[f.attribute].questions[-1:]
        text = wordings[int(rng.integers(len(wordings)))].format(name=f.entity)
        meta = {"entity": f.entity, "kind": f.kind, "attribute": f.attribute, "known": False}
        out.append(QuestionRecord(id=f"fresh-{i}", question=text, answers=[f.value], domain=f.domain, split="fresh", meta=meta))
    return out


def reading_worlds(world: WorldConfig, offset: int, source: ReadingSource = "fresh", new_names: float = 0.0, wide_years: float = 0.0) -> Iterator[QADataset]:
    """Worlds to read, seeds ``world.seed + offset + k``, k = 0, 1, ...: fresh worlds of ``world``'s shape
    (``source="fresh"``), or ``world`` itself with every value drawn anew, independently of the truth
    (``source="redrawn"``: :func:`~arena.environments.collab_qa.world.redrawn_world`, ``new_names`` of its
    name values newly generated, ``wide_years`` of its years from any century)."""
    if source not in ("fresh", "redrawn"):
        raise ValueError(f"source must be 'fresh' or 'redrawn', not {source!r}")
    k = 0
    while True:
        seed = world.seed + offset + k
        yield (
            generate_world(world.model_copy(update={"seed": seed}))
            if source == "fresh"
            else redrawn_world(world, seed, new_names=new_names, wide_years=wide_years)
        )
        k += 1


def searched_reads(
    world: WorldConfig, offset: int, templates: int, seed: int, source: ReadingSource = "fresh", new_names: float = 0.0, wide_years: float = 0.0
) -> Iterator[tuple[QuestionRecord, str, str, str]]:
    """(question, keyword, seat, observation) after the right search, fact after fact of fresh worlds
    (:func:`reading_worlds` from ``offset``, entities sharing no word with ``world``) or of ``world`` redrawn
    (``source="redrawn"``, ``new_names`` and ``wide_years`` as :func:`reading_worlds`), facts in random order, only where the
    search found the page."""
    rng = np.random.default_rng(seed)
    table = _Table(world)
    for bank, q in _world_questions(world, offset, templates, rng, source, new_names, wide_years):
        for keyword, seat, obs in table.after_search(bank, q, q.domain, int(rng.integers(1 << 30))):
            if _found(obs, q):
                yield q, keyword, seat, obs


def _world_questions(
    world: WorldConfig, offset: int, templates: int, rng: np.random.Generator, source: ReadingSource, new_names: float, wide_years: float
) -> Iterator[tuple[Any, QuestionRecord]]:
    """(bank, question) over :func:`reading_worlds`: a question per fact (:func:`_questions`), in an order
    drawn by ``rng``, world after world (fresh worlds leave out entities sharing a word with ``world``)."""
    if source not in ("fresh", "redrawn"):
        raise ValueError(f"source must be 'fresh' or 'redrawn', not {source!r}")
    exclude = _words(cached_world(world)) if source == "fresh" else set()
    for ds in reading_worlds(world, offset, source, new_names, wide_years):
        bank = _bank_of(ds)
        questions = _questions(ds, rng, templates, exclude)
        for i in rng.permutation(len(questions)):
            yield bank, questions[int(i)]


def relay_reads(
    world: WorldConfig,
    offset: int,
    templates: int,
    seed: int,
    source: ReadingSource = "redrawn",
    new_names: float = 0.0,
    wide_years: float = 0.0,
    detour: float = 0.5,
    hedge: float = 0.25,
) -> Iterator[list[ProbeItem]]:
    """:meth:`_Table.relay` for fact after fact of :func:`reading_worlds` (as :func:`searched_reads`), one
    list of hops per fact; a ``detour`` share of them ask the other helper first, a ``hedge`` share hedge
    the reply."""
    rng = np.random.default_rng(seed)
    table = _Table(world)
    for bank, q in _world_questions(world, offset, templates, rng, source, new_names, wide_years):
        episode_seed, d, h = int(rng.integers(1 << 30)), bool(rng.random() < detour), bool(rng.random() < hedge)
        yield table.relay(bank, q, q.domain, episode_seed, d, h)


# ----- the probe ---------------------------------------------------------------------------------------------
def probe_items(cfg: Any, facts: ProbeFacts = "held_out", limit: int = 200, seed: int = 0) -> list[ProbeItem]:
    """The probe's reading tests for a :class:`KnowledgeConfig` ``cfg`` (see the module docstring):
    ``limit`` of them for ``held_out`` and ``redrawn`` (worlds until there are enough), every one for ``unknown``."""
    if facts in ("held_out", "redrawn"):
        reads = searched_reads(cfg.world, PROBE_SEED, cfg.qa_templates, seed, "fresh" if facts == "held_out" else "redrawn")
        return [ProbeItem(q, seat, keyword, obs) for q, keyword, seat, obs in _take(reads, limit)]
    if facts != "unknown":
        raise ValueError(f"facts must be 'held_out', 'redrawn' or 'unknown', not {facts!r}")
    ds = cached_world(cfg.world)
    table, bank = _Table(cfg.world), _bank_of(ds)
    out = []
    for q in ds.split("test") + ds.split("ood"):
        if q.meta.get("known"):
            continue
        for keyword, seat, obs in table.after_search(bank, q, q.domain, seed):
            if _found(obs, q):
                out.append(ProbeItem(q, seat, keyword, obs))
    return out


def _take(it: Iterator, n: int) -> list:
    return [x for _, x in zip(range(n), it)]


def score_reads(items: Sequence[ProbeItem], reads: Sequence[str]) -> float:
    """The share of ``reads`` (what followed the keyword) that are an exact match with their item's value."""
    from arena.environments.collab_qa.rules import best_score

    if len(items) != len(reads):
        raise ValueError(f"{len(items)} probe items but {len(reads)} reads")
    if not items:
        raise ValueError("no probe items: no search found its page")
    return float(np.mean([best_score(_first_line(r), it.gold)[1] for it, r in zip(items, reads)]))


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0].strip()


def model_reads(model: str | Path | tuple[Any, Any], items: Sequence[ProbeItem], max_new_tokens: int = 16) -> list[str]:
    """What ``model`` (a path, or a loaded (model, tokenizer)) writes greedily after each item's keyword,
    rendered by the LLM agent exactly as in play."""
    from arena.agents.base import PlayerView
    from arena.agents.llm import LLMAgent
    from arena.engines.base import SamplingParams
    from arena.engines.hf import HFEngine

    engine = HFEngine(model) if isinstance(model, (str, Path)) else HFEngine.from_model(*model)
    agent, tok = LLMAgent(engine), engine.tokenizer
    prompts = [
        list(agent.prompt_ids(PlayerView(game=GAME, player=it.seat, observation=it.observation))) + tok.encode(f"{it.keyword}:", add_special_tokens=False)
        for it in items
    ]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    out: list[str] = []
    for i in range(0, len(prompts), engine.max_batch_size):
        chunk = prompts[i : i + engine.max_batch_size]
        out += [c.text for c in engine.generate_batch(chunk, params, [0] * len(chunk))]
    return out


def reading_probe(
    model_dir: str | Path | tuple[Any, Any],
    cfg: Any,
    facts: ProbeFacts = "held_out",
    limit: int = 200,
    seed: int = 0,
    reader: Callable[[Sequence[ProbeItem]], list[str]] | None = None,
) -> float:
    """Exact match of the value the model writes, forced to answer right after the right search, on facts it
    was never taught (see the module docstring). ``reader`` replaces the model (items -> what it writes
    after the keyword): for tests of the probe itself."""
    items = probe_items(cfg, facts, limit, seed)
    reads = reader(items) if reader is not None else model_reads(model_dir, items)
    return score_reads(items, reads)


# ----- the relay probe ---------------------------------------------------------------------------------------
#: the hops a search's answer travels to the final answer (:meth:`_Table.relay`), in order: the asker's own
#: query alone with a tool, its question to a helper, the helper's query, the helper's reply after the
#: search, the asker's answer after the reply
RELAY_HOPS = ("search", "ask", "query", "reply", "relay")
#: what :func:`relay_probe` lets the model write (a question is ~10 tokens of the QA tokenizer)
RELAY_TOKENS = 32


Wording = Literal["trained", "held_out"]


def relay_items(cfg: Any, limit: int = 100, seed: int = 0, wording: Wording = "trained") -> list[ProbeItem]:
    """Every hop of ``limit`` facts of the model's world redrawn (:func:`relay_reads` from :data:`PROBE_SEED`):
    pages no stage shows, values no stage ties to the fact. Asked in the ``trained`` wordings (the test
    split's: the states before the copying hops, ``search``, ``ask`` and ``query``, are then ones relay
    examples teach, as play on the test split shows them), or the ``held_out`` one (the ood split's, which
    no stage writes)."""
    if wording not in ("trained", "held_out"):
        raise ValueError(f"wording must be 'trained' or 'held_out', not {wording!r}")
    templates = cfg.qa_templates if wording == "trained" else 0
    return [it for chain in _take(relay_reads(cfg.world, PROBE_SEED, templates, seed, "redrawn"), limit) for it in chain]


def score_hops(items: Sequence[ProbeItem], reads: Sequence[str]) -> dict[str, float]:
    """:func:`score_reads` per hop of :data:`RELAY_HOPS` (the hops ``items`` have)."""
    if len(items) != len(reads):
        raise ValueError(f"{len(items)} probe items but {len(reads)} reads")
    out = {}
    for hop in RELAY_HOPS:
        pairs = [(it, r) for it, r in zip(items, reads) if it.hop == hop]
        if pairs:
            out[hop] = score_reads([it for it, _ in pairs], [r for _, r in pairs])
    return out


def relay_probe(
    model: str | Path | tuple[Any, Any] | None,
    cfg: Any,
    limit: int = 100,
    seed: int = 0,
    reader: Callable[[Sequence[ProbeItem]], list[str]] | None = None,
    wording: Wording = "trained",
) -> dict[str, float]:
    """Exact match per hop of the relay (:data:`RELAY_HOPS`), the model forced to make each hop's move in the
    game's own state before it, on ``limit`` facts of its world redrawn, asked in ``wording`` (:func:`relay_items`). Searching
    through a helper pays only if every hop holds: the question reaches the helper, the helper searches
    it, reads the page, and the asker answers what the helper replied. ``reader`` as :func:`reading_probe`."""
    items = relay_items(cfg, limit, seed, wording)
    reads = reader(items) if reader is not None else model_reads(model, items, max_new_tokens=RELAY_TOKENS)
    return score_hops(items, reads)


# ----- the model's own fixed strategies ----------------------------------------------------------------------
@dataclass(frozen=True)
class ForcedAnswer:
    """One question answered by the model made to play a fixed strategy, alone with its corpus's tool."""

    question_id: str
    known: bool  # the data marks the fact known (pre-trained)
    memory_f1: float  # F1 of what it writes after ``ANSWER:`` as its first move (no search)
    read_f1: float  # F1 of what it writes after ``ANSWER:`` right after ``SEARCH: <the question>``


def forced_answers(
    model: str | Path | tuple[Any, Any] | None,
    world: WorldConfig,
    questions: Sequence[QuestionRecord],
    seed: int = 0,
    reader: Callable[[Sequence[ProbeItem]], list[str]] | None = None,
    game_kwargs: Mapping[str, Any] | None = None,
) -> list[ForcedAnswer]:
    """The model's answer to each question from memory and right after the right search (the game's own
    prompts and search, greedy): what never-search, always-search and the oracle between them score.
    ``game_kwargs``: the game's other options (an entry's ``results_per_search``, ...; seating, split and
    world are set here). ``reader`` replaces the model, as for :func:`reading_probe`."""
    from arena.environments.collab_qa.rules import best_score

    table, bank = _Table(world, game_kwargs), _bank_of(cached_world(world))
    first = [ProbeItem(q, "asker", "ANSWER", table.first_look(bank, q, q.domain, seed)) for q in questions]
    searched = [ProbeItem(q, "asker", "ANSWER", table.after_search(bank, q, q.domain, seed)[0][2]) for q in questions]
    reads = reader(first + searched) if reader is not None else model_reads(model, first + searched)
    f1 = [best_score(_first_line(r), it.question.answers)[0] for it, r in zip(first + searched, reads)]
    n = len(questions)
    return [ForcedAnswer(q.id, bool(q.meta.get("known")), f1[i], f1[n + i]) for i, q in enumerate(questions)]


def search_probabilities(
    model: str | Path | tuple[Any, Any],
    world: WorldConfig,
    questions: Sequence[QuestionRecord],
    seed: int = 0,
    helpers: int = 0,
    game_kwargs: Mapping[str, Any] | None = None,
) -> list[float]:
    """The probability ``model`` gives ``SEARCH`` as its first move alone with the tool of each question's
    corpus (the game's own first prompt; with ``helpers``, the asker holds that tool beside as many helpers,
    as ``asker_tool`` games train it). Greedy play shows only which move wins; this shows whether the
    choice leans on what the model knows: a model that searches everywhere may still search more readily
    where it does not know, and one that searches nowhere less readily where it does. ``game_kwargs``: the
    game's other options (its ``search_cost``, ...), as for :func:`forced_answers`."""
    import math

    from arena.agents.base import PlayerView
    from arena.agents.llm import LLMAgent
    from arena.engines.hf import HFEngine

    engine = HFEngine(model) if isinstance(model, (str, Path)) else HFEngine.from_model(*model)
    agent, keyword = LLMAgent(engine), engine.tokenizer.encode("SEARCH", add_special_tokens=False)
    table, bank = _Table(world, game_kwargs), _bank_of(cached_world(world))
    out = []
    for q in questions:
        prompt = list(agent.prompt_ids(PlayerView(game=GAME, player="asker", observation=table.first_look(bank, q, q.domain, seed, helpers))))
        out.append(math.exp(sum(engine.score(prompt, keyword))))
    return out


def fixed_strategy_rewards(answers: Sequence[ForcedAnswer], search_cost: float) -> dict[str, float]:
    """Mean reward (F1 minus ``search_cost`` per search) of the model's three fixed strategies: never
    search (answer from memory), always search once, and the oracle that searches exactly where the data
    marks the fact unknown."""
    if not answers:
        raise ValueError("no answers to score")
    never = [a.memory_f1 for a in answers]
    always = [a.read_f1 - search_cost for a in answers]
    oracle = [a.memory_f1 if a.known else a.read_f1 - search_cost for a in answers]
    return {
        "reward_never_search": float(np.mean(never)),
        "reward_always_search": float(np.mean(always)),
        "reward_oracle": float(np.mean(oracle)),
        "memory_f1_known": float(np.mean([a.memory_f1 for a in answers if a.known] or [np.nan])),
        "read_f1_unknown": float(np.mean([a.read_f1 for a in answers if not a.known] or [np.nan])),
    }


# ----- examples ---------------------------------------------------------------------------------------------
def keyword_example(tokenizer: Any, prompt: list[int], keyword: str, value: str, end: int) -> tuple[list[int], list[int]]:
    """``prompt`` followed by ``<keyword>:`` as part of the prompt, and `` <value>`` as the target: the
    example teaches the value, never the choice of move. (The QA tokenizer cuts ``KEYWORD: value`` at the
    colon, so the two parts are the move's own tokens.)"""
    head = tokenizer.encode(f"{keyword}:", add_special_tokens=False)
    whole = tokenizer.encode(f"{keyword}: {value}", add_special_tokens=False)
    if whole[: len(head)] != head:  # a tokenizer that merges across the colon: teach the whole move
        return list(prompt), whole + [end]
    return list(prompt) + head, whole[len(head) :] + [end]


#: relay examples draw their worlds from ``world.seed + RELAY_SEED`` (fresh-page reading from FRESH_SEED)
RELAY_SEED = 1_500_000


def relay_examples(cfg: Any, tokenizer: Any, render: Callable[[Any], list[int]], n: int) -> list[tuple[list[int], list[int]]]:
    """``n`` examples of the relay's hops (:meth:`_Table.relay`) on the model's world redrawn, no page or value
    repeated: each hop's state with its keyword, and what must follow it (the question, or the value out of
    the helper's reply) as the target (:func:`keyword_example`), so the copying is taught and the choice of
    move is not. The ``reply`` hop (reading the page) is left to fresh-page reading, which reads 48,000
    pages in the recipe of issue 13; here it would take a fifth of the examples from the weakest hop, the
    asker's answer after a reply."""
    from arena.agents.base import PlayerView
    from arena.trainers.imitation import end_token_id

    end = end_token_id(tokenizer)
    out: list[tuple[list[int], list[int]]] = []
    if n <= 0:
        return out
    for chain in relay_reads(cfg.world, RELAY_SEED, cfg.qa_templates, cfg.stage1_seed + 13, "redrawn", cfg.redrawn_new_names, cfg.redrawn_wide_years):
        for it in chain:
            if it.hop == "reply":
                continue
            prompt = render(PlayerView(game=GAME, player=it.seat, observation=it.observation))
            out.append(keyword_example(tokenizer, list(prompt), it.keyword, it.gold[0], end))
            if len(out) == n:
                return out
    return out


# ----- fresh-page reading (stage 0 with reading_source="fresh") -----------------------------------------------
def fresh_reading_examples(cfg: Any, tokenizer: Any, render: Callable[[Any], list[int]], n: int) -> list[tuple[list[int], list[int]]]:
    """``n`` examples, each a fact of a fresh world read off its page after the right search, in the game's
    prompt (see the module docstring): the prompt, then ``<keyword>: <value>`` and the end token as target."""
    from arena.agents.base import PlayerView
    from arena.trainers.imitation import end_token_id

    end = end_token_id(tokenizer)
    encode = functools.partial(tokenizer.encode, add_special_tokens=False)
    out = []
    source = "redrawn" if cfg.reading_source == "redrawn" else "fresh"
    reads = searched_reads(cfg.world, FRESH_SEED, cfg.qa_templates, cfg.stage0_seed + 11, source, cfg.redrawn_new_names, cfg.redrawn_wide_years)
    for q, keyword, seat, obs in _take(reads, n):
        prompt = render(PlayerView(game=GAME, player=seat, observation=obs))
        out.append((list(prompt), encode(f"{keyword}: {q.answers[0]}") + [end]))
    return out
