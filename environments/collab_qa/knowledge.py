"""The collaborative-QA model: a tiny model that knows a measurable part of a generated world.

Eisenstein et al. (2025) train agents to learn *what they know*. With a
generated world (:mod:`arena.environments.collab_qa.world`) "what the model knows"
is a fact of the data: the model is pre-trained on exactly the facts marked
``known`` and on nothing else of the world, and :func:`closed_book` measures
how much of that stuck.

The base. The tiny model of :mod:`arena.tiny` (the run's ``model.tiny``
shape), with its tokenizer trained on collab_qa's own text (scripted play of
the game on the world; :func:`qa_text_corpus`), as DESIGN.md has the tiny
model's tokenizer trained on the game's text: this warm start builds its own
base (``own_base``), whatever the run's other games. On a tokenizer trained
on other games' text a QA prompt was about twice as long, and the tiny model
learned to copy a question 19% of the time after 600 steps where this one
copies 90%. Tokenizers hold no facts: they only decide how strings are cut.

Three training stages, then a baseline:

0. Reading. The train split's questions in a short chat: the question,
   answered by ``SEARCH: <the question>``, and the question with the document
   that states its answer, answered by ``ANSWER: <value>``. Every move of the
   protocol carries names (queries, messages, answers read off a search
   result); the QA tokenizer makes each name of the world a token or two, so
   copying is short, but a tiny model still has to learn it before it can
   search at all. These are the facts the warm start's demonstrations show
   with their documents anyway; test and ood facts are never taught. Then
   the counterfactual reading: every fact of the world, asked in a trained
   wording, over its document with the value swapped for another value of
   the attribute, answered by the false value. It can only be read off the
   page, so the model learns to read rather than to recall what it saw next
   to a name; without it the warm start scored F1 0.91 alone with a tool on
   train questions and 0.00 on test ones. The same false-value reading is
   also shown in the game's own prompts (``in_game``): the asker alone with
   the tool and the helper holding it, each after its search. (The
   same two moves in the game's own prompts, ``always_search`` alone on every
   train question, were tried as well: over many passes the model then
   memorised the train split's *unknown* facts, closed-book 0.58 where it
   should be near 0, so stage 0 stays in the short chat.)
   (``reading_source="other"``: questions of *other* generated worlds instead,
   seeds ``world.seed + 1000 + k``; their names are cut into letters, and
   learning to copy them cost ~10x the steps.)
1. Knowledge. Each known fact as a sentence
   (:func:`~arena.environments.collab_qa.world.known_fact_lines`) and as a
   closed-book answer: the asker's prompt in the game's closed-book setting
   (``collab_qa-v0`` with no helpers and no tool), rendered by the LLM agent
   exactly as in play, for each of the fact's first ``qa_templates``
   in-distribution question wordings, with the target ``ANSWER: <value>``.
   The held-out wording of the ``ood`` split is never trained, so ood
   questions probe knowledge under new wording. With ``in_game`` each known
   fact is also taught in the game's own first prompts (the asker alone with
   a tool, the collaborative asker, a helper asked it) as the value after
   ``ANSWER:`` / ``REPLY:``, the keyword written into the prompt: what the
   model knows is then there in play, and whether to answer from memory is
   left to the warm start and self-play. (A fact learned only closed-book did
   not carry over: made to answer alone with a tool, the warm start was right
   on 9% of the known test questions, all of which it answered right
   closed-book.) With ``pretrain_replay`` new reading pages are mixed in, so
   stage 1 keeps what stage 0 taught; with ``relay`` the relay's hops
   (:func:`~arena.environments.collab_qa.reading.relay_examples`: the
   question copied to a helper and into its query, the helper's reply copied
   into the answer), so a search through a helper can pay.
2. Protocol warm start (the prompting analogue). Imitation of scripted
   teachers playing ``collab_qa-v0`` on the train split, collaborative (every
   seat) and isolated (each corpus): a teacher answers from memory with
   probability ``memory_rate`` for every question alike, blind to what is
   known, and otherwise searches (``always_search``: helpers search, the asker
   relays); a memory answer is the stage-1 model's own closed-book answer,
   hedged with probability ``hedge_rate``. The result searches a lot and
   sometimes answers from memory, right or wrong: self-play has something to
   reward and something to correct. Stage-0 and stage-1 examples are replayed
   (``replay``, a share of the demonstrations each) so copying and the facts
   are not forgotten.
3. Action supervision (a baseline, :func:`cached_action_supervised`): the
   warm-started model fine-tuned by imitation of a teacher that answers from
   memory exactly where the model's own closed-book answer is right and
   searches everywhere else, the paper's "supervised actions" baseline.

Every training stage is :func:`arena.trainers.imitation.train_imitation`
(prompt tokens masked, targets ended by ``<|end|>``); models are cached like
the warm start, keyed by the base model's name and the config, built in a
temporary directory renamed into place; the model after stage 0 is cached on
its own, keyed by what stage 0 reads (:func:`cached_reading_model`), so builds
that differ only in later stages (or, with ``reading_seed``, in their seed)
share the dearest stage; the model after stage 1 likewise, keyed by what stages
0 and 1 depend on (:func:`cached_pretrained_model`; ``pretrain_seed`` pins its
seed), so builds that differ only in the warm start share both. Each model directory holds
``closed_book.json``: its closed-book answer and correctness per question of
the world, and ``arena_qa_model.json``: the config, losses, timings and
closed-book accuracy.

    path = cached_knowledge_model(TinyModelConfig(), KnowledgeConfig(), cache_dir)
    right = closed_book(path, questions)          # [1.0, 0.0, ...]

In a run config the model is chosen by ``model.warm_start: {recipe: knowledge, ...}``:
the package registers the recipe (:func:`knowledge_warm_start`) with
:func:`arena.warm_start.register_warm_start`, and checks each collab_qa entry
of such a run against the world the model knows (:func:`check_entry`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic

from arena.environments.collab_qa.reading import keyword_example, relay_examples
from arena.environments.collab_qa.world import ATTRIBUTES, QuestionRecord, WorldConfig, cached_world, known_fact_lines
from arena.seeds import derive_seed

GAME = "collab_qa-v0"
META_FILE = "arena_qa_model.json"
#: the model after stage 0 alone (:func:`cached_reading_model`) records itself here
READING_FILE = "arena_qa_reading.json"
PRETRAIN_FILE = "arena_qa_pretrained.json"
CLOSED_BOOK_FILE = "closed_book.json"


class Stage(pydantic.BaseModel):
    """One imitation stage: optimiser steps, examples per step, peak learning rate (cosine to 10%)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    steps: int = pydantic.Field(gt=0)
    batch_size: int = pydantic.Field(gt=0)
    lr: float = pydantic.Field(gt=0)
    #: weight of next-token loss on the prompt (:attr:`~arena.trainers.imitation.ImitationConfig.prompt_loss`)
    prompt_loss: float = pydantic.Field(0.0, ge=0)


