"""The base class for turn-based text games.

A game author writes only the rules; :class:`TextGame` turns them into a
PettingZoo ``AECEnv`` and owns every piece of AEC bookkeeping: per-step
rewards (derived from the rules' cumulative returns, OpenSpiel style),
cumulative rewards, terminations, truncations, dead steps and the
illegal-move rule.

The rules an author implements::

    players                      the seats, in a fixed order (class attribute)
    setup(rng)                   start a fresh game; all randomness from ``rng``
    to_move()                    the player whose turn it is
    observe_text(player)         what ``player`` sees now, as text
    apply(player, action)        change the state, or raise IllegalMove(reason)
    is_over()                    whether the game has ended
    returns()                    cumulative returns so far, one per player

and optionally ``reward_components()``, ``group_return()``, ``metrics()``,
``outcome_label()`` (how the game ended, in a word or two: ``deal``, ``crew win``),
``sample_moves(player)`` and ``private_info()`` (for random play and the
conformance checker), ``forfeit(player, reason)``, ``discussions()`` and
``after_play(matchup, seated)`` (a last look at the seated policies before the
outcome is read).

Belief probes (the listening and speaking signals of :mod:`arena.belief`), for a
game with a hidden target that players talk about: the game returns its
discussions as text from ``discussions()`` (what each listener saw before and
after each message, the answer for each candidate, the truth). With the
``belief_scoring`` switch that every game's config has, the base class's
``after_play`` reads the seated models' beliefs over them and the outcome
carries, for every game alike: ``listening/<player>`` and ``speaking/<player>``
reward components, ``listening_weight * listening + speaking_weight *
speaking`` added to each player's return, and the belief metrics
(``belief_accuracy``, ``belief_truth``, ``listening_points``; a game may name
them in its own words with ``belief_metric_names``).

A move that runs a tool (a search) can say so with ``record_tool_call(player,
name, input, output)`` inside ``apply``: the turn records it, and the episode's
trace shows it as a tool span whose output is the tool's result.

The illegal-move rule (shared, configurable per game): an action the rules
reject is recorded with its reason in ``infos[player]["illegal_move"]``; the
player is asked again, with the reason appended to its observation, up to
``max_illegal_retries`` times in a row; one more illegal move forfeits the
game for that player (``forfeit``), which by default ends the game and adds
``forfeit_penalty`` to the offender's return. Nothing raises out of ``step``
because of what an action says.
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv
from pydantic import BaseModel, ConfigDict, Field

from arena.belief import BeliefScores, Discussion, score_discussions_async


class IllegalMove(Exception):
    """Raised by :meth:`TextGame.apply` when an action breaks the rules.

    The message is the reason, shown to the player on its next observation and
    recorded on the turn.
    """


class FreeText(spaces.Text):
    """A text space that admits any string up to ``max_length`` characters.

    Language-model output can hold any character, so membership is not limited
    to a charset; ``sample()`` draws printable ASCII, which is enough to probe a
    game's parser with arbitrary input.
    """

    def __init__(self, max_length: int = 100_000, seed: int | None = None):
        super().__init__(max_length=max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText({self.max_length})"


class GameConfig(BaseModel):
    """Settings every game shares. Each game subclasses this with its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_illegal_retries: int = Field(2, ge=0, description="re-prompts after an illegal move before the player forfeits")
    forfeit_penalty: float = Field(-1.0, description="added to a forfeiting player's return")
    belief_scoring: bool = Field(False, description="after play, read the seated models' beliefs over the game's discussions (arena.belief)")
    listening_weight: float = Field(0.0, description="return per unit of a player's listening signal (with belief_scoring)")
    speaking_weight: float = Field(0.0, description="return per unit of a player's speaking signal (with belief_scoring)")


