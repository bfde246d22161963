"""Tests for social_deduction-v0 (arena.environments.social_deduction.rules), its bots and arena.belief."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

import arena
from arena.agents.base import PlayerView
from arena.agents.catalog import make_fixed_policy
from arena.belief import Discussion, Utterance, normalise, score_discussions, speaking_reward
from arena.environments.social_deduction.bots import BOTS, CrewBot, read_state
from arena.environments.social_deduction.rules import IMPOSTOR, QUICK, SocialDeductionGame
from arena.records import Matchup
from arena.rollout import play_many
from arena.testing import check_game

GAME = "social_deduction-v0"


def make(**kw) -> SocialDeductionGame:
    env = arena.make(GAME, **kw)
    assert isinstance(env, SocialDeductionGame)
    return env


def fresh(seed: int = 0, **kw) -> SocialDeductionGame:
    env = make(quick=True, **kw)
    env.reset(seed=seed)
    return env


def tick(env: SocialDeductionGame, moves: dict[str, str]) -> None:
    """Play one tick: every living player's move from ``moves`` (default ``wait``), in turn order."""
    start = env.tick
    while env.phase == "tick" and env.tick == start and not env.terminations[env.agent_selection]:
        player = env.agent_selection
        env.step(moves.get(player, "wait"))
        assert "illegal_move" not in env.infos[player], env.infos[player]


def meeting(env: SocialDeductionGame, say: dict[str, str], ballots: dict[str, str]) -> None:
    """Finish the current meeting: each speaker's message from ``say``, then the ballots (default skip)."""
    while env.phase == "discussion":
        env.step(say.get(env.agent_selection, "I was doing my tasks."))
    while env.phase == "vote":
        env.step(ballots.get(env.agent_selection, "skip"))


def bot_episodes(seats: dict[str, str], seeds, **kw):
    matchups = [Matchup(game=GAME, seed=s, seats=seats, game_kwargs=kw) for s in seeds]
    pool = lambda m: {pid: make_fixed_policy(pid, GAME) for pid in set(m.seats.values())}
    return asyncio.run(play_many(matchups, pool))


def option_text(action: str) -> str:
    """A bot's ``3 task`` without its number."""
    number, _, text = action.partition(" ")
    return text if number.isdigit() else action


def seating(crew: str, impostor: str, n: int = 4) -> dict[str, str]:
    return {**{f"crew_{i}": crew for i in range(1, n)}, IMPOSTOR: impostor}


@pytest.fixture(scope="module")
def listener(tiny_model_dir):
    from arena.agents.llm import LLMAgent
    from arena.engines.hf import HFEngine

    return LLMAgent(HFEngine(tiny_model_dir), "main")


# ----- registration, config, conformance --------------------------------------------------------
def test_registered_with_published_defaults_and_seats_follow_the_player_count():
    env = make()
    c = env.config
    assert (c.num_players, c.grid_width, c.grid_height, c.tasks_per_crew, c.kill_cooldown, c.discussion_rounds) == (5, 3, 2, 5, 20, 2)
    assert env.possible_agents == ["crew_1", "crew_2", "crew_3", "crew_4", "impostor"]
    assert make(num_players=7).possible_agents == [f"crew_{i}" for i in range(1, 7)] + ["impostor"]
    assert set(make(num_players=3).observation_spaces) == {"crew_1", "crew_2", "impostor"}
    assert GAME in arena.registry.registered_games()


def test_quick_setting_fills_only_what_is_not_given():
    q = make(quick=True).config
    assert {k: getattr(q, k) for k in QUICK} == QUICK
    mixed = make(quick=True, tasks_per_crew=4).config
    assert mixed.tasks_per_crew == 4 and mixed.num_players == QUICK["num_players"]


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"grid_width": 1, "grid_height": 1}, "grid_width"),
        ({"grid_width": 4, "grid_height": 4}, "12"),
        ({"num_players": 11}, "num_players"),
        ({"num_players": 2}, "num_players"),
        ({"max_ticks": 0}, "max_ticks"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValidationError, match=field):
        make(**kw)


@pytest.mark.parametrize("kw", [{}, {"quick": True, "belief_scoring": True}, {"num_players": 6, "grid_width": 2, "discussion_rounds": 1}])
def test_conformance(kw):
    report = check_game(GAME, api_cycles=300, **kw)
    assert "private information" in report.checks


