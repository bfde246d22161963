"""Recipes: how a round's play becomes an update, one entry each in :data:`RECIPES`.

A recipe does two things for the experiment driver (:mod:`arena.experiment`):

- ``play(ctx)``: play the round's training matchups and return the episodes
  (``pg`` and ``rest`` play them as they are; ``dpo`` grows a tree from each,
  branching the trained seats' turns, :mod:`arena.trainers.trees`);
- ``samples(played, policy_id, trainer, baseline)``: turn them into what the
  policy's learner trains on (advantaged samples, kept demonstrations, or
  preference pairs), with the round's statistics.

``learner`` names the learner class the recipe trains with. Every recipe works
with any game: what a game may add (a tree's score and pair labels) it declares
in its registration. ``trainer.recipe: none`` is no recipe: the run only
evaluates (a tournament).

    RECIPES["rest"].samples(played, "main", cfg.trainer, None)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arena.records import Episode, Matchup
from arena.trainers.dpo import DPOLearner
from arena.trainers.selfplay import Learner, policy_gradient_samples, rest_samples, trained_seats

if TYPE_CHECKING:
    from rich.console import Console

    from arena.agents.base import Policy
    from arena.config import RolloutConfig, TrainerConfig
    from arena.trainers.advantages import RoleBaseline


@dataclass
class RoundContext:
    """One training round, as the driver hands it to a recipe."""

    round_index: int
    matchups: list[Matchup]
    #: each matchup's game-entry label
    labels: list[str]
    #: game id -> policy id -> policy (the round's snapshot seat included)
    pools: Mapping[str, Mapping[str, Policy]]
    #: the model policies' ids (the seats a recipe may branch or train)
    model_policies: frozenset[str]
    runtime: Any
    trainer: TrainerConfig
    rollout: RolloutConfig
    console: Console

    @property
    def episode_ids(self) -> list[str]:
        return [f"train{self.round_index}-{i:05d}" for i in range(len(self.matchups))]

    @property
    def title(self) -> str:
        return f"round {self.round_index + 1}/{self.trainer.rounds}"


@dataclass
class RoundPlay:
    """A round's episodes with their entry labels, and whatever else the recipe learns from."""

    episodes: list[Episode]
    labels: list[str]
    extra: Any = None


class Recipe:
    """The base: play the matchups as they are."""

    name = ""
    learner: type = Learner
    #: whether ``cluster.mode: ray`` can run it (its play goes through the runtime)
    runs_on_ray = True
    #: whether it can learn from episodes played a round ahead (``trainer.max_staleness`` > 0):
    #: its samples come from ``played.episodes`` alone, so stale episodes can be dropped
    runs_async = True

    def play(self, ctx: RoundContext) -> RoundPlay:
        episodes = ctx.runtime.play(ctx.matchups, ctx.pools, ctx.episode_ids, ctx.console, ctx.title, step=ctx.round_index)
        return RoundPlay(episodes, list(ctx.labels))

    def samples(self, played: RoundPlay, policy_id: str, trainer: TrainerConfig, baseline: RoleBaseline | None) -> tuple[list, dict[str, float]]:
        raise NotImplementedError


class PolicyGradient(Recipe):
    """Online policy gradient on each trained seat's (group-)advantaged return."""

    name = "pg"

    def samples(self, played, policy_id, trainer, baseline):
        return policy_gradient_samples(trained_seats(played.episodes, policy_id, trainer.return_mix, played.labels), trainer, baseline)


class ReST(Recipe):
    """Filtered imitation: keep the best episodes' trained seats and imitate them."""

    name = "rest"

    def samples(self, played, policy_id, trainer, baseline):
        return rest_samples(trained_seats(played.episodes, policy_id, trainer.return_mix, played.labels), trainer)


class TreeDPO(Recipe):
    """DPO from trees: each training matchup's trained seats are branched at one turn, every
    branch is played out, and siblings with different outcomes make preference pairs."""

    name = "dpo"
    learner = DPOLearner
    runs_on_ray = False
    runs_async = False

    def play(self, ctx: RoundContext) -> RoundPlay:
        from arena.trainers.trees import TreeConfig, grow_trees

        t = ctx.trainer
        tree_cfg = TreeConfig(branches=t.tree_branches, rollouts=t.tree_rollouts, turn=t.tree_turn)
        with ctx.console.status(f"{ctx.title}: growing trees from {len(ctx.matchups)} matchups"):
            trees = asyncio.run(
                grow_trees(
                    ctx.matchups,
                    lambda m: ctx.pools[m.game],
                    tree_cfg,
                    branch_policies=ctx.model_policies,
                    labels=ctx.labels,
                    ids=ctx.episode_ids,
                    concurrency=ctx.rollout.concurrency,
                    max_steps=ctx.rollout.max_steps,
                )
            )
        episodes = [ep for tree in trees for ep in tree.episodes()]
        return RoundPlay(episodes, [tree.label for tree in trees for _ in tree.episodes()], extra=trees)

    def samples(self, played, policy_id, trainer, baseline):
        from arena.trainers.trees import policy_pairs

        return policy_pairs(played.extra, policy_id)


#: the recipes a config names with ``trainer.recipe``
RECIPES: dict[str, Recipe] = {r.name: r for r in (PolicyGradient(), ReST(), TreeDPO())}
