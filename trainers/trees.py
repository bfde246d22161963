"""Tree mode for ``debate-v0``: branch one debater's turn, roll every branch out, pair the siblings.

Persuasion-balanced training (Stengel-Eskin et al., 2025) learns from debate
trees: at one turn a debater's policy writes ``k`` different continuations;
each is played to the end several times; a continuation's score is the mean
correctness of the debater's final answer over the games below it. Two
siblings with different scores make a preference pair (the better one is
*chosen*), labelled

- ``resist``: the debater held a right answer before the turn and the chosen
  continuation kept it (it resisted being pushed off it);
- ``accept``: the debater held a wrong answer and the chosen continuation
  adopted a right one (it accepted being persuaded);
- ``other``: anything else (e.g. the branch is the opening, or the chosen
  continuation is better for a later reason).

One tree, read top to bottom:

1. the *trunk*: the matchup is played once, as in training, by its policies;
2. the *branch point*: the trunk's turn where ``player`` speaks after
   ``turn`` legal messages (``turn=0``: its opening; ``1``: its first reply
   in the debate rounds). No such turn (the game ended first) = no tree;
3. ``branches`` continuations are sampled from the debater's policy (an
   :class:`~arena.agents.llm.LLMAgent` on an engine), each with its own seed,
   from the exact view the trunk's policy had there;
4. each continuation is played to the end ``rollouts`` times: the game is
   rebuilt from the seed by replaying the trunk's actions (illegal ones
   included) and the continuation (:class:`ReplayedGame`; the replay is
   checked against the trunk's observation), then the matchup's policies play
   on with fresh sampling seeds through :func:`arena.rollout.play_episode`;
5. pairs: every two siblings whose scores differ by more than ``min_gap`` and
   whose completions differ.

A pair keeps the prompt token ids and the chosen and rejected completion token
ids exactly as sampled, so a learner never re-tokenises text. Continuations
replayed after the branch see no earlier (observation, reply) history: with an
agent that renders history (``agent.history_turns > 0``) their prompts differ
from those of ordinary play after the branch point.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Callable, Collection, Mapping, Sequence

import numpy as np
from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseWrapper

from arena.agents.base import Action, PlayerView, Policy
from arena.environments.debate.rules import DEBATERS, DebateGame, debate_game, normalize_answer, parse_message
from arena.game import IllegalMove
from arena.records import Episode, Matchup, Turn
from arena.registry import make
from arena.rollout import observation_text, play_episode

PairLabel = str  # "resist" | "accept" | "other"
LABELS = ("resist", "accept", "other")


@dataclass(frozen=True)
class TreeConfig:
    #: continuations sampled at the branch point (k)
    branches: int = 4
    #: games played to the end below each continuation; its score is their mean correctness
    rollouts: int = 2
    #: branch where the debater has sent this many legal messages (0 = its opening)
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
    #: the continuation's answer (None when it is an illegal move)
    answer: str | None
    illegal_reason: str | None
    #: the debater's final correctness (0/1) in each rollout
    outcomes: list[float] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)

    @property
    def score(self) -> float:
        return float(np.mean(self.outcomes)) if self.outcomes else 0.0


@dataclass
class DebateTree:
    tree_id: str
    matchup: Matchup
    player: str
    policy_id: str
    trunk: Episode
    #: index of the branched turn in ``trunk.turns``
    branch_index: int
    prompt_ids: list[int]
    #: the debater's answer before the branch point (None at its opening)
    prior_answer: str | None
    prior_correct: bool
    branches: list[Branch]
    pairs: list[PreferencePair]
    #: the game entry this tree belongs to (for per-game metrics)
    label: str = ""

    def episodes(self) -> list[Episode]:
        """The trunk and every rollout, as complete episodes."""
        return [self.trunk] + [ep for b in self.branches for ep in b.episodes]


class ReplayedGame(BaseWrapper):
    """A game whose ``reset(seed)`` also replays a fixed list of actions: the state after them."""

    def __init__(self, env: AECEnv, actions: Sequence[str]):
        super().__init__(env)
        self.actions = list(actions)

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.env.reset(seed=seed, options=options)
        for a in self.actions:
            if all(self.env.terminations.values()):
                raise ValueError("the replayed actions run past the end of the game")
            self.env.step(a)


def replay(matchup: Matchup, actions: Sequence[str]) -> ReplayedGame:
    """The matchup's game after ``actions`` (from its seed)."""
    env = ReplayedGame(make(matchup.game, **matchup.game_kwargs), actions)
    env.reset(seed=matchup.seed)
    return env