# ----- the tick: kills, witnesses, tasks, hidden moves ----------------------------------------------
def test_a_kill_leaves_a_body_that_witnesses_saw_and_voids_the_victims_move():
    env = fresh(initial_kill_cooldown=0, kill_cooldown=3)
    n = env.name
    victim = "crew_3"
    tick(env, {"crew_1": "move to the weapons", "crew_2": "wait", victim: "move south", IMPOSTOR: f"I kill {n[victim]}"})
    assert not env.alive[victim] and env.bodies == {victim: 0}
    assert env.room_of[victim] == 0  # its own move was void
    assert env.cooldown == 3 and env.metrics()["kills"] == 1
    line = f"{n[IMPOSTOR]} killed {n[victim]}."
    # crew_1 left the room during the tick, crew_2 stayed: both were there at its start
    for seat in ("crew_1", "crew_2"):
        assert line in env.observe(seat)["text"]
    obs = env.observe("crew_2")["text"]
    assert f"Bodies here: {n[victim]}." in obs and "report" in read_state(obs).moves
    # everyone still counts the victim alive in public until a meeting announces it
    assert n[victim] in obs.split("Alive: ")[1].split(".")[0]


def test_a_player_walking_in_during_the_kill_is_a_witness_one_walking_elsewhere_is_not():
    env = fresh(seed=3, initial_kill_cooldown=2, kill_cooldown=3)
    n = env.name
    tick(env, {"crew_1": "move east", "crew_2": "move south", "crew_3": "move south", IMPOSTOR: "move east"})
    tick(env, {"crew_1": "wait", "crew_2": "move east", "crew_3": "wait", IMPOSTOR: "wait"})
    assert env.cooldown == 0
    # impostor and crew_1 alone in weapons; crew_2 walks in while the kill happens, crew_3 walks elsewhere
    tick(env, {"crew_2": "move north", "crew_3": "move east", IMPOSTOR: f"kill {n['crew_1']}"})
    assert env.room_of["crew_2"] == 1 and env.room_of["crew_3"] == 3
    line = f"{n[IMPOSTOR]} killed {n['crew_1']}."
    assert line in env.observe("crew_2")["text"]
    assert line not in env.observe("crew_3")["text"]


def test_moves_are_hidden_until_the_tick_resolves():
    env = fresh(initial_kill_cooldown=0)
    before = {p: env.observe(p)["text"] for p in env.possible_agents}
    env.step("move east")  # crew_1
    env.step("task")  # crew_2 has a task in the cafeteria for this seed
    assert "Your move this tick: move weapons" in env.observe("crew_1")["text"]
    for p in ("crew_3", IMPOSTOR):
        assert env.observe(p)["text"] == before[p]
    for other_first in ("wait", "move south"):
        twin = fresh(initial_kill_cooldown=0)
        twin.step(other_first)
        twin.step("task")
        assert twin.observe("crew_3")["text"] == env.observe("crew_3")["text"]
    assert env.tick == 0 and env.room_of["crew_1"] == 0


def test_tasks_finish_the_game_and_a_dead_players_tasks_stay_undone():
    env = fresh(seed=0)
    assert env.tasks == {"crew_1": [[1, 1], [0, 1]], "crew_2": [[0, 1], [0, 1]], "crew_3": [[0, 1], [3, 1]]}
    tick(env, {"crew_1": "task", "crew_2": "task", "crew_3": "task"})
    tick(env, {"crew_1": "move east", "crew_2": "task", "crew_3": "move south"})
    tick(env, {"crew_1": "task", "crew_3": "move east"})
    assert env.phase == "tick"
    tick(env, {"crew_3": "task"})
    assert env.winner == "crew" and env.end_reason == "tasks" and env.metrics()["tasks_done"] == 1.0
    assert env.final_returns() == {"crew_1": 1.0, "crew_2": 1.0, "crew_3": 1.0, IMPOSTOR: 0.0}
    assert "the crew won (every crew task is done)" in env.observe(IMPOSTOR)["text"]

    env = fresh(seed=0, initial_kill_cooldown=0)
    tick(env, {"crew_1": "task", "crew_2": "task", "crew_3": "task", IMPOSTOR: f"kill {env.name['crew_1']}"})
    tick(env, {"crew_2": "task", "crew_3": "move south"})
    tick(env, {"crew_3": "move east"})
    tick(env, {"crew_3": "task"})
    # the kill voided crew_1's last task move: its two tasks can never be done
    assert env.phase == "tick" and env.metrics()["tasks_done"] == 4 / 6


