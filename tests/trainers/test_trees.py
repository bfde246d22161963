"""Tree branching and DPO from trees on games other than debate (arena.trainers.trees).

A plain PettingZoo AEC game defined here (no Arena base class, no hooks) scores branches by
return, rewards paid before the branch point included; the same game with declared hooks shows
that a game's own score and labels are used; and the warm-started tiny model grows trees on
``repeated_matrix-v0``, whose pairs a DPO learner step learns from.
"""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from gymnasium import spaces
from pettingzoo import AECEnv

from arena import registry
from arena.agents.base import PlayerView, ScriptedPolicy
from arena.agents.catalog import make_fixed_policy
from arena.records import Matchup
from arena.registry import TreeHooks, register
from arena.trainers.trees import TreeConfig, grow_trees, policy_pairs, replay, tree_stats


# ----- a plain AEC game of the user's own -------------------------------------------------------
class Tally(AECEnv):
    """``a`` and ``b`` take turns, ``moves`` each; saying ``up`` pays the mover 1 at once, anything else 0."""

    metadata = {"name": "tally_v0", "render_modes": [], "is_parallelizable": False}

    def __init__(self, moves: int = 2):
        super().__init__()
        self.moves = moves
        self.possible_agents = ["a", "b"]
        self.observation_spaces = {p: spaces.Text(512) for p in self.possible_agents}
        self.action_spaces = {p: spaces.Text(64) for p in self.possible_agents}

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.rewards = {p: 0.0 for p in self.agents}
        self._cumulative_rewards = {p: 0.0 for p in self.agents}
        self.terminations = {p: False for p in self.agents}
        self.truncations = {p: False for p in self.agents}
        self.infos = {p: {} for p in self.agents}
        self.said: list[str] = []
        self.agent_selection = "a"

    def observe(self, agent):
        return f"You are {agent}. Said so far: {', '.join(self.said) or 'nothing'}. Say up or down."

    def step(self, action):
        p = self.agent_selection
        if self.terminations[p] or self.truncations[p]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[p] = 0.0
        self.rewards = {q: 0.0 for q in self.agents}
        self.rewards[p] = 1.0 if str(action).strip() == "up" else 0.0
        self.said.append(f"{p}:{action}")
        if len(self.said) >= 2 * self.moves:
            self.terminations = {q: True for q in self.agents}
        self.agent_selection = "b" if p == "a" else "a"
        self._accumulate_rewards()


class Coin(ScriptedPolicy):
    policy_id = "coin"

    def choose(self, view: PlayerView) -> str:
        return "up" if view.rng.random() < 0.5 else "down"


class Steady(ScriptedPolicy):
    policy_id = "steady"

    def choose(self, view: PlayerView) -> str:
        return "up"


@pytest.fixture
def tally_games(monkeypatch):
    """``tally-v0`` (declares nothing) and ``tally_hooked-v0`` (its own score and labels), registered
    for one test only; the label hook's calls are recorded."""
    registry.registered_games()  # the shipped games first, so that restoring the registry keeps them
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    calls = []

    def label(env, player, action):
        calls.append((list(env.unwrapped.said), player, action))
        return "quiet" if action == "down" else "loud"

    register("tally-v0", Tally)
    # a game that prefers saying less: a rollout scores minus the player's return
    register("tally_hooked-v0", Tally, tree=TreeHooks(score=lambda ep, p: -ep.returns[p], label=label, labels=("quiet", "loud")))
    return calls


POOL = {"coin": Coin(), "steady": Steady()}


def _tally(game: str, n: int) -> list[Matchup]:
    return [Matchup(game=game, seed=s, seats={"a": "coin", "b": "steady"}) for s in range(n)]


