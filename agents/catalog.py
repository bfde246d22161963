"""Turning policy ids into fixed policies: ``random``, ``scripted/<bot>``, or ``module:Class``.

The trained/LLM policies (``main`` and its snapshots) are built by the run
itself; this module covers everything that has no weights.
"""

from __future__ import annotations

import importlib

from arena.agents.base import Policy
from arena.agents.random_agent import RandomPolicy

#: game name (id without version) -> module holding that game's ``BOTS`` table
BOT_MODULES = {
    "repeated_matrix": "arena.agents.repeated_matrix",
    "negotiation": "arena.agents.negotiation",
    "collab_qa": "arena.agents.collab_qa",
    "social_deduction": "arena.agents.social_deduction",
    "debate": "arena.agents.debate",
}


def game_name(game_id: str) -> str:
    return game_id.rsplit("-v", 1)[0]


def scripted_bots(game_id: str) -> dict[str, type]:
    module = BOT_MODULES.get(game_name(game_id))
    if module is None:
        return {}
    return dict(importlib.import_module(module).BOTS)


def scripted_critics(game_id: str) -> dict[str, type]:
    """The game's scripted critics (its bots module's ``CRITICS`` table) for the feedback loop."""
    module = BOT_MODULES.get(game_name(game_id))
    return dict(getattr(importlib.import_module(module), "CRITICS", {})) if module else {}


def critic_ids(game_id: str) -> list[str]:
    return [f"scripted/{name}" for name in scripted_critics(game_id)]


def make_critic(policy_id: str, game_id: str) -> Policy:
    """A scripted critic by id (``scripted/<name>``) or an importable ``module:Class``."""
    if policy_id.startswith("scripted/"):
        critics = scripted_critics(game_id)
        name = policy_id.split("/", 1)[1]
        if name not in critics:
            raise ValueError(f"no scripted critic {name!r} for {game_id}; choices: {sorted(critics) or 'none'}")
        policy = critics[name]()
        policy.policy_id = policy_id
        return policy
    return make_fixed_policy(policy_id, game_id)


def fixed_policy_ids(game_id: str) -> list[str]:
    return ["random"] + [f"scripted/{name}" for name in scripted_bots(game_id)]


def make_fixed_policy(policy_id: str, game_id: str) -> Policy:
    """Build a policy without weights from its id, or raise ValueError naming the choices."""
    if policy_id == "random":
        return RandomPolicy()
    if policy_id.startswith("scripted/"):
        bots = scripted_bots(game_id)
        name = policy_id.split("/", 1)[1]
        if name not in bots:
            raise ValueError(f"no scripted bot {name!r} for {game_id}; choices: {sorted(bots) or 'none'}")
        policy = bots[name]()
        policy.policy_id = policy_id
        return policy
    if ":" in policy_id:
        module, _, attr = policy_id.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)()
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import policy {policy_id!r}: {e}") from e
    raise ValueError(f"unknown policy id {policy_id!r}: use 'random', 'scripted/<bot>' or 'module:Class'")