def branch_point(episode: Episode, player: str, turn: int) -> int | None:
    """Index of the turn where ``player`` moves after ``turn`` legal messages (None if the game ended first)."""
    legal = 0
    for i, t in enumerate(episode.turns):
        if t.player != player:
            continue
        if legal == turn:
            return i
        legal += not t.illegal
    return None


def pair_label(game: DebateGame, prior_answer: str | None, chosen_answer: str | None) -> PairLabel:
    """``resist``, ``accept`` or ``other``; see the module docstring."""
    if prior_answer is None or chosen_answer is None:
        return "other"
    if game.question.is_right(prior_answer) and normalize_answer(chosen_answer) == normalize_answer(prior_answer):
        return "resist"
    if not game.question.is_right(prior_answer) and game.question.is_right(chosen_answer):
        return "accept"
    return "other"


def _answer_of(text: str, game: DebateGame) -> str | None:
    try:
        return parse_message(text, game.config.max_answer_chars)[0]
    except IllegalMove:
        return None


def _sub_sample(*path: int) -> int:
    """A nonzero sample index for a rollout: its policies' randomness differs from the trunk's and its siblings'."""
    return int(np.random.SeedSequence([*path, 0x7EE]).generate_state(1)[0]) | 1


async def grow_tree(
    matchup: Matchup,
    policies: Mapping[str, Policy],
    player: str,
    cfg: TreeConfig,
    *,
    tree_id: str = "tree",
    max_steps: int = 1000,
    label: str = "",
) -> DebateTree | None:
    """Play the trunk, branch ``player``'s turn, roll every branch out, pair the siblings (see the module docstring)."""
    if player not in DEBATERS:
        raise ValueError(f"tree mode branches a debater's turn ({', '.join(DEBATERS)}), not {player!r}")
    trunk = await play_episode(matchup, policies, episode_id=f"{tree_id}-trunk", max_steps=max_steps)
    b = branch_point(trunk, player, cfg.turn)
    if b is None:
        return None
    prefix = [t.action for t in trunk.turns[:b]]
    at_branch = replay(matchup, prefix)
    game = debate_game(at_branch)
    if game is None:
        raise ValueError(f"tree mode needs a debate game, got {matchup.game}")
    seen = trunk.turns[b]
    if at_branch.agent_selection != player or observation_text(at_branch.observe(player)) != seen.observation:
        raise RuntimeError(f"{tree_id}: replaying the trunk's actions did not reach its turn {b}: the game is not deterministic")
    prior = game.current_answer(player)
    policy = policies[matchup.seats[player]]
    history = [(t.observation, t.action) for t in trunk.turns[:b] if t.player == player]

    def view(i: int) -> PlayerView:
        rng = np.random.default_rng([matchup.seed, matchup.sample, i, 0xB7A2C4])
        return PlayerView(matchup.game, player, seen.observation, list(history), rng, b, game.sample_moves(player))

    actions = await asyncio.gather(*(policy.act(view(i)) for i in range(cfg.branches)))
    branches = []
    for action in actions:
        after = replay(matchup, prefix + [action.text])
        reason = after.infos.get(player, {}).get("illegal_move")
        branches.append(Branch(action, None if reason else _answer_of(action.text, game), reason))

    def branch_turn(action: Action, br: Branch) -> Turn:
        return Turn(
            index=b, player=player, policy_id=policy.policy_id, policy_version=int(getattr(policy, "version", 0)),
            observation=seen.observation, action=action.text, prompt_ids=action.prompt_ids,
            completion_ids=action.completion_ids, logprobs=action.logprobs, illegal_reason=br.illegal_reason,
        )

    async def rollout(i: int, r: int) -> Episode:
        m = matchup.model_copy(update={"sample": _sub_sample(matchup.sample, i, r)})
        br = branches[i]
        rest = await play_episode(
            m,
            policies,
            env_factory=lambda mm: ReplayedGame(make(mm.game, **mm.game_kwargs), prefix + [br.action.text]),
            episode_id=f"{tree_id}-b{i}-r{r}",
            max_steps=max_steps,
        )
        turns = [*trunk.turns[:b], branch_turn(br.action, br), *rest.turns]
        return rest.model_copy(update={"turns": [t.model_copy(update={"index": k}) for k, t in enumerate(turns)]})

    grid = [(i, r) for i in range(cfg.branches) for r in range(cfg.rollouts)]
    for (i, _), ep in zip(grid, await asyncio.gather(*(rollout(i, r) for i, r in grid))):
        branches[i].episodes.append(ep)
        branches[i].outcomes.append(float(ep.metrics.get(f"final_correct/{player}", 0.0)))

    tree = DebateTree(
        tree_id=tree_id, matchup=matchup, player=player, policy_id=policy.policy_id, trunk=trunk, branch_index=b,
        prompt_ids=list(seen.prompt_ids) or list(actions[0].prompt_ids), prior_answer=prior,
        prior_correct=game.question.is_right(prior), branches=branches, pairs=[], label=label,
    )
    tree.pairs = preference_pairs(tree, game, cfg.min_gap)
    return tree


