"""The collaborative-QA model (arena.environments.collab_qa.knowledge): what it knows, how it plays, how it is cached."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from arena.agents.base import PlayerView
from arena.agents.llm import LLMAgent
from arena.config import ConfigError, load_config
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.environments.collab_qa.bots import FromMemory
from arena.environments.collab_qa.knowledge import (
    KnowledgeConfig,
    build_meta,
    closed_book,
    closed_book_observation,
    knowledge_examples,
    pretrain_examples,
    qa_base_model,
    read_closed_book,
    reading_examples,
    with_replay,
)
from arena.environments.collab_qa.world import ATTRIBUTES, WorldConfig, cached_world
from arena.records import Matchup
from arena.rollout import play_many

#: one pytest-xdist worker runs all of these (see the Makefile)
pytestmark = pytest.mark.xdist_group("qa_model")

GAME = "collab_qa-v0"
CONFIGS = Path(__file__).parents[3] / "configs"


@pytest.fixture(scope="module", autouse=True)
def _home(tiny_model_dir):
    """Indexes and models built here go to the session cache."""
    old = os.environ.get("ARENA_HOME")
    os.environ["ARENA_HOME"] = str(tiny_model_dir.parent.parent)
    yield
    if old is None:
        os.environ.pop("ARENA_HOME", None)
    else:
        os.environ["ARENA_HOME"] = old


# ----- the base and the pre-training data -------------------------------------------------------------------
@pytest.fixture(scope="module")
def qa_base(tiny_model_dir, qa_knowledge, qa_tiny) -> Path:
    return qa_base_model(qa_tiny, qa_knowledge.world, tiny_model_dir.parent.parent)


def test_the_base_tokenizer_is_trained_on_collab_qa_text(qa_base, tiny_model_dir, qa_knowledge):
    obs = closed_book_observation(cached_world(qa_knowledge.world).questions[0], qa_knowledge.world)
    mine, project = AutoTokenizer.from_pretrained(str(qa_base)), AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert len(mine.encode(obs)) < 0.7 * len(project.encode(obs))
    assert mine.decode(mine.encode(obs)) == obs


def test_knowledge_examples_teach_known_facts_only_closed_book_and_in_the_game_prompts(qa_base, qa_knowledge):
    cfg = qa_knowledge
    assert cfg.in_game
    tok = AutoTokenizer.from_pretrained(str(qa_base))
    agent = LLMAgent(HFEngine(qa_base))
    examples = knowledge_examples(cfg, tok, agent.prompt_ids)
    world = cached_world(cfg.world)
    known = [f for f in world.facts if f.known]
    assert 0 < len(known) < len(world.facts)
    # per known fact: its sentence, and per wording the closed-book answer plus three seats of the game
    assert len(examples) == len(known) * (1 + 4 * cfg.qa_templates)
    texts = [tok.decode(p + t) for p, t in examples]
    for f in world.facts:
        sentence = f"{ATTRIBUTES[f.attribute].phrase} of {f.entity} is {f.value}."
        answers = [t for t in texts if "Question: " in t and f.entity in t and t.endswith(f"ANSWER: {f.value}<|end|>")]
        replies = [t for t in texts if 'asker: "' in t and f.entity in t and t.endswith(f"REPLY: {f.value}<|end|>")]
        if f.known:  # closed-book, alone with a tool, the collaborative asker; and the helper asked
            assert sum(sentence in t for t in texts) == 1 and len(answers) == 3 * cfg.qa_templates and len(replies) == cfg.qa_templates, f
        else:  # an unknown fact is never stated, nor answered
            assert not any(sentence in t for t in texts) and not answers and not replies, f
    # in the game's prompts the move's keyword is part of the prompt: the value is taught, never the choice of move
    in_game = [(tok.decode(p), tok.decode(t)) for p, t in examples if tok.decode(p).endswith(("ANSWER:", "REPLY:"))]
    assert len(in_game) == 3 * cfg.qa_templates * len(known)
    assert not any(t.lstrip().startswith(("ANSWER", "REPLY", "SEARCH")) for _, t in in_game)
    assert sum("Role: asker" in p and "Your search tool: the" in p for p, _ in in_game) == cfg.qa_templates * len(known)  # alone
    assert sum("Role: helper" in p and 'asker: "' in p for p, _ in in_game) == cfg.qa_templates * len(known)  # a helper asked
    assert sum("Helpers: helper 1, helper 2" in p for p, _ in in_game) == cfg.qa_templates * len(known)  # the collaborative asker
    # the closed-book answers are exactly the game's closed-book prompt, as the agent renders it
    first = known[0]
    q = world.split("train")[0].model_copy(update={"question": ATTRIBUTES[first.attribute].questions[0].format(name=first.entity)})
    assert any(
        t.startswith("<|system|>You are asker in the game collab_qa-v0.") and f"<|user|>{closed_book_observation(q, cfg.world)}<|end|><|assistant|>" in t
        for t in texts
    )
    # the held-out (ood) wording of an attribute is never trained
    for attr in ATTRIBUTES.values():
        held_out = attr.questions[-1].split("{name}")[0]
        assert not held_out or not any(f"Question: {held_out}" in t for t in texts)


@pytest.mark.parametrize("source", ["own", "other"])
def test_reading_examples_copy_the_question_and_read_the_document(qa_base, qa_knowledge, source):
    cfg = qa_knowledge.model_copy(update={"reading_source": source, "reading_worlds": 2})
    tok = AutoTokenizer.from_pretrained(str(qa_base))
    examples = reading_examples(cfg, tok, LLMAgent(HFEngine(qa_base)).prompt_ids)
    world = cached_world(cfg.world)
    mine = {f.entity for f in world.facts}
    train = {q.question for q in world.split("train")}
    # the true value behind every wording of every fact of the model's world
    truth = {t.format(name=f.entity): f.value for f in world.facts for t in ATTRIBUTES[f.attribute].questions}
    assert len(examples) > 50
    searches = answers = false = 0
    in_game = {"ANSWER": 0, "REPLY": 0}
    for p, t in examples:
        prompt, target = tok.decode(p), tok.decode(t)
        if source == "other":
            assert not any(name in prompt for name in mine)  # other worlds: none of the model's entities
        if "Status: your turn" in prompt:  # the game's own prompt, after the search the seat made
            keyword, value = target.removesuffix("<|end|>").split(": ", 1)
            question = prompt.split('Search 1 ("', 1)[1].split('")', 1)[0]
            results = prompt.split('Search 1 ("', 1)[1].split("Searches left", 1)[0]
            assert value in results and truth[question] not in results  # the false value, read off the search result
            in_game[keyword] += 1
            continue
        question = prompt.split("[private] Question: ", 1)[1].split("\n", 1)[0].split("<|end|>", 1)[0]
        if target.startswith("SEARCH: "):
            searches += 1
            assert target == f"SEARCH: {question}<|end|>"  # copy the question, names and all
            continue
        answers += 1
        value = target.removeprefix("ANSWER: ").removesuffix("<|end|>")
        doc = prompt.split("[private]   1.", 1)[1]
        assert value in doc  # read off the document shown
        if source == "own" and value == truth[question]:
            assert question in train  # a true value is taught for train questions only, never a test or ood one
        elif source == "own":
            false += 1
            assert truth[question] not in doc  # counterfactual: the document states the false value instead
    # every fact is stated in some document (qa_world): a reading example per train question, and
    # ``counterfactual`` false-value readings of every fact of the world
    if source == "own":
        assert false >= cfg.counterfactual * len(world.facts) * 0.9
        assert answers - false >= 0.9 * len(train)
        # and the same in the game: alone with the tool, and the helper holding it (when the search finds the fact)
        assert in_game["ANSWER"] >= 0.5 * false and in_game["REPLY"] >= 0.5 * false
    else:
        assert in_game == {"ANSWER": 0, "REPLY": 0}  # other worlds' facts are not in the model's game
    assert searches >= answers > 0.5 * searches


def test_with_replay_adds_a_share_of_each_pool():
    demos = [([i], [i]) for i in range(10)]
    pre = [([100 + i], [100 + i]) for i in range(4)]
    reading = [([200 + i], [200 + i]) for i in range(20)]
    out = with_replay(demos, [pre, reading], 0.5, seed=0)
    assert out[:10] == demos and len(out) == 20
    assert sorted(out[10:14]) == sorted(pre) and out[14] in pre  # each used once before any twice
    assert len(set(map(str, out[15:]))) == 5 and all(x in reading for x in out[15:])
    assert with_replay(demos, [pre], 0.0, seed=0) == demos


def test_from_memory_teacher_answers_from_memory_or_searches_as_told():
    world = cached_world(WorldConfig())
    questions = world.split("train")[:12]
    memory = {q.question: "Nowhere" for q in questions}

    def play(teacher, **kw):
        seats = {"asker": teacher.policy_id} if kw.get("helpers") == 0 else {p: teacher.policy_id for p in ("asker", "helper_0", "helper_1")}
        ms = [Matchup(game=GAME, seed=i, seats=seats, game_kwargs={"split": "train", "question_index": i, **kw}) for i in range(12)]
        return asyncio.run(play_many(ms, {teacher.policy_id: teacher}))

    iso = {"helpers": 0, "asker_tool": "people", "domain": "people"}
    recall_all = play(FromMemory(memory, default_recall=1.0, hedge=1.0), **iso)
    assert all(ep.metrics["searches"] == 0 and ep.metrics["hedged"] == 1 and ep.metrics["f1"] == 0 for ep in recall_all)
    recall_none = play(FromMemory(memory, default_recall=0.0), **iso)
    assert all(ep.metrics["searches"] == 1 and ep.metrics["answered"] == 1 for ep in recall_none)
    # per question: answer from memory exactly where recall is 1 (action supervision)
    people = cached_world(WorldConfig()).split("train")
    people = [q for q in people if q.domain == "people"][:12]
    recall = {q.question: float(i % 2) for i, q in enumerate(people)}
    mixed = play(FromMemory({q.question: q.answers[0] for q in people}, recall), **iso)
    assert [ep.metrics["searches"] for ep in mixed] == [1.0 - (i % 2) for i in range(12)]
    assert all(ep.metrics["em"] == 1 for ep in mixed)
    # collaborative: a helper asked replies from memory (hedged), the asker passes the hedge on
    helpers_remember = play(FromMemory(memory, {}, default_recall=0.5, hedge=1.0))
    assert any(ep.metrics["searches"] == 0 and ep.metrics["hedged"] == 1 and ep.metrics["asks"] >= 1 for ep in helpers_remember)
    assert any(ep.metrics["searches"] >= 1 for ep in helpers_remember)


def test_asker_tool_demonstrations_seat_an_asker_with_the_tool_of_its_questions_corpus():
    from arena.environments.collab_qa.knowledge import teacher_demonstrations

    cfg = KnowledgeConfig(collaborative_episodes=0, isolated_episodes=0, asker_tool_episodes=6)
    questions = {q.question: q for q in cached_world(cfg.world).split("train")}
    # a teacher that never answers from memory: every asker with a tool searches its question first
    episodes = teacher_demonstrations(cfg, FromMemory({}, default_recall=0.0), seed=0)
    assert len(episodes) == 6 * len(cached_world(cfg.world).corpora)
    for ep in episodes:
        kw = ep.matchup.game_kwargs
        assert set(ep.matchup.seats) == {"asker", "helper_0", "helper_1"} and kw["asker_tool"] == kw["domain"]
        first = ep.turns[0]
        assert first.player == "asker" and f"Your search tool: the {kw['asker_tool']} corpus" in first.observation
        assert questions[first.action.split(":", 1)[1].strip()].domain == kw["domain"]  # SEARCH: <its question>
    assert {ep.matchup.game_kwargs["asker_tool"] for ep in episodes} == set(cached_world(cfg.world).corpora)
    assert not teacher_demonstrations(cfg.model_copy(update={"asker_tool_episodes": 0}), FromMemory({}), seed=0)


def test_demonstrations_play_the_runs_game_options_in_every_seating():
    """A baseline built for a run whose searches cost 0.25 is shown prompts that say so, and charged it."""
    from arena.environments.collab_qa.knowledge import teacher_demonstrations

    cfg = KnowledgeConfig(collaborative_episodes=2, isolated_episodes=2, asker_tool_episodes=2)
    episodes = teacher_demonstrations(cfg, FromMemory({}, default_recall=0.0), seed=0, game={"search_cost": 0.25})
    assert len({(ep.matchup.game_kwargs.get("helpers"), ep.matchup.game_kwargs.get("asker_tool")) for ep in episodes}) == 5
    for ep in episodes:
        assert ep.matchup.game_kwargs["search_cost"] == 0.25 and "costs 0.25." in ep.turns[0].observation
        assert ep.reward_components["search_cost"] == pytest.approx(-0.25 * ep.metrics["searches"])
    default = teacher_demonstrations(cfg, FromMemory({}, default_recall=0.0), seed=0)
    assert all("costs 0.05." in ep.turns[0].observation for ep in default)


def test_a_field_added_later_changes_the_cache_key_only_when_set():
    from arena.environments.collab_qa.knowledge import config_key

    cfg = KnowledgeConfig()
    later = {"asker_tool_episodes": 4, "pretrain_seed": 0}
    for field in later:
        assert f'"{field}"' not in config_key(cfg)  # builds cached before the field keep their key
    assert config_key(cfg) == cfg.model_dump_json(exclude=set(later))
    for field, value in later.items():
        assert config_key(cfg.model_copy(update={field: value})) != config_key(cfg), field


def test_the_knowledge_models_key_leaves_out_the_action_supervised_stage_only():
    """The knowledge model does not depend on the action-supervised baseline's fine-tuning: builds that
    differ only there share it (and its key is the one it had before), while the baseline's own key tells them apart."""
    from arena.environments.collab_qa.knowledge import Stage, config_key, knowledge_key

    cfg = KnowledgeConfig()
    other = cfg.model_copy(update={"action_supervised": Stage(steps=400, batch_size=32, lr=2e-3)})
    assert knowledge_key(cfg) == config_key(cfg) == knowledge_key(other)
    assert config_key(other) != config_key(cfg)  # the baseline's model is keyed by the whole config
    assert knowledge_key(cfg.model_copy(update={"warm_start": Stage(steps=301, batch_size=32, lr=2e-3)})) != knowledge_key(cfg)