class TextGame(AECEnv):
    """A PettingZoo AEC environment built from pure rules. See the module docstring."""

    players: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[GameConfig]] = GameConfig
    metadata: ClassVar[dict[str, Any]] = {"name": "text_game", "render_modes": ["human", "ansi"], "is_parallelizable": False}
    #: one-line description shown by ``arena games``
    description: ClassVar[str] = ""
    #: the belief metrics in the game's own words: generic name -> the game's name
    #: (e.g. ``{"belief_accuracy": "suspicion_accuracy"}``); see :meth:`arena.belief.BeliefScores.metrics`
    belief_metric_names: ClassVar[Mapping[str, str]] = {}

    # ----- rules: the author implements these -------------------------------------------------
    def setup(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def to_move(self) -> str:
        raise NotImplementedError

    def observe_text(self, player: str) -> str:
        raise NotImplementedError

    def apply(self, player: str, action: str) -> None:
        raise NotImplementedError

    def is_over(self) -> bool:
        raise NotImplementedError

    def returns(self) -> dict[str, float]:
        raise NotImplementedError

    # ----- optional rules ---------------------------------------------------------------------
    def reward_components(self) -> dict[str, float]:
        """Named parts of the returns (e.g. ``{"f1": .8, "search_cost": -.1}``)."""
        return {}

    def group_return(self) -> float:
        """The group's return; by default the mean of the players' returns."""
        total = self._total_returns()
        return float(sum(total.values()) / max(len(total), 1))

    def metrics(self) -> dict[str, float]:
        """Episode-level metrics the game defines (deal made, cooperation rate, ...)."""
        return {}

    def outcome_label(self) -> str | None:
        """How the game ended, in a word or two (``deal``, ``walk``, ``crew win``): episodes record it,
        and traces are tagged with it (``arena.outcome``). None: the game names no outcome."""
        return None

    def record_tool_call(self, player: str, name: str, inputs: dict[str, Any], output: Any) -> None:
        """Call from ``apply`` when a move runs a tool: the turn records it (:class:`arena.records.ToolCall`)."""
        self.infos.setdefault(player, {}).setdefault("tool_calls", []).append({"name": name, "input": dict(inputs), "output": output})

    def sample_moves(self, player: str) -> list[str]:
        """A few legal moves for ``player`` now, as text: random play and the
        conformance checker draw from them (free text stays allowed)."""
        return []

    def private_info(self) -> dict[str, list[str]]:
        """Text fragments private to each player: no other player's observation may contain them."""
        return {}

    def forfeit(self, player: str, reason: str) -> None:
        """What happens after too many illegal moves in a row: by default the game ends."""
        self._forfeited = player

    def discussions(self) -> Sequence[Discussion]:
        """The game's discussions of a hidden target, as text, for the belief probes (see the module
        docstring and :class:`arena.belief.Discussion`). None by default."""
        return []

    async def after_play(self, matchup: Any, seated: Mapping[str, Any]) -> None:
        """Runs once when play has ended, before the runtime reads the outcome: ``matchup`` is the
        episode's :class:`~arena.records.Matchup`, ``seated`` maps each player to its policy. A game
        whose rewards need the seated policies themselves (e.g. a model's probability of an answer,
        read through its engine) computes them here; the game itself stays free of tokenizers.

        By default, with ``belief_scoring``: the seated models' beliefs over :meth:`discussions`
        (:attr:`belief`). A game that overrides this and keeps belief scoring calls ``super()``."""
        if self.config.belief_scoring:
            self.belief = await score_discussions_async(matchup.game, self.discussions(), seated)

    def belief_signals(self, player: str) -> dict[str, float]:
        """``player``'s ``listening`` and ``speaking`` signals after play (each only where read)."""
        if self.belief is None:
            return {}
        out = {}
        if player in self.belief.listening:
            out["listening"] = self.belief.listening[player]
        if player in self.belief.speaking:
            out["speaking"] = self.belief.speaking[player]
        return out

    # ----- PettingZoo bookkeeping -------------------------------------------------------------
    def __init__(self, config: GameConfig | None = None, render_mode: str | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = self.Config(**kwargs)
        elif kwargs:
            config = type(config).model_validate({**config.model_dump(), **kwargs})
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} expects a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config
        if config.belief_scoring and type(self).discussions is TextGame.discussions:
            raise ValueError(f"belief_scoring: {type(self).__name__} has no discussions() to read beliefs over")
        self.render_mode = render_mode
        self.possible_agents = list(self.players)
        text = FreeText()
        self.observation_spaces = {p: spaces.Dict({"text": text}) for p in self.possible_agents}
        self.action_spaces = {p: FreeText() for p in self.possible_agents}
        self._forfeited: str | None = None
        #: the belief probes' scores after play (with ``belief_scoring``), else None
        self.belief: BeliefScores | None = None

    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.np_random = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.rewards = {p: 0.0 for p in self.agents}
        self._cumulative_rewards = {p: 0.0 for p in self.agents}
        self.terminations = {p: False for p in self.agents}
        self.truncations = {p: False for p in self.agents}
        self.infos = {p: {} for p in self.agents}
        self._illegal_streak = {p: 0 for p in self.agents}
        self._illegal_reason: dict[str, str | None] = {p: None for p in self.agents}
        self._forfeited = None
        self.belief = None
        self._skip_agent_selection = None
        self.num_moves = 0
        self.setup(self.np_random)
        self._returns_paid = self._total_returns()
        self.agent_selection = self.to_move()

    def observe(self, agent: str) -> dict[str, str]:
        text = self.observe_text(agent)
        reason = self._illegal_reason.get(agent)
        if reason:
            text += f"\nYour last move was illegal: {reason}. Try again."
        return {"text": text}

    def step(self, action: Any) -> None:
        player = self.agent_selection
        if self.terminations[player] or self.truncations[player]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[player] = 0.0
        self.infos = {p: {} for p in self.agents}
        reason = self._apply_checked(player, action)
        self.num_moves += 1
        if reason is None:
            self._illegal_streak[player] = 0
            self._illegal_reason[player] = None
        else:
            self.infos[player]["illegal_move"] = reason
            self._illegal_streak[player] += 1
            self._illegal_reason[player] = reason
            if self._illegal_streak[player] > self.config.max_illegal_retries:
                self.infos[player]["forfeit"] = True
                self.forfeit(player, reason)

        total = self._total_returns()
        for p in self.agents:
            self.rewards[p] = total[p] - self._returns_paid[p]
        self._returns_paid = total
        self._accumulate_rewards()

        if self._forfeited is not None or self.is_over():
            for p in self.agents:
                self.terminations[p] = True
            self._deads_step_first()
        else:
            self.agent_selection = self.to_move()

    def _apply_checked(self, player: str, action: Any) -> str | None:
        if not isinstance(action, str):
            return f"an action must be text, got {type(action).__name__}"
        try:
            self.apply(player, action)
        except IllegalMove as e:
            return str(e) or "illegal move"
        return None

    def _total_returns(self) -> dict[str, float]:
        total = {p: float(r) for p, r in self.returns().items()}
        if self.belief is not None:
            weights = {"listening": self.config.listening_weight, "speaking": self.config.speaking_weight}
            for p in total:
                for signal, value in self.belief_signals(p).items():
                    total[p] += weights[signal] * value
        if self._forfeited is not None:
            total[self._forfeited] += self.config.forfeit_penalty
        return total

    # ----- reading the outcome (the runtime uses these) --------------------------------------
    def final_returns(self) -> dict[str, float]:
        return self._total_returns()

    def final_components(self) -> dict[str, float]:
        parts = dict(self.reward_components())
        for p in self.possible_agents:
            for signal, value in self.belief_signals(p).items():
                parts[f"{signal}/{p}"] = value
        parts["forfeit_penalty"] = self.config.forfeit_penalty if self._forfeited is not None else 0.0
        return parts

    def final_metrics(self) -> dict[str, float]:
        out = dict(self.metrics())
        if self.belief is not None:
            out.update({self.belief_metric_names.get(k, k): v for k, v in self.belief.metrics().items()})
        out["forfeited"] = float(self._forfeited is not None)
        return out

    def render(self) -> str | None:
        text = "\n\n".join(f"[{p}]\n{self.observe_text(p)}" for p in self.possible_agents)
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        pass


def clean_text(text: str, max_chars: int) -> str:
    """A player's free text as another player sees it: one line, control and separator characters
    as plain spaces, square brackets as parentheses and double quotes as single ones (both are
    reserved for the game's own lines, such as ``[private]``, so a message can never forge one),
    at most ``max_chars`` characters."""
    text = text[: 4 * max_chars + 16]  # bounded work on huge messages
    out = []
    for ch in text:
        if ch in "[]":
            ch = "(" if ch == "[" else ")"
        elif ch == '"':
            ch = "'"
        elif unicodedata.category(ch)[0] in "CZ":
            ch = " "
        out.append(ch)
    text = " ".join("".join(out).split())
    if len(text) > max_chars:
        text = text[: max(max_chars - 3, 0)].rstrip() + "..." if max_chars >= 8 else text[:max_chars]
    return text