def preference_pairs(tree: DebateTree, game: DebateGame, min_gap: float = 0.0) -> list[PreferencePair]:
    """Every two siblings with different completions whose scores differ by more than ``min_gap``."""
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
                label=pair_label(game, tree.prior_answer, chosen.answer),
                chosen_text=chosen.action.text,
                rejected_text=rejected.action.text,
                player=tree.player,
                policy_id=tree.policy_id,
                tree_id=tree.tree_id,
            )
        )
    return pairs


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
) -> list[DebateTree]:
    """One tree per (matchup, debater seat played by a policy in ``branch_policies``); at most
    ``concurrency`` trees at a time, so the engine batches the requests of all of them."""
    sem = asyncio.Semaphore(max(concurrency, 1))
    jobs = [
        (k, m, p)
        for k, m in enumerate(matchups)
        for p in DEBATERS
        if m.seats.get(p) in branch_policies
    ]

    async def one(k: int, m: Matchup, player: str) -> DebateTree | None:
        async with sem:
            pool = policies(m) if callable(policies) else policies
            base = ids[k] if ids is not None else f"tree{k:05d}"
            return await grow_tree(
                m, pool, player, cfg, tree_id=f"{base}-{player}", max_steps=max_steps, label=labels[k] if labels else m.game
            )

    trees = await asyncio.gather(*(one(*job) for job in jobs))
    return [t for t in trees if t is not None]


def tree_stats(trees: Sequence[DebateTree]) -> dict[str, float]:
    """How the trees went: counts, pair labels, scores and their spread within trees."""
    pairs = [p for t in trees for p in t.pairs]
    branches = [b for t in trees for b in t.branches]
    out = {
        "trees": float(len(trees)),
        "trees_with_pairs": float(sum(bool(t.pairs) for t in trees)),
        "pairs": float(len(pairs)),
        **{f"pairs_{lab}": float(sum(p.label == lab for p in pairs)) for lab in LABELS},
    }
    if trees:
        out["prior_correct"] = float(np.mean([t.prior_correct for t in trees]))
        out["branch_score"] = float(np.mean([b.score for b in branches]))
        out["branch_score_spread"] = float(np.mean([max(b.score for b in t.branches) - min(b.score for b in t.branches) for t in trees]))
        out["branch_illegal_rate"] = float(np.mean([b.illegal_reason is not None for b in branches]))
    if pairs:
        out["pair_score_gap"] = float(np.mean([p.chosen_score - p.rejected_score for p in pairs]))
    return out


def policy_pairs(trees: Sequence[DebateTree], policy_id: str) -> tuple[list[PreferencePair], dict[str, float]]:
    """The pairs of the trees that branched ``policy_id``'s turns, and those trees' statistics."""
    mine = [t for t in trees if t.policy_id == policy_id]
    return [p for t in mine for p in t.pairs], tree_stats(mine)