def test_reading_and_pretraining_are_shared_by_both_splits_of_a_world_and_the_warm_start_is_not():
    """Stages 0 and 1 read pages and learn facts, never which split a question is in: a world split within
    entities reuses them (their keys), while the warm start, which plays the train split, is its own."""
    from arena.environments.collab_qa.knowledge import knowledge_key, pretrain_config, reading_config

    cfg = KnowledgeConfig(reading_source="redrawn")
    within = cfg.model_copy(update={"world": cfg.world.model_copy(update={"test_split": "within_entities"})})
    assert reading_config(within) == reading_config(cfg) and pretrain_config(within) == pretrain_config(cfg)
    assert knowledge_key(within) != knowledge_key(cfg)
    # reading the world's own train split depends on the split
    own, own_within = (c.model_copy(update={"reading_source": "own"}) for c in (cfg, within))
    assert reading_config(own_within) != reading_config(own)


# ----- what the built model knows -----------------------------------------------------------------------
def test_closed_book_knows_the_known_facts_and_not_the_others(qa_model_dir, qa_knowledge):
    cfg = qa_knowledge
    world = cached_world(cfg.world)
    questions = [q for q in world.questions if q.split == "test"]
    right = np.array(closed_book(qa_model_dir, questions, cfg.world))
    known = np.array([q.meta["known"] for q in questions])
    # The test split is asked in evaluation and never demonstrated. Measured on this build: known 1.0,
    # unknown ~0.2, which is guessing: the test world has 3 towns and 3 organisms, and a model that
    # has learned to answer a birthplace with a town is right a third of the time by chance. (The train
    # split's unknown facts are read off search results in the warm start's demonstrations, and the
    # model learns some of them: what it knows is its own closed-book answer, stored per question.)
    assert right[known].mean() > 0.8
    assert right[~known].mean() < 0.4
    assert right[known].mean() > right[~known].mean() + 0.5