class KnowledgeConfig(pydantic.BaseModel):
    """How the collaborative-QA model is built from the tiny model (see the module docstring).

    As ``model.warm_start`` of a run config (with ``recipe: knowledge``) it replaces the
    default warm start: the run's model is then this one.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    #: tells this warm start from the default imitation of every game's bots in a run config
    recipe: Literal["knowledge"] = "knowledge"
    #: the world whose known facts the model learns (the game entries must play the same world)
    world: WorldConfig = WorldConfig()
    #: in-distribution question wordings per known fact in closed-book form (at most all but the held-out one)
    qa_templates: int = pydantic.Field(2, ge=1)
    #: what stage 0 reads: the train split of the model's own world (``own``: its names are whole
    #: tokens of the QA tokenizer, so copying one is copying a token or two), or ``reading_worlds``
    #: other worlds (``other``: names the tokenizer cuts into letters; copying them took ~600 steps
    #: of 64 examples, the dearest stage by far)
    #: or fresh pages (``fresh``: every example a fact of a freshly generated world read off its page after the
    #: right search, in the game's own prompts; :mod:`arena.environments.collab_qa.reading`), trained for
    #: ``fresh_reading`` instead of ``reading``; or the model's own world redrawn (``redrawn``: as ``fresh``, but on the
    #: world's own names with every value drawn anew from its attribute's vocabulary, so no page states a true fact)
    reading_source: Literal["own", "other", "fresh", "redrawn"] = "own"
    reading_worlds: int = pydantic.Field(8, ge=0)
    #: the fresh-page reading stage (``reading_source`` ``fresh`` or ``redrawn``): steps x batch_size examples, none repeated
    fresh_reading: Stage = Stage(steps=600, batch_size=16, lr=3e-3)
    #: redrawn pages: the share of name values (birthplace, source, region) newly generated, and of years
    #: from any century (:func:`~arena.environments.collab_qa.world.redrawn_world`). With the world's four
    #: towns alone the model learned the prior and wrote the same town whichever the page stated
    redrawn_new_names: float = pydantic.Field(0.5, ge=0.0, le=1.0)
    redrawn_wide_years: float = pydantic.Field(0.5, ge=0.0, le=1.0)
    #: reading and copying: short prompts (the question, a document), and the game's prompts after a
    #: search (``in_game``). The two-layer model fits them (loss 0.004 after 1000 steps) but copies the
    #: value off the page for only 0-22% of facts it was never shown: it learns these pages, not reading
    reading: Stage = Stage(steps=300, batch_size=16, lr=3e-3)
    #: counterfactual reading: for every fact of the world, this many pairs of a question about it (an
    #: in-distribution wording) answered by ``SEARCH: <question>``, and the same question over the document
    #: stating the fact with its value replaced by another value of the attribute, answered by that value.
    #: The value is false by construction, so no test or ood fact is taught, and it changes from example to
    #: example, so it can only be read off the document. Without them the warm start answered from
    #: associations memorised on the train split: alone with a tool, F1 0.91 on train and 0.00 on test.
    counterfactual: int = pydantic.Field(2, ge=0)
    #: stage 1 also teaches each known fact in the game's own first prompts (alone with a tool, the
    #: collaborative asker, a helper asked it) as the value after ``ANSWER:`` / ``REPLY:``, the keyword
    #: being part of the prompt so the choice of move is never taught. Without it a fact learned in the
    #: closed-book prompt did not carry over: forced to answer alone with a tool, the warm start was
    #: right on 9% of the test questions it answered right closed-book
    in_game: bool = True
    #: memorising the known facts takes ~40 passes over the knowledge examples (3 per fact closed-book:
    #: the 128-wide model recalled every trained one after 120 steps of 32 on 30 facts; the 64-wide
    #: default tiny model three in four after 120 steps of 64); with ``in_game`` there are 9 per fact,
    #: and 400 steps of 32 on 44 known facts recall every known test fact in play
    pretrain: Stage = Stage(steps=400, batch_size=32, lr=5e-3)
    #: stage-0 examples mixed into stage 1, so many per knowledge example seen (:func:`pretrain_examples`).
    #: Stage 1 alone, on known facts only at a high rate, erased the reading stage 0 taught (redrawn probe
    #: 0.875 after reading, 0.075 after stage 1); one new page per knowledge example at lr 2e-3 over 800
    #: steps kept it (0.89) and every known test fact (benchmarks/reading_retention.py)
    pretrain_replay: float = pydantic.Field(0.0, ge=0.0)
    #: relay examples (:func:`~arena.environments.collab_qa.reading.relay_examples`) mixed into stage 1, so
    #: many per knowledge example seen, and replayed in the later stages (``replay``): the hops by which a
    #: search's answer reaches the final answer through a helper (the asker's question to the helper, the
    #: helper's query, the asker's answer after its reply; reading the page is stage 0's), on the world
    #: redrawn. Without them the warm start learned the collaborative protocol from 48 demonstrations on the
    #: train split: it asked helpers about other entities, helpers searched other questions, and the asker
    #: answered a value it remembered over the one a helper had just read (relay probe, seed 0: 0.38 / 0.37
    #: / 0.21). With 1 over 1,200 steps of stage 1: 0.99+ on the copying hops and 0.72-0.79 on the asker's
    #: answer, over three seeds (benchmarks/relay_probe.py)
    relay: float = pydantic.Field(0.0, ge=0.0)
    #: after each stage, the redrawn reading probe (:func:`~arena.environments.collab_qa.reading.reading_probe`)
    #: on this many items, and the relay probe (:func:`~arena.environments.collab_qa.reading.relay_probe`) on half as many
    #: facts, recorded in the model's metadata (``reading_probe_redrawn``, ``relay_probe``); 0: not measured
    stage_probes: int = pydantic.Field(0, ge=0)
    #: the protocol, with stage-0 and stage-1 replay: at 80 steps of 32 the model still mixed up the seats'
    #: moves (an asker writing REPLY, a helper ANSWER; 45% illegal in collaborative play), at 300 steps 5%
    warm_start: Stage = Stage(steps=300, batch_size=32, lr=2e-3)
    #: the prompting analogue's chance of answering from memory, the same for every question
    memory_rate: float = pydantic.Field(0.2, ge=0.0, le=1.0)
    #: chance that a teacher's memory answer is hedged
    hedge_rate: float = pydantic.Field(0.5, ge=0.0, le=1.0)
    #: demonstration episodes: collaborative (asker and two helpers), and isolated per corpus
    collaborative_episodes: int = pydantic.Field(48, ge=0)
    #: (at 16 per corpus the warm start alone with a tool read the wrong attribute off a search result
    #: often enough that its F1 fell below answering closed-book; 48 took it from ~0.4 to ~0.6)
    isolated_episodes: int = pydantic.Field(48, ge=0)
    #: collaborative demonstrations per corpus with the asker holding that corpus's search tool and asked
    #: its questions (``asker_tool`` and ``domain`` of the game), beside the two helpers: the asker's
    #: prompt is then the isolated one's, with helpers. For runs whose training entries seat such an asker
    #: (the collaborative protocol with the deployed decision, to search or to answer, in the trained seat)
    asker_tool_episodes: int = pydantic.Field(0, ge=0)
    #: stage-0 and stage-1 examples mixed into later stages, each as a share of their demonstrations
    #: (at 0.3 the warm start forgot a third of the facts)
    replay: float = pydantic.Field(1.0, ge=0.0)
    #: the action-supervised baseline's fine-tuning (from the warm-started model)
    #: (measured on the test-size world: 40 steps of 32 at 1e-3 left it searching on 44% of the questions it
    #: knows and 69% of those it does not; 200 steps at 2e-3 on 17% and 88%)
    action_supervised: Stage = Stage(steps=200, batch_size=32, lr=2e-3)
    #: prompts longer than this keep their end (a helper's prompt after a search is ~300 tokens)
    max_len: int = pydantic.Field(1024, gt=0)
    #: seeds demonstrations, replay draws and batch order
    seed: int = 0
    #: seeds stage 0 (its examples and batch order) instead of ``seed``: builds with different seeds then
    #: share one model after reading (:func:`cached_reading_model`), the dearest stage
    reading_seed: int | None = None
    #: seeds stage 1 (its example draws, relay examples and batch order) instead of ``seed``: builds with different
    #: seeds then share one model after stage 1 as well (:func:`cached_pretrained_model`), and differ from the
    #: warm start on (demonstrations, replay draws, self-play). On a world large enough for 200 questions a
    #: split, stage 1 memorises several hundred facts: the dearest stage after reading
    pretrain_seed: int | None = None

    @property
    def stage0_seed(self) -> int:
        return self.seed if self.reading_seed is None else self.reading_seed

    @property
    def stage1_seed(self) -> int:
        return self.seed if self.pretrain_seed is None else self.pretrain_seed

    @pydantic.model_validator(mode="before")
    @classmethod
    def _stages_from_their_defaults(cls, data: Any) -> Any:
        """A stage given in part (``fresh_reading: {steps: 3000}``, or the override
        ``model.warm_start.fresh_reading.steps=3000``) keeps that stage's other defaults."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(field.default, Stage) and isinstance(out.get(name), dict):
                out[name] = {**field.default.model_dump(), **out[name]}
        return out

    @pydantic.field_validator("qa_templates")
    @classmethod
    def _not_the_held_out_wording(cls, v: int) -> int:
        most = min(len(a.questions) for a in ATTRIBUTES.values()) - 1
        if v > most:
            raise ValueError(f"qa_templates must be at most {most}: the last wording of each attribute is held out for the ood split")
        return v


