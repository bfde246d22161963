"""Ratings of policies from the episodes they play: OpenSkill's Plackett–Luce model.

OpenSkill (Joshi, 2024; Weng & Lin, 2011) rates teams of any size and games of
more than two sides, and is maintained; TrueSkill would do for two-sided games.
Each episode is one match: the game's teams (a registration's ``teams`` hook;
by default every player alone) ranked by their mean return, equal returns a
draw. Who is rated is the policy *version* that sat in a seat
(:func:`rating_key`): ``main@3``, ``main/seller@5``, ``scripted/tit_for_tat``.
An episode with a single team, or one where the same policy version sits on two
sides (a mirror match tells nothing), changes no rating.

A rating is ``mu`` (skill) and ``sigma`` (uncertainty); ``ordinal`` =
``mu - 3 sigma`` is the conservative value tables sort by.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from arena.records import Episode


def rating_key(policy_id: str, version: int = 0) -> str:
    """The rated identity of a seat: a model policy with its weight version, anything else by its id."""
    from arena.config import is_model_policy

    if "@" in policy_id or not is_model_policy(policy_id):
        return policy_id
    return f"{policy_id}@{version}"


def seat_keys(ep: Episode) -> dict[str, str]:
    """Player -> rating key of the policy version that played there (its last turn says which)."""
    out = {}
    for player, pid in ep.matchup.seats.items():
        last = next((t for t in reversed(ep.turns) if t.player == player), None)
        out[player] = rating_key(last.policy_id, last.policy_version) if last is not None else rating_key(pid)
    return out


def default_teams(ep: Episode) -> list[list[str]]:
    """Every player is a side of its own."""
    return [[p] for p in ep.matchup.seats]


def episode_teams(ep: Episode) -> list[list[str]]:
    """The sides of an episode, from its game's registration (``teams=``), else one per player."""
    from arena.registry import registered_games

    spec = registered_games().get(ep.matchup.game)
    hook = getattr(spec, "teams", None) if spec is not None else None
    return hook(ep) if hook is not None else default_teams(ep)


@dataclass(frozen=True)
class Rating:
    mu: float
    sigma: float
    games: int = 0

    @property
    def ordinal(self) -> float:
        return self.mu - 3 * self.sigma

    def as_dict(self) -> dict[str, float]:
        return {"mu": self.mu, "sigma": self.sigma, "ordinal": self.ordinal, "games": self.games}


class Ratings:
    """Ratings by key, updated one episode at a time, in order (the result depends on the order)."""

    def __init__(self, state: dict[str, Any] | None = None):
        from openskill.models import PlackettLuce

        self._model = PlackettLuce()
        self.table: dict[str, Rating] = {}
        self.episodes = 0
        if state:
            self.load_state_dict(state)

    def get(self, key: str) -> Rating:
        return self.table.get(key) or Rating(self._model.mu, self._model.sigma)

    def update(self, ep: Episode, teams: list[list[str]] | None = None) -> bool:
        """Rate one episode; returns whether it counted (two or more sides, no mirror)."""
        teams = [t for t in (teams if teams is not None else episode_teams(ep)) if t]
        if len(teams) < 2:
            return False
        keys = seat_keys(ep)
        sides = [[keys[p] for p in team] for team in teams]
        owners: dict[str, int] = {}
        for i, side in enumerate(sides):
            for k in side:
                if owners.setdefault(k, i) != i:
                    return False  # one policy version on two sides
        scores = [sum(ep.returns[p] for p in team) / len(team) for team in teams]
        current = [[self._model.create_rating([self.get(k).mu, self.get(k).sigma], name=k) for k in side] for side in sides]
        rated = self._model.rate(current, scores=scores)
        for side, new in zip(sides, rated):
            for k, r in zip(side, new):
                self.table[k] = Rating(float(r.mu), float(r.sigma), self.get(k).games + 1)
        self.episodes += 1
        return True

    def update_all(self, episodes: Iterable[Episode]) -> int:
        return sum(self.update(ep) for ep in episodes)

    def ranked(self) -> list[tuple[str, Rating]]:
        """Best first, by ordinal (ties by key)."""
        return sorted(self.table.items(), key=lambda kv: (-kv[1].ordinal, kv[0]))

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes, "table": {k: [r.mu, r.sigma, r.games] for k, r in sorted(self.table.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes = int(state.get("episodes", 0))
        self.table = {k: Rating(float(mu), float(sigma), int(games)) for k, (mu, sigma, games) in state.get("table", {}).items()}