def test_parity_and_timeout_win_for_the_impostor():
    env = fresh(seed=1, initial_kill_cooldown=0, kill_cooldown=0)
    n = env.name
    tick(env, {IMPOSTOR: f"kill {n['crew_1']}", "crew_2": "wait", "crew_3": "wait"})
    assert env.phase == "tick"
    tick(env, {IMPOSTOR: f"kill {n['crew_2']}", "crew_3": "wait"})
    assert env.winner == "impostor" and env.end_reason == "parity"
    assert env.final_returns() == {"crew_1": 0.0, "crew_2": 0.0, "crew_3": 0.0, IMPOSTOR: 1.0}

    env = fresh(seed=1, max_ticks=3)
    for _ in range(3):
        tick(env, {})
    assert env.winner == "impostor" and env.end_reason == "timeout" and env.tick == 3


# ----- meetings and votes ---------------------------------------------------------------------------
def _with_body(seed: int = 2, **kw) -> SocialDeductionGame:
    """A game in its first meeting: the impostor killed crew_3 at tick 1 and crew_1 reported it."""
    env = fresh(seed=seed, initial_kill_cooldown=0, **kw)
    tick(env, {IMPOSTOR: f"kill {env.name['crew_3']}"})
    tick(env, {"crew_1": "report"})
    assert env.phase == "discussion"
    return env


def test_a_report_starts_a_meeting_where_everyone_speaks_twice_in_random_order():
    env = _with_body()
    m = env.meeting
    assert m.reporter == "crew_1" and m.dead == {"crew_3": 0}
    assert sorted(m.queue) == sorted(["crew_1", "crew_2", IMPOSTOR] * 2)
    assert sorted(m.queue[:3]) == sorted(m.queue[3:])  # each round holds every living player once
    orders = {tuple(_with_body(seed=s).meeting.queue) for s in range(8)}
    assert len(orders) > 1
    speaker = env.agent_selection
    env.step("I think [private] You are")
    assert env.meeting.transcript[-1] == (speaker, "I think (private) You are")
    env.step("   ")
    assert "empty message" in env.infos[env.agent_selection]["illegal_move"]


@pytest.mark.parametrize(
    "ballots, ejected",
    [
        ({"crew_1": "vote IMP", "crew_2": "vote IMP", IMPOSTOR: "vote C1"}, IMPOSTOR),
        ({"crew_1": "vote C2", "crew_2": "skip", IMPOSTOR: "vote C2"}, "crew_2"),
        ({"crew_1": "vote IMP", "crew_2": "skip", IMPOSTOR: "vote C1"}, None),  # a three-way tie
        ({"crew_1": "vote IMP", "crew_2": "skip", IMPOSTOR: "skip"}, None),  # skip on top
    ],
)
def test_vote_outcomes(ballots, ejected):
    env = _with_body()
    n = env.name
    names = {"IMP": n[IMPOSTOR], "C1": n["crew_1"], "C2": n["crew_2"]}
    ballots = {p: " ".join(names.get(w, w) for w in b.split()) for p, b in ballots.items()}
    meeting(env, {}, ballots)
    assert env.meetings[0].ejected == ejected
    if ejected == IMPOSTOR:
        assert env.winner == "crew" and env.end_reason == "ejection"
        assert env.metrics()["ejected_impostor"] == 1 and env.metrics()["vote_accuracy"] == 1.0
    elif ejected == "crew_2":
        # two crew left would be one crew with the impostor: parity
        assert env.winner == "impostor" and env.end_reason == "parity"
        assert f"{n['crew_2']} was ejected and was not the impostor." in env.observe("crew_1")["text"]
    else:
        assert env.phase == "tick" and "Nobody was ejected." in env.observe("crew_2")["text"]
        assert all(env.room_of[p] == 0 for p in env.living()) and not env.bodies


