"""Playing episodes: one at a time or many at once.

:func:`play_episode` drives any PettingZoo AEC environment with text
observations (an Arena :class:`~arena.game.TextGame` or not) from a
:class:`~arena.records.Matchup`, asking each seat's policy for a move and
recording every turn. :func:`play_many` runs many episodes concurrently on one
event loop: while one episode waits for its model, the others step, and the
engine batches the requests of all waiting episodes into one forward pass.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pettingzoo import AECEnv

from arena.agents.base import PlayerView, Policy
from arena.game import TextGame
from arena.records import Episode, Matchup, ToolCall, Turn
from arena.registry import make

EnvFactory = Callable[[Matchup], AECEnv]


def default_env_factory(matchup: Matchup) -> AECEnv:
    return make(matchup.game, **matchup.game_kwargs)


def observation_text(obs: Any) -> str:
    """The text of an observation from any AEC text game: a string, or a dict
    holding one under ``text`` or ``observation``."""
    if isinstance(obs, str):
        return obs
    if isinstance(obs, dict):
        for key in ("text", "observation"):
            if isinstance(obs.get(key), str):
                return obs[key]
    return str(obs)


def episode_rngs(seed: int, players: Sequence[str], sample: int = 0) -> dict[str, np.random.Generator]:
    """One independent generator per player, derived from the episode seed and sample index."""
    entropy = seed if sample == 0 else [seed, sample]
    children = np.random.SeedSequence(entropy).spawn(len(players))
    return {p: np.random.default_rng(s) for p, s in zip(players, children)}


async def play_episode(
    matchup: Matchup,
    policies: Mapping[str, Policy],
    *,
    env_factory: EnvFactory = default_env_factory,
    episode_id: str | None = None,
    max_steps: int = 10_000,
) -> Episode:
    """Play one episode. ``policies`` maps policy ids (the values of ``matchup.seats``) to policies."""
    missing = {pid for pid in matchup.seats.values() if pid not in policies}
    if missing:
        raise KeyError(f"no policy loaded for policy id(s) {sorted(missing)} in matchup {matchup.seats}")
    env = env_factory(matchup)
    env.reset(seed=matchup.seed)
    players = list(env.possible_agents)
    unseated = [p for p in players if p not in matchup.seats]
    if unseated:
        raise KeyError(f"matchup for {matchup.game} seats no policy for player(s) {unseated}")
    rngs = episode_rngs(matchup.seed, players, matchup.sample)
    game = env.unwrapped if isinstance(env.unwrapped, TextGame) else None
    history: dict[str, list[tuple[str, str]]] = {p: [] for p in players}
    totals = {p: 0.0 for p in players}
    turns: list[Turn] = []
    truncated = False
    forfeit: str | None = None
    steps = 0
    for player in env.agent_iter():
        obs, _, terminated, trunc, _ = env.last()
        if terminated or trunc:
            env.step(None)
            _collect(env, totals)
            continue
        if steps >= max_steps:
            truncated = True
            break
        steps += 1
        text = observation_text(obs)
        policy = policies[matchup.seats[player]]
        view = PlayerView(
            game=matchup.game,
            player=player,
            observation=text,
            history=list(history[player]),
            rng=rngs[player],
            turn=len(turns),
            sample_moves=game.sample_moves(player) if game is not None else [],
        )
        start = time.time_ns()
        action = await policy.act(view)
        end = time.time_ns()
        env.step(action.text)
        info = env.infos.get(player, {})
        if info.get("forfeit"):
            forfeit = player
        reward = float(env.rewards.get(player, 0.0))
        _collect(env, totals)
        history[player].append((text, action.text))
        turns.append(
            Turn(
                index=len(turns),
                player=player,
                policy_id=policy.policy_id,
                policy_version=int(getattr(policy, "version", 0)),
                observation=action.observation if action.observation is not None else text,
                action=action.text,
                prompt_ids=action.prompt_ids,
                completion_ids=action.completion_ids,
                logprobs=action.logprobs,
                illegal_reason=info.get("illegal_move"),
                reward=reward,
                tool_calls=[ToolCall.model_validate(c) for c in info.get("tool_calls", [])],
                start_ns=start,
                end_ns=end,
            )
        )
    if game is not None:
        await game.after_play(matchup, {p: policies[matchup.seats[p]] for p in players})
        returns = game.final_returns()
        group = game.group_return()
        components = game.final_components()
        metrics = game.final_metrics()
        outcome = game.outcome_label()
    else:
        returns = totals
        group = float(sum(totals.values()) / max(len(totals), 1))
        components, metrics, outcome = {}, {}, None
    env.close()
    return Episode(
        episode_id=episode_id or f"{matchup.game}-{matchup.seed}",
        matchup=matchup,
        turns=turns,
        returns={p: float(r) for p, r in returns.items()},
        group_return=float(group),
        reward_components={k: float(v) for k, v in components.items()},
        metrics={k: float(v) for k, v in metrics.items() if v is not None and not _is_nan(v)},
        truncated=truncated,
        outcome=outcome,
        forfeit=forfeit,
    )


def _collect(env: AECEnv, totals: dict[str, float]) -> None:
    for p, r in env.rewards.items():
        totals[p] = totals.get(p, 0.0) + float(r)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


async def play_many(
    matchups: Sequence[Matchup],
    policies: Mapping[str, Policy] | Callable[[Matchup], Mapping[str, Policy]],
    *,
    concurrency: int = 64,
    env_factory: EnvFactory = default_env_factory,
    episode_ids: Sequence[str] | None = None,
    on_episode: Callable[[Episode], None] | None = None,
    max_steps: int = 10_000,
) -> list[Episode]:
    """Play every matchup, at most ``concurrency`` at a time; results keep the input order.

    ``policies`` maps policy ids to policies, or is a function giving that
    mapping for a matchup (policy ids such as ``scripted/random`` name
    different bots in different games).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    sem = asyncio.Semaphore(concurrency)
    ids = list(episode_ids) if episode_ids is not None else [f"ep{i:06d}" for i in range(len(matchups))]

    async def one(i: int) -> Episode:
        async with sem:
            pool = policies(matchups[i]) if callable(policies) else policies
            ep = await play_episode(matchups[i], pool, env_factory=env_factory, episode_id=ids[i], max_steps=max_steps)
        if on_episode is not None:
            on_episode(ep)
        return ep

    return list(await asyncio.gather(*(one(i) for i in range(len(matchups)))))