#: the fields of :class:`KnowledgeConfig` that stage 0 (reading) depends on: builds that differ in no other
#: field share the model after reading (:func:`cached_reading_model`)
READING_FIELDS = frozenset(
    {
        "world",
        "qa_templates",
        "reading_source",
        "reading_worlds",
        "fresh_reading",
        "redrawn_new_names",
        "redrawn_wide_years",
        "reading",
        "counterfactual",
        "in_game",
        "max_len",
    }
)


def _text_fields(cfg: KnowledgeConfig, fields: frozenset[str]) -> dict[str, Any]:
    """The ``fields`` of ``cfg``, its world as its text (:meth:`WorldConfig.text_world`): stages 0 and 1
    read pages and learn facts, not the split a question is in, so both splits share them (except in
    reading the world's own train split, ``reading_source="own"``)."""
    world = cfg.world if cfg.reading_source == "own" else cfg.world.text_world()
    return cfg.model_copy(update={"world": world}).model_dump(mode="json", include=fields)


def reading_config(cfg: KnowledgeConfig) -> dict[str, Any]:
    """What stage 0 depends on: the :data:`READING_FIELDS` of ``cfg`` and the seed it reads with."""
    return {**_text_fields(cfg, READING_FIELDS), "seed": cfg.stage0_seed}


#: the fields stage 1 depends on beside stage 0's (the probes after each stage are measured in its build):
#: builds that differ in no other field share the model after stage 1 (:func:`cached_pretrained_model`)
PRETRAIN_FIELDS = READING_FIELDS | {"pretrain", "pretrain_replay", "relay", "stage_probes"}


def pretrain_config(cfg: KnowledgeConfig) -> dict[str, Any]:
    """What stages 0 and 1 depend on: the :data:`PRETRAIN_FIELDS` of ``cfg`` and the two stages' seeds."""
    return {**_text_fields(cfg, PRETRAIN_FIELDS), "seed": cfg.stage0_seed, "pretrain_seed": cfg.stage1_seed}


# ----- the closed-book setting ---------------------------------------------------------------------
def _closed_book_game(world: WorldConfig):
    from arena.registry import make

    return make(GAME, helpers=0, split=None, question_index=0, world=world)


def _with_question(game, question: QuestionRecord):
    """The closed-book game, freshly started, asking ``question`` (which need not be in the data:
    the pre-training wordings are not all questions of the world)."""
    game.reset(seed=0)
    game.question = question
    return game


def closed_book_observation(question: QuestionRecord, world: WorldConfig | None = None) -> str:
    """The asker's first observation in the closed-book setting (no helpers, no tool) for ``question``."""
    return _with_question(_closed_book_game(world or WorldConfig()), question).observe_text("asker")


@dataclass(frozen=True)
class ClosedBookAnswer:
    """A model's closed-book answer to one question: its move read by the game's rules."""

    question_id: str
    answer: str | None  # None: abstained, or no legal move
    hedged: bool
    f1: float
    correct: float  # exact match with a gold answer


def closed_book_answers(
    model: str | Path | tuple[Any, Any],
    questions: Sequence[QuestionRecord],
    world: WorldConfig | None = None,
    max_new_tokens: int = 24,
) -> list[ClosedBookAnswer]:
    """Greedy closed-book answers of ``model`` (a path, or a loaded (model, tokenizer)) to ``questions``."""
    from arena.agents.base import PlayerView
    from arena.agents.llm import LLMAgent
    from arena.engines.base import SamplingParams
    from arena.engines.hf import HFEngine
    from arena.game import IllegalMove

    engine = HFEngine(model) if isinstance(model, (str, Path)) else HFEngine.from_model(*model)
    agent = LLMAgent(engine)
    game = _closed_book_game(world or WorldConfig())
    prompts = [agent.prompt_ids(PlayerView(game=GAME, player="asker", observation=_with_question(game, q).observe_text("asker"))) for q in questions]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    completions = []
    for i in range(0, len(prompts), engine.max_batch_size):
        completions += engine.generate_batch(prompts[i : i + engine.max_batch_size], params, [0] * len(prompts[i : i + engine.max_batch_size]))
    out = []
    for q, c in zip(questions, completions):
        _with_question(game, q)
        try:
            game.apply("asker", c.text.strip())
        except IllegalMove:
            pass
        f1, em = game.quality()
        answered = game.outcome in ("answered", "hedged")
        out.append(ClosedBookAnswer(q.id, game.answer if answered else None, game.outcome == "hedged", f1, em))
    return out


def closed_book(model_path: str | Path, questions: Sequence[QuestionRecord], world: WorldConfig | None = None) -> list[float]:
    """Per question, 1.0 if the model's greedy closed-book answer is an exact match, else 0.0."""
    return [a.correct for a in closed_book_answers(model_path, questions, world)]


