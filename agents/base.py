"""What a policy is: anything that maps a player's view of a game to an action."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class PlayerView:
    """Everything a policy may use to choose one move.

    ``history`` holds this player's earlier (observation, action) pairs in the
    same episode, oldest first; ``rng`` is the episode's own generator for this
    player, so a policy's randomness is reproducible from the run seed.
    ``sample_moves`` lists a few legal moves when the game offers them.
    """

    game: str
    player: str
    observation: str
    history: list[tuple[str, str]] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    turn: int = 0
    #: a few legal moves, when the game offers them (Arena text games do); free text stays allowed
    sample_moves: list[str] = field(default_factory=list)


@dataclass
class Action:
    """A move as text, plus the tokens and sampler logprobs when a model produced it."""

    text: str
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    #: the text the policy read, when a wrapper showed it more than the game's observation
    #: (e.g. the critic loop's memory); the episode records this instead
    observation: str | None = None


@runtime_checkable
class Policy(Protocol):
    """The policy interface. ``policy_id`` is a name such as ``main`` or
    ``scripted/tit_for_tat``; ``version`` counts weight updates (0 for fixed policies)."""

    policy_id: str
    version: int

    async def act(self, view: PlayerView) -> Action: ...


class ScriptedPolicy:
    """Base for rule-based bots: implement ``choose(view) -> str``."""

    policy_id: str = "scripted/unnamed"
    version: int = 0

    def choose(self, view: PlayerView) -> str:
        raise NotImplementedError

    async def act(self, view: PlayerView) -> Action:
        return Action(text=self.choose(view))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.policy_id}>"
