"""The league without a model: config checks, pools, matchmaking (uniform, latest, PFSP) and ratings.

A full league run (snapshots of a trained policy, resume after SIGKILL) is in tests/test_resume.py;
the PFSP-against-uniform learning comparison is benchmarks/league.py."""

from __future__ import annotations

import pytest

from arena.config import ConfigError, RunConfig, load_config
from arena.league import League, split_key
from arena.ratings import Ratings
from arena.records import Episode, Matchup, Turn

NEG = "negotiation-v0"
BUYERS = ["scripted/fair_buyer", "scripted/hard_buyer"]


def _config(matchmaking: str = "pfsp", **league) -> RunConfig:
    return RunConfig.model_validate(
        {
            "games": [{"id": NEG, "matchups": [{"seller": "main", "buyer": "league"}]}],
            "league": {"matchmaking": matchmaking, "bots": {"buyer": BUYERS}, **league},
        }
    )


def _episode(buyer: str, seller_return: float, version: int = 3) -> Episode:
    turns = [
        Turn(index=0, player="seller", policy_id="main", policy_version=version, observation="o", action="a"),
        Turn(index=1, player="buyer", policy_id=buyer, observation="o", action="a"),
    ]
    return Episode(
        matchup=Matchup(game=NEG, seed=0, seats={"seller": "main", "buyer": buyer}), turns=turns, returns={"seller": seller_return, "buyer": -seller_return}
    )


def _draws(league: League, n: int = 400) -> dict[str, int]:
    groups = [Matchup(game=NEG, seed=s, seats={"seller": "main", "buyer": "league"}) for s in range(n)]
    seated = league.seat_training(groups, round_index=2)
    return {b: sum(m.seats["buyer"] == b for m in seated) for b in BUYERS}


def test_pfsp_draws_the_opponents_that_beat_the_learner_most():
    league = League(_config("pfsp"))
    assert league.pool(0, "buyer") == BUYERS  # no trained buyer to snapshot: the bots
    league.record([_episode("scripted/fair_buyer", 0.5)] * 9 + [_episode("scripted/hard_buyer", -0.5)] * 9)
    assert league.win_rate(["main"], "scripted/fair_buyer") == pytest.approx(10 / 11)
    w = league.weights(["main"], BUYERS)
    assert w[1] / w[0] == pytest.approx(((1 - 1 / 11) / (1 - 10 / 11)) ** 2)
    draws = _draws(league)
    assert draws["scripted/hard_buyer"] > 10 * draws["scripted/fair_buyer"]
    assert _draws(league) == draws  # the same draw for the same round and groups

    uniform = League(_config("uniform"))
    uniform.record([_episode("scripted/fair_buyer", 0.5)] * 9)
    assert list(uniform.weights(["main"], BUYERS)) == [0.5, 0.5]
    assert 150 < _draws(uniform)["scripted/hard_buyer"] < 250


def test_latest_matchmaking_and_snapshot_keys():
    league = League(_config("latest"))
    pool = ["main@0", "main@4", "main@2", "scripted/fair_buyer"]
    assert list(league.weights(["main"], pool)) == [0.0, 1.0, 0.0, 0.0]
    assert list(league.weights(["main"], BUYERS)) == [0.5, 0.5]  # no snapshot yet: any bot
    assert split_key("main/buyer@12") == ("main/buyer", 12) and split_key("scripted/fair_buyer") == ("scripted/fair_buyer", None)


def test_ratings_rank_the_winner_first_and_skip_mirror_matches():
    ratings = Ratings()
    for _ in range(6):
        ratings.update(_episode("scripted/fair_buyer", 0.5))
        ratings.update(_episode("scripted/hard_buyer", -0.5))
    order = [k for k, _ in ratings.ranked()]
    assert order == ["scripted/hard_buyer", "main@3", "scripted/fair_buyer"]
    mirror = _episode("main", 0.2).model_copy(update={"matchup": Matchup(game=NEG, seed=0, seats={"seller": "main", "buyer": "main"})})
    mirror.turns[1].policy_id, mirror.turns[1].policy_version = "main", 3
    assert ratings.update(mirror) is False  # one policy version on both sides tells nothing
    again = Ratings(ratings.state_dict())
    assert again.ranked() == ratings.ranked()


def test_league_config_errors_name_the_problem(tmp_path):
    def load(league: str | None) -> RunConfig:
        text = "games:\n  - id: negotiation-v0\n    matchups: [{seller: main, buyer: league}]\n" + (f"league: {league}\n" if league else "")
        (tmp_path / "c.yaml").write_text(text)
        return load_config(tmp_path / "c.yaml")

    with pytest.raises(ConfigError, match="needs a `league:` section"):
        load(None)
    with pytest.raises(ConfigError, match="empty pool"):
        load("{bots: {seller: [scripted/fair_seller]}}")
    with pytest.raises(ConfigError, match="league.bots"):
        load("{bots: [scripted/nobody]}")
    with pytest.raises(ConfigError, match="not a model directory"):
        load(f"{{checkpoints: [{tmp_path}]}}")
    assert load("{bots: [scripted/fair_buyer]}").league.bots_for("buyer") == ["scripted/fair_buyer"]