def read_closed_book(model_dir: str | Path) -> dict[str, ClosedBookAnswer]:
    """The closed-book answers stored with a model built here: question id -> answer."""
    rows = json.loads((Path(model_dir) / CLOSED_BOOK_FILE).read_text())
    return {r["question_id"]: ClosedBookAnswer(**r) for r in rows}


# ----- the base: a tokenizer trained on collab_qa's own text -----------------------------------------
def qa_text_corpus(world: WorldConfig, episodes: int = 8, seed: int = 0) -> list[str]:
    """Observations, moves and system prompts of scripted play of collab_qa on ``world``: every bot in
    every seat, collaborative and isolated (each corpus), ``episodes`` games each, all questions."""
    from arena.agents.catalog import make_fixed_policy
    from arena.agents.llm import LLMAgent
    from arena.environments.collab_qa.bots import BOTS
    from arena.records import Matchup
    from arena.rollout import play_many

    wj = world.model_dump(mode="json")
    settings = [({"split": None, "world": wj}, ("asker", "helper_0", "helper_1"))]
    settings += [({"split": None, "world": wj, "helpers": 0, "asker_tool": c, "domain": c}, ("asker",)) for c in sorted(cached_world(world).corpora)]
    matchups = [
        Matchup(game=GAME, seed=derive_seed(seed, b, s, k), seats={p: f"scripted/{bot}" for p in players}, game_kwargs=kwargs)
        for b, bot in enumerate(sorted(BOTS))
        for s, (kwargs, players) in enumerate(settings)
        for k in range(episodes)
    ]
    pool = {f"scripted/{bot}": make_fixed_policy(f"scripted/{bot}", GAME) for bot in BOTS}
    texts = [LLMAgent.DEFAULT_SYSTEM_PROMPT.format(player=p, game=GAME) for p in ("asker", "helper_0", "helper_1")]
    for ep in asyncio.run(play_many(matchups, pool, concurrency=256)):
        for t in ep.turns:
            texts += [t.observation, t.action]
    return texts


def qa_base_model(tiny: Any, world: WorldConfig, cache_dir: str | Path) -> Path:
    """The tiny model of shape ``tiny`` with a tokenizer trained on :func:`qa_text_corpus` (cached), of the
    world's text: both ``test_split`` of a world share it."""
    from arena import __version__
    from arena.tiny import cached_tiny_model

    world = world.text_world()
    key = f"{__version__}:{GAME}:{world.model_dump_json()}"
    return cached_tiny_model(tiny, lambda: qa_text_corpus(world), cache_dir=Path(cache_dir), corpus_key=key)


# ----- examples ------------------------------------------------------------------------------------
Example = tuple[list[int], list[int]]


def _chat(tokenizer: Any, user: str) -> list[int]:
    """The LLM agent's prompt for the asker of collab_qa with ``user`` as the observation."""
    from arena.agents.llm import LLMAgent

    system = LLMAgent.DEFAULT_SYSTEM_PROMPT.format(player="asker", game=GAME)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):  # a BatchEncoding, by transformers version
        rendered = rendered["input_ids"]
    return [int(i) for i in rendered]


def _reading_sources(cfg: KnowledgeConfig):
    """(dataset, questions) pairs stage 0 reads: the model's own world's train split (``reading_source="own"``),
    or every question of ``reading_worlds`` other worlds, none of whose entities is in the model's world."""
    from arena.environments.collab_qa.world import generate_world

    if cfg.reading_source == "own":
        ds = cached_world(cfg.world)
        return [(ds, ds.split("train"))]
    mine = {f.entity for f in cached_world(cfg.world).facts}
    out = []
    for k in range(cfg.reading_worlds):
        other = generate_world(cfg.world.model_copy(update={"seed": cfg.world.seed + 1000 + k}))
        out.append((other, [q for q in other.questions if q.meta["entity"] not in mine]))
    return out


def reading_examples(cfg: KnowledgeConfig, tokenizer: Any, render: Callable[[Any], list[int]] | None = None) -> list[Example]:
    """Stage 0: for each question of :func:`_reading_sources`, ``SEARCH: <question>`` after the question,
    and ``ANSWER: <value>`` after the question and a document stating the answer; then the counterfactual
    reading of every fact (``cfg.counterfactual``): a document whose value is swapped for a false one, and
    (``in_game``, given the agent's ``render``) the same search result in the game's own prompts: the asker
    alone with the tool, and the helper holding it, each after searching."""
    from arena.agents.base import PlayerView
    from arena.environments.collab_qa.world import extract_answer
    from arena.game import clean_text
    from arena.trainers.imitation import end_token_id

    if cfg.reading_source in ("fresh", "redrawn"):
        from arena.environments.collab_qa.reading import fresh_reading_examples

        if render is None:
            raise ValueError(f"reading_source={cfg.reading_source!r} reads the game's own prompts: pass the agent's render")
        return fresh_reading_examples(cfg, tokenizer, render, cfg.fresh_reading.steps * cfg.fresh_reading.batch_size)
    end = end_token_id(tokenizer)
    rng = np.random.default_rng(cfg.stage0_seed + 7)
    out: list[Example] = []

    def search(question: str) -> Example:
        return _chat(tokenizer, f"[private] Question: {question}"), tokenizer.encode(f"SEARCH: {question}", add_special_tokens=False) + [end]

    def answer(question: str, doc_id: str, text: str, value: str) -> Example:
        prompt = _chat(tokenizer, f"[private] Question: {question}\n[private]   1. ({doc_id}) {clean_text(text, 300)}")
        return prompt, tokenizer.encode(f"ANSWER: {value}", add_special_tokens=False) + [end]

    mine = {f.entity for f in cached_world(cfg.world).facts} if cfg.reading_source == "other" else set()
    for other, questions in _reading_sources(cfg):
        docs: dict[str, list] = {}
        for corpus in other.corpora.values():
            for d in corpus:
                docs.setdefault(d.title or "", []).append(d)

        def stating(entity: str, attribute: str, docs: dict[str, list] = docs):
            return next((d for d in docs.get(entity, []) if extract_answer(d.display(), entity, attribute)), None)

        for q in questions:  # the real reading: train questions, true values
            question = clean_text(q.question, 1000)
            out.append(search(question))
            doc = stating(q.meta["entity"], q.meta["attribute"])
            if doc is not None:
                out.append(answer(question, doc.id, doc.display(), q.answers[0]))
        values: dict[str, list[str]] = {}
        for f in other.facts:
            values.setdefault(f.attribute, []).append(f.value)
        for f in other.facts:  # counterfactual reading: every entity and attribute, false values
            doc = stating(f.entity, f.attribute) if f.entity not in mine else None
            wordings = ATTRIBUTES[f.attribute].questions[: cfg.qa_templates]
            alternatives = sorted({v for v in values[f.attribute] if f.value not in v and v not in f.value})
            if doc is None or not alternatives:
                continue
            for _ in range(cfg.counterfactual):
                question = clean_text(wordings[int(rng.integers(len(wordings)))].format(name=f.entity), 1000)
                value = str(alternatives[int(rng.integers(len(alternatives)))])
                out.append(search(question))
                out.append(answer(question, doc.id, doc.display().replace(f.value, value), value))
                if cfg.in_game and render is not None and cfg.reading_source == "own":  # the game searches this world
                    record = QuestionRecord(id=f"read-{f.entity}-{f.attribute}", question=question, answers=[value])
                    for keyword, seat, obs in _searched_prompts(cfg.world, record, f.domain):
                        if f.value in obs:  # the search found the fact: show it with the false value
                            prompt = render(PlayerView(game=GAME, player=seat, observation=obs.replace(f.value, value)))
                            out.append((list(prompt), tokenizer.encode(f"{keyword}: {value}", add_special_tokens=False) + [end]))
    return out