def test_known_facts_carry_over_into_the_game_prompts(qa_model_dir, qa_knowledge):
    """Made to answer at once alone with a tool (``ANSWER:`` written for it), the model answers from what it
    knows. Without the in-game knowledge examples a fact learned closed-book did not carry over: right on
    9% of the known test questions, where closed-book it was right on all of them."""
    import torch

    from arena.registry import make

    cfg = qa_knowledge
    engine = HFEngine(qa_model_dir)
    agent, tok = LLMAgent(engine), engine.tokenizer
    world = cached_world(cfg.world)
    right = {True: [], False: []}
    for q in world.split("test"):
        game = make(GAME, helpers=0, asker_tool=q.domain, domain=q.domain, split=None, question_index=0, world=cfg.world)
        game.reset(seed=0)
        game.question = q
        ids = agent.prompt_ids(PlayerView(game=GAME, player="asker", observation=game.observe_text("asker")))
        ids = list(ids) + tok.encode("ANSWER:", add_special_tokens=False)
        with torch.no_grad():
            out = engine.model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, len(ids) :], skip_special_tokens=True).split("<|end|>")[0].strip()
        right[q.meta["known"]].append(text in q.answers)
    # measured on this build: known 1.0, unknown ~0.2 (guessing among 3 towns or 3 organisms)
    assert np.mean(right[True]) > 0.8 and np.mean(right[False]) < 0.4


