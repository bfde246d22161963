"""Tests for collab_qa-v0 (arena.environments.collab_qa.rules) and its scripted bots."""

from __future__ import annotations

import asyncio
import json
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import arena
from arena.agents.base import PlayerView
from arena.agents.catalog import fixed_policy_ids, make_fixed_policy
from arena.environments.collab_qa.bots import BOTS, read_view
from arena.environments.collab_qa.evaluation import base_game_kwargs
from arena.environments.collab_qa.rules import CollabQAGame, token_f1
from arena.environments.collab_qa.world import DOMAIN_DESCRIPTIONS, WorldConfig, cached_world, save_dataset
from arena.records import Episode, Matchup
from arena.registry import register
from arena.rollout import play_many
from arena.testing import ConformanceError, check_game

GAME = "collab_qa-v0"
ISOLATED = {"helpers": 0, "asker_tool": "people", "domain": "people"}


@pytest.fixture(scope="module", autouse=True)
def _index_cache(tmp_path_factory):
    """BM25 indexes built by these tests go to a temporary ARENA_HOME."""
    old = os.environ.get("ARENA_HOME")
    os.environ["ARENA_HOME"] = str(tmp_path_factory.mktemp("arena_home"))
    yield
    if old is None:
        os.environ.pop("ARENA_HOME", None)
    else:
        os.environ["ARENA_HOME"] = old


def make(**kw) -> CollabQAGame:
    env = arena.make(GAME, **kw)
    assert isinstance(env, CollabQAGame)
    return env


def run(bot: str | dict[str, str], n: int = 30, **kw) -> list[Episode]:
    """``n`` episodes (seeds 0..n-1) of bots through Arena's real rollout."""
    players = make(**kw).possible_agents
    seats = {p: f"scripted/{bot}" for p in players} if isinstance(bot, str) else {p: f"scripted/{b}" for p, b in bot.items()}
    matchups = [Matchup(game=GAME, seed=s, seats=seats, game_kwargs=kw) for s in range(n)]
    pool = {pid: make_fixed_policy(pid, GAME) for pid in set(seats.values())}
    return asyncio.run(play_many(matchups, pool))


def mean(eps: list[Episode], key: str) -> float:
    return float(np.mean([e.metrics[key] for e in eps]))


def steps(env: CollabQAGame, actions: list[str], seed: int = 0) -> CollabQAGame:
    env.reset(seed=seed)
    for a in actions:
        assert not env.terminations[env.agent_selection], "the game ended before the actions ran out"
        env.step(a)
    return env


# ----- conformance -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [{}, ISOLATED, {"helper_tools": ("people", "people"), "reveal_helpers": True, "split": "ood"}],
    ids=["collaborative", "isolated", "shared-tool-revealed"],
)
def test_conformance(kw):
    report = check_game(GAME, api_cycles=200, **kw)
    assert report.checks[-1] == "private information"
    assert all(ep.turns for ep in report.episodes)


def test_checker_catches_a_helper_leak():
    class Leaky(CollabQAGame):
        def observe_text(self, player):
            text = super().observe_text(player)
            if player == "asker":  # shows the asker which corpus helper_0 searches
                text += "\n" + self._tool_line("helper_0")
            return text

    register("leaky_collab_qa-v0", Leaky, override=True)
    with pytest.raises(ConformanceError, match="private to 'helper_0'"):
        check_game("leaky_collab_qa-v0", api_cycles=20)


# ----- bots ----------------------------------------------------------------------------------------------------
def test_bots_are_registered():
    assert set(BOTS) == {"always_search", "never_search", "oracle", "memory_first"}
    assert {f"scripted/{b}" for b in BOTS} <= set(fixed_policy_ids(GAME))


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_always_search_bots_answer_well(split):
    eps = run("always_search", split=split)
    assert mean(eps, "f1") > 0.9
    assert 1.0 <= mean(eps, "searches") <= 2.0  # the asker finds the right helper by asking around
    assert mean(eps, "searches") > 1.0  # ... and sometimes asks the wrong one first
    for e in eps:
        assert e.illegal_moves == 0 and not e.truncated
        rc = e.reward_components
        assert rc["search_cost"] == pytest.approx(-0.05 * e.metrics["searches"])
        assert e.group_return == pytest.approx(rc["answer_score"] + rc["search_cost"])
        assert set(e.returns.values()) == {e.group_return}  # shared by every seat