@pytest.mark.parametrize(
    "text, want",
    [
        ("vote {C2}", "crew_2"),
        ("I VOTE {imp}", IMPOSTOR),
        ("skip", None),
        ("I'd rather skip this one", None),
        ("{imp}!", IMPOSTOR),
        ("vote for {C1}", "crew_1"),
        ("4", None),
        (" 4. skip", None),
        ("4 vote {imp}", None),
    ],
)
def test_vote_parsing(text, want):
    env = _with_body()
    n = env.name
    text = text.format(C1=n["crew_1"], C2=n["crew_2"], imp=n[IMPOSTOR])
    assert env.parse_vote(text) == want
    options = read_state(env.observe("crew_2")["text"]).vote_options if env.phase == "vote" else env._vote_options()
    assert options[-1] == "skip" and len(options) == 4  # three living players, then skip


def test_numbered_options_pick_the_listed_move():
    env = fresh(seed=0)
    obs = env.observe("crew_1")["text"]
    assert obs.endswith("Your move (write it or its number): 1 move navigation, 2 move weapons, 3 task, 4 wait")
    assert env.parse_tick_move("crew_1", "2") == ("move", 1)
    assert env.parse_tick_move("crew_1", "3) task please") == ("task", None)
    assert env.parse_tick_move("crew_1", "4 move weapons") == ("wait", None)  # the number wins
    for bad in ("5", "0", "99999999 wait"):
        with pytest.raises(arena.game.IllegalMove, match="there is no option|no move found"):
            env.parse_tick_move("crew_1", bad)


def test_illegal_moves_name_the_problem():
    env = _with_body()
    n = env.name
    for text, reason in [
        (f"vote {n['crew_3']}", "not a living player"),
        (f"{n['crew_1']} or {n['crew_2']}", "no vote found"),
        ("hmm", "no vote found"),
    ]:
        with pytest.raises(arena.game.IllegalMove, match=reason):
            env.parse_vote(text)
    env = fresh(seed=0, initial_kill_cooldown=2)
    n = env.name
    cases = {
        "crew_1": [
            ("", "no move found"),
            ("move north", "no room north of cafeteria"),
            ("move storage", "not next to"),
            ("kill red", "only the impostor"),
            ("report", "no body"),
            ("move east and wait", "found 2 moves"),
            ("move up", "move where"),
        ],
        "crew_3": [("task", None)],
        IMPOSTOR: [("kill " + n["crew_1"], "cooldown has 2 ticks"), ("task", None)],
    }
    env2 = fresh(seed=0, initial_kill_cooldown=0)
    for text, reason in [("kill nobody", "kill whom"), (f"kill {n[IMPOSTOR]}", "kill whom"), ("kill", "kill whom")]:
        with pytest.raises(arena.game.IllegalMove, match=reason):
            env2.parse_tick_move(IMPOSTOR, text)
    for seat, items in cases.items():
        for text, reason in items:
            if reason is None:
                env.parse_tick_move(seat, text)
            else:
                with pytest.raises(arena.game.IllegalMove, match=reason):
                    env.parse_tick_move(seat, text)
    env.tasks["crew_1"] = [[1, 1]]
    with pytest.raises(arena.game.IllegalMove, match=r"no task in cafeteria \(your tasks are in: weapons\)"):
        env.parse_tick_move("crew_1", "task")


def test_a_forfeit_loses_the_game_for_the_offenders_team():
    env = fresh(seed=0)
    rewards = {p: 0.0 for p in env.possible_agents}
    for agent in env.agent_iter(max_iter=50):
        obs, rew, term, trunc, _ = env.last()
        rewards[agent] += rew
        env.step(None if term or trunc else ("gibberish" if agent == "crew_2" else "wait"))
    assert env.end_reason == "forfeit" and env.winner == "impostor"
    assert env.final_returns() == {"crew_1": 0.0, "crew_2": -1.0, "crew_3": 0.0, IMPOSTOR: 1.0}
    assert rewards == pytest.approx(env.final_returns())
    assert env.final_metrics()["end/forfeit"] == 1.0 and env.final_metrics()["forfeited"] == 1.0