def _searched_prompts(world: WorldConfig, question: QuestionRecord, domain: str) -> list[tuple[str, str, str]]:
    """(move keyword, seat, observation) after a search for ``question`` in the corpus of ``domain``: the
    asker alone with that tool (``ANSWER``), and the helper holding it in the collaborative game (``REPLY``)."""
    from arena.registry import make

    alone = _with_question(make(GAME, helpers=0, asker_tool=domain, domain=domain, split=None, question_index=0, world=world), question)
    alone.apply("asker", f"SEARCH: {question.question}")
    out = [("ANSWER", "asker", alone.observe_text("asker"))]
    group = _with_question(make(GAME, split=None, question_index=0, world=world), question)
    for n, helper in sorted(group.seat_of.items()):  # the helpers are anonymous: ask the one with the tool
        if group.tools.get(helper) == domain:
            group.apply("asker", f"ASK helper {n}: {question.question}")
            group.apply(helper, f"SEARCH: {question.question}")
            out.append(("REPLY", helper, group.observe_text(helper)))
    return out


def _seat_prompts(world: WorldConfig, question: QuestionRecord, domain: str) -> list[tuple[str, str, str]]:
    """(move keyword, seat, observation) of each seat that may answer ``question`` at its first turn: the asker
    alone with the tool of ``domain`` (``ANSWER``), the asker of the collaborative game (``ANSWER``), and a
    helper it asked (``REPLY``)."""
    from arena.registry import make

    alone = _with_question(make(GAME, helpers=0, asker_tool=domain, domain=domain, split=None, question_index=0, world=world), question)
    group = _with_question(make(GAME, split=None, question_index=0, world=world), question)
    out = [("ANSWER", "asker", alone.observe_text("asker")), ("ANSWER", "asker", group.observe_text("asker"))]
    group.apply("asker", f"ASK helper 1: {question.question}")
    helper = group.to_move()
    return out + [("REPLY", helper, group.observe_text(helper))]


def knowledge_examples(cfg: KnowledgeConfig, tokenizer: Any, render: Callable[[Any], list[int]]) -> list[Example]:
    """Stage 1: each known fact as a sentence, as closed-book answers to its first ``qa_templates`` wordings,
    and (``in_game``) as the value after ``ANSWER:`` / ``REPLY:`` in the game's own first prompts."""
    from arena.agents.base import PlayerView
    from arena.trainers.imitation import end_token_id

    ds = cached_world(cfg.world)
    end = end_token_id(tokenizer)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else end
    game = _closed_book_game(cfg.world)
    out: list[Example] = [([bos], tokenizer.encode(line, add_special_tokens=False) + [end]) for line in known_fact_lines(ds)]
    for f in ds.facts:
        if not f.known:
            continue
        for t in ATTRIBUTES[f.attribute].questions[: cfg.qa_templates]:
            q = QuestionRecord(id=f"known-{f.entity}-{f.attribute}", question=t.format(name=f.entity), answers=[f.value])
            view = PlayerView(game=GAME, player="asker", observation=_with_question(game, q).observe_text("asker"))
            out.append((list(render(view)), tokenizer.encode(f"ANSWER: {f.value}", add_special_tokens=False) + [end]))
            if cfg.in_game:
                for keyword, seat, obs in _seat_prompts(cfg.world, q, f.domain):
                    prompt = render(PlayerView(game=GAME, player=seat, observation=obs))
                    out.append(keyword_example(tokenizer, prompt, keyword, f.value, end))
    return out


def teacher_demonstrations(cfg: KnowledgeConfig, teacher, seed: int, game: Mapping[str, Any] | None = None) -> list:
    """The teacher in every seat: ``collaborative_episodes`` collaborative games, ``isolated_episodes``
    isolated games per corpus and ``asker_tool_episodes`` collaborative games per corpus with the asker
    holding its tool, all on the train split of ``cfg.world``; ``game``: other options of every game
    (a run's ``search_cost``, ...), so the demonstrations show the prompts the run plays."""
    from arena.records import Matchup
    from arena.rollout import play_many

    world = cfg.world.model_dump(mode="json")
    extra = dict(game or {})
    settings = [({**extra, "split": "train", "world": world}, ("asker", "helper_0", "helper_1"), cfg.collaborative_episodes)]
    for corpus in sorted(cached_world(cfg.world).corpora):
        kwargs = {**extra, "split": "train", "world": world, "helpers": 0, "asker_tool": corpus, "domain": corpus}
        settings.append((kwargs, ("asker",), cfg.isolated_episodes))
    for corpus in sorted(cached_world(cfg.world).corpora) if cfg.asker_tool_episodes else ():
        kwargs = {**extra, "split": "train", "world": world, "asker_tool": corpus, "domain": corpus}
        settings.append((kwargs, ("asker", "helper_0", "helper_1"), cfg.asker_tool_episodes))
    matchups = [
        Matchup(game=GAME, seed=derive_seed(seed, s, k), seats={p: teacher.policy_id for p in players}, game_kwargs=kwargs)
        for s, (kwargs, players, n) in enumerate(settings)
        for k in range(n)
    ]
    return asyncio.run(play_many(matchups, {teacher.policy_id: teacher}, concurrency=256))