def test_a_plain_aec_game_branches_score_by_return_with_rewards_paid_before_the_branch(tally_games):
    trees = asyncio.run(grow_trees(_tally("tally-v0", 6), POOL, TreeConfig(branches=4, rollouts=2, turn=1), branch_policies={"coin"}))
    assert len(trees) == 6 and all(t.player == "a" for t in trees)  # b's seat is not a branched policy
    for tree in trees:
        assert tree.branch_index == 2 and tree.trunk.turns[2].player == "a"
        paid_before = 1.0 if tree.trunk.turns[0].action == "up" else 0.0
        for b in tree.branches:
            assert b.illegal_reason is None and len(b.episodes) == 2
            want = paid_before + (1.0 if b.action.text == "up" else 0.0)
            for ep in b.episodes:
                # the whole game's return, the replayed prefix's reward included
                assert [t.action for t in ep.turns[:3]] == [*(t.action for t in tree.trunk.turns[:2]), b.action.text]
                assert ep.returns == {"a": want, "b": 2.0} and ep.group_return == pytest.approx((want + 2.0) / 2)
            assert b.outcomes == [want, want]
        ups = {b.action.text for b in tree.branches}
        assert len(tree.pairs) == sum(1 for i in range(4) for j in range(i + 1, 4) if tree.branches[i].action.text != tree.branches[j].action.text)
        for p in tree.pairs:
            assert p.chosen_text == "up" and p.rejected_text == "down" and p.chosen_score == p.rejected_score + 1
            assert p.label == "other" and p.player == "a" and p.policy_id == "coin"
        assert bool(tree.pairs) == (ups == {"up", "down"})
    stats = tree_stats(trees)
    assert stats["pairs"] == stats["pairs_other"] > 0 and "pairs_resist" not in stats
    assert stats["branch_illegal_rate"] == 0.0 and stats["pair_score_gap"] == 1.0
    pairs, mine = policy_pairs(trees, "coin")
    assert len(pairs) == stats["pairs"] and mine == stats and policy_pairs(trees, "steady")[0] == []
    # replaying the trunk's actions reaches the branch point, rewards paid on the way kept
    tree = trees[0]
    env = replay(tree.matchup, [t.action for t in tree.trunk.turns[:2]])
    assert env.agent_selection == "a" and env.replayed_rewards == {"a": 1.0 if tree.trunk.turns[0].action == "up" else 0.0, "b": 1.0}


def test_a_game_declares_its_own_score_and_pair_labels(tally_games):
    seats = {"a": "coin", "b": "coin"}
    matchups = [Matchup(game="tally_hooked-v0", seed=s, seats=seats) for s in range(4)]
    trees = asyncio.run(grow_trees(matchups, POOL, TreeConfig(branches=4, rollouts=1, turn=1), branch_policies={"coin"}))
    # every seat the branched policy plays grows a tree, in the game's player order
    assert [(t.matchup.seed, t.player) for t in trees] == [(s, p) for s in range(4) for p in ("a", "b")]
    for tree in trees:
        for b in tree.branches:
            assert b.outcomes == [-b.episodes[0].returns[tree.player]]
        for p in tree.pairs:
            # the declared score prefers saying less, and the declared label names the chosen move
            assert (p.chosen_text, p.rejected_text, p.label) == ("down", "up", "quiet")
    assert sum(len(t.pairs) for t in trees) > 0
    # the label hook read the game at the branch point: the trunk's moves before the branched turn
    prefixes = {tuple(f"{t.player}:{t.action}" for t in tree.trunk.turns[: tree.branch_index]) for tree in trees if tree.pairs}
    assert {tuple(said) for said, _, _ in tally_games} == prefixes
    assert {(player, action) for _, player, action in tally_games} <= {("a", "down"), ("b", "down")}
    stats = tree_stats(trees)
    assert stats["pairs"] == stats["pairs_quiet"] > 0 and stats["pairs_loud"] == 0.0 and "pairs_other" not in stats


def test_a_seat_the_matchup_does_not_have_cannot_be_branched(tally_games):
    from arena.trainers.trees import grow_tree

    with pytest.raises(ValueError, match="'c' has no seat"):
        asyncio.run(grow_tree(_tally("tally-v0", 1)[0], POOL, "c", TreeConfig()))


# ----- DPO from trees with the warm-started tiny model on repeated_matrix-v0 ----------------------
MATRIX = "repeated_matrix-v0"
#: one round of the prisoner's dilemma against a cooperator: the branched move alone decides the return
MATRIX_KW = {"rounds": 1}


