"""Tests for repeated_matrix-v0 and its scripted bots."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pettingzoo.test import api_test
from pydantic import ValidationError

import arena
from arena.agents.base import PlayerView
from arena.environments.repeated_matrix.bots import BOTS, parse_observation
from arena.environments.repeated_matrix.rules import RepeatedMatrixGame

MATRICES = ["prisoners_dilemma", "battle_of_the_sexes", "stag_hunt", "chicken"]

# Written out by hand from the module docstring (not imported), indexed by
# (player_0's option, player_1's option), 0 = option 1.
EXPECTED = {
    "prisoners_dilemma": {(0, 0): (8, 8), (0, 1): (0, 10), (1, 0): (10, 0), (1, 1): (5, 5)},
    "battle_of_the_sexes": {(0, 0): (10, 7), (0, 1): (0, 0), (1, 0): (0, 0), (1, 1): (7, 10)},
    "stag_hunt": {(0, 0): (4, 4), (0, 1): (0, 3), (1, 0): (3, 0), (1, 1): (3, 3)},
    "chicken": {(0, 0): (3, 3), (0, 1): (2, 4), (1, 0): (4, 2), (1, 1): (1, 1)},
}


def labels_of(env) -> tuple[str, str]:
    labels, _ = parse_observation(env.observe(env.agent_selection)["text"])
    return labels


def play(env, bots: dict, seed: int = 0):
    """Drive one AEC episode with scripted bots; return (actions per player, summed rewards per player)."""
    env.reset(seed=seed)
    rngs = {p: np.random.default_rng([seed, i]) for i, p in enumerate(env.possible_agents)}
    actions: dict[str, list[str]] = {p: [] for p in env.possible_agents}
    rewards = {p: 0.0 for p in env.possible_agents}
    for agent in env.agent_iter(max_iter=1000):
        obs, rew, term, trunc, info = env.last()
        rewards[agent] += rew
        assert "illegal_move" not in info, info
        if term or trunc:
            env.step(None)
            continue
        view = PlayerView(game="repeated_matrix-v0", player=agent, observation=obs["text"], rng=rngs[agent])
        action = bots[agent].choose(view)
        actions[agent].append(action)
        env.step(action)
    return actions, rewards


def options(actions: list[str], labels: tuple[str, str]) -> list[int]:
    return [labels.index(a) for a in actions]


# ----- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("a0,a1", list(itertools.product((0, 1), (0, 1))))
def test_payoff_table_on_one_round(matrix, a0, a1):
    env = arena.make("repeated_matrix-v0", matrix=matrix, rounds=3)
    env.reset(seed=1)
    labels = ("J", "F")
    env.step(labels[a0])
    assert env.returns() == {"player_0": 0.0, "player_1": 0.0}  # nothing paid before the round resolves
    env.step(labels[a1])
    want = EXPECTED[matrix][(a0, a1)]
    assert env.returns() == {"player_0": want[0], "player_1": want[1]}
    assert env.reward_components() == {"payoff/player_0": want[0], "payoff/player_1": want[1]}
    # each player's history line shows its own view of the round
    p0 = env.observe("player_0")["text"]
    p1 = env.observe("player_1")["text"]
    assert f"History (you/them, your points): {labels[a0]}/{labels[a1]} {want[0]}" in p0
    assert f"History (you/them, your points): {labels[a1]}/{labels[a0]} {want[1]}" in p1


def test_table_is_shown_from_each_players_side():
    env = arena.make("repeated_matrix-v0", matrix="battle_of_the_sexes")
    env.reset(seed=0)
    p0 = env.observe("player_0")["text"]
    p1 = env.observe("player_1")["text"]
    assert "J vs J 10/7, J vs F 0/0, F vs J 0/0, F vs F 7/10." in p0
    assert "J vs J 7/10, J vs F 0/0, F vs J 0/0, F vs F 10/7." in p1


def test_observation_is_short_and_complete():
    env = arena.make("repeated_matrix-v0", rounds=10)
    actions, _ = play(env, {"player_0": BOTS["alternate"](), "player_1": BOTS["tit_for_tat"]()})
    text = env.observe("player_0")["text"]
    assert len(text) < 600, len(text)
    assert "Game over after 10 rounds." in text
    assert text.count("/") >= 10 + 1  # ten history entries plus the "you/them" header


def test_returns_accumulate_and_step_rewards_sum_to_final_returns():
    for matrix in MATRICES:
        env = arena.make("repeated_matrix-v0", matrix=matrix, rounds=7, shuffle_labels=True)
        actions, summed = play(env, {"player_0": BOTS["random"](), "player_1": BOTS["random"]()}, seed=3)
        final = env.final_returns()
        assert summed == pytest.approx(final)
        # recompute the returns by hand from the moves actually played
        labels = ("?", "?")
        env2 = arena.make("repeated_matrix-v0", matrix=matrix, rounds=7, shuffle_labels=True)
        env2.reset(seed=3)
        labels = labels_of(env2)
        o0, o1 = options(actions["player_0"], labels), options(actions["player_1"], labels)
        want0 = sum(EXPECTED[matrix][(x, y)][0] for x, y in zip(o0, o1))
        want1 = sum(EXPECTED[matrix][(x, y)][1] for x, y in zip(o0, o1))
        assert final == {"player_0": want0, "player_1": want1}


def test_rewards_arrive_when_a_round_resolves():
    env = arena.make("repeated_matrix-v0", rounds=2)
    env.reset(seed=0)
    env.step("J")
    assert env.rewards == {"player_0": 0.0, "player_1": 0.0}
    env.step("F")
    assert env.rewards == {"player_0": 0.0, "player_1": 10.0}
    env.step("F")
    env.step("F")
    assert env.rewards == {"player_0": 5.0, "player_1": 5.0}
    assert all(env.terminations.values())


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_pettingzoo_api(matrix, shuffle):
    api_test(arena.make("repeated_matrix-v0", matrix=matrix, shuffle_labels=shuffle), num_cycles=1000)


def test_seeded_determinism_and_shuffled_labels():
    def run(seed):
        env = arena.make("repeated_matrix-v0", shuffle_labels=True, rounds=5)
        env.reset(seed=seed)
        seen = []
        rng = np.random.default_rng(seed)
        for _agent in env.agent_iter():
            obs, _, term, trunc, _ = env.last()
            seen.append(obs["text"])
            if term or trunc:
                env.step(None)
            else:
                labels, _ = parse_observation(obs["text"])
                env.step(labels[int(rng.integers(2))])
        return seen

    assert run(7) == run(7)
    label_sets = set()
    for seed in range(12):
        env = arena.make("repeated_matrix-v0", shuffle_labels=True)
        env.reset(seed=seed)
        labels = labels_of(env)
        assert labels[0] != labels[1]
        assert not set(labels) & {"A", "I"}
        label_sets.add(labels)
    assert len(label_sets) > 1


def test_config_is_validated():
    with pytest.raises(ValidationError):
        arena.make("repeated_matrix-v0", rounds=0)
    with pytest.raises(ValidationError):
        arena.make("repeated_matrix-v0", matrix="snowdrift")
    with pytest.raises(ValidationError):
        arena.make("repeated_matrix-v0", roundz=3)
    with pytest.raises(ValidationError):
        arena.make("repeated_matrix-v0", labels=("C", "c"))
    with pytest.raises(ValidationError):
        arena.make("repeated_matrix-v0", labels=("C", "D!"))
    env = arena.make("repeated_matrix-v0", labels=("Stag", "Hare"), matrix="stag_hunt")
    env.reset(seed=0)
    env.step("I hunt the stag")  # "stag" is a standalone word
    env.step("HARE")
    assert env.returns() == {"player_0": 0.0, "player_1": 3.0}


# ----- action parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,want",
    [
        ("J", 0),
        ("f", 1),
        ("I choose J.", 0),
        ("Option F", 1),
        ("J. Final answer: J", 0),
        ("(F)", 1),
        ("**J**", 0),
        ("J/F", None),
        ("F or J", None),
        ("", None),
        ("Jump", None),
        ("J1", None),
        ("_J", None),
        ("Jé", None),
        ("éF", None),
        ("\u212a", None),  # Kelvin sign: no Unicode case folding
        ("x" * 100_000 + " F", 1),
    ],
)
def test_parse_rule(text, want):
    env = arena.make("repeated_matrix-v0")
    env.reset(seed=0)
    if want is None:
        with pytest.raises(arena.IllegalMove):
            env.parse_move(text)
    else:
        assert env.parse_move(text) == want


def test_sample_moves_are_legal():
    env = arena.make("repeated_matrix-v0", shuffle_labels=True)
    env.reset(seed=5)
    moves = env.sample_moves("player_0")
    labels = labels_of(env)
    assert set(labels) <= set(moves)
    for m in moves:
        env.parse_move(m)


def test_illegal_move_reprompts_then_forfeits():
    env = arena.make("repeated_matrix-v0", max_illegal_retries=2, forfeit_penalty=-3.0)
    env.reset(seed=0)
    env.step("J")
    env.step("J")  # one round: 8/8
    for _attempt in range(2):
        env.step("I pick nothing")
        assert env.agent_selection == "player_0"
        reason = env.infos["player_0"]["illegal_move"]
        assert "no option found" in reason
        assert reason in env.observe("player_0")["text"]
        assert not any(env.terminations.values())
    env.step("J and F")
    assert env.infos["player_0"]["forfeit"] is True
    assert "both options found" in env.infos["player_0"]["illegal_move"]
    assert all(env.terminations.values())
    assert env.final_returns() == {"player_0": 8.0 - 3.0, "player_1": 8.0}
    assert env.final_metrics()["forfeited"] == 1.0


def test_a_legal_move_resets_the_illegal_streak():
    env = arena.make("repeated_matrix-v0", max_illegal_retries=1)
    env.reset(seed=0)
    env.step("??")
    env.step("J")
    assert "Your last move was illegal" not in env.observe("player_0")["text"]
    env.step("??")
    assert env.agent_selection == "player_1"
    env.step("F")
    assert not any(env.terminations.values())


_JUNK = ["J", "F", "j", "f", " ", "\n", "\x00", "\u212a", "é", "_", "1", "Jé", "ǰ", "I choose ", ".", "\ud7ff", "\U0001f600"]


@settings(max_examples=700, deadline=None)
@given(
    moves=st.lists(
        st.one_of(
            st.text(),
            st.lists(st.one_of(st.sampled_from(_JUNK), st.text(max_size=3)), max_size=8).map("".join),
        ),
        min_size=1,
        max_size=6,
    ),
    shuffle=st.booleans(),
)
def test_arbitrary_text_never_escapes_step(moves, shuffle):
    env = arena.make("repeated_matrix-v0", rounds=2, shuffle_labels=shuffle, max_illegal_retries=3)
    env.reset(seed=0)
    for text in moves:
        if all(env.terminations.values()):
            break
        player = env.agent_selection
        env.step(text)
        info = env.infos[player]
        if "illegal_move" in info:
            assert isinstance(info["illegal_move"], str) and info["illegal_move"]
        else:
            assert env.agent_selection != player or all(env.terminations.values())
        env.observe(env.agent_selection)


# ----- hidden moves -----------------------------------------------------------------------------


@pytest.mark.parametrize("matrix", MATRICES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_player_1_cannot_see_player_0s_pending_choice(matrix, shuffle):
    seen = []
    for choice in (0, 1):
        env = arena.make("repeated_matrix-v0", matrix=matrix, shuffle_labels=shuffle)
        env.reset(seed=11)
        labels = labels_of(env)
        env.step(labels[0])
        env.step(labels[1])  # one resolved round of shared history
        env.step(labels[choice])
        assert env.agent_selection == "player_1"
        obs, rew, *_ = env.last()
        seen.append((obs["text"], rew, dict(env.rewards), env.infos["player_1"]))
    assert seen[0] == seen[1]


# ----- bots -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [False, True])
def test_tit_for_tat_vs_always_defect(shuffle):
    env = arena.make("repeated_matrix-v0", shuffle_labels=shuffle, rounds=10)
    actions, _ = play(env, {"player_0": BOTS["tit_for_tat"](), "player_1": BOTS["always_defect"]()}, seed=4)
    env2 = arena.make("repeated_matrix-v0", shuffle_labels=shuffle)
    env2.reset(seed=4)
    labels = labels_of(env2)
    assert options(actions["player_0"], labels) == [0] + [1] * 9
    assert options(actions["player_1"], labels) == [1] * 10
    assert env.final_returns() == {"player_0": 0 + 5 * 9, "player_1": 10 + 5 * 9}
    m = env.final_metrics()
    assert m["retaliation/player_0"] == 1.0
    assert m["retaliation/player_1"] == 1.0
    assert m["coop_rate/player_0"] == pytest.approx(0.1)
    assert m["coop_rate/player_1"] == 0.0
    assert m["mutual_coop_rate"] == 0.0
    assert m["coordination_rate"] == pytest.approx(0.9)
    assert m["mean_payoff/player_0"] == pytest.approx(4.5)
    assert "forgiveness/player_0" not in m  # the defector never gave tit-for-tat a chance to forgive


@pytest.mark.parametrize("matrix", MATRICES)
def test_grim_trigger_never_cooperates_after_a_defection(matrix):
    defections_seen = 0
    for seed in range(6):
        env = arena.make("repeated_matrix-v0", matrix=matrix, shuffle_labels=True, rounds=12)
        actions, _ = play(env, {"player_0": BOTS["random"](), "player_1": BOTS["grim_trigger"]()}, seed=seed)
        env.reset(seed=seed)
        labels = labels_of(env)
        opp, grim = options(actions["player_0"], labels), options(actions["player_1"], labels)
        first = next((t for t, o in enumerate(opp) if o == 1), None)
        if first is None:
            assert grim == [0] * 12
            continue
        defections_seen += 1
        assert grim[: first + 1] == [0] * (first + 1)
        assert grim[first + 1 :] == [1] * (12 - first - 1)
    assert defections_seen > 0


def test_alternate_alternates_and_forgiveness_of_tit_for_tat():
    env = arena.make("repeated_matrix-v0", rounds=6, shuffle_labels=True)
    actions, _ = play(env, {"player_0": BOTS["alternate"](), "player_1": BOTS["tit_for_tat"]()}, seed=2)
    env2 = arena.make("repeated_matrix-v0", shuffle_labels=True)
    env2.reset(seed=2)
    labels = labels_of(env2)
    assert options(actions["player_0"], labels) == [0, 1, 0, 1, 0, 1]
    assert options(actions["player_1"], labels) == [0, 0, 1, 0, 1, 0]
    m = env.final_metrics()
    # tit-for-tat defects in rounds 3 and 5 after the alternator's defections in 2 and 4,
    # and cooperates again each time the alternator came back to cooperation
    assert m["retaliation/player_1"] == 1.0
    assert m["forgiveness/player_1"] == 1.0


def test_metrics_on_a_hand_played_game():
    env = arena.make("repeated_matrix-v0", rounds=5)
    env.reset(seed=0)
    for a0, a1 in zip("JJFFJ", "JFFJJ"):
        env.step(a0)
        env.step(a1)
    m = env.final_metrics()
    assert m == pytest.approx(
        {
            "rounds_played": 5.0,
            "mutual_coop_rate": 0.4,
            "coordination_rate": 0.6,
            "coop_rate/player_0": 0.6,
            "coop_rate/player_1": 0.6,
            "mean_payoff/player_0": 31 / 5,
            "mean_payoff/player_1": 31 / 5,
            "retaliation/player_0": 1.0,  # defected in rounds 3 and 4 after player_1's defections in 2 and 3
            "retaliation/player_1": 0.0,  # cooperated in rounds 4 and 5 despite defections in 3 and 4
            "forgiveness/player_0": 1.0,  # retaliated in 4, player_1 cooperated in 4, player_0 cooperated in 5
            "forfeited": 0.0,
        }
    )
    assert env.group_return() == 31.0


@pytest.mark.parametrize("matrix", MATRICES)
def test_every_bot_pair_plays_legally(matrix):
    for (n0, b0), (_n1, b1) in itertools.product(BOTS.items(), repeat=2):
        assert b0().policy_id == f"scripted/{n0}"
        env = arena.make("repeated_matrix-v0", matrix=matrix, shuffle_labels=True, rounds=4)
        actions, _ = play(env, {"player_0": b0(), "player_1": b1()}, seed=9)
        assert len(actions["player_0"]) == len(actions["player_1"]) == 4
        assert env.final_metrics()["rounds_played"] == 4.0


def test_random_bot_uses_the_view_rng_only():
    bot = BOTS["random"]()
    env = arena.make("repeated_matrix-v0")
    env.reset(seed=0)
    text = env.observe("player_0")["text"]

    def draws(seed):
        rng = np.random.default_rng(seed)
        return [bot.choose(PlayerView(game="g", player="player_0", observation=text, rng=rng)) for _ in range(30)]

    assert draws(1) == draws(1)
    assert set(draws(1)) == {"J", "F"}


def test_registered_class_and_description():
    env = arena.make("repeated_matrix-v0")
    assert isinstance(env, RepeatedMatrixGame)
    assert env.possible_agents == ["player_0", "player_1"]
    assert re.fullmatch(r"[^\n]+", RepeatedMatrixGame.description)