def draw(pool: list[Example], n: int, seed: int) -> list[Example]:
    """``n`` examples of ``pool``, without replacement while they last (then another pass)."""
    if n <= 0 or not pool:
        return []
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(len(pool)) for _ in range(n // len(pool) + 1)])[:n]
    return [pool[int(i)] for i in idx]


def with_replay(demos: list[Example], replay: Sequence[list[Example]], share: float, seed: int) -> list[Example]:
    """``demos`` plus, from each pool of ``replay``, ``share * len(demos)`` examples (see :func:`draw`)."""
    n = int(round(share * len(demos)))
    return list(demos) + [ex for k, pool in enumerate(replay) for ex in draw(pool, n, seed + k)]


# ----- training ------------------------------------------------------------------------------------
def _stage1_shares(cfg: KnowledgeConfig) -> tuple[int, int]:
    """How many reading and relay examples stage 1 sees (``pretrain_replay`` and ``relay`` per knowledge example)."""
    seen = cfg.pretrain.steps * cfg.pretrain.batch_size
    whole = 1 + cfg.pretrain_replay + cfg.relay
    return int(round(seen * cfg.pretrain_replay / whole)), int(round(seen * cfg.relay / whole))


def relay_pool(cfg: KnowledgeConfig, tokenizer: Any, render: Callable[[Any], list[int]]) -> list[Example]:
    """The relay examples of a build (none without ``relay``): as many as stage 1 sees, all distinct."""
    return relay_examples(cfg, tokenizer, render, _stage1_shares(cfg)[1]) if cfg.relay > 0 else []


def pretrain_examples(cfg: KnowledgeConfig, knowledge: list[Example], reading: list[Example], relay: Sequence[Example] = ()) -> list[Example]:
    """Stage 1's examples: the knowledge examples, and with ``pretrain_replay`` reading examples (with ``relay``
    relay examples) mixed in, that many per knowledge example seen. The stage's ``steps * batch_size``
    examples are drawn as one pass: knowledge examples repeated (:func:`draw`), reading and relay examples
    distinct while their pools last. (Drawn as a share of the knowledge examples instead, ~200 pages were
    each read ~20 times over: memorised, not read.)"""
    n_read, n_relay = _stage1_shares(cfg)
    n_read, n_relay = (n_read if reading else 0), (n_relay if relay else 0)
    if not n_read and not n_relay:
        return knowledge
    seen, seed = cfg.pretrain.steps * cfg.pretrain.batch_size, cfg.stage1_seed
    return draw(knowledge, seen - n_read - n_relay, seed + 6) + draw(reading, n_read, seed + 8) + draw(list(relay), n_relay, seed + 9)


def _train(model: Any, examples: list[Example], stage: Stage, cfg: KnowledgeConfig, tokenizer: Any, seed: int, name: str = "training") -> list[float]:
    from arena.progress import stage_progress
    from arena.trainers.imitation import ImitationConfig, end_token_id, train_imitation

    icfg = ImitationConfig(steps=stage.steps, batch_size=stage.batch_size, lr=stage.lr, max_len=cfg.max_len, seed=seed, prompt_loss=stage.prompt_loss)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_token_id(tokenizer)
    return train_imitation(model, examples, icfg, pad_id=int(pad), progress=stage_progress(f"collab_qa model, {name}", stage.steps))


# ----- building the models -------------------------------------------------------------------------
def _closed_book_summary(answers: Sequence[ClosedBookAnswer], questions: Sequence[QuestionRecord]) -> dict[str, float]:
    """Closed-book accuracy per split and per known / unknown fact."""
    groups: dict[str, list[float]] = {}
    for a, q in zip(answers, questions):
        known = q.meta.get("known")
        tag = "known" if known else "unknown"
        for key in (f"{q.split}/{tag}", tag):
            groups.setdefault(key, []).append(a.correct)
    return {k: float(np.mean(v)) for k, v in sorted(groups.items())}


def _save(model: Any, tokenizer: Any, out: Path, cfg: KnowledgeConfig, meta: dict) -> Path:
    questions = list(cached_world(cfg.world).questions)
    start = time.perf_counter()
    answers = closed_book_answers((model, tokenizer), questions, cfg.world)
    meta["closed_book_seconds"] = time.perf_counter() - start
    meta["closed_book"] = _closed_book_summary(answers, questions)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / CLOSED_BOOK_FILE).write_text(json.dumps([asdict(a) for a in answers], indent=1) + "\n")
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # written last: marks a complete directory
    return out


