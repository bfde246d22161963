"""Turning policy ids into fixed policies: ``random``, ``scripted/<bot>``, or ``module:Class``.

A game's bots and critics are the ones its package declares when it registers
(:func:`arena.register`'s ``bots=`` and ``critics=``); they are seated as
``scripted/<name>`` and their turns are recorded under that id. The
trained/LLM policies (``main`` and its snapshots) are built by the run itself;
this module covers everything that has no weights.
"""

from __future__ import annotations

import importlib

from arena.agents.base import Policy
from arena.agents.random_agent import RandomPolicy
from arena.registry import spec


def scripted_bots(game_id: str) -> dict[str, type]:
    """The game's declared bots, name -> class."""
    s = spec(game_id)
    return {name: s.bot_class(name) for name in s.bots}


def scripted_critics(game_id: str) -> dict[str, type]:
    """The game's declared scripted critics (for the critic loop), name -> class."""
    s = spec(game_id)
    return {name: s.critic_class(name) for name in s.critics}


def critic_ids(game_id: str) -> list[str]:
    return [f"scripted/{name}" for name in spec(game_id).critics]


def fixed_policy_ids(game_id: str) -> list[str]:
    return ["random"] + [f"scripted/{name}" for name in spec(game_id).bots]


def _scripted(policy_id: str, table: dict, game_id: str, kind: str) -> Policy:
    name = policy_id.split("/", 1)[1]
    if name not in table:
        raise ValueError(f"no scripted {kind} {name!r} for {game_id}; choices: {sorted(table) or 'none'}")
    policy = table[name]()
    policy.policy_id = policy_id
    return policy


def _imported(policy_id: str) -> Policy:
    module, _, attr = policy_id.partition(":")
    try:
        policy = getattr(importlib.import_module(module), attr)()
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import policy {policy_id!r}: {e}") from e
    policy.policy_id = policy_id  # recorded under the id it was seated as
    return policy


def make_critic(policy_id: str, game_id: str) -> Policy:
    """A scripted critic by id (``scripted/<name>``) or an importable ``module:Class``."""
    if policy_id.startswith("scripted/"):
        return _scripted(policy_id, scripted_critics(game_id), game_id, "critic")
    return make_fixed_policy(policy_id, game_id)


def make_fixed_policy(policy_id: str, game_id: str) -> Policy:
    """Build a policy without weights from its id, or raise ValueError naming the choices."""
    if policy_id == "random":
        return RandomPolicy()
    if policy_id.startswith("scripted/"):
        return _scripted(policy_id, scripted_bots(game_id), game_id, "bot")
    if ":" in policy_id:
        return _imported(policy_id)
    raise ValueError(f"unknown policy id {policy_id!r}: use 'random', 'scripted/<bot>' or 'module:Class'")