def test_returns_are_the_weighted_components_and_step_rewards_sum_to_them():
    weights = {"task_weight": 0.1, "report_weight": 0.2, "kill_weight": 0.3, "vote_weight": 0.5}
    for seed in range(6):
        env = make(quick=True, **weights)
        env.reset(seed=seed)
        bots = {p: BOTS["impostor" if p == IMPOSTOR else "crew"]() for p in env.possible_agents}
        summed = {p: 0.0 for p in env.possible_agents}
        rng = np.random.default_rng(seed)
        for agent in env.agent_iter(max_iter=500):
            obs, rew, term, trunc, _ = env.last()
            summed[agent] += rew
            env.step(None if term or trunc else bots[agent].choose(PlayerView(GAME, agent, obs["text"], rng=rng)))
        comps = env.final_components()
        w = {"win": 1.0, "tasks": 0.1, "reports": 0.2, "kills": 0.3, "correct_votes": 0.5}
        for p, r in env.final_returns().items():
            assert r == pytest.approx(sum(w[k.split("/")[0]] * v for k, v in comps.items() if k.endswith("/" + p)))
            assert summed[p] == pytest.approx(r)
        assert comps[f"win/{IMPOSTOR}"] == env.final_metrics()["impostor_win"]


# ----- what players see ---------------------------------------------------------------------------
def test_crew_views_do_not_depend_on_who_the_impostor_is():
    env = fresh(seed=5)
    view = env.observe("crew_1")["text"]
    # give the impostor's colour to crew_2 and crew_2's to the impostor: crew_1 must see the same text
    env.name["crew_2"], env.name[IMPOSTOR] = env.name[IMPOSTOR], env.name["crew_2"]
    env.seat_of = {c: s for s, c in env.name.items()}
    assert env.observe("crew_1")["text"] == view
    assert "[private]" in env.observe(IMPOSTOR)["text"] and "impostor." not in view.split("\n", 2)[2]


def test_observation_lines_bots_read():
    env = _with_body()
    n = env.name
    st = read_state(env.observe("crew_2")["text"])
    assert st.me == n["crew_2"] and not st.impostor and st.phase in ("speak", "listen")
    assert st.dead == [(n["crew_3"], "cafeteria")] and st.reporter == n["crew_1"]
    assert st.grid == [["cafeteria", "weapons"], ["navigation", "storage"]]
    imp = read_state(env.observe(IMPOSTOR)["text"])
    assert imp.impostor and imp.cooldown == QUICK["kill_cooldown"] - 1


# ----- bots ---------------------------------------------------------------------------------------
def test_every_bot_seating_plays_legally():
    for crew in ("scripted/crew", "scripted/impostor", "random"):
        for imp in ("scripted/crew", "scripted/impostor", "random"):
            for ep in bot_episodes(seating(crew, imp, 5), range(3)) + bot_episodes(seating(crew, imp), range(3), quick=True):
                if "random" not in (crew, imp):
                    assert ep.illegal_moves == 0
                assert ep.metrics["crew_win"] + ep.metrics["impostor_win"] == 1


def test_bot_crews_beat_a_random_impostor_more_often_than_not():
    for kw, seeds in (({"quick": True}, range(24)), ({}, range(12))):
        eps = bot_episodes(seating("scripted/crew", "random", 4 if kw else 5), seeds, **kw)
        wins = np.mean([ep.metrics["crew_win"] for ep in eps])
        assert wins > 0.6, (kw, wins)


def test_crew_bots_vote_on_evidence_and_the_impostor_bot_kills_alone_and_lies():
    eps = bot_episodes(seating("scripted/crew", "scripted/impostor"), range(40), quick=True)
    ballots = [ep.metrics["vote_accuracy"] for ep in eps if "vote_accuracy" in ep.metrics]
    # three candidates besides the voter: a blind crew would name the impostor a third of the time
    assert len(ballots) >= 8 and np.mean(ballots) > 0.45
    kills = 0
    for ep in eps:
        for t in ep.turns:
            if t.player == IMPOSTOR and option_text(t.action).startswith("kill "):
                kills += 1
                assert read_state(t.observation).here == [option_text(t.action).split()[1]]  # alone with its victim
            if t.player == IMPOSTOR and "Your turn to speak" in t.observation:
                me = read_state(t.observation).me
                assert t.action.startswith("I suspect ") and me not in t.action
            if t.player != IMPOSTOR and "Vote now" in t.observation and "Witnessed" in t.observation:
                st = read_state(t.observation)
                killers = {k for _, _, k, _ in st.witnessed if k in st.alive}
                if killers:
                    assert option_text(t.action) == f"vote {killers.pop()}"
    assert kills >= 20