def _load(path: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.agents.llm import LLMAgent
    from arena.engines.hf import HFEngine

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    return model, tokenizer, LLMAgent(HFEngine.from_model(model, tokenizer))


def _reading_stage(cfg: KnowledgeConfig) -> Stage:
    return cfg.fresh_reading if cfg.reading_source in ("fresh", "redrawn") else cfg.reading


def _save_stage(model: Any, tokenizer: Any, out_dir: str | Path, marker: str, meta: dict) -> Path:
    """A stage's model, its tokenizer and ``meta`` (in ``marker``, written last: it marks a complete directory)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / marker).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def build_reading_model(base_path: str | Path, out_dir: str | Path, cfg: KnowledgeConfig) -> Path:
    """Stage 0 alone, from ``base_path``: the model after reading, saved to ``out_dir`` with its loss and time
    (:data:`READING_FILE`, written last)."""
    tick = time.perf_counter()
    model, tokenizer, agent = _load(base_path)
    reading = reading_examples(cfg, tokenizer, agent.prompt_ids)
    losses = _train(model, reading, _reading_stage(cfg), cfg, tokenizer, cfg.stage0_seed, "reading") if reading else [float("nan")]
    meta = {
        "config": reading_config(cfg),
        "base_model": str(base_path),
        "reading_examples": len(reading),
        "reading_loss": [losses[0], float(np.mean(losses[-10:]))],
        "reading_s": time.perf_counter() - tick,
    }
    return _save_stage(model, tokenizer, out_dir, READING_FILE, meta)


def cached_reading_model(base_path: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path) -> Path:
    """The model after stage 0 (:func:`build_reading_model`), keyed by the base's name and the config's
    :data:`READING_FIELDS` alone: builds that differ only in later stages share it (reading is the dearest
    stage: 27 minutes of the 34 on 2 cores with the fresh-page recipe)."""
    from arena.tiny import build_once

    final = reading_model_dir(base_path, cfg, cache_dir)
    return build_once(final, lambda tmp: build_reading_model(base_path, tmp, cfg), marker=READING_FILE)


def reading_model_dir(base_path: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path) -> Path:
    """Where :func:`cached_reading_model` keeps the model after reading for (``base_path``, ``cfg``)."""
    name = Path(str(base_path).rstrip("/")).name
    return Path(cache_dir) / "models" / f"qa-read-{cache_key(name, json.dumps(reading_config(cfg), sort_keys=True))}"


def _stage_probes(cfg: KnowledgeConfig) -> Callable[[Any, Any], tuple[float, dict[str, float]]] | None:
    """With ``stage_probes``: a function of (model, tokenizer) measuring the redrawn reading probe and the relay
    probe on items drawn once (the same items after every stage, in every build of ``cfg``); else None."""
    if not cfg.stage_probes:
        return None
    from arena.environments.collab_qa.reading import RELAY_TOKENS, model_reads, probe_items, relay_items, score_hops, score_reads

    items = probe_items(cfg, "redrawn", cfg.stage_probes)
    hops = relay_items(cfg, max(1, cfg.stage_probes // 2))

    def probe(model: Any, tokenizer: Any) -> tuple[float, dict[str, float]]:
        return score_reads(items, model_reads((model, tokenizer), items)), score_hops(hops, model_reads((model, tokenizer), hops, max_new_tokens=RELAY_TOKENS))

    return probe


def _earlier_stage(
    out_dir: str | Path, marker: str, cached: Callable[[], Path], build: Callable[[Path], Path], scratch: bool
) -> tuple[Path, dict[str, Any], tuple[Any, Any, Any]]:
    """The model a stage starts from, loaded: ``cached()`` (its cache directory), or with ``scratch`` built
    by ``build(tmp)`` in a temporary directory beside ``out_dir`` and removed once loaded. Returns its
    directory, the metadata in its ``marker`` file and :func:`_load`'s (model, tokenizer, agent)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=".stage-", dir=Path(out_dir).parent)) if scratch else None
    try:
        where = build(tmp) if tmp is not None else cached()
        return Path(where), json.loads((Path(where) / marker).read_text()), _load(where)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def build_pretrained_model(base_path: str | Path, out_dir: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path | None = None) -> Path:
    """Stages 0 and 1 from ``base_path`` (stage 0's model cached in ``cache_dir``, :func:`cached_reading_model`,
    or built beside ``out_dir`` and removed): the model that knows its facts and reads, saved to ``out_dir``
    with its losses, timings and stage probes (:data:`PRETRAIN_FILE`, written last)."""
    read_dir, read_meta, (model, tokenizer, agent) = _earlier_stage(
        out_dir, READING_FILE, lambda: cached_reading_model(base_path, cfg, cache_dir), lambda tmp: build_reading_model(base_path, tmp, cfg), cache_dir is None
    )
    probe = _stage_probes(cfg)
    probes: dict[str, Any] = {}
    relay_probes: dict[str, Any] = {}
    if probe is not None:
        probes["reading"], relay_probes["reading"] = probe(model, tokenizer)
    tick = time.perf_counter()
    reading = reading_examples(cfg, tokenizer, agent.prompt_ids)
    knowledge = knowledge_examples(cfg, tokenizer, agent.prompt_ids)
    relay = relay_pool(cfg, tokenizer, agent.prompt_ids)
    losses = _train(model, pretrain_examples(cfg, knowledge, reading, relay), cfg.pretrain, cfg, tokenizer, cfg.stage1_seed + 1, "knowledge")
    pretrain_s = time.perf_counter() - tick
    if probe is not None:
        probes["pretrain"], relay_probes["pretrain"] = probe(model, tokenizer)
    meta = {
        "config": pretrain_config(cfg),
        "base_model": str(base_path),
        "reading_model": read_dir.name,
        "reading_examples": len(reading),
        "knowledge_examples": len(knowledge),
        "relay_examples": len(relay),
        "reading_loss": read_meta["reading_loss"],
        "pretrain_loss": [losses[0], float(np.mean(losses[-10:]))],
        **({"reading_probe_redrawn": probes, "relay_probe": relay_probes} if probes else {}),
        "reading_s": read_meta["reading_s"],
        "pretrain_s": pretrain_s,
    }
    return _save_stage(model, tokenizer, out_dir, PRETRAIN_FILE, meta)


def cached_pretrained_model(base_path: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path) -> Path:
    """The model after stages 0 and 1 (:func:`build_pretrained_model`), keyed by the base's name and the
    config's :data:`PRETRAIN_FIELDS` alone: builds that differ only in the warm start share it, as builds
    that differ only after reading share :func:`cached_reading_model`."""
    from arena.tiny import build_once

    final = pretrained_model_dir(base_path, cfg, cache_dir)
    return build_once(final, lambda tmp: build_pretrained_model(base_path, tmp, cfg, cache_dir), marker=PRETRAIN_FILE)


def pretrained_model_dir(base_path: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path) -> Path:
    """Where :func:`cached_pretrained_model` keeps the model after stage 1 for (``base_path``, ``cfg``)."""
    name = Path(str(base_path).rstrip("/")).name
    return Path(cache_dir) / "models" / f"qa-pre-{cache_key(name, json.dumps(pretrain_config(cfg), sort_keys=True))}"


def build_knowledge_model(base_path: str | Path, out_dir: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path | None = None) -> Path:
    """Stages 0-2 of the module docstring, from ``base_path``; saves the model to ``out_dir``. The models after
    stage 0 and after stage 1 are cached in ``cache_dir`` (:func:`cached_reading_model`,
    :func:`cached_pretrained_model`), or built beside ``out_dir`` and removed."""
    from arena.environments.collab_qa.bots import FromMemory
    from arena.trainers.imitation import imitation_examples

    pre_dir, pre_meta, (model, tokenizer, agent) = _earlier_stage(
        out_dir,
        PRETRAIN_FILE,
        lambda: cached_pretrained_model(base_path, cfg, cache_dir),
        lambda tmp: build_pretrained_model(base_path, tmp, cfg),
        cache_dir is None,
    )
    ds = cached_world(cfg.world)
    reading = reading_examples(cfg, tokenizer, agent.prompt_ids)
    knowledge = knowledge_examples(cfg, tokenizer, agent.prompt_ids)
    relay = relay_pool(cfg, tokenizer, agent.prompt_ids)

    tick = time.perf_counter()
    train_questions = ds.split("train")
    remembered = closed_book_answers((model, tokenizer), train_questions, cfg.world)
    memory = {q.question: a.answer for q, a in zip(train_questions, remembered) if a.answer}
    teacher = FromMemory(memory, default_recall=cfg.memory_rate, hedge=cfg.hedge_rate)
    episodes = teacher_demonstrations(cfg, teacher, cfg.seed)
    demos = imitation_examples(episodes, tokenizer, render=agent.prompt_ids)
    examples = with_replay(demos, [knowledge, reading, *([relay] if relay else [])], cfg.replay, cfg.seed + 3)
    warm_losses = _train(model, examples, cfg.warm_start, cfg, tokenizer, cfg.seed + 2, "protocol")
    warm_start_s = time.perf_counter() - tick
    probes = dict(pre_meta.get("reading_probe_redrawn", {}))
    relay_probes = dict(pre_meta.get("relay_probe", {}))
    probe = _stage_probes(cfg)
    if probe is not None:
        probes["warm_start"], relay_probes["warm_start"] = probe(model, tokenizer)

    meta = {
        "config": cfg.model_dump(mode="json"),
        "base_model": str(base_path),
        "reading_model": pre_meta["reading_model"],
        "pretrained_model": pre_dir.name if cache_dir is not None else None,
        "reading_examples": len(reading),
        "knowledge_examples": len(knowledge),
        "demonstration_examples": len(demos),
        "teacher_searches_per_episode": float(np.mean([ep.metrics["searches"] for ep in episodes])) if episodes else 0.0,
        "reading_loss": pre_meta["reading_loss"],
        "pretrain_loss": pre_meta["pretrain_loss"],
        "closed_book_after_pretrain": _closed_book_summary(remembered, train_questions),
        "warm_start_loss": [warm_losses[0], float(np.mean(warm_losses[-10:]))],
        **({"reading_probe_redrawn": probes, "relay_probe": relay_probes} if probes else {}),
        "relay_examples": len(relay),
        "reading_s": pre_meta["reading_s"],
        "pretrain_s": pre_meta["pretrain_s"],
        "warm_start_s": warm_start_s,
    }
    return _save(model, tokenizer, Path(out_dir), cfg, meta)


def build_action_supervised(knowledge_path: str | Path, out_dir: str | Path, cfg: KnowledgeConfig, game: Mapping[str, Any] | None = None) -> Path:
    """Fine-tune the knowledge model to search exactly where its own closed-book answer is wrong, on
    demonstrations played with the game options ``game`` (the run's: :func:`teacher_demonstrations`)."""
    from arena.environments.collab_qa.bots import FromMemory
    from arena.trainers.imitation import imitation_examples

    tick = time.perf_counter()
    model, tokenizer, agent = _load(knowledge_path)
    ds = cached_world(cfg.world)
    own = read_closed_book(knowledge_path)
    train_questions = ds.split("train")
    memory = {q.question: own[q.id].answer for q in train_questions if own[q.id].answer}
    recall = {q.question: own[q.id].correct for q in train_questions}
    teacher = FromMemory(memory, recall)
    episodes = teacher_demonstrations(cfg, teacher, cfg.seed + 2, game)
    demos = imitation_examples(episodes, tokenizer, render=agent.prompt_ids)
    pools = [knowledge_examples(cfg, tokenizer, agent.prompt_ids), reading_examples(cfg, tokenizer, agent.prompt_ids)]
    relay = relay_pool(cfg, tokenizer, agent.prompt_ids)
    examples = with_replay(demos, [*pools, *([relay] if relay else [])], cfg.replay, cfg.seed + 5)
    losses = _train(model, examples, cfg.action_supervised, cfg, tokenizer, cfg.seed + 4, "action supervision")
    meta = {
        "config": cfg.model_dump(mode="json"),
        "base_model": str(knowledge_path),
        "game": dict(game or {}),
        "labels_known": int(sum(recall.values())),
        "labels": len(recall),
        "demonstration_examples": len(demos),
        "teacher_searches_per_episode": float(np.mean([ep.metrics["searches"] for ep in episodes])) if episodes else 0.0,
        "loss": [losses[0], float(np.mean(losses[-10:]))],
        "train_s": time.perf_counter() - tick,
    }
    return _save(model, tokenizer, Path(out_dir), cfg, meta)


#: fields added after models were built and cached: at their default they are left out of the cache key
#: (:func:`config_key`), so the builds made before them stay valid
_KEY_IF_SET = frozenset({"asker_tool_episodes", "pretrain_seed"})


def config_key(cfg: KnowledgeConfig) -> str:
    """``cfg`` as its cache key's part: the JSON of every field, less the later ones at their default."""
    unset = {f for f in _KEY_IF_SET if getattr(cfg, f) == KnowledgeConfig.model_fields[f].default}
    return cfg.model_dump_json(exclude=unset)


def knowledge_key(cfg: KnowledgeConfig) -> str:
    """The knowledge model's part of its cache key: :func:`config_key` with ``action_supervised`` (a later
    baseline's stage, which the knowledge model does not depend on) at its default, so builds that differ
    only in that baseline share the knowledge model, and builds made before keep their key."""
    return config_key(cfg.model_copy(update={"action_supervised": KnowledgeConfig.model_fields["action_supervised"].default}))


def cache_key(*parts: str) -> str:
    """The 12-hex-digit name of a cached model built from ``parts`` (its base's name and its config)."""
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:12]