def test_never_search_bots_score_low_and_pay_nothing():
    eps = run("never_search")
    assert mean(eps, "f1") < 0.1
    assert all(e.metrics["searches"] == 0 and e.reward_components["search_cost"] == 0 for e in eps)
    assert mean(eps, "abstained") == 1.0
    assert all(e.group_return == pytest.approx(0.2) for e in eps)


def test_oracle_knows_the_default_world_only():
    eps = run("oracle", split="test")
    assert mean(eps, "f1") == 1.0 and mean(eps, "searches") == 0 and mean(eps, "turns") == 1
    other = run("oracle", n=20, world={"seed": 7})
    assert mean(other, "f1") < 0.1 and mean(other, "abstained") > 0.9


def test_memory_first_searches_exactly_for_unknown_facts():
    eps = run("memory_first", n=40)
    assert mean(eps, "f1") > 0.9
    known = [e for e in eps if e.metrics["known"] == 1]
    unknown = [e for e in eps if e.metrics["known"] == 0]
    assert known and unknown
    assert all(e.metrics["searches"] == 0 for e in known)
    assert all(e.metrics["searches"] >= 1 for e in unknown)
    assert mean(eps, "searches") < 0.8 * mean(run("always_search", n=40), "searches")


def test_mixed_seats_always_search_asker_with_silent_helpers():
    eps = run({"asker": "always_search", "helper_0": "never_search", "helper_1": "never_search"}, n=10)
    assert mean(eps, "f1") == 0 and mean(eps, "searches") == 0 and mean(eps, "asks") == 2


# ----- the isolated setting --------------------------------------------------------------------------------
def test_isolated_setting_is_one_agent_with_one_tool():
    env = make(**ISOLATED)
    assert env.possible_agents == ["asker"]
    eps = run("always_search", split="test", **ISOLATED)
    assert mean(eps, "f1") > 0.9 and mean(eps, "searches") == 1 and mean(eps, "searches/asker") == 1
    env.reset(seed=0)
    obs = env.observe("asker")["text"]
    assert "[private] Your search tool: the people corpus" in obs and "ASK" not in obs.split("Moves:")[1]
    assert {make(**ISOLATED, question_index=i).pool[i].domain for i in range(5)} == {"people"}
    assert mean(run("never_search", n=10, **ISOLATED), "abstained") == 1.0
    # closed book: no helpers, no tool
    closed = run("always_search", n=10, helpers=0)
    assert mean(closed, "abstained") == 1.0 and mean(closed, "searches") == 0


# ----- rewards -------------------------------------------------------------------------------------------------
def _play_answer(final: str, search: bool = True, **kw) -> CollabQAGame:
    env = make(question_index=0, **kw)
    env.reset(seed=0)
    actions = ["ASK helper 1: " + env.question.question] + (["SEARCH: " + env.question.question] if search else [])
    actions += ["REPLY: no idea", final.replace("{gold}", env.question.answers[0])]
    return steps(env, actions)


@pytest.mark.parametrize(
    "final, expected, outcome",
    [
        ("ANSWER: {gold}", 1.0, "answered"),
        ("ANSWER: Nowhere", 0.0, "answered"),
        ("ANSWER (unsure): {gold}", 0.6, "hedged"),
        ("ANSWER (hedged): nowhere", 0.15, "hedged"),
        ("ABSTAIN", 0.2, "abstained"),
    ],
)
def test_answer_scores(final, expected, outcome):
    env = _play_answer(final)
    assert env.outcome == outcome and all(env.terminations.values())
    assert env.final_returns() == pytest.approx({p: expected - 0.05 for p in env.possible_agents})
    rc = env.final_components()
    assert rc["answer_score"] == pytest.approx(expected) and rc["search_cost"] == pytest.approx(-0.05)
    m = env.final_metrics()
    assert m[outcome] == 1 and m["searches"] == 1
    assert m["correct"] == float("{gold}" in final)
    assert "Gold answer:" in env.observe("helper_0")["text"]