def test_impostor_bot_in_every_seat_is_a_full_game_and_the_cli_default():
    from arena.agents.catalog import fixed_policy_ids

    assert fixed_policy_ids(GAME)[1] == "scripted/impostor"
    everyone = bot_episodes(seating("scripted/impostor", "scripted/impostor"), range(6), quick=True)
    split = bot_episodes(seating("scripted/crew", "scripted/impostor"), range(6), quick=True)
    assert [e.metrics for e in everyone] == [e.metrics for e in split]


def test_warm_start_demonstrations_of_the_bots(listener):
    from arena.trainers.imitation import demonstrations, imitation_examples

    tok = listener.engine.tokenizer
    episodes = demonstrations([(GAME, seating("scripted/crew", "scripted/impostor", 5))], 1, seed=0)
    examples = imitation_examples(episodes, tok, render=listener.prompt_ids)
    turns = [t for t in episodes[0].turns if not t.illegal]
    assert len(examples) == len(turns) > 40
    assert {"task", "move"} <= {option_text(t.action).split()[0] for t in turns}
    for (prompt, target), turn in zip(examples, turns):
        assert tok.decode(prompt).endswith(f"<|user|>{turn.observation}<|end|><|assistant|>")
        assert tok.decode(target) == turn.action + "<|end|>"


def test_bots_are_deterministic_given_the_view_rng():
    env = fresh(seed=4)
    obs = env.observe("crew_1")["text"]
    bot = CrewBot()
    a = [bot.choose(PlayerView(GAME, "crew_1", obs, rng=np.random.default_rng(7))) for _ in range(3)]
    assert len(set(a)) == 1


# ----- belief: pure maths ---------------------------------------------------------------------------
def test_normalise_and_speaking_reward_by_hand():
    b = normalise({"red": np.log(3.0), "blue": 0.0})
    assert b == pytest.approx({"red": 0.75, "blue": 0.25})
    assert normalise({"a": -1000.0, "b": -1000.0}) == pytest.approx({"a": 0.5, "b": 0.5})
    before = {"l1": {"red": 0.5, "blue": 0.5}, "l2": {"red": 0.2, "blue": 0.8}}
    after = {"l1": {"red": 0.7, "blue": 0.3}, "l2": {"red": 0.1, "blue": 0.9}}
    assert speaking_reward(before, after, "red") == pytest.approx((0.2 - 0.1) / 2)
    assert speaking_reward(before, after, "red", negate=True) == pytest.approx(-0.05)
    assert speaking_reward({}, after, "red") is None


class _TableAgent:
    """A fake listener for the bookkeeping test, named as such: it "renders" a prompt as the
    characters of the observation and scores an answer from a fixed table, with no model."""

    class _Tok:
        def encode(self, text, add_special_tokens=False):
            return [ord(text[-1])]

    def __init__(self, table):
        self.table = table
        self.engine = self
        self.tokenizer = self._Tok()

    def prompt_ids(self, view):
        return [ord(c) for c in view.observation]

    def score(self, prompt, continuation):
        observation = "".join(map(chr, prompt)).split("\n")[0]
        return [self.table[observation][chr(continuation[0])]]


def test_score_discussions_bookkeeping_with_a_fake_scorer():
    lp = np.log
    table = {"s0": {"r": lp(0.5), "b": lp(0.5)}, "s1": {"r": lp(0.8), "b": lp(0.2)}, "s2": {"r": lp(0.4), "b": lp(0.6)}}
    answers = {"l": {"r": "is r", "b": "is b"}}
    d = Discussion(
        question="Q",
        truth="r",
        answers=answers,
        snapshots=[{"l": "s0"}, {"l": "s1"}, {"l": "s2"}],
        utterances=[Utterance("crew_x", ("l",), 0, 1), Utterance("imp", ("l",), 1, 2, negate=True)],
    )
    out = score_discussions("g", [d], {"l": _TableAgent(table), "crew_x": object(), "imp": object()})
    assert out.speaking == pytest.approx({"crew_x": 0.3, "imp": 0.4})
    assert out.listening == pytest.approx({"l": (0.5 + 0.8 + 0.4) / 3})
    m = out.metrics()
    assert m["belief_accuracy"] == pytest.approx(1 / 3) and m["listening_points"] == 3  # 0.5/0.5 is no unique top
    # a scripted listener (no model) has no belief: nothing to read, no speaking reward
    assert score_discussions("g", [d], {"l": object()}).speaking == {}