def cached_knowledge_model(tiny: Any, cfg: KnowledgeConfig, cache_dir: str | Path) -> Path:
    """The knowledge model for (the tiny model shape ``tiny``, ``cfg``): its base (:func:`qa_base_model`)
    and itself built on first use, reused after."""
    from arena.tiny import build_once

    base = qa_base_model(tiny, cfg.world, cache_dir)
    final = Path(cache_dir) / "models" / f"qa-{cache_key(base.name, knowledge_key(cfg))}"
    return build_once(final, lambda tmp: build_knowledge_model(base, tmp, cfg, cache_dir), marker=META_FILE)


def cached_action_supervised(knowledge_path: str | Path, cfg: KnowledgeConfig, cache_dir: str | Path, game: Mapping[str, Any] | None = None) -> Path:
    """The action-supervised baseline built from the knowledge model at ``knowledge_path``, cached likewise;
    ``game``: the run's game options its demonstrations are played with (a part of its key when given)."""
    from arena.tiny import build_once

    name = Path(str(knowledge_path).rstrip("/")).name
    parts = (name, config_key(cfg), *([json.dumps(dict(game), sort_keys=True)] if game else []))
    final = Path(cache_dir) / "models" / f"qa-action-{cache_key(*parts)}"
    return build_once(final, lambda tmp: build_action_supervised(knowledge_path, tmp, cfg, game), marker=META_FILE)


def build_meta(model_dir: str | Path) -> Mapping[str, Any]:
    """What a model built here records about itself (config, losses, timings, closed-book accuracy)."""
    return json.loads((Path(model_dir) / META_FILE).read_text())


def paths_and_knowledge(args: Sequence[str], config: str | None = None) -> tuple[list[str], list[str], KnowledgeConfig]:
    """A benchmark's command line: paths (model or run directories), then ``key=value`` overrides of the
    quick start (or of the run config ``config``), which name the knowledge config the models were built
    with. Returns the paths, the overrides and that config."""
    from arena.config import load_config

    paths, overrides = [a for a in args if "=" not in a], [a for a in args if "=" in a]
    knowledge = load_config(config, overrides).model.warm_start
    if not isinstance(knowledge, KnowledgeConfig):
        raise SystemExit(f"the overrides {overrides} leave no knowledge warm start (model.warm_start.recipe: knowledge)")
    return paths, overrides, knowledge


# ----- the run config's side: the warm-start recipe and the game entries' check --------------------
def knowledge_warm_start(request: Any) -> Path:
    """The ``knowledge`` warm-start recipe (an :class:`arena.warm_start.WarmStartRequest`): the knowledge
    model for the run's tiny-model shape and ``request.config``, built on first use in ``request.cache_dir``."""
    return cached_knowledge_model(request.tiny, request.config, request.cache_dir)


def knowledge_replay(model_dir: str | Path, cfg: KnowledgeConfig) -> list[Example]:
    """What the knowledge model was taught, for ``trainer.replay_coef``: its knowledge examples (each known
    fact as a sentence, closed-book, and as the value after ``ANSWER:`` / ``REPLY:`` in the game's prompts)
    and as many reading examples (a fact read off a search result). None of them shows the choice between
    answering and searching: replay keeps the facts and the reading, and leaves the choice to self-play."""
    _, tokenizer, agent = _load(model_dir)
    knowledge = knowledge_examples(cfg, tokenizer, agent.prompt_ids)
    if cfg.reading_source in ("fresh", "redrawn"):
        from arena.environments.collab_qa.reading import fresh_reading_examples

        reading = fresh_reading_examples(cfg, tokenizer, agent.prompt_ids, len(knowledge))
    else:  # stage 0's reading, less its SEARCH examples (they teach the choice)
        search = tokenizer.encode("SEARCH:", add_special_tokens=False)
        reads = [ex for ex in reading_examples(cfg, tokenizer, agent.prompt_ids) if ex[1][: len(search)] != search]
        reading = draw(reads, len(knowledge), cfg.seed + 8)
    return knowledge + reading


def check_entry(entry: Any, run_config: Any) -> None:
    """A run config's check of one collab_qa entry: with the knowledge warm start (and no ``model.path``)
    the entry plays the world the model knows, generated (no ``data_dir``). Raises ValueError (the run
    config puts the entry's label in front of the message)."""
    knowledge = run_config.model.warm_start
    if not isinstance(knowledge, KnowledgeConfig) or run_config.model.path is not None:
        return
    if entry.kwargs.get("data_dir") is not None:
        raise ValueError("the knowledge model knows a generated world; data_dir cannot be played with it")
    if WorldConfig.model_validate(entry.kwargs.get("world") or {}) != knowledge.world:
        raise ValueError("kwargs.world differs from model.warm_start.world (the world the model knows)")