def test_stored_closed_book_answers_are_the_models_own(qa_model_dir, qa_knowledge):
    cfg = qa_knowledge
    stored = read_closed_book(qa_model_dir)
    world = cached_world(cfg.world)
    assert set(stored) == {q.id for q in world.questions}
    sample = [q for q in world.questions if q.split == "test"][:8]
    assert closed_book(qa_model_dir, sample, cfg.world) == [stored[q.id].correct for q in sample]
    meta = build_meta(qa_model_dir)
    assert meta["config"] == cfg.model_dump(mode="json")
    assert meta["closed_book"]["test/known"] > meta["closed_book"]["test/unknown"] + 0.5
    assert meta["pretrain_loss"][1] < meta["pretrain_loss"][0] / 5


def test_warm_start_plays_the_protocol_and_searches_a_lot(qa_model_dir, qa_knowledge):
    cfg = qa_knowledge
    agent = LLMAgent(HFEngine(qa_model_dir), sampling=SamplingParams(max_new_tokens=48, temperature=1.0))
    world = cfg.world.model_dump(mode="json")
    collab = [
        Matchup(game=GAME, seed=s, seats={p: agent.policy_id for p in ("asker", "helper_0", "helper_1")}, game_kwargs={"split": "train", "world": world})
        for s in range(48)
    ]
    iso = [
        Matchup(
            game=GAME,
            seed=s,
            seats={"asker": agent.policy_id},
            game_kwargs={"split": "train", "world": world, "helpers": 0, "asker_tool": "people", "domain": "people"},
        )
        for s in range(48)
    ]
    eps = asyncio.run(play_many(collab + iso, {agent.policy_id: agent}))
    turns = [t for ep in eps for t in ep.turns]
    # measured on this build: 1-5% illegal (an asker's ASK with a garbled helper number, mostly)
    assert np.mean([t.illegal for t in turns]) < 0.1
    c, i = eps[:48], eps[48:]
    # measured over builds: F1 0.31-0.5 together, 0.29-0.6 alone (48 sampled games: +-0.07 of noise;
    # never searching and abstaining scores 0); a two-layer model often reads the wrong attribute of
    # the right person off a search result
    assert np.mean([ep.metrics["f1"] for ep in c]) > 0.2 and np.mean([ep.metrics["f1"] for ep in i]) > 0.2
    # the prompting analogue searches most of the time, and answers from memory some of the time
    assert np.mean([ep.metrics["searches"] > 0 for ep in i]) > 0.5
    assert np.mean([ep.metrics["searches"] for ep in c]) > 0.5