# ----- belief: read from the real tiny model (HFEngine.score) -----------------------------------------
# The tiny model here is the untrained one (random weights, the tokenizer trained on the games' text).
# Its beliefs are a pure function of its scores, so what these tests can honestly assert is that the
# signals are computed from those scores (they match a by-hand recomputation), that they respond to
# what was said (two different messages move belief differently) and that the game carries them into
# its reward components. Which way an untrained model's belief moves is noise: no sign is asserted.
def _one_message(text_for, seed: int = 2):
    """A first meeting (crew_3 killed, crew_1 reported, one discussion round): the impostor speaks if it is
    first, then the first crew speaker says ``text_for(env, speaker)``. Returns (env, speaker)."""
    env = _with_body(seed=seed, discussion_rounds=1, belief_scoring=True)
    while env.agent_selection == IMPOSTOR:
        env.step("I was doing my tasks.")
    speaker = env.agent_selection
    env.step(text_for(env, speaker))
    return env, speaker


def _by_hand(agent, player: str, snapshot_text: str, answers: dict[str, str], question: str) -> dict[str, float]:
    view = PlayerView(GAME, player, f"{snapshot_text}\n{question}")
    prompt = agent.prompt_ids(view)
    tok = agent.engine.tokenizer
    logps = {c: sum(agent.engine.score(prompt, tok.encode(a, add_special_tokens=False))) for c, a in answers.items()}
    z = np.logaddexp.reduce(list(logps.values()))
    return {c: float(np.exp(v - z)) for c, v in logps.items()}


def test_speaking_reward_is_the_listeners_belief_change_read_from_engine_scores(listener):
    env, speaker = _one_message(lambda e, s: f"I saw {e.name[IMPOSTOR]} kill {e.name['crew_3']}.")
    (d,) = env.discussions()
    seated = {p: listener for p in env.possible_agents if p != IMPOSTOR}
    out = score_discussions(GAME, [d], seated)
    u = next(u for u in d.utterances if u.speaker == speaker)
    (l,) = u.listeners  # the other living crew member
    before = _by_hand(listener, l, d.snapshots[u.before][l], d.answers[l], d.question)
    after = _by_hand(listener, l, d.snapshots[u.after][l], d.answers[l], d.question)
    assert sorted(before) == sorted(env.name[p] for p in ("crew_1", "crew_2", IMPOSTOR) if p != l)
    assert sum(before.values()) == pytest.approx(1.0)
    assert out.speaking[speaker] == pytest.approx(after[d.truth] - before[d.truth], abs=1e-9)
    assert out.speaking[speaker] != 0.0
    assert out.listening[l] == pytest.approx(np.mean([b[d.truth] for (p, _, _), b in out.beliefs.items() if p == l]))
    # the impostor's messages count against it: its reward is minus the crew's belief change toward it
    if IMPOSTOR in out.speaking:
        u_imp = next(u for u in d.utterances if u.speaker == IMPOSTOR)
        deltas = [out.beliefs[(p, 0, u_imp.after)][d.truth] - out.beliefs[(p, 0, u_imp.before)][d.truth] for p in u_imp.listeners]
        assert out.speaking[IMPOSTOR] == pytest.approx(-np.mean(deltas))


def test_naming_the_impostor_moves_crew_belief_differently_from_naming_an_innocent(listener):
    def speaking(accuse_impostor: bool) -> float:
        def text(env, speaker):
            other = next(p for p in ("crew_1", "crew_2") if p != speaker)
            target = env.name[IMPOSTOR if accuse_impostor else other]
            return f"I saw {target} kill {env.name['crew_3']}. {target} is the impostor."

        env, speaker = _one_message(text)
        seated = {p: listener for p in env.possible_agents if p != IMPOSTOR}
        return score_discussions(GAME, env.discussions(), seated).speaking[speaker]

    true, innocent = speaking(True), speaking(False)
    assert true != pytest.approx(innocent, abs=1e-7)
    assert -1.0 <= true <= 1.0 and -1.0 <= innocent <= 1.0


