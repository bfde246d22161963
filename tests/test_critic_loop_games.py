"""The critic loop (arena.critic_loop) on a game other than negotiation: repeated_matrix-v0, whose
package declares a scripted critic that coaches reciprocity and a bot that follows the coaching."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from rich.console import Console

from arena.agents.base import PlayerView
from arena.config import RunConfig
from arena.critic_loop import critic_prompt, run_critic_loop, split_feedback
from arena.environments.repeated_matrix.bots import TIP_PEACE, TIP_RETALIATE, Coachable, MatrixCritic
from arena.records import Episode, Matchup
from arena.registry import spec
from arena.reporting import RunResult

GAME = "repeated_matrix-v0"


def _cfg(tmp_path, matchups, rounds: int = 3, chains: int = 2, **kwargs) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "matrix_critic",
            "episodes_per_matchup": chains,
            "games": [{"id": GAME, "kwargs": kwargs, "matchups": matchups}],
            "critic": {"side": "player_0", "critic": "scripted/critic", "rounds": rounds},
            "trainer": {"recipe": "none"},
            "runs_dir": str(tmp_path / "runs"),
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "critic", "traces_per_round": 1},
        }
    )


def _critique(metrics: dict[str, float], side: str = "player_0") -> str:
    ep = Episode(
        episode_id="e",
        matchup=Matchup(game=GAME, seed=0, seats={"player_0": "a", "player_1": "b"}),
        turns=[],
        returns={"player_0": 1.0, "player_1": 2.0},
        group_return=1.5,
        metrics=metrics,
    )
    return MatrixCritic().choose(PlayerView(game=GAME, player="critic", observation=critic_prompt(ep, side, 3)))


def test_the_matrix_critic_coaches_from_the_games_own_metrics():
    exploited = _critique({"coop_rate/player_0": 1.0, "coop_rate/player_1": 0.0, "retaliation/player_0": 0.0})
    assert TIP_RETALIATE in exploited
    stuck = _critique({"coop_rate/player_0": 0.1, "coop_rate/player_1": 0.2, "retaliation/player_0": 1.0})
    assert TIP_PEACE in stuck and TIP_RETALIATE not in stuck
    fine = _critique({"coop_rate/player_0": 1.0, "coop_rate/player_1": 1.0})
    assert TIP_RETALIATE not in fine and TIP_PEACE not in fine
    # the coached role comes from the prompt: player_1 exploited by player_0
    assert TIP_RETALIATE in _critique({"coop_rate/player_0": 0.0, "coop_rate/player_1": 1.0}, side="player_1")


def test_the_coachable_bot_follows_the_tips_in_its_prompt():
    obs = "History (you/them, your points): J/F 0\nAnswer with J or F."
    rng = np.random.default_rng(0)
    assert Coachable().choose(PlayerView(GAME, "player_0", obs, rng=rng)) == "J"  # no feedback: cooperates
    coached = f"Feedback after game 1:\n- You were exploited: {TIP_RETALIATE}.\nNow the current game:\n{obs}"
    assert Coachable().choose(PlayerView(GAME, "player_0", coached, rng=rng)) == "F"
    both_defected = coached.replace("J/F 0", "F/F 5")
    assert Coachable().choose(PlayerView(GAME, "player_0", both_defected, rng=rng)) == "F"
    peace = f"- Cooperate once to {TIP_PEACE}.\n{both_defected}"
    assert Coachable().choose(PlayerView(GAME, "player_0", peace, rng=rng)) == "J"


def test_the_game_declares_no_feedback_filter_so_nothing_is_cut():
    assert spec(GAME).feedback_filter is None
    tips, cut = split_feedback("- Defect back after 2 defections.\n- Keep 1 eye open.", 3, spec(GAME).feedback_filter)
    assert tips == ["Defect back after 2 defections.", "Keep 1 eye open."] and cut == 0


def test_an_exploited_cooperator_learns_to_retaliate_and_earns_more(tmp_path):
    matchups = [
        {"player_0": "scripted/coachable", "player_1": "scripted/always_defect"},
        {"player_0": "scripted/coachable", "player_1": "scripted/tit_for_tat"},
    ]
    cfg = _cfg(tmp_path, matchups, rounds=3, chains=2, shuffle_labels=True)
    res = run_critic_loop(cfg, Console(quiet=True))
    assert isinstance(res, RunResult) and res.rounds_done == 3
    assert len(res.before) == len(res.after) == len(res.labels) == 4

    def by_opponent(episodes, opponent):
        return [ep for ep in episodes if ep.matchup.seats["player_1"] == f"scripted/{opponent}"]

    # the first game: no feedback anywhere; the naive cooperator is exploited by always_defect
    assert not any("Feedback after game" in t.observation for ep in res.before for t in ep.turns)
    first, last = by_opponent(res.before, "always_defect"), by_opponent(res.after, "always_defect")
    assert [ep.returns["player_0"] for ep in first] == [0.0, 0.0]
    assert all(ep.metrics["coop_rate/player_0"] == 1.0 and ep.metrics["retaliation/player_0"] == 0.0 for ep in first)
    # the feedback reaches the coached side's observation, and only its observation
    coached_obs = [t.observation for ep in res.after for t in ep.turns if t.player == "player_0"]
    assert coached_obs and all("Feedback after game 2:" in o for o in coached_obs)
    assert all(TIP_RETALIATE in t.observation for ep in last for t in ep.turns if t.player == "player_0")
    assert not any("Feedback" in t.observation for ep in res.after for t in ep.turns if t.player == "player_1")
    assert {t.policy_id for ep in res.after for t in ep.turns if t.player == "player_0"} == {"scripted/coachable"}
    # its play changes the way the critique points (it defects back), and so does its return
    assert all(ep.metrics["retaliation/player_0"] == 1.0 and ep.metrics["coop_rate/player_0"] == 0.1 for ep in last)
    assert [ep.returns["player_0"] for ep in last] == [45.0, 45.0]
    # against tit for tat it was never exploited: the critic says keep going and nothing changes
    assert [ep.returns["player_0"] for ep in by_opponent(res.before, "tit_for_tat")] == [80.0, 80.0]
    assert [ep.returns["player_0"] for ep in by_opponent(res.after, "tit_for_tat")] == [80.0, 80.0]

    client = MlflowClient(tracking_uri=cfg.tracking.uri)

    def history(key):
        return [m.value for m in sorted(client.get_metric_history(res.run_id, key), key=lambda m: m.step)]

    assert history("critic/coached_return") == pytest.approx([40.0, 62.5, 62.5])
    assert history("critic/repeated_matrix_v0/retaliation/player_0") == pytest.approx([0.0, 1.0, 1.0])
    assert history("critic/cut_per_feedback") == [0.0, 0.0]  # the game declares no filter
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    records = [json.loads(x) for x in mlflow.artifacts.load_text(f"runs:/{res.run_id}/critic/feedback_round_000.jsonl").splitlines()]
    assert len(records) == 4 and all(r["suggestions"] and r["cut"] == 0 for r in records)
    assert "critic_curve.png" in {a.path for a in client.list_artifacts(res.run_id)}