def test_partial_credit_f1_exact_match_and_custom_scores():
    assert token_f1("the Tessin", "Tessin") == 1.0
    assert token_f1("lens grinder", "grinder") == pytest.approx(2 / 3)
    env = _play_answer("ANSWER: {gold} town", search=False)  # one extra token: F1 2/3
    assert env.final_components()["f1"] == pytest.approx(2 / 3) and env.final_components()["em"] == 0
    assert env.group_return() == pytest.approx(2 / 3)
    env = _play_answer("ANSWER: {gold} town", search=False, metric="em")
    assert env.group_return() == pytest.approx(0.0)
    env = _play_answer("ANSWER: wrong", search=False, confident_wrong=-0.5, search_cost=0.2)
    assert env.group_return() == pytest.approx(-0.5)
    env = _play_answer("ANSWER: wrong", search=True, confident_wrong=-0.5, search_cost=0.2)
    assert env.group_return() == pytest.approx(-0.7)


def test_search_cost_is_charged_when_the_search_is_made():
    env = make(question_index=0)
    env.reset(seed=0)
    env.step("ASK helper 1: " + env.question.question)
    assert all(r == 0 for r in env.rewards.values())
    env.step("SEARCH: anything at all")
    assert env.rewards == pytest.approx({p: -0.05 for p in env.possible_agents})


def test_running_out_of_turns_counts_as_abstaining():
    env = make(max_turns=3, question_index=0)
    steps(env, ["ASK helper 2: hi", "SEARCH: hi", "REPLY: still looking"])
    assert all(env.terminations.values())
    m = env.final_metrics()
    assert m["timed_out"] == 1 and m["abstained"] == 1 and m["f1"] == 0
    assert env.group_return() == pytest.approx(0.2 - 0.05)
    assert "out of turns" in env.observe("asker")["text"]


def test_forfeit_scores_as_abstaining_plus_the_penalty():
    env = make(max_illegal_retries=1, forfeit_penalty=-1.0)
    steps(env, ["ASK helper 1: hi", "ANSWER: x", "ANSWER: x"])
    assert all(env.terminations.values()) and env.outcome == "forfeit"
    helper = env.seat_of[1]
    other = next(p for p in env.possible_agents if p not in ("asker", helper))
    assert env.final_returns() == pytest.approx({"asker": 0.2, helper: 0.2 - 1.0, other: 0.2})
    assert env.final_metrics()["abstained"] == 1 and env.final_metrics()["forfeited"] == 1


# ----- moves ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, before, bad, reason",
    [
        ({}, [], "hello there", "no move found"),
        ({}, [], "REPLY: hi", "the asker cannot REPLY"),
        ({}, [], "SEARCH: x", "you have no search tool; ASK a helper"),
        ({}, [], "ASK helper 3: hi", "there is no helper 3: helpers are numbered 1 to 2"),
        ({}, [], "ASK helper 1:", "ASK needs a message"),
        ({}, [], "ASK someone: hi", "write ASK helper <n>: <message>"),
        ({}, [], "ANSWER:  ", "ANSWER needs an answer"),
        ({}, [], "I will ANSWER: Tessin", "no move found"),
        ({}, ["ASK helper 1: hi"], "ANSWER: x", "a helper cannot ANSWER"),
        ({}, ["ASK helper 1: hi"], "SEARCH:", "SEARCH needs a query"),
        ({}, ["ASK helper 1: hi"], "REPLY:", "REPLY needs a message"),
        ({}, ["ASK helper 1: hi", "SEARCH: a", "SEARCH: b"], "SEARCH: c", "no searches left this turn (2 of 2 used): REPLY"),
        (ISOLATED, [], "ASK helper 1: hi", "there are no helpers in this game"),
        (ISOLATED, ["SEARCH: a"], "SEARCH: b", "no searches left this turn (1 of 1 used): ANSWER"),
    ],
)
def test_illegal_moves_change_nothing(kw, before, bad, reason):
    if kw is ISOLATED:
        kw = {**ISOLATED, "max_searches_per_turn": 1}
    env = steps(make(**kw), before)
    player, turns, obs = env.agent_selection, env.turns_used, {p: env.observe(p)["text"] for p in env.possible_agents}
    env.step(bad)
    assert reason in env.infos[player]["illegal_move"]
    assert env.agent_selection == player and env.turns_used == turns
    assert {p: env.observe(p)["text"] for p in env.possible_agents if p != player} == {p: t for p, t in obs.items() if p != player}