def test_the_knowledge_model_replays_its_facts_and_reading_and_never_the_choice(qa_model_dir, qa_knowledge):
    """trainer.replay_coef's examples for the knowledge warm start: every known fact (closed-book and in
    the game's prompts) and as many reading examples; no target is a SEARCH, which self-play must choose."""
    from arena.warm_start import replay_examples

    examples = replay_examples(qa_knowledge, qa_model_dir)
    assert len(examples) == 2 * build_meta(qa_model_dir)["knowledge_examples"]
    tok = AutoTokenizer.from_pretrained(str(qa_model_dir))
    targets = [tok.decode(t, skip_special_tokens=True) for _, t in examples]
    assert not any(t.lstrip().startswith("SEARCH") for t in targets)
    known = {f.value for f in cached_world(qa_knowledge.world).facts if f.known}
    assert all(any(v in t for t in targets[: len(examples) // 2]) for v in known)
    assert sum(t.lstrip().startswith("ANSWER") for t in targets[len(examples) // 2 :]) > len(examples) // 4  # read off a page


# ----- caching and configuration ----------------------------------------------------------------------------
def test_the_build_is_cached_and_keyed_by_config(qa_model_dir, tiny_model_dir, qa_knowledge, qa_tiny):
    cfg = qa_knowledge
    from arena.warm_start import WARM_STARTS, WarmStartRequest, build_warm_start

    # the package registers the model as the warm-start recipe "knowledge", on its own base
    assert WARM_STARTS["knowledge"].config is KnowledgeConfig and WARM_STARTS["knowledge"].own_base
    start = time.perf_counter()
    again = build_warm_start(WarmStartRequest(tiny=qa_tiny, config=cfg, cache_dir=tiny_model_dir.parent.parent, games=(GAME,)))
    assert Path(again) == qa_model_dir and time.perf_counter() - start < 5
    from arena.environments.collab_qa.knowledge import cache_key

    other = cfg.model_copy(update={"memory_rate": 0.3})
    assert cache_key("x", other.model_dump_json()) != cache_key("x", cfg.model_dump_json())


def test_builds_that_differ_after_reading_share_the_model_after_reading(qa_model_dir, qa_knowledge):
    from arena.environments.collab_qa.knowledge import READING_FILE, build_meta, cached_reading_model, reading_model_dir

    meta = build_meta(qa_model_dir)
    base, cache = meta["base_model"], qa_model_dir.parent.parent
    read_dir = reading_model_dir(base, qa_knowledge, cache)
    assert meta["reading_model"] == read_dir.name and (read_dir / READING_FILE).is_file()
    # the model after reading holds only stage 0: its loss is the one the full build records
    assert json.loads((read_dir / READING_FILE).read_text())["reading_loss"] == meta["reading_loss"]
    later = qa_knowledge.model_copy(update={"memory_rate": 0.3, "pretrain_replay": 1.0, "pretrain": qa_knowledge.pretrain.model_copy(update={"lr": 1e-3})})
    start = time.perf_counter()
    assert cached_reading_model(base, later, cache) == read_dir and time.perf_counter() - start < 5  # reused, not rebuilt
    # another seed reads anew, unless reading_seed pins stage 0's
    assert reading_model_dir(base, qa_knowledge.model_copy(update={"seed": 1}), cache) != read_dir
    assert reading_model_dir(base, qa_knowledge.model_copy(update={"seed": 1, "reading_seed": 0}), cache) == read_dir
    assert reading_model_dir(base, qa_knowledge.model_copy(update={"reading": qa_knowledge.reading.model_copy(update={"steps": 7})}), cache) != read_dir


def test_builds_that_differ_in_the_warm_start_share_the_model_after_stage_1(qa_model_dir, qa_knowledge):
    from arena.environments.collab_qa.knowledge import PRETRAIN_FILE, build_meta, cached_pretrained_model, pretrained_model_dir

    meta = build_meta(qa_model_dir)
    base, cache = meta["base_model"], qa_model_dir.parent.parent
    pre_dir = pretrained_model_dir(base, qa_knowledge, cache)
    assert meta["pretrained_model"] == pre_dir.name and (pre_dir / PRETRAIN_FILE).is_file()
    # the model after stage 1 holds stages 0 and 1: the losses the full build records are its own
    pre_meta = json.loads((pre_dir / PRETRAIN_FILE).read_text())
    assert (pre_meta["reading_loss"], pre_meta["pretrain_loss"]) == (meta["reading_loss"], meta["pretrain_loss"])
    assert pre_meta["reading_model"] == meta["reading_model"]
    later = qa_knowledge.model_copy(update={"memory_rate": 0.3, "replay": 2.0, "warm_start": qa_knowledge.warm_start.model_copy(update={"lr": 1e-3})})
    start = time.perf_counter()
    assert cached_pretrained_model(base, later, cache) == pre_dir and time.perf_counter() - start < 5  # reused, not rebuilt
    # another seed pre-trains anew, unless pretrain_seed (and reading_seed, for stage 0) pin both stages' seeds
    assert pretrained_model_dir(base, qa_knowledge.model_copy(update={"seed": 1}), cache) != pre_dir
    assert pretrained_model_dir(base, qa_knowledge.model_copy(update={"seed": 1, "reading_seed": 0}), cache) != pre_dir
    assert pretrained_model_dir(base, qa_knowledge.model_copy(update={"seed": 1, "reading_seed": 0, "pretrain_seed": 0}), cache) == pre_dir
    for changed in ({"relay": 0.5}, {"pretrain_replay": 2.0}, {"pretrain": qa_knowledge.pretrain.model_copy(update={"steps": 7})}):
        assert pretrained_model_dir(base, qa_knowledge.model_copy(update=changed), cache) != pre_dir, changed


def test_a_build_without_a_cache_leaves_only_its_model(qa_model_dir, qa_knowledge, tmp_path):
    """Without ``cache_dir`` the models after stages 0 and 1 are built in temporary directories beside the
    output and removed: only the knowledge model is left (a few steps a stage: the bookkeeping, not the model)."""
    from arena.environments.collab_qa.knowledge import META_FILE, build_knowledge_model, build_meta

    few = {"steps": 3, "batch_size": 4, "lr": 1e-3}
    cfg = qa_knowledge.model_copy(
        update={k: qa_knowledge.reading.model_copy(update=few) for k in ("reading", "pretrain", "warm_start")}
        | {"collaborative_episodes": 2, "isolated_episodes": 2}
    )
    out = build_knowledge_model(build_meta(qa_model_dir)["base_model"], tmp_path / "model", cfg)
    assert (out / META_FILE).is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    meta = build_meta(out)
    assert meta["pretrained_model"] is None and len(meta["pretrain_loss"]) == 2 and len(meta["warm_start_loss"]) == 2


def test_pretrain_examples_mix_in_fresh_reading_per_knowledge_example_seen():
    knowledge = [([i], [i]) for i in range(10)]
    reading = [([100 + i], [100 + i]) for i in range(1000)]
    cfg = KnowledgeConfig.model_validate({"pretrain": {"steps": 50, "batch_size": 8, "lr": 1e-3}, "pretrain_replay": 0.5})
    out = pretrain_examples(cfg, knowledge, reading)
    read = [x for x in out if x in reading]
    # one pass of steps x batch_size: a third reading (0.5 per knowledge example), every reading example a new page
    assert len(out) == 400 and len(read) == round(400 / 3) and len({str(x) for x in read}) == len(read)
    counts = [sum(x == k for x in out) for k in knowledge]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 400 - len(read)  # the known facts repeated evenly
    assert pretrain_examples(cfg.model_copy(update={"pretrain_replay": 0.0}), knowledge, reading) == knowledge


def test_pretrain_examples_mix_in_relay_examples_beside_reading():
    knowledge = [([i], [i]) for i in range(10)]
    reading = [([100 + i], [100 + i]) for i in range(1000)]
    relay = [([5000 + i], [5000 + i]) for i in range(1000)]
    cfg = KnowledgeConfig.model_validate({"pretrain": {"steps": 50, "batch_size": 8, "lr": 1e-3}, "pretrain_replay": 1.0, "relay": 0.5})
    out = pretrain_examples(cfg, knowledge, reading, relay)
    relayed = [x for x in out if x in relay]
    # 400 seen: knowledge, reading and relay as 1 : 1 : 0.5, every relay example distinct
    assert len(out) == 400 and len(relayed) == 80 and len({str(x) for x in relayed}) == 80
    assert sum(x in reading for x in out) == 160 and sum(x in knowledge for x in out) == 160
    no_pool = pretrain_examples(cfg, knowledge, reading)  # no relay examples given: knowledge fills their place
    assert len(no_pool) == 400 and sum(x in reading for x in no_pool) == 160
    # relay alone, without reading replay
    alone = pretrain_examples(cfg.model_copy(update={"pretrain_replay": 0.0}), knowledge, reading, relay)
    assert len(alone) == 400 and sum(x in relay for x in alone) == round(400 * 0.5 / 1.5) and not any(x in reading for x in alone)


def test_run_config_chooses_the_knowledge_model_by_recipe():
    cfg = load_config(CONFIGS / "collab_qa.yaml")
    assert isinstance(cfg.model.warm_start, KnowledgeConfig) and cfg.trainer.return_mix == 1.0
    assert [g.eval_only for g in cfg.games] == [False, True, True, True]
    assert {g.kwargs.get("asker_tool") for g in cfg.games if g.kwargs.get("helpers") == 0} == {"people", "compounds"}
    # the field default of the warm start is untouched (configs/selfplay.yaml)
    assert type(load_config(CONFIGS / "selfplay.yaml").model.warm_start).__name__ == "ImitationConfig"
    with pytest.raises(ConfigError, match="qa_templates must be at most 2"):
        load_config(CONFIGS / "collab_qa.yaml", ["model.warm_start.qa_templates=3"])


def test_run_config_rejects_a_game_world_the_model_does_not_know(tmp_path):
    text = (CONFIGS / "collab_qa.yaml").read_text().replace("kwargs: {split: test, world: *world}", "kwargs: {split: test, world: {seed: 3}}")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match="collab_qa_test: kwargs.world differs from model.warm_start.world"):
        load_config(tmp_path / "c.yaml")


def test_a_stage_given_in_part_keeps_its_other_defaults():
    cfg = load_config(CONFIGS / "collab_qa.yaml", ["model.warm_start.fresh_reading.steps=3000", "model.warm_start.pretrain.prompt_loss=0.5"])
    ws = cfg.model.warm_start
    default = KnowledgeConfig()
    assert ws.fresh_reading == default.fresh_reading.model_copy(update={"steps": 3000})
    assert ws.pretrain == default.pretrain.model_copy(update={"prompt_loss": 0.5})
    assert ws.reading == default.reading  # untouched stages are the defaults
    with pytest.raises(ConfigError, match="fresh_reading.steps"):
        load_config(CONFIGS / "collab_qa.yaml", ["model.warm_start.fresh_reading.steps=0"])
