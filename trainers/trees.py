"""Tree branching: branch one player's turn, play every branch out, pair the siblings (DPO from trees).

Persuasion-balanced training (Stengel-Eskin et al., 2025) learns from game
trees: at one turn a player's policy writes ``k`` different continuations;
each is played to the end several times; a continuation's score is the mean of
its rollouts' scores. Two siblings with different scores make a preference
pair (the better one is *chosen*). Any registered game can grow trees; what a
game may add it declares in its registration (:class:`arena.registry.TreeHooks`):

- ``score(episode, player)``: a rollout's score for the branched player
  (default: its return, ``episode.returns[player]``);
- ``label(env, player, action)``: a pair's label, read from the game at the
  branch point and the chosen continuation's text (default ``"other"``), with
  ``labels`` listing every label it may give (round statistics count pairs per
  label).

One tree, read top to bottom:

1. the *trunk*: the matchup is played once, as in training, by its policies;
2. the *branch point*: the trunk's turn where ``player`` moves after
   ``turn`` legal moves (``turn=0``: its first move). No such turn (the game
   ended first) = no tree;
3. ``branches`` continuations are sampled from the player's policy (an
   :class:`~arena.agents.llm.LLMAgent` on an engine), each with its own seed,
   from the exact view the trunk's policy had there;
4. each continuation is played to the end ``rollouts`` times: the game is
   rebuilt from the seed by replaying the trunk's actions (illegal ones
   included) and the continuation (:class:`ReplayedGame`; the replay is
   checked against the trunk's observation), then the matchup's policies play
   on with fresh sampling seeds through :func:`arena.rollout.play_episode`;
5. pairs: every two siblings whose scores differ by more than ``min_gap`` and
   whose completions differ.

:func:`grow_trees` grows one tree per (matchup, seat played by a branched
policy). A pair keeps the prompt token ids and the chosen and rejected
completion token ids exactly as sampled, so a learner never re-tokenises text.
Continuations replayed after the branch see no earlier (observation, reply)
history: with an agent that renders history (``agent.history_turns > 0``)
their prompts differ from those of ordinary play after the branch point.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseWrapper

from arena.agents.base import Action, PlayerView, Policy
from arena.game import TextGame
from arena.records import Episode, Matchup, Turn
from arena.registry import TreeHooks, make, spec
from arena.rollout import observation_text, play_episode
from arena.seeds import sample_index

#: a pair's label: one of the labels its game declares (``TreeHooks.labels``), ``"other"`` by default
PairLabel = str
#: seeds a continuation's sampling at the branch point, apart from the matchup's own play
_BRANCH_TAG = 0xB7A2C4


@dataclass(frozen=True)
class TreeConfig:
    #: continuations sampled at the branch point (k)
    branches: int = 4
    #: games played to the end below each continuation; its score is the mean of their scores
    rollouts: int = 2
    #: branch where the player has made this many legal moves (0 = its first move)
    turn: int = 1
    #: a pair needs chosen score - rejected score > min_gap
    min_gap: float = 0.0

    def __post_init__(self) -> None:
        if self.branches < 2:
            raise ValueError(f"branches must be >= 2 (pairs need siblings), got {self.branches}")
        if self.rollouts < 1:
            raise ValueError(f"rollouts must be >= 1, got {self.rollouts}")
        if self.turn < 0:
            raise ValueError(f"turn must be >= 0, got {self.turn}")
        if self.min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")


@dataclass
class PreferencePair:
    """Two sibling continuations of one prompt: token ids as sampled, scores, and the label."""

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    chosen_score: float
    rejected_score: float
    label: PairLabel
    chosen_text: str = ""
    rejected_text: str = ""
    player: str = ""
    policy_id: str = ""
    tree_id: str = ""


@dataclass
class Branch:
    """One continuation at the branch point and the outcomes below it."""

    action: Action
    #: why the game refused the continuation (None when it is a legal move)
    illegal_reason: str | None
    #: the branched player's score in each rollout (``TreeHooks.score``, default its return)
    outcomes: list[float] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(np.mean(self.outcomes)) if self.outcomes else 0.0


@dataclass
class Tree:
    """One matchup's trunk, the branched turn, its continuations and their preference pairs."""

    tree_id: str
    matchup: Matchup
    player: str
    policy_id: str
    trunk: Episode
    #: index of the branched turn in ``trunk.turns``
    branch_index: int
    prompt_ids: list[int]
    branches: list[Branch]
    pairs: list[PreferencePair]
    #: the game entry this tree belongs to (for per-game metrics)
    label: str = ""

    def episodes(self) -> list[Episode]:
        """The trunk and every rollout, as complete episodes."""
        return [self.trunk] + [ep for b in self.branches for ep in b.episodes]