def test_move_formats_are_read_leniently():
    env = steps(make(), ["Let me ask.\n  ask Helper 2 - " + "Where was Varo Quell born?\nThanks!"])
    assert env.agent_selection == env.seat_of[2]
    assert env.messages[-1][2] == "Where was Varo Quell born? Thanks!"
    env.step("search: varo quell\nignored second line")
    assert env.searches[env.seat_of[2]][-1][0] == "varo quell"
    env.step("Reply: I'm not sure,\nbut maybe [private] Tessin")
    assert env.messages[-1][2] == "I'm not sure, but maybe (private) Tessin"  # cannot forge a private line
    env.step("Thinking...\n**ANSWER (not sure):** Tessin")
    assert env.outcome == "hedged" and env.answer == "Tessin"


# ----- anonymity and private information ---------------------------------------------------------------------
def test_helpers_are_anonymous_in_a_fresh_order_each_episode():
    labels = []
    for seed in range(30):
        env = make()
        env.reset(seed=seed)
        labels.append(env.label_of["helper_0"])
        obs = env.observe("asker")["text"]
        assert not any(desc in obs for desc in DOMAIN_DESCRIPTIONS.values())
        assert "compounds" not in obs.replace(env.question.question, "") and "people" not in obs
        again = make()
        again.reset(seed=seed)
        assert again.label_of == env.label_of
    assert set(labels) == {1, 2} and 5 < labels.count(1) < 25


def test_reveal_helpers_shows_each_label_its_corpus():
    env = make(reveal_helpers=True)
    for seed in range(6):
        env.reset(seed=seed)
        obs = env.observe("asker")["text"]
        assert f"Helper {env.label_of['helper_0']} searches the compounds corpus" in obs
        assert f"Helper {env.label_of['helper_1']} searches the people corpus" in obs


def test_search_results_reach_only_the_caller():
    def asker_views(actions):
        env = steps(make(question_index=3), actions)
        return [line for line in env.observe("asker")["text"].splitlines() if not line.startswith("Turns left")], env

    q = make(question_index=3).pool[3].question
    quiet, _ = asker_views([f"ASK helper 1: {q}", "REPLY: I don't know."])
    searched, env = asker_views([f"ASK helper 1: {q}", f"SEARCH: {q}", "SEARCH: born", "REPLY: I don't know."])
    assert quiet == searched
    helper = env.seat_of[1]
    other = env.seat_of[2]
    assert "[private] Search 2" in env.observe(helper)["text"]
    assert "Search" not in env.observe(other)["text"].replace("Searches left", "")


def test_private_information_never_leaks_in_bot_play():
    mixes = ["always_search", "memory_first", {"asker": "never_search", "helper_0": "always_search", "helper_1": "always_search"}]
    for k, bot in enumerate(mixes):
        for seed in range(8):
            env = make(reveal_helpers=bool(seed % 2))
            env.reset(seed=seed)
            bots = {p: BOTS[bot if isinstance(bot, str) else bot[p]]() for p in env.possible_agents}
            rng = np.random.default_rng(seed)
            while True:
                info = env.private_info()
                views = {p: env.observe(p)["text"] for p in env.possible_agents}
                for owner, frags in info.items():
                    for frag in frags:
                        assert frag in views[owner]
                        assert not any(frag in views[p] for p in views if p != owner), (k, seed, owner, frag)
                # the documents a helper retrieved never reach another seat verbatim
                for owner, log in env.searches.items():
                    for _, results in log:
                        for _, text, _ in results:
                            assert not any(text in views[p] for p in views if p != owner)
                if any(env.terminations.values()):
                    break
                p = env.agent_selection
                env.step(bots[p].choose(PlayerView(GAME, p, views[p], rng=rng)))
            assert env.outcome in ("answered", "abstained")


