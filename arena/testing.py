"""The conformance checker every registered game passes: ``check_game(id)``.

It runs, in order:

1. PettingZoo's own ``api_test`` on a fresh instance;
2. random play to the end over several seeds (a mix of the game's sample legal
   moves and arbitrary text), through Arena's real episode runner;
3. seeded determinism: the same seed and the same policies give the same episode;
4. illegal-move handling (Arena text games): an empty action is illegal, the
   same player moves again with the reason in ``infos`` and in its next
   observation, and after the retry limit the game ends;
5. private information: no player's observation ever contains a fragment the
   game declares private to another player (and each declared fragment does
   appear in its owner's own observations, so the declaration is not empty talk).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pettingzoo.test import api_test

from arena.agents.base import PlayerView
from arena.agents.random_agent import RandomPolicy
from arena.game import TextGame
from arena.records import Episode, Matchup
from arena.registry import make
from arena.rollout import episode_rngs, observation_text, play_episode


class ConformanceError(AssertionError):
    """A game broke the contract; the message says which check and how."""


def random_mover() -> RandomPolicy:
    """Random play for conformance: mostly the game's sample moves, sometimes junk text."""
    return RandomPolicy(policy_id="random/conformance", junk_rate=0.2, max_len=30)


@dataclass
class ConformanceReport:
    game: str
    episodes: list[Episode] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


def check_game(game_id: str, *, seeds: tuple[int, ...] = (0, 1, 2, 3, 4), api_cycles: int = 1000, **game_kwargs: Any) -> ConformanceReport:
    """Run every conformance check on a registered game; raise ConformanceError on the first failure."""
    report = ConformanceReport(game=game_id)

    try:
        api_test(make(game_id, **game_kwargs), num_cycles=api_cycles)
    except AssertionError as e:
        raise ConformanceError(f"{game_id}: PettingZoo api_test failed: {e}") from e
    report.checks.append("pettingzoo api_test")

    probe = make(game_id, **game_kwargs)
    players = list(probe.possible_agents)
    is_text_game = isinstance(probe.unwrapped, TextGame)

    for seed in seeds:
        first = _random_episode(game_id, seed, players, game_kwargs)
        if first.truncated:
            raise ConformanceError(f"{game_id}: random play with seed {seed} did not end within the step limit")
        second = _random_episode(game_id, seed, players, game_kwargs)
        if _signature(first) != _signature(second):
            raise ConformanceError(f"{game_id}: seed {seed} gave two different episodes with the same policies")
        report.episodes.append(first)
    report.checks += ["random play to the end", "seeded determinism"]

    if is_text_game:
        _check_illegal_moves(game_id, game_kwargs)
        report.checks.append("illegal-move rule")
        for seed in seeds:
            _check_private_info(game_id, seed, game_kwargs)
        report.checks.append("private information")
    return report


def _random_episode(game_id: str, seed: int, players: list[str], game_kwargs: dict) -> Episode:
    mover = random_mover()
    matchup = Matchup(game=game_id, seed=seed, seats={p: mover.policy_id for p in players}, game_kwargs=game_kwargs)
    return asyncio.run(play_episode(matchup, {mover.policy_id: mover}, max_steps=5000))


def _signature(ep: Episode) -> tuple:
    return (
        tuple((t.player, t.observation, t.action, t.illegal_reason, t.reward) for t in ep.turns),
        tuple(sorted(ep.returns.items())),
        ep.group_return,
    )


def _check_illegal_moves(game_id: str, game_kwargs: dict) -> None:
    env = make(game_id, **game_kwargs)
    game: TextGame = env.unwrapped
    env.reset(seed=0)
    player = env.agent_selection
    limit = game.config.max_illegal_retries
    for attempt in range(limit + 1):
        env.step("")
        reason = env.infos.get(player, {}).get("illegal_move")
        if not reason:
            raise ConformanceError(f"{game_id}: an empty action was not reported as an illegal move in infos[{player!r}]")
        if attempt < limit:
            if env.agent_selection != player or env.terminations.get(player):
                raise ConformanceError(f"{game_id}: after illegal move {attempt + 1} of {limit} allowed, {player!r} was not asked again")
            if reason not in observation_text(env.observe(player)):
                raise ConformanceError(f"{game_id}: the illegal-move reason is missing from {player!r}'s next observation")
    if not all(env.terminations.values()):
        raise ConformanceError(f"{game_id}: {limit + 1} illegal moves in a row did not end the game by forfeit")


def _check_private_info(game_id: str, seed: int, game_kwargs: dict) -> None:
    env = make(game_id, **game_kwargs)
    game: TextGame = env.unwrapped
    mover = random_mover()
    env.reset(seed=seed)
    private = {p: [f for f in frags if f] for p, frags in game.private_info().items()}
    seen_by_owner = {(p, f): False for p, frags in private.items() for f in frags}
    rngs = episode_rngs(seed, list(env.possible_agents))
    for player in env.agent_iter(5000):
        obs, _, term, trunc, _ = env.last()
        # every live player's current view is checked, not only the mover's
        for viewer in env.agents:
            text = observation_text(env.observe(viewer))
            for owner, frags in private.items():
                for frag in frags:
                    if owner == viewer:
                        seen_by_owner[(owner, frag)] |= frag in text
                    elif frag in text:
                        raise ConformanceError(f"{game_id} seed {seed}: {viewer!r}'s observation contains {frag!r}, private to {owner!r}")
        if term or trunc:
            env.step(None)
            continue
        view = PlayerView(game=game_id, player=player, observation=observation_text(obs), rng=rngs[player], sample_moves=game.sample_moves(player))
        env.step(mover.choose(view))
    unseen = [f"{o}: {f!r}" for (o, f), seen in seen_by_owner.items() if not seen]
    if unseen:
        raise ConformanceError(f"{game_id}: declared private fragments never shown to their owner: {unseen}")
