"""A league: pools of opponents for ``league`` seats, matchmaking, snapshots, and ratings of every policy.

What a run's league holds (all of it checkpointed, so a resumed run goes on exactly as an
uninterrupted one):

- **pools**: per trained policy, its past weights by version (round 0's always, then one every
  ``league.snapshot_every`` rounds, at most ``league.max_snapshots``), served as ``<policy>@<version>``
  (``main@4``, ``main/buyer@6``); plus ``league.bots`` and other runs' ``league.checkpoints``;
- **results**: per (learner, opponent) the learner's wins, draws and losses in training, which
  prioritized fictitious self-play (PFSP; Vinyals et al. 2019) turns into opponent weights
  ``(1 - p_win)^pfsp_power``: the opponents that beat the learner most are drawn most;
- **ratings** (:class:`arena.ratings.Ratings`): every evaluated and trained episode, ranked by
  return, updates the ratings of the policy versions that played it; kept for every run, league or not.

A ``league`` seat's pool is every trained policy that sits in that player's place in the same game
(its snapshots), the bots and the checkpoints. In training, each group (the episodes that share a
seed) draws one opponent from the pool with a generator of (run seed, round, group seed); in
evaluation the seat is played by the round-0 snapshot, so "after" measures the trained policy
against its starting self.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arena.config import LEAGUE, LeagueConfig, RunConfig, is_model_policy
from arena.ratings import Ratings, seat_keys
from arena.records import Episode, Matchup
from arena.runtime import engine_weights
from arena.seeds import TRAIN

POOL_FILE = "league_pool.pt"


def split_key(key: str) -> tuple[str, int | None]:
    """``main@4`` -> ("main", 4); a bot or checkpoint -> (key, None)."""
    pid, sep, version = key.rpartition("@")
    if sep and is_model_policy(pid) and version.isdigit():
        return pid, int(version)
    return key, None


class League:
    """The league of one run; see the module docstring."""

    def __init__(self, cfg: RunConfig, learners: dict[str, Any] | None = None):
        self.cfg = cfg
        self.config: LeagueConfig | None = cfg.league
        self.ratings = Ratings()
        #: trained policy -> version -> weights
        self.pools: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
        #: learner policy -> opponent key -> [wins, draws, losses]
        self.results: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
        #: (step, key, mu, sigma) after each round's ratings, for the rating curve
        self.history: list[tuple[int, str, float, float]] = []
        self._agents: dict[str, Any] = {}
        self._make_agent: Callable[[str], Any] | None = None
        if self.config is not None:
            for pid, learner in (learners or {}).items():
                self.pools[pid] = {learner.version: _clone(engine_weights(learner))}

    @property
    def active(self) -> bool:
        return self.config is not None and any(pid == LEAGUE for g in self.cfg.games for s in g.matchups for pid in s.values())

    # ----- the pool of a seat ------------------------------------------------------------------
    def trained_in_seat(self, game_index: int, player: str) -> list[str]:
        """The trained policies that sit as ``player`` in this game entry's other matchups."""
        g = self.cfg.games[game_index]
        return sorted({s[player] for s in g.matchups if is_model_policy(s[player]) and s[player] in self.pools})

    def pool(self, game_index: int, player: str) -> list[str]:
        """Opponent keys for a league seat: snapshots (oldest first), then bots, then checkpoints."""
        keys = [f"{pid}@{v}" for pid in self.trained_in_seat(game_index, player) for v in sorted(self.pools[pid])]
        return keys + self.config.bots_for(player) + list(self.config.checkpoints)

    def weights(self, learners: list[str], pool: list[str]) -> np.ndarray:
        """Matchmaking weights over ``pool`` for a group whose trained seats are ``learners``."""
        c = self.config
        if c.matchmaking == "uniform":
            w = np.ones(len(pool))
        elif c.matchmaking == "latest":
            versions = [split_key(k)[1] for k in pool]
            newest = max((v for v in versions if v is not None), default=None)
            w = np.array([1.0 if (v == newest if newest is not None else True) else 0.0 for v in versions])
        else:  # pfsp
            w = np.array([(1.0 - self.win_rate(learners, k)) ** c.pfsp_power for k in pool])
            if w.sum() <= 0:
                w = np.ones(len(pool))
        return w / w.sum()

    def win_rate(self, learners: list[str], opponent: str) -> float:
        """The learners' rate of beating ``opponent`` in training (draws half), with one prior win and loss."""
        wins = draws = games = 0
        for pid in learners:
            w, d, loss = self.results.get(pid, {}).get(opponent, (0, 0, 0))
            wins, draws, games = wins + w, draws + d, games + w + d + loss
        return (wins + 0.5 * draws + 1.0) / (games + 2.0)

    # ----- seating -----------------------------------------------------------------------------
    def seat_training(self, matchups: list[Matchup], round_index: int) -> list[Matchup]:
        """Fill each group's league seats by matchmaking (one draw per group and seat)."""

        def draw(m: Matchup, k: int, pool: list[str]) -> str:
            learners = sorted({pid for pid in m.seats.values() if is_model_policy(pid)})
            rng = np.random.default_rng([self.cfg.seed, TRAIN, round_index, m.seed, k, 0x1EA6])
            return pool[int(rng.choice(len(pool), p=self.weights(learners, pool)))]

        return self._fill(matchups, draw)

    def seat_evaluation(self, matchups: list[Matchup]) -> list[Matchup]:
        """League seats in evaluation: the round-0 snapshot of the seat's trained policy (else the first bot or checkpoint)."""
        return self._fill(matchups, lambda m, k, pool: pool[0])

    def _fill(self, matchups: list[Matchup], choose: Callable[[Matchup, int, list[str]], str]) -> list[Matchup]:
        """Each matchup with its league seats filled by ``choose(matchup, seat index, pool)`` (seats in name order)."""
        if not self.active:
            return matchups
        index = {g.id: [i for i, e in enumerate(self.cfg.games) if e.id == g.id] for g in self.cfg.games}
        out = []
        for m in matchups:
            if LEAGUE not in m.seats.values():
                out.append(m)
                continue
            gi = self._entry(m, index)
            seats = dict(m.seats)
            for k, (player, pid) in enumerate(sorted(m.seats.items())):
                if pid == LEAGUE:
                    seats[player] = choose(m, k, self.pool(gi, player))
            out.append(m.model_copy(update={"seats": seats}))
        return out

    def _entry(self, m: Matchup, index: dict[str, list[int]]) -> int:
        candidates = index[m.game]
        if len(candidates) == 1:
            return candidates[0]
        for gi in candidates:  # one game listed twice: the entry whose kwargs these are
            if dict(self.cfg.games[gi].kwargs) == dict(m.game_kwargs):
                return gi
        return candidates[0]

    def policies(self, matchups: list[Matchup], make_agent: Callable[[str, str | None], Any], make_bot: Callable[[str, str], Any]) -> dict[str, dict[str, Any]]:
        """The league opponents these matchups seat, per game id: snapshot agents with their weights loaded,
        bots, checkpoints. (A ``snapshot`` seat's ``main@<v>`` is not the league's: its engine is the run's.)"""
        out: dict[str, dict[str, Any]] = defaultdict(dict)
        if not self.active:
            return out
        for m in matchups:
            for key in m.seats.values():
                pid, version = split_key(key)
                if version is not None and version in self.pools.get(pid, {}):
                    out[m.game][key] = self._snapshot_agent(key, pid, version, make_agent)
                elif self.config is not None and key in self.config.checkpoints:
                    if key not in self._agents:
                        self._agents[key] = make_agent(key, key)
                    out[m.game][key] = self._agents[key]
                elif self.config is not None and any(key in self.config.bots_for(p) for p in m.seats):
                    out[m.game][key] = make_bot(key, m.game)
        return out

    def _snapshot_agent(self, key: str, pid: str, version: int, make_agent: Callable[[str, str | None], Any]) -> Any:
        """One engine per snapshot in the pool (a snapshot's weights never change), made on first use; with
        ``model.adapter: lora``, one adapter of the run's engine."""
        agent = self._agents.get(key)
        if agent is None:
            agent = self._agents[key] = make_agent(key, None)
            agent.engine.update_weights(self.pools[pid][version], version)
        return agent

    # ----- after a round -----------------------------------------------------------------------
    def record(self, episodes: list[Episode]) -> None:
        """Training results for PFSP: each trained seat against each league opponent in its episode."""
        for ep in episodes:
            keys = seat_keys(ep)
            learners = [p for p, pid in ep.matchup.seats.items() if is_model_policy(pid)]
            opponents = [p for p in ep.matchup.seats if p not in learners]
            for lp in learners:
                for op in opponents:
                    a, b = ep.returns[lp], ep.returns[op]
                    self.results[ep.matchup.seats[lp]][keys[op]][0 if a > b else 1 if a == b else 2] += 1

    def snapshot(self, round_done: int, learners: dict[str, Any]) -> None:
        """Every ``snapshot_every`` rounds, each trained policy's weights join its pool (oldest dropped past the cap)."""
        if self.config is None or round_done % self.config.snapshot_every:
            return
        for pid, learner in learners.items():
            pool = self.pools.setdefault(pid, {})
            pool[learner.version] = _clone(engine_weights(learner))
            while len(pool) > self.config.max_snapshots:
                del pool[sorted(pool)[1]]  # keep round 0's
            for key in [k for k in self._agents if split_key(k)[0] == pid and split_key(k)[1] not in pool]:
                _release(self._agents.pop(key))

    def rate(self, episodes: list[Episode], step: int) -> dict[str, float]:
        """Update the ratings with these episodes; the metrics of every policy version that played."""
        from arena.reporting import metric_name

        self.ratings.update_all(episodes)
        played = sorted({k for ep in episodes for k in seat_keys(ep).values()} & set(self.ratings.table))
        metrics = {}
        for key in played:
            r = self.ratings.get(key)
            self.history.append((step, key, r.mu, r.sigma))
            for name, value in (("mu", r.mu), ("sigma", r.sigma), ("ordinal", r.ordinal)):
                metrics[metric_name(f"rating/{key}/{name}")] = value
        return metrics

    # ----- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "ratings": self.ratings.state_dict(),
            "results": {pid: {k: list(v) for k, v in sorted(r.items())} for pid, r in sorted(self.results.items())},
            "pool_versions": {pid: sorted(p) for pid, p in sorted(self.pools.items())},
            "history": [list(h) for h in self.history],
        }

    def save(self, directory: Path) -> None:
        if self.pools:
            torch.save(self.pools, directory / POOL_FILE)

    def load(self, state: dict[str, Any], directory: Path) -> None:
        self.ratings.load_state_dict(state.get("ratings", {}))
        self.results.clear()
        for pid, table in state.get("results", {}).items():
            for k, v in table.items():
                self.results[pid][k] = list(v)
        self.history = [tuple(h) for h in state.get("history", [])]
        pool_file = directory / POOL_FILE
        if pool_file.is_file():
            saved = torch.load(pool_file, weights_only=True)
            self.pools = {pid: {int(v): saved[pid][v] for v in versions} for pid, versions in state.get("pool_versions", {}).items()}
        for agent in self._agents.values():
            _release(agent)
        self._agents.clear()

    # ----- reporting ---------------------------------------------------------------------------
    def log_rating_curve(self, title: str) -> None:
        """Each policy's rating over the run (mu, with a ±sigma band): a trained policy's line follows
        its newest version; as an MLflow figure ``rating_curve.png``."""
        if not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import mlflow

        lines: dict[str, dict[int, tuple[int, float, float]]] = defaultdict(dict)
        for step, key, mu, sigma in self.history:
            family, version = split_key(key)
            best = lines[family].get(step)
            if best is None or (version or 0) >= best[0]:
                lines[family][step] = (version or 0, mu, sigma)
        fig, ax = plt.subplots(figsize=(7, 4))
        for family in sorted(lines):
            steps = sorted(lines[family])
            mu = np.array([lines[family][s][1] for s in steps])
            sigma = np.array([lines[family][s][2] for s in steps])
            ax.plot(steps, mu, marker=".", label=family)
            ax.fill_between(steps, mu - sigma, mu + sigma, alpha=0.15)
        ax.set_xlabel("round (evaluation after training at the last)")
        ax.set_ylabel("rating mu (OpenSkill), ±sigma")
        ax.set_title(f"{title}: ratings")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        mlflow.log_figure(fig, "rating_curve.png")
        plt.close(fig)


def _release(agent: Any) -> None:
    """A snapshot agent leaves the pool: an adapter is removed from its engine (a full engine is freed with the agent)."""
    close = getattr(agent.engine, "close", None)
    if close is not None:
        close()


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}