# ----- data sources and caching --------------------------------------------------------------------------------
def test_a_saved_world_plays_exactly_like_the_generated_one(tmp_path):
    save_dataset(cached_world(WorldConfig()), tmp_path / "world")
    a = run("always_search", n=6, split="test")
    b = run("always_search", n=6, split="test", data_dir=str(tmp_path / "world"))
    for x, y in zip(a, b):
        assert [(t.player, t.observation, t.action) for t in x.turns] == [(t.player, t.observation, t.action) for t in y.turns]
        assert x.returns == y.returns and x.metrics == y.metrics


def _real_data(root):
    (root / "corpora").mkdir(parents=True)
    questions = [
        {"id": "r1", "question": "Which river flows through Lorvik?", "answers": ["Sella", "the Sella river"], "split": "test", "domain": "wiki"},
        {"id": "r2", "question": "Which enzyme does ketrazol block?", "answers": ["MAO-B"], "split": "test", "domain": "med"},
        {"id": "r3", "question": "Who founded Lorvik?", "answers": ["Ivo Dunn"], "split": "train"},
    ]
    wiki = [
        {"id": "w1", "title": "Lorvik", "text": "The Sella river flows through Lorvik. Lorvik was founded by Ivo Dunn."},
        {"id": "w2", "text": "Bergen is a city."},
    ]
    med = [{"id": "m1", "title": "Ketrazol", "text": "Ketrazol is an inhibitor that blocks MAO-B in the brain."}]
    for name, rows in [("questions.jsonl", questions), ("corpora/wiki.jsonl", wiki), ("corpora/med.jsonl", med)]:
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(root)


def test_questions_and_corpora_from_jsonl(tmp_path):
    data = _real_data(tmp_path / "real")
    env = make(data_dir=data, split="test")
    assert env.tools == {"helper_0": "med", "helper_1": "wiki"} and len(env.pool) == 2
    eps = run("always_search", n=10, data_dir=data, split="test")
    assert all(e.illegal_moves == 0 for e in eps)
    assert mean(eps, "hedged") == 1.0  # no known template: answers from the top sentence, hedged
    assert 0 < mean(eps, "f1") < 1 and "known" not in eps[0].metrics
    assert len(make(data_dir=data, split=None).pool) == 3
    iso = make(data_dir=data, split=None, helpers=0, asker_tool="wiki", domain="wiki")
    assert [q.id for q in iso.pool] == ["r1"]


def test_bad_game_configs_fail_before_play(tmp_path):
    data = _real_data(tmp_path / "real")
    with pytest.raises(ValueError, match=r"no questions in split 'ood'; splits in the data: \['test', 'train'\]"):
        make(data_dir=data, split="ood")
    with pytest.raises(ValueError, match="helper_1's tool 'pubmed' is not a corpus of the data"):
        make(data_dir=data, helper_tools=("wiki", "pubmed"))
    with pytest.raises(ValueError, match="3 helpers but only 2 corpora"):
        make(helpers=3)
    with pytest.raises(ValueError, match="question_index 54 is out of range"):
        make(split="test", question_index=54)
    with pytest.raises(ValidationError, match="redraw_unknown needs the generated world"):
        make(data_dir=data, redraw_unknown=True)
    with pytest.raises(ValidationError, match="names 1 tools for 2 helpers"):
        make(helper_tools=("people",))
    with pytest.raises(ValidationError):
        make(metric="bleu")
    with pytest.raises(ValidationError):
        make(no_such_key=1)
    with pytest.raises(ValidationError):
        make(world={"persons": 1})


def test_data_and_indexes_are_built_once_per_process(tmp_path):
    a, b = make(), make(split="test")
    assert a.bank is b.bank and a.bank.index("people") is b.bank.index("people")
    assert make(world={"seed": 3}).bank is not a.bank
    data = _real_data(tmp_path / "real")
    first = make(data_dir=data, split=None).bank
    assert make(data_dir=data, split=None).bank is first
    (tmp_path / "real" / "questions.jsonl").write_text(json.dumps({"id": "n", "question": "Who?", "answers": ["x"]}) + "\n")
    assert make(data_dir=data, split=None).bank is not first  # an edited file is read again
    assert [q.id for q in make(data_dir=data, split=None).pool] == ["n"]