class ReplayedGame(BaseWrapper):
    """A game whose ``reset(seed)`` also replays a fixed list of actions: the state after them.

    Players that are done are stepped with ``None`` between actions, as in play; the rewards paid
    during the replay are kept in ``replayed_rewards`` (player -> sum)."""

    def __init__(self, env: AECEnv, actions: Sequence[str]):
        super().__init__(env)
        self.actions = list(actions)
        self.replayed_rewards: dict[str, float] = {}

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.env.reset(seed=seed, options=options)
        self.replayed_rewards = {}
        for a in self.actions:
            self._step_past_done_players()
            if not self.env.agents or all(self.env.terminations.values()):
                raise ValueError("the replayed actions run past the end of the game")
            self._step(a)
        self._step_past_done_players()

    def _step(self, action: str | None) -> None:
        self.env.step(action)
        for p, r in self.env.rewards.items():
            self.replayed_rewards[p] = self.replayed_rewards.get(p, 0.0) + float(r)

    def _step_past_done_players(self) -> None:
        while self.env.agents and not all(self.env.terminations.values()):
            p = self.env.agent_selection
            if not (self.env.terminations.get(p) or self.env.truncations.get(p)):
                return
            self._step(None)


def replay(matchup: Matchup, actions: Sequence[str]) -> ReplayedGame:
    """The matchup's game after ``actions`` (from its seed)."""
    env = ReplayedGame(make(matchup.game, **matchup.game_kwargs), actions)
    env.reset(seed=matchup.seed)
    return env


def branch_point(episode: Episode, player: str, turn: int) -> int | None:
    """Index of the turn where ``player`` moves after ``turn`` legal moves (None if the game ended first)."""
    legal = 0
    for i, t in enumerate(episode.turns):
        if t.player != player:
            continue
        if legal == turn:
            return i
        legal += not t.illegal
    return None


def tree_hooks(game: str) -> TreeHooks:
    """What ``game`` declares for tree branching (defaults when it declares nothing)."""
    return spec(game).tree or TreeHooks()


def rollout_score(hooks: TreeHooks, episode: Episode, player: str) -> float:
    """One rollout's score for the branched player: the game's ``score`` hook, else its return."""
    if hooks.score is not None:
        return float(hooks.score(episode, player))
    return float(episode.returns[player])


