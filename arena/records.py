"""What an episode leaves behind: its matchup, its turns and its outcome.

Records are plain pydantic models with a JSON round trip
(``Episode.model_validate_json(ep.model_dump_json()) == ep``). Token ids and
sampler logprobs are stored exactly as sampled: they are what a learner trains
on, never a re-tokenisation of the text.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Matchup(_Record):
    """Who plays what, decided before play: game id, seed, and player -> policy id.

    ``seed`` fixes the game (its deal, private values, turn order); ``sample``
    tells apart episodes of one group, which share the seed and differ only
    in the players' own randomness (model sampling, bot noise).
    """

    game: str
    seed: int
    seats: dict[str, str]
    game_kwargs: dict = Field(default_factory=dict)
    sample: int = 0


class ToolCall(_Record):
    """A tool the game ran for a player's move (a search, a lookup): its name, input and result."""

    name: str
    input: dict = Field(default_factory=dict)
    output: Any = None


class Turn(_Record):
    """One decision by one player."""

    index: int
    player: str
    policy_id: str
    policy_version: int = 0
    observation: str
    action: str
    prompt_ids: list[int] = Field(default_factory=list)
    completion_ids: list[int] = Field(default_factory=list)
    logprobs: list[float] = Field(default_factory=list)
    illegal_reason: str | None = None
    reward: float = 0.0
    #: tools the game ran for this move, in order (their results are what the player reads next)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0

    @property
    def illegal(self) -> bool:
        return self.illegal_reason is not None


class Episode(_Record):
    """One finished game."""

    episode_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    matchup: Matchup
    turns: list[Turn] = Field(default_factory=list)
    returns: dict[str, float] = Field(default_factory=dict)
    group_return: float = 0.0
    reward_components: dict[str, float] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    truncated: bool = False
    #: how the game ended in its own words (``deal``, ``walk``, ``crew win``, ...), where it says
    outcome: str | None = None
    #: the player who forfeited (one illegal move too many), if one did
    forfeit: str | None = None

    @property
    def length(self) -> int:
        return len(self.turns)

    @property
    def illegal_moves(self) -> int:
        return sum(t.illegal for t in self.turns)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> Episode:
        return cls.model_validate_json(text)