def test_redraw_unknown_gives_an_unknown_fact_a_new_value_each_game_stated_on_its_pages():
    env = make(**ISOLATED, redraw_unknown=True)
    data = {q.id: q for q in env.pool}
    drawn: dict[str, set[str]] = {}
    for seed in range(60):
        env.reset(seed=seed)
        q, true = env.question, data[env.question.id]
        if q.meta["known"]:
            assert env.redrawn is None and q.answers == true.answers
            continue
        old, new = env.redrawn
        assert old == true.answers[0] and q.answers == [new]
        assert q.meta["attribute"] == "birth_year" or new in env.bank.pools[q.meta["attribute"]]
        drawn.setdefault(q.id, set()).add(new)
        env.step(f"SEARCH: {q.question}")
        about = [text for doc, text, _ in env.searches["asker"][-1][1] if env.bank.titles[doc] == q.meta["entity"]]
        assert about and any(re.search(rf"\b{re.escape(new)}\b", t) for t in about)
        if new != old:
            assert not any(re.search(rf"\b{re.escape(old)}\b", t) for t in about)
        assert new in env.observe(env.agent_selection)["text"]  # what the seat is shown
        env.step(f"ANSWER: {new}")
        assert env.rewards["asker"] == pytest.approx(1.0)  # the answer's score (the search was charged when made)
    assert len(drawn) > 3 and any(len(v) > 1 for v in drawn.values())  # a new value each game, not each question
    env.reset(seed=5)
    again = make(**ISOLATED, redraw_unknown=True)
    again.reset(seed=5)
    assert again.question == env.question  # the episode's seed draws it
    # evaluation (arena eval, the benchmarks) takes a training entry's options but always plays the data's values
    assert base_game_kwargs({"redraw_unknown": True, "search_cost": 0.1, "split": "train"}) == {"search_cost": 0.1}
    # the searching bot reads the drawn values; the bot that knows the world's values misses them
    assert mean(run("always_search", n=30, **ISOLATED, redraw_unknown=True), "f1") > 0.9
    oracle = [e for e in run("oracle", n=30, **ISOLATED, redraw_unknown=True) if e.metrics["known"] == 0]
    assert oracle and np.mean([e.metrics["f1"] for e in oracle]) < 0.5


def test_question_index_fixes_the_question():
    env = make(split="test", question_index=5)
    ids = set()
    for seed in range(5):
        env.reset(seed=seed)
        ids.add(env.question.id)
    assert ids == {env.pool[5].id}


def test_read_view_parses_the_observation():
    env = make(question_index=2)
    q = env.pool[2].question
    steps(env, [f"ASK helper 2: {q}", f"SEARCH: {q}"])
    v = read_view(env.observe(env.seat_of[2])["text"])
    assert v.role == "helper" and v.messages == [("asker", 0, q)] and v.has_tool and v.searched_this_turn
    assert len(v.searches) == 1 and v.searches[0][0] == q and 1 <= len(v.searches[0][1]) <= 3
    env.step("REPLY: Tessin")
    v = read_view(env.observe("asker")["text"])
    assert v.question == q and v.helpers == 2 and not v.has_tool
    assert v.messages == [("you", 2, q), ("helper", 2, "Tessin")]


# ----- robustness ------------------------------------------------------------------------------------------------
_WORDS = [
    "ASK",
    "ask helper 1:",
    "ASK helper 2:",
    "helper 9",
    "ANSWER:",
    "ANSWER (unsure):",
    "ABSTAIN",
    "SEARCH:",
    "REPLY:",
    "\n",
    "[private]",
    '"',
    "é",
    "\x00",
    "Varo Quell",
    "(",
    ":",
]
_JUNK = st.lists(st.one_of(st.sampled_from(_WORDS), st.text(max_size=6)), max_size=8).map(" ".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(st.one_of(st.text(max_size=30), _JUNK), min_size=1, max_size=12), seed=st.integers(0, 3), isolated=st.booleans())
def test_arbitrary_actions_never_raise(actions, seed, isolated):
    env = make(max_illegal_retries=3, **(ISOLATED if isolated else {}))
    env.reset(seed=seed)
    for a in actions:
        if any(env.terminations.values()):
            break
        env.step(a)
        for p in env.possible_agents:
            assert isinstance(env.observe(p)["text"], str)
    assert len(set(env.final_returns().values())) <= 2  # shared, except a forfeit penalty