async def grow_tree(
    matchup: Matchup,
    policies: Mapping[str, Policy],
    player: str,
    cfg: TreeConfig,
    *,
    tree_id: str = "tree",
    max_steps: int = 1000,
    label: str = "",
) -> Tree | None:
    """Play the trunk, branch ``player``'s turn, roll every branch out, pair the siblings (see the module docstring)."""
    if player not in matchup.seats:
        raise ValueError(f"{tree_id}: {player!r} has no seat in the matchup (seats: {', '.join(matchup.seats)})")
    hooks = tree_hooks(matchup.game)
    trunk = await play_episode(matchup, policies, episode_id=f"{tree_id}-trunk", max_steps=max_steps)
    b = branch_point(trunk, player, cfg.turn)
    if b is None:
        return None
    prefix = [t.action for t in trunk.turns[:b]]
    at_branch = replay(matchup, prefix)
    seen = trunk.turns[b]
    if at_branch.agent_selection != player or observation_text(at_branch.observe(player)) != seen.observation:
        raise RuntimeError(f"{tree_id}: replaying the trunk's actions did not reach its turn {b}: the game is not deterministic")
    game = at_branch.unwrapped
    moves = game.sample_moves(player) if isinstance(game, TextGame) else []
    policy = policies[matchup.seats[player]]
    history = [(t.observation, t.action) for t in trunk.turns[:b] if t.player == player]

    def view(i: int) -> PlayerView:
        rng = np.random.default_rng([matchup.seed, matchup.sample, i, _BRANCH_TAG])
        return PlayerView(matchup.game, player, seen.observation, list(history), rng, b, list(moves))

    actions = await asyncio.gather(*(policy.act(view(i)) for i in range(cfg.branches)))
    branches = []
    for action in actions:
        after = replay(matchup, prefix + [action.text])
        branches.append(Branch(action, after.infos.get(player, {}).get("illegal_move")))

    def branch_turn(br: Branch) -> Turn:
        a = br.action
        return Turn(
            index=b,
            player=player,
            policy_id=policy.policy_id,
            policy_version=int(getattr(policy, "version", 0)),
            observation=seen.observation,
            action=a.text,
            prompt_ids=a.prompt_ids,
            completion_ids=a.completion_ids,
            logprobs=a.logprobs,
            illegal_reason=br.illegal_reason,
        )

    async def rollout(i: int, r: int) -> Episode:
        m = matchup.model_copy(update={"sample": sample_index(matchup.sample, i, r)})
        br = branches[i]
        envs: list[ReplayedGame] = []

        def env_factory(mm: Matchup) -> ReplayedGame:
            envs.append(ReplayedGame(make(mm.game, **mm.game_kwargs), prefix + [br.action.text]))
            return envs[-1]

        rest = await play_episode(m, policies, env_factory=env_factory, episode_id=f"{tree_id}-b{i}-r{r}", max_steps=max_steps)
        turns = [*trunk.turns[:b], branch_turn(br), *rest.turns]
        update: dict = {"turns": [t.model_copy(update={"index": k}) for k, t in enumerate(turns)]}
        if not isinstance(envs[0].unwrapped, TextGame):
            # a plain AEC game's returns are the rewards collected in play: add those paid during the replay
            paid = envs[0].replayed_rewards
            returns = {p: rest.returns.get(p, 0.0) + paid.get(p, 0.0) for p in {*rest.returns, *paid}}
            update.update(returns=returns, group_return=float(sum(returns.values()) / max(len(returns), 1)))
        return rest.model_copy(update=update)

    grid = [(i, r) for i in range(cfg.branches) for r in range(cfg.rollouts)]
    for (i, _), ep in zip(grid, await asyncio.gather(*(rollout(i, r) for i, r in grid))):
        branches[i].episodes.append(ep)
        branches[i].outcomes.append(rollout_score(hooks, ep, player))

    tree = Tree(
        tree_id=tree_id,
        matchup=matchup,
        player=player,
        policy_id=policy.policy_id,
        trunk=trunk,
        branch_index=b,
        prompt_ids=list(seen.prompt_ids) or list(actions[0].prompt_ids),
        branches=branches,
        pairs=[],
        label=label,
    )
    pair_label = (lambda text: hooks.label(at_branch, player, text)) if hooks.label is not None else None
    tree.pairs = preference_pairs(tree, cfg.min_gap, pair_label)
    return tree


def preference_pairs(tree: Tree, min_gap: float = 0.0, label: Callable[[str], PairLabel] | None = None) -> list[PreferencePair]:
    """Every two siblings with different completions whose scores differ by more than ``min_gap``;
    ``label(chosen_text)`` names each pair (default ``"other"``)."""
    pairs = []
    for x, y in itertools.combinations(tree.branches, 2):
        if x.action.completion_ids == y.action.completion_ids and x.action.text == y.action.text:
            continue
        if abs(x.score - y.score) <= min_gap:
            continue
        chosen, rejected = (x, y) if x.score > y.score else (y, x)
        pairs.append(
            PreferencePair(
                prompt_ids=list(chosen.action.prompt_ids),
                chosen_ids=list(chosen.action.completion_ids),
                rejected_ids=list(rejected.action.completion_ids),
                chosen_score=chosen.score,
                rejected_score=rejected.score,
                label=label(chosen.action.text) if label is not None else "other",
                chosen_text=chosen.action.text,
                rejected_text=rejected.action.text,
                player=tree.player,
                policy_id=tree.policy_id,
                tree_id=tree.tree_id,
            )
        )
    return pairs


