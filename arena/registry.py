"""The one registry: game ids -> game factories (Gymnasium's ``EnvSpec`` / ``make``)."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from pettingzoo import AECEnv

_ID = re.compile(r"^[a-z][a-z0-9_]*-v\d+$")


@dataclass(frozen=True)
class GameSpec:
    """How to build one registered game."""

    id: str
    entry_point: Callable[..., AECEnv] | str
    description: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., AECEnv]:
        if callable(self.entry_point):
            return self.entry_point
        module, _, attr = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attr)

    def make(self, **kwargs: Any) -> AECEnv:
        return self.load()(**{**self.kwargs, **kwargs})


_REGISTRY: dict[str, GameSpec] = {}


def register(
    id: str,
    entry_point: Callable[..., AECEnv] | str,
    description: str = "",
    kwargs: dict[str, Any] | None = None,
    *,
    override: bool = False,
) -> GameSpec:
    """Register a game under a versioned id such as ``negotiation-v0``.

    ``entry_point`` is a class or factory returning a PettingZoo ``AECEnv`` (an
    Arena :class:`~arena.game.TextGame` or any other AEC environment with text
    observations), or a ``"module:attr"`` string imported on first use.
    """
    if not _ID.match(id):
        raise ValueError(f"game id {id!r} must look like 'name-v0' (lower case, a version suffix)")
    if id in _REGISTRY and not override:
        raise ValueError(f"game id {id!r} is already registered; pass override=True to replace it")
    spec = GameSpec(id=id, entry_point=entry_point, description=description, kwargs=dict(kwargs or {}))
    _REGISTRY[id] = spec
    return spec


def spec(id: str) -> GameSpec:
    _load_builtin_games()
    try:
        return _REGISTRY[id]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown game id {id!r}; registered games: {known}") from None


def make(id: str, **kwargs: Any) -> AECEnv:
    """Build a registered game: ``arena.make("negotiation-v0", max_rounds=6)``."""
    return spec(id).make(**kwargs)


def registered_games() -> dict[str, GameSpec]:
    _load_builtin_games()
    return dict(sorted(_REGISTRY.items()))


def _load_builtin_games() -> None:
    # Importing the package registers the games Arena ships.
    importlib.import_module("arena.environments")