def test_dpo_from_trees_learns_on_repeated_matrix(warm_model_dir):
    from transformers import AutoModelForCausalLM

    from arena.agents.llm import LLMAgent
    from arena.config import TrainerConfig
    from arena.engines.base import SamplingParams
    from arena.engines.hf import HFEngine
    from arena.trainers.dpo import DPOLearner, pair_logprobs

    engine = HFEngine(str(warm_model_dir))
    agent = LLMAgent(engine, "main", sampling=SamplingParams(max_new_tokens=8, temperature=1.0))
    coop = "scripted/always_cooperate"
    pool = {"main": agent, coop: make_fixed_policy(coop, MATRIX)}
    matchups = [Matchup(game=MATRIX, seed=s, seats={"player_0": "main", "player_1": coop}, game_kwargs=MATRIX_KW) for s in range(6)]
    matchups += [Matchup(game=MATRIX, seed=s, seats={"player_0": coop, "player_1": "main"}, game_kwargs=MATRIX_KW) for s in range(6, 8)]
    trees = asyncio.run(grow_trees(matchups, pool, TreeConfig(branches=4, rollouts=2, turn=0), branch_policies={"main"}))
    assert len(trees) == 8 and {t.player for t in trees} == {"player_0", "player_1"}
    for tree in trees:
        for b in tree.branches:
            # a branch scores by the branched player's return
            assert b.outcomes == [ep.returns[tree.player] for ep in b.episodes] and len(b.outcomes) == 2
        for p in tree.pairs:
            assert p.chosen_score > p.rejected_score and p.label == "other"
            assert p.prompt_ids == tree.trunk.turns[tree.branch_index].prompt_ids and p.chosen_ids and p.rejected_ids
    pairs = [p for t in trees for p in t.pairs]
    assert len(pairs) >= 2, [[(b.action.text, b.score) for b in t.branches] for t in trees]

    model = AutoModelForCausalLM.from_pretrained(warm_model_dir)
    learner = DPOLearner(model, TrainerConfig(recipe="dpo", lr=1e-3, batch_size=64, epochs=3, dpo_beta=0.1), pad_id=engine.pad_token_id)

    def margin() -> float:
        """Mean (log pi - log ref)(chosen) - (log pi - log ref)(rejected) over the pairs."""
        with torch.no_grad():
            pc, pr = pair_logprobs(learner.model, pairs, pad_id=engine.pad_token_id)
            rc, rr = pair_logprobs(learner.reference, pairs, pad_id=engine.pad_token_id)
        return float(((pc - rc) - (pr - rr)).mean())

    assert margin() == pytest.approx(0.0, abs=1e-5)
    stats = learner.learn(pairs, torch.Generator().manual_seed(0))
    assert learner.version == 1 and stats["pairs"] == len(pairs) == stats["pairs_other"] and stats["steps"] == 3
    assert stats["dpo_loss"] < math.log(2) + 1e-4
    assert margin() > 0.05, stats


def test_arena_run_trains_by_dpo_from_trees_on_repeated_matrix(tmp_path, warm_model_dir):
    """The driver end to end: ``trainer.recipe=dpo`` on a game that declares no tree hooks."""
    from mlflow.tracking import MlflowClient
    from rich.console import Console
    from safetensors.torch import load_file

    from arena.config import RunConfig
    from arena.experiment import run

    cfg = RunConfig.model_validate(
        {
            "name": "matrix_dpo_test",
            "seed": 0,
            "episodes_per_matchup": 2,
            "games": [{"id": MATRIX, "kwargs": MATRIX_KW, "matchups": [{"player_0": "main", "player_1": "scripted/always_cooperate"}]}],
            "model": {"path": str(warm_model_dir)},
            "sampling": {"max_new_tokens": 8, "temperature": 1.0},
            "trainer": {
                "recipe": "dpo",
                "rounds": 1,
                "group_size": 1,
                "groups_per_matchup": 6,
                "tree_branches": 4,
                "tree_rollouts": 1,
                "tree_turn": 0,
                "lr": 1e-3,
                "dpo_beta": 0.1,
                "batch_size": 64,
                "checkpoint_every": 1,
            },
            "runs_dir": str(tmp_path / "runs"),
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "matrix_dpo_test", "traces_per_round": 1},
        }
    )
    res = run(cfg, Console(quiet=True))
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(res.run_id).data.metrics
    # one tree per training matchup (the game lasts one round: the branch turn is always reached)
    assert metrics["learn/main/trees"] == 6 and metrics["learn/main/pairs"] > 0
    # the game declares no labels: every pair is "other"; debate's labels do not appear
    assert metrics["learn/main/pairs_other"] == metrics["learn/main/pairs"] and "learn/main/pairs_resist" not in metrics
    assert metrics["learn/main/pair_score_gap"] > 0
    # every pair fits one batch: one step, taken from the reference, where the loss is log 2
    assert metrics["learn/main/steps"] == 1 and metrics["learn/main/dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert res.rounds_done == 1 and len(res.after) == 2
    (ckpt,) = res.run_dir.glob("checkpoints/round_00001/policies/main/model.safetensors")
    trained, start = load_file(str(ckpt)), load_file(str(warm_model_dir / "model.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in trained)
