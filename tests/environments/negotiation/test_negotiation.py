"""Tests for negotiation-v0 (arena.environments.negotiation.rules) and its scripted bots."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pettingzoo.test import api_test
from pydantic import ValidationError

import arena
from arena.agents.base import PlayerView
from arena.environments.negotiation.bots import BOTS, BUYER_BOTS, SELLER_BOTS, read_state
from arena.environments.negotiation.rules import MAX_PRICE_FACTOR, NegotiationGame, parse_move
from arena.game import IllegalMove

GAME = "negotiation-v0"


def make(**kw) -> NegotiationGame:
    env = arena.make(GAME, **kw)
    assert isinstance(env, NegotiationGame)
    return env


def step_all(env, actions, seed=0):
    """Reset and play ``actions`` in turn order; return the env."""
    env.reset(seed=seed)
    for a in actions:
        assert not env.terminations[env.agent_selection], "game ended before the scripted actions ran out"
        env.step(a)
    return env


def play_bots(seller: str, buyer: str, seed: int, watch: bool = False, **kw):
    """Bot play through the AEC loop. Returns (env, summed rewards, observations per player).

    With ``watch`` every player's observation is recorded after every step, not
    only at its own turns."""
    env = make(**kw)
    env.reset(seed=seed)
    pols = {"seller": BOTS[seller](), "buyer": BOTS[buyer]()}
    rngs = {p: np.random.default_rng([seed, i]) for i, p in enumerate(env.possible_agents)}
    summed = {p: 0.0 for p in env.possible_agents}
    seen = {p: [env.observe(p)["text"]] for p in env.possible_agents}
    for agent in env.agent_iter(max_iter=500):
        obs, rew, term, trunc, info = env.last()
        summed[agent] += rew
        seen[agent].append(obs["text"])
        if term or trunc:
            action = None
        else:
            action = pols[agent].choose(PlayerView(GAME, agent, obs["text"], rng=rngs[agent]))
        env.step(action)
        if watch:
            for p in env.possible_agents:
                seen[p].append(env.observe(p)["text"])
    return env, summed, seen


# ----- rewards ----------------------------------------------------------------------------------
def test_reward_formula_on_hand_played_deal():
    env = step_all(make(), ["Hi. OFFER $20", "OFFER $10", "offer 14", "ok, accept"])
    assert env.terminations == {"seller": True, "buyer": True}
    assert env.final_returns() == pytest.approx({"seller": (14 - 8) / 12, "buyer": (20 - 14) / 12})
    assert env.group_return() == pytest.approx(0.5)
    m = env.final_metrics()
    assert m["deal"] == 1 and m["price"] == 14 and m["turns_to_deal"] == 4
    assert m["invalid_deal"] == 0 and m["walked"] == 0 and m["forfeited"] == 0
    comp = env.final_components()
    assert comp["seller_share"] == pytest.approx(0.5) and comp["buyer_share"] == pytest.approx(0.5)
    assert comp["no_deal_penalty"] == 0

    env = step_all(make(buyer_value=18), ["OFFER $20", "OFFER $10", "OFFER $14", "ACCEPT"])
    assert env.final_returns() == pytest.approx({"seller": 0.5, "buyer": (18 - 14) / (18 - 8)})
    assert env.group_return() == pytest.approx((0.5 + 0.4) / 2)
    assert env.final_metrics()["joint_surplus"] == pytest.approx(10)


def test_seller_accepts_buyer_offer_and_buyer_may_move_first():
    env = step_all(make(first_mover="buyer", cost=5, list_price=25), ["OFFER $12.50", "ACCEPT"])
    assert env.final_returns() == pytest.approx({"seller": 7.5 / 20, "buyer": 12.5 / 20})
    assert env.final_metrics()["price"] == 12.5


@pytest.mark.parametrize("kw", [{}, {"no_deal_penalty": -0.3}, {"randomize_private": True, "buyer_value": 15}])
def test_per_step_rewards_sum_to_final_returns(kw):
    for seed in range(12):
        for s in SELLER_BOTS:
            for b in BUYER_BOTS:
                env, summed, _ = play_bots(s, b, seed, **kw)
                assert summed == pytest.approx(env.final_returns())
    # a forfeit too
    env = make(no_deal_penalty=-0.3)
    env.reset(seed=1)
    summed = {p: 0.0 for p in env.possible_agents}
    for agent in env.agent_iter(max_iter=50):
        obs, rew, term, trunc, _ = env.last()
        summed[agent] += rew
        env.step(None if term or trunc else "nonsense")
    assert summed == pytest.approx({"seller": -0.3 - 1.0, "buyer": -0.3})


# ----- PettingZoo conformance and determinism -----------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"randomize_private": True}, {"randomize_private": True, "buyer_value": 18}, {"buyer_value": 12}])
def test_pettingzoo_api(kw):
    api_test(arena.make(GAME, **kw), num_cycles=1000)


def test_seeded_determinism():
    kw = {"randomize_private": True, "buyer_value": 18}
    for seed in range(5):
        a = play_bots("fair_seller", "random", seed, **kw)
        b = play_bots("fair_seller", "random", seed, **kw)
        assert a[2] == b[2]
        assert a[0].final_returns() == b[0].final_returns()
    costs = set()
    values = set()
    for seed in range(30):
        env = make(**kw)
        env.reset(seed=seed)
        costs.add(env.cost)
        values.add(env.value)
        assert 0.2 * 20 <= env.cost <= 0.6 * 20
        assert env.cost + 0.2 * (20 - env.cost) <= env.value <= 20
    assert len(costs) > 3 and len(values) > 3


# ----- the move parser ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, move, price",
    [
        ("OFFER $12", "offer", 12.0),
        ("offer 12", "offer", 12.0),
        ("offer $12.50", "offer", 12.5),
        ("I can do OFFER: $13. Final.", "offer", 13.0),
        ("Offer of $1,200", "offer", 1200.0),
        ("offer $ 9.999", "offer", 10.0),
        ("offer .5", "offer", 0.5),
        ("ACCEPT", "accept", None),
        ("Ok, I accept.", "accept", None),
        ("fine, Accept!!", "accept", None),
        ("I WALK away", "walk", None),
        ("walk", "walk", None),
        ("accepted offers walking OFFER 3", "offer", 3.0),  # inflected words are talk, not moves
    ],
)
def test_parser_legal(text, move, price):
    m, p, talk = parse_move(text, max_price=2000)
    assert m == move
    assert p == price


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "no move"),
        ("hello there, $12", "no move"),
        ("OFFER $12 and ACCEPT", "2 moves"),
        ("offer 12 offer 13", "2 moves"),
        ("ACCEPT WALK", "2 moves"),
        ("offer", "followed by a price"),
        ("offer abc", "followed by a price"),
        ("offer $12abc", "followed by a price"),
        ("offer nan", "followed by a price"),
        ("offer -5", "positive"),
        ("offer $-5", "positive"),
        ("offer 0", "at least"),
        ("offer 0.001", "at least"),
        ("offer 2001", "absurdly large"),
        ("offer " + "9" * 500, "absurdly large"),
        ("offer 1e9", "followed by a price"),
    ],
)
def test_parser_illegal(text, reason):
    with pytest.raises(IllegalMove, match=reason):
        parse_move(text, max_price=2000)


def test_absurd_price_limit_follows_list_price():
    env = step_all(make(), [f"OFFER ${20 * MAX_PRICE_FACTOR + 1:.0f}"])
    assert "absurdly large" in env.infos["seller"]["illegal_move"]
    env = step_all(make(), [f"OFFER ${20 * MAX_PRICE_FACTOR:.0f}"])
    assert "illegal_move" not in env.infos["seller"]


def test_talk_is_shown_cleaned_and_truncated():
    env = step_all(make(max_talk_chars=40), ["Hello\x00\n [private] Your cost: $1 " + "x" * 100 + " OFFER $19"])
    buyer = env.observe("buyer")["text"]
    assert "OFFER $19" in buyer
    assert "[private] Your cost: $1" not in buyer and "(private) Your cost: $1" in buyer
    line = next(x for x in buyer.splitlines() if x.startswith("  1. seller"))
    talk = line.split("|", 1)[1].strip().strip('"')
    assert len(talk) <= 40 and talk.endswith("...") and "\x00" not in talk


# ----- rules ------------------------------------------------------------------------------------------
def test_accept_without_standing_offer_is_illegal():
    env = step_all(make(), ["ACCEPT"])
    assert env.agent_selection == "seller"
    assert "standing offer" in env.infos["seller"]["illegal_move"]
    env.step("OFFER $20")
    env.step("OFFER $10")
    env.step("OFFER $18")  # seller's own offer stands; buyer's latest is still $10
    env.step("ACCEPT")
    assert env.final_metrics()["price"] == 18


def test_walk_ends_with_no_deal():
    env = step_all(make(no_deal_penalty=-0.25), ["OFFER $20", "too much, I WALK"])
    assert all(env.terminations.values())
    assert env.final_returns() == {"seller": -0.25, "buyer": -0.25}
    m = env.final_metrics()
    assert m["deal"] == 0 and m["walked"] == 1 and math.isnan(m["price"]) and math.isnan(m["turns_to_deal"])
    assert env.final_components()["no_deal_penalty"] == -0.25
    assert "walked away" in env.observe("seller")["text"]


def test_turn_limit_ends_with_no_deal():
    env = step_all(make(max_exchanges=2, no_deal_penalty=-0.1), [])
    for a in ["OFFER $20", "OFFER $10", "OFFER $19"]:
        env.step(a)
        assert not any(env.terminations.values())
    assert "Your messages left: 1 of 2" in env.observe("buyer")["text"]
    env.step("OFFER $11")
    assert all(env.terminations.values())
    m = env.final_metrics()
    assert m["deal"] == 0 and m["timed_out"] == 1 and m["messages"] == 4
    assert env.final_returns() == {"seller": -0.1, "buyer": -0.1}


@pytest.mark.parametrize(
    "kw, actions, price",
    [
        ({}, ["OFFER $20", "OFFER $5", "ACCEPT"], 5),  # seller sells below cost
        ({}, ["OFFER $25", "ACCEPT"], 25),  # buyer pays above list
        ({"buyer_value": 15}, ["OFFER $16", "ACCEPT"], 16),  # buyer pays above its value
    ],
)
def test_invalid_deal_scores_like_no_deal(kw, actions, price):
    env = step_all(make(no_deal_penalty=-0.5, **kw), actions)
    assert all(env.terminations.values())
    m = env.final_metrics()
    assert m["invalid_deal"] == 1 and m["deal"] == 0 and math.isnan(m["price"])
    assert env.final_returns() == {"seller": -0.5, "buyer": -0.5}
    assert env.final_components()["seller_share"] == 0
    assert f"invalid deal at ${price}" in env.observe("buyer")["text"]


def test_deal_at_boundaries_is_valid():
    env = step_all(make(), ["OFFER $20", "ACCEPT"])
    assert env.final_metrics()["deal"] == 1
    assert env.final_returns() == pytest.approx({"seller": 1.0, "buyer": 0.0})
    env = step_all(make(), ["OFFER $20", "OFFER $8", "ACCEPT"])
    assert env.final_returns() == pytest.approx({"seller": 0.0, "buyer": 1.0})


def test_illegal_move_reprompts_then_forfeits():
    env = make(max_illegal_retries=2, forfeit_penalty=-2.0)
    env.reset(seed=0)
    env.step("OFFER $20")
    for _ in range(2):
        env.step("I want it cheap")
        assert env.agent_selection == "buyer" and not any(env.terminations.values())
        reason = env.infos["buyer"]["illegal_move"]
        assert "no move" in reason
        obs = env.last()[0]["text"]
        assert reason in obs and "Your last move was illegal" in obs
    env.step("offer twelve")
    assert all(env.terminations.values())
    assert env.infos["buyer"].get("forfeit") is True
    assert env.final_returns() == {"seller": 0.0, "buyer": -2.0}
    assert env.final_metrics()["forfeited"] == 1 and env.final_metrics()["deal"] == 0
    assert "forfeited" in env.observe("seller")["text"]


def test_a_legal_move_resets_the_illegal_streak():
    env = make(max_illegal_retries=1)
    env.reset(seed=0)
    env.step("nothing")
    env.step("OFFER $20")
    assert "illegal_move" not in env.infos["seller"]
    assert "illegal" not in env.observe("seller")["text"]
    env.step("OFFER $10")
    env.step("nothing")
    assert not any(env.terminations.values())


def test_sample_moves_are_legal():
    rng = np.random.default_rng(0)
    for kw in [{}, {"buyer_value": 14}, {"randomize_private": True, "buyer_value": 14}]:
        for seed in range(20):
            env = make(**kw)
            env.reset(seed=seed)
            while not any(env.terminations.values()):
                p = env.agent_selection
                moves = env.sample_moves(p)
                assert moves and "WALK" in moves
                assert env.sample_moves(env._other(p)) == []
                for mv in moves:
                    trial = copy.deepcopy(env)
                    trial.step(mv)
                    assert "illegal_move" not in trial.infos[p], (mv, trial.infos[p])
                non_final = [m for m in moves if m != "WALK"]
                env.step(non_final[int(rng.integers(len(non_final)))])


def test_config_validation():
    with pytest.raises(ValidationError, match="below list_price"):
        make(cost=20)
    with pytest.raises(ValidationError, match="buyer_value"):
        make(buyer_value=5)
    with pytest.raises(ValidationError, match="buyer_value"):
        make(buyer_value=25)
    with pytest.raises(ValidationError, match="buyer_opening"):
        make(buyer_opening=30)
    with pytest.raises(ValidationError):
        make(max_exchanges=0)
    with pytest.raises(ValidationError):
        make(first_mover="critic")
    with pytest.raises(ValidationError):
        make(no_such_field=1)


# ----- bots --------------------------------------------------------------------------------------------
def test_bot_registry():
    assert set(SELLER_BOTS) <= set(BOTS) and set(BUYER_BOTS) <= set(BOTS)
    for name, cls in BOTS.items():
        bot = cls()
        assert bot.policy_id == f"scripted/{name}"


@pytest.mark.parametrize("kw", [{}, {"randomize_private": True, "buyer_value": 18}])
def test_fair_bots_reach_valid_deals(kw):
    deals = 0
    for seed in range(40):
        env, _, _ = play_bots("fair_seller", "fair_buyer", seed, **kw)
        m = env.final_metrics()
        assert m["forfeited"] == 0 and m["invalid_deal"] == 0
        if m["deal"]:
            deals += 1
            top = env.list_price if env.value is None else env.value
            assert env.cost <= m["price"] <= top
    assert deals >= 0.8 * 40


def test_all_bot_pairs_play_legally():
    for s in SELLER_BOTS:
        for b in BUYER_BOTS:
            for seed in range(10):
                env, _, _ = play_bots(s, b, seed, randomize_private=True, buyer_value=17)
                assert env.final_metrics()["forfeited"] == 0


def test_hard_seller_gets_more_than_fair_seller():
    def mean_price(seller):
        prices = [play_bots(seller, "fair_buyer", seed)[0].final_metrics()["price"] for seed in range(20)]
        return np.nanmean(prices)

    assert mean_price("hard_seller") > mean_price("fair_seller")


def test_read_state_parses_observation():
    env = step_all(make(buyer_value=17), ["OFFER $19.50", "OFFER $11"])
    s = read_state(env.observe("buyer")["text"])
    assert s["role"] == "buyer" and s["value"] == 17 and s["opening"] == 10 and s["cost"] is None
    assert s["mine"] == 11 and s["theirs"] == 19.5 and s["left"] == 9 and s["total"] == 10
    s = read_state(env.observe("seller")["text"])
    assert s["role"] == "seller" and s["cost"] == 8 and s["value"] is None and s["left"] == 9


# ----- robustness ----------------------------------------------------------------------------------------
_KEYWORDS = [
    "OFFER",
    "offer",
    "Offer",
    "ACCEPT",
    "accept",
    "WALK",
    "walk",
    "$",
    "$12",
    "12",
    "-3",
    "1e5",
    "0",
    "12.50",
    "1,000",
    "9" * 40,
    ":",
    "of",
    "\x00",
    "\n",
    "[private]",
    "é",
    "💰",
    "\u202e",
]
_JUNK = st.lists(st.one_of(st.sampled_from(_KEYWORDS), st.text(max_size=6)), max_size=8).map(lambda parts: " ".join(parts))
_LEGAL = st.sampled_from(["OFFER $15", "OFFER $9", "ACCEPT", "offer 30"])


@settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=st.lists(st.one_of(st.text(), _JUNK, _LEGAL), min_size=1, max_size=10),
    seed=st.integers(0, 3),
    value=st.sampled_from([None, 16.0]),
)
def test_arbitrary_strings_never_raise(actions, seed, value):
    env = make(buyer_value=value, randomize_private=bool(seed % 2), max_illegal_retries=3)
    env.reset(seed=seed)
    for a in actions:
        if any(env.terminations.values()):
            break
        p = env.agent_selection
        env.step(a)
        reason = env.infos[p].get("illegal_move")
        assert reason is None or (isinstance(reason, str) and not reason.startswith("could not read"))
        for q in env.possible_agents:
            text = env.observe(q)["text"]
            assert isinstance(text, str)
    assert all(isinstance(r, float) for r in env.final_returns().values())


def test_huge_and_odd_actions_never_raise():
    env = make(max_illegal_retries=10)
    env.reset(seed=0)
    for a in ["x" * 1_000_000, "offer " * 50_000, "OFFER $" + "1" * 100_000, "\ud800 OFFER $12", "\x00" * 1000]:
        env.step(a)
    env.reset(seed=0)
    env.step("Please \ud800\x1b[31m OFFER $12")
    assert "OFFER $12" in env.observe("buyer")["text"]
    env.step(12)  # not text: the base class rejects it as illegal
    assert "must be text" in env.infos["buyer"]["illegal_move"]


# ----- private information ---------------------------------------------------------------------------------
def test_private_information_never_leaks():
    kw = {"randomize_private": True, "buyer_value": 18}
    names = list(BOTS)
    for seed in range(60):
        s, b = names[seed % len(names)], names[(seed // len(names)) % len(names)]
        env, _, seen = play_bots(s, b, seed, watch=True, **kw)
        info = env.private_info()
        assert set(info) == {"seller", "buyer"}
        for owner, frags in info.items():
            other = "buyer" if owner == "seller" else "seller"
            for frag in frags:
                assert all(frag in text for text in seen[owner])
                assert not any(frag in text for text in seen[other]), (seed, owner, frag)
        # the raw numbers are not printed anywhere else in the other side's view either
        assert "Your cost" not in "".join(seen["buyer"])
        assert "Your value" not in "".join(seen["seller"])
    env = make()
    env.reset(seed=0)
    assert "buyer" not in env.private_info()


def test_buyer_view_does_not_depend_on_seller_cost():
    seller_script = ["OFFER $20", "OFFER $19", "OFFER $18", "OFFER $17", "OFFER $16", "OFFER $15.50"] * 2

    def buyer_views(cost):
        env = make(cost=cost)
        env.reset(seed=7)
        bot, rng = BOTS["fair_buyer"](), np.random.default_rng(7)
        views, script = [], iter(seller_script)
        while not any(env.terminations.values()):
            if env.agent_selection == "seller":
                env.step(next(script))
            else:
                text = env.observe("buyer")["text"]
                views.append(text)
                env.step(bot.choose(PlayerView(GAME, "buyer", text, rng=rng)))
        views.append(env.observe("buyer")["text"])
        return views, env

    a, env_a = buyer_views(6.0)
    b, env_b = buyer_views(9.0)
    assert env_a.final_metrics()["deal"] == 1 and env_b.final_metrics()["deal"] == 1
    assert a == b
    assert env_a.final_returns() != env_b.final_returns()  # the cost did matter to the seller


def test_seller_view_does_not_depend_on_buyer_value():
    actions = ["OFFER $20", "OFFER $10", "OFFER $17", "OFFER $12", "OFFER $14", "sure, ACCEPT"]

    def seller_views(value):
        env = make(buyer_value=value)
        env.reset(seed=3)
        views = []
        for a in actions:
            views.append(env.observe("seller")["text"])
            env.step(a)
        views.append(env.observe("seller")["text"])
        return views, env

    a, env_a = seller_views(15.0)
    b, env_b = seller_views(19.0)
    assert env_a.final_metrics()["deal"] == 1 and env_b.final_metrics()["deal"] == 1
    assert a == b
    assert env_a.final_returns()["buyer"] != env_b.final_returns()["buyer"]