def _player_order(matchup: Matchup) -> list[str]:
    """The matchup's players in the game's own order (``possible_agents``), then any other seat."""
    players = list(make(matchup.game, **matchup.game_kwargs).possible_agents)
    return [p for p in players if p in matchup.seats] + [p for p in matchup.seats if p not in players]


async def grow_trees(
    matchups: Sequence[Matchup],
    policies: Mapping[str, Policy] | Callable[[Matchup], Mapping[str, Policy]],
    cfg: TreeConfig,
    *,
    branch_policies: Collection[str],
    labels: Sequence[str] | None = None,
    ids: Sequence[str] | None = None,
    concurrency: int = 16,
    max_steps: int = 1000,
) -> list[Tree]:
    """One tree per (matchup, seat played by a policy in ``branch_policies``), seats in the game's
    player order; at most ``concurrency`` trees at a time, so the engine batches the requests of all
    of them. ``labels`` name each matchup's game entry (default: its game id)."""
    orders: dict[str, list[str]] = {}

    def order(m: Matchup) -> list[str]:
        key = json.dumps([m.game, m.game_kwargs, sorted(m.seats)], sort_keys=True, default=str)
        if key not in orders:
            orders[key] = _player_order(m)
        return orders[key]

    sem = asyncio.Semaphore(max(concurrency, 1))
    jobs = [(k, m, p) for k, m in enumerate(matchups) for p in order(m) if m.seats[p] in branch_policies]

    async def one(k: int, m: Matchup, player: str) -> Tree | None:
        async with sem:
            pool = policies(m) if callable(policies) else policies
            base = ids[k] if ids is not None else f"tree{k:05d}"
            return await grow_tree(m, pool, player, cfg, tree_id=f"{base}-{player}", max_steps=max_steps, label=labels[k] if labels else m.game)

    trees = await asyncio.gather(*(one(*job) for job in jobs))
    return [t for t in trees if t is not None]


def tree_stats(trees: Sequence[Tree]) -> dict[str, float]:
    """How the trees went: counts, pairs per label (every label the trees' games declare), scores
    and their spread within trees, and how often a continuation was an illegal move."""
    pairs = [p for t in trees for p in t.pairs]
    branches = [b for t in trees for b in t.branches]
    declared = [lab for g in dict.fromkeys(t.matchup.game for t in trees) for lab in tree_hooks(g).labels]
    label_names = list(dict.fromkeys([*declared, *(p.label for p in pairs)]))
    out = {
        "trees": float(len(trees)),
        "trees_with_pairs": float(sum(bool(t.pairs) for t in trees)),
        "pairs": float(len(pairs)),
        **{f"pairs_{lab}": float(sum(p.label == lab for p in pairs)) for lab in label_names},
    }
    if trees:
        out["branch_score"] = float(np.mean([b.score for b in branches]))
        out["branch_score_spread"] = float(np.mean([max(b.score for b in t.branches) - min(b.score for b in t.branches) for t in trees]))
        out["branch_illegal_rate"] = float(np.mean([b.illegal_reason is not None for b in branches]))
    if pairs:
        out["pair_score_gap"] = float(np.mean([p.chosen_score - p.rejected_score for p in pairs]))
    return out


def policy_pairs(trees: Sequence[Tree], policy_id: str) -> tuple[list[PreferencePair], dict[str, float]]:
    """The pairs of the trees that branched ``policy_id``'s turns, and those trees' statistics."""
    mine = [t for t in trees if t.policy_id == policy_id]
    return [p for t in mine for p in t.pairs], tree_stats(mine)