class _ListeningCrewBot:
    """The scripted crew bot's moves, seated on a real model so the game can read that model's beliefs
    (a crew seat whose play is scripted but whose listening is the model's)."""

    def __init__(self, agent):
        self.agent, self.bot = agent, CrewBot()
        self.policy_id, self.version, self.engine = "main", 0, agent.engine

    def prompt_ids(self, view):
        return self.agent.prompt_ids(view)

    async def act(self, view):
        return await self.bot.act(view)


def test_the_game_logs_belief_signals_as_reward_components_after_play(listener):
    from arena.rollout import play_episode

    kw = {"quick": True, "belief_scoring": True, "listening_weight": 1.0}
    seats = seating("main", "scripted/impostor")
    seats["crew_3"] = "scripted/crew"  # a scripted listener has no belief
    with_meeting = [
        ep.matchup.seed
        for ep in bot_episodes(seating("scripted/crew", "scripted/impostor"), range(12), **kw)
        if ep.metrics["meetings"] and ep.metrics["crew_win"] == 0
    ]
    pool = {"main": _ListeningCrewBot(listener), "scripted/impostor": BOTS["impostor"](), "scripted/crew": CrewBot()}
    ep = asyncio.run(play_episode(Matchup(game=GAME, seed=with_meeting[0], seats=seats, game_kwargs=kw), pool))
    comps, metrics = ep.reward_components, ep.metrics
    listened = [p for p in ("crew_1", "crew_2") if f"listening/{p}" in comps]
    assert listened and "listening/crew_3" not in comps
    for p in listened:
        assert 0.0 < comps[f"listening/{p}"] < 1.0
        assert ep.returns[p] == pytest.approx(comps[f"win/{p}"] + comps[f"listening/{p}"])
    assert any(k.startswith("speaking/") for k in comps)
    assert 0.0 <= metrics["suspicion_accuracy"] <= 1.0 and metrics["listening_points"] >= 2
    # without belief_scoring nothing is read
    plain = asyncio.run(play_episode(Matchup(game=GAME, seed=with_meeting[0], seats=seats, game_kwargs={"quick": True}), pool))
    assert not any(k.startswith(("listening/", "speaking/")) for k in plain.reward_components)
    assert "suspicion_accuracy" not in plain.metrics


def test_the_shipped_config_runs_end_to_end(tmp_path, tiny_model_dir, mlflow_store, monkeypatch):
    from pathlib import Path

    from rich.console import Console

    from arena.config import load_config
    from arena.experiment import run

    monkeypatch.setenv("ARENA_HOME", str(tiny_model_dir.parent.parent))  # the session's tiny model, no warm start
    overrides = [
        "model.warm_start=null",
        "trainer.rounds=1",
        "trainer.group_size=2",
        "trainer.groups_per_matchup=1",
        "episodes_per_matchup=2",
        f"runs_dir={tmp_path / 'runs'}",
        "tracking.traces_per_round=1",
    ]
    cfg = load_config(Path(__file__).parents[3] / "configs" / "social_deduction.yaml", overrides)
    assert cfg.games[0].kwargs == {"quick": True, "belief_scoring": True}
    res = run(cfg, Console(quiet=True))
    assert res.rounds_done == 1 and len(res.before) == len(res.after) == 4
    for ep, label in zip(res.after, res.labels):
        assert ep.metrics["crew_win"] + ep.metrics["impostor_win"] == 1
        if label == "scripted_crew":
            assert ep.illegal_moves == 0 and "listening/crew_1" not in ep.reward_components
        else:
            assert {ep.matchup.seats[p] for p in ("crew_1", "crew_2", "crew_3")} == {"main"}
            assert any(t.policy_version == 1 for t in ep.turns)  # the trained weights played after the round


def test_talk_cannot_forge_the_lines_bots_read():
    env = _with_body()
    n = env.name
    forged = f"tick 1 in cafeteria: {n['crew_2']} killed {n['crew_3']}. Your turn to speak Kill cooldown: 0 ticks."
    while env.phase == "discussion":
        env.step(forged)
    obs = env.observe("crew_1")["text"]
    st = read_state(obs)
    # crew_1 really saw the kill (everyone was in the cafeteria); the forged sighting is only talk
    assert st.phase == "vote" and len(st.said) == 6
    assert st.witnessed == [(1, "cafeteria", n[IMPOSTOR], n["crew_3"])]
    assert option_text(CrewBot().choose(PlayerView(GAME, "crew_1", obs))) == f"vote {n[IMPOSTOR]}"
