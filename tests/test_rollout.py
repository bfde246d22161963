"""The runner plays Arena games and any other PettingZoo AEC text game, concurrently and reproducibly."""

import asyncio

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import AECEnv

from arena.agents.catalog import make_fixed_policy
from arena.agents.random_agent import RandomPolicy
from arena.records import Matchup
from arena.rollout import play_episode, play_many


class EchoCountEnv(AECEnv):
    """A plain PettingZoo AEC game, written without Arena's base class:
    two players take turns saying a number; the game ends after 6 turns and
    each player's return is the sum of the numbers it said."""

    metadata = {"name": "echo_count_v0"}

    def __init__(self):
        super().__init__()
        self.possible_agents = ["a", "b"]
        self._obs = {p: spaces.Text(64) for p in self.possible_agents}
        self._act = {p: spaces.Text(8, charset="0123456789") for p in self.possible_agents}

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act[agent]

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.rewards = {p: 0 for p in self.agents}
        self._cumulative_rewards = {p: 0 for p in self.agents}
        self.terminations = {p: False for p in self.agents}
        self.truncations = {p: False for p in self.agents}
        self.infos = {p: {} for p in self.agents}
        self.t = 0
        self.agent_selection = "a"

    def observe(self, agent):
        return f"turn {self.t} say a number"

    def step(self, action):
        if self.terminations[self.agent_selection]:
            self._was_dead_step(action)
            return
        agent = self.agent_selection
        self._cumulative_rewards[agent] = 0
        self.rewards = {p: 0 for p in self.agents}
        self.rewards[agent] = int(action) if action.isdigit() else 0
        self.t += 1
        if self.t >= 6:
            self.terminations = {p: True for p in self.agents}
        self.agent_selection = "b" if agent == "a" else "a"
        self._accumulate_rewards()


def test_plays_a_plain_pettingzoo_env():
    m = Matchup(game="echo_count-v0", seed=3, seats={"a": "p1", "b": "p2"})
    pols = {"p1": RandomPolicy(["1", "2"], policy_id="p1"), "p2": RandomPolicy(["5"], policy_id="p2")}
    ep = asyncio.run(play_episode(m, pols, env_factory=lambda _: EchoCountEnv()))
    assert [t.player for t in ep.turns] == ["a", "b"] * 3
    assert ep.returns["b"] == 15
    assert ep.returns["a"] == sum(int(t.action) for t in ep.turns if t.player == "a")
    assert ep.turns[0].observation == "turn 0 say a number"


def test_same_seed_same_episode_and_different_seeds_differ():
    seats = {"player_0": "random", "player_1": "scripted/tit_for_tat"}
    pool = {pid: make_fixed_policy(pid, "repeated_matrix-v0") for pid in seats.values()}
    run = lambda seed: asyncio.run(play_episode(Matchup(game="repeated_matrix-v0", seed=seed, seats=seats), pool))
    a, b, c = run(1), run(1), run(2)
    assert [t.action for t in a.turns] == [t.action for t in b.turns]
    assert a.returns == b.returns
    assert [t.action for t in a.turns] != [t.action for t in c.turns]


def test_play_many_keeps_order_and_matches_sequential_play():
    seats = {"seller": "scripted/fair_seller", "buyer": "random"}
    pool = {pid: make_fixed_policy(pid, "negotiation-v0") for pid in seats.values()}
    matchups = [Matchup(game="negotiation-v0", seed=s, seats=seats) for s in range(12)]
    seen = []
    many = asyncio.run(play_many(matchups, pool, concurrency=5, on_episode=lambda ep: seen.append(ep.episode_id)))
    one_by_one = [asyncio.run(play_episode(m, pool)) for m in matchups]
    assert [e.matchup.seed for e in many] == list(range(12))
    assert [e.returns for e in many] == [e.returns for e in one_by_one]
    assert [[t.action for t in e.turns] for e in many] == [[t.action for t in e.turns] for e in one_by_one]
    assert sorted(seen) == sorted(e.episode_id for e in many) and len(set(seen)) == 12


def test_missing_policy_is_named():
    m = Matchup(game="negotiation-v0", seed=0, seats={"seller": "main", "buyer": "random"})
    with pytest.raises(KeyError, match="main"):
        asyncio.run(play_episode(m, {"random": RandomPolicy()}))


def test_per_step_rewards_add_up_to_returns():
    seats = {"player_0": "scripted/alternate", "player_1": "scripted/tit_for_tat"}
    pool = {pid: make_fixed_policy(pid, "repeated_matrix-v0") for pid in seats.values()}
    ep = asyncio.run(play_episode(Matchup(game="repeated_matrix-v0", seed=0, seats=seats), pool))
    # rewards arrive when a round resolves, i.e. on player_1's turns; both players' totals add up
    total = sum(t.reward for t in ep.turns if t.player == "player_1")
    assert np.isclose(total, ep.returns["player_1"])
