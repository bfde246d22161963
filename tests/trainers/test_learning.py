"""Fast versions of the learning benchmarks: training changes the policy and beats untrained play.

Each trains the warm-started tiny model for a few rounds with the real run
machinery, then compares its evaluation return with the spread of untrained
evaluations on the same evaluation seeds (three independent sampling seeds).
The full measurements (more rounds, 3 seeds, 95% intervals) are
``benchmarks/learning.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import MODEL_GAMES
from mlflow.tracking import MlflowClient
from rich.console import Console

from arena.config import RunConfig
from arena.experiment import run


def _config(tmp_path, name: str, games: list, trainer: dict, episodes: int = 24, seed: int = 0) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": name,
            "seed": seed,
            "episodes_per_matchup": episodes,
            "games": games,
            # the model these tests were measured with: the tiny model of both games, as the session's fixture
            "model": {"games": list(MODEL_GAMES)},
            "trainer": trainer,
            "runs_dir": str(tmp_path / "runs"),
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": name, "traces_per_round": 1},
        }
    )


def _seat_mean(episodes, player: str, value) -> float:
    vals = [value(ep) for ep in episodes if ep.matchup.seats[player] == "main"]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals))


def _untrained(cfg: RunConfig, player: str | None, value) -> list[float]:
    """The untrained policy's evaluation mean under three other sampling seeds, on the run's own evaluation games
    (``value(episode)`` averaged over ``player``'s seats held by main; with no player, ``value(episodes, labels)``).
    A ``snapshot`` seat is main's starting weights: the untrained policy itself."""
    import asyncio

    from arena.experiment import eval_matchups
    from arena.rollout import play_many
    from arena.runtime import load_model_policies, policy_pools

    models = load_model_policies(cfg, Console(quiet=True))
    pools = {g: {**p, "snapshot": p["main"]} for g, p in policy_pools(cfg, models).items()}
    matchups, labels = eval_matchups(cfg)
    means = []
    for sample in (1, 2, 3):
        episodes = asyncio.run(play_many([m.model_copy(update={"sample": sample}) for m in matchups], lambda m: pools[m.game]))
        means.append(_seat_mean(episodes, player, value) if player else value(episodes, labels))
    return means


def _params(res_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    (path,) = sorted(res_dir.glob("checkpoints/round_*/policies/main/model.safetensors"))[-1:]
    return load_file(str(path))


@pytest.mark.long
def test_seller_learns_to_sell_dearer_against_a_fair_buyer(tmp_path, arena_home, warm_model_dir):
    games = [{"id": "negotiation-v0", "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}]
    trainer = {
        "recipe": "pg",
        "rounds": 4,
        "group_size": 4,
        "groups_per_matchup": 6,
        "advantage": "group_mean",
        "lr": 1e-3,
        "kl_coef": 0.02,
        "checkpoint_every": 4,
    }
    cfg = _config(tmp_path, "seller_fast", games, trainer)
    price = lambda ep: ep.metrics["price"] if ep.metrics.get("deal") else None
    untrained = _untrained(cfg, "seller", price)
    res = run(cfg, Console(quiet=True))
    after = _seat_mean(res.after, "seller", price)
    assert after > max(untrained), f"trained mean price {after:.2f} vs untrained {untrained}"
    deal_before = _seat_mean(res.before, "seller", lambda ep: ep.metrics["deal"])
    deal_after = _seat_mean(res.after, "seller", lambda ep: ep.metrics["deal"])
    assert deal_after >= 0.8 * deal_before
    start = _warm_weights(warm_model_dir)
    trained = _params(res.run_dir)
    assert any(not torch.equal(trained[k], start[k]) for k in trained)


@pytest.mark.long
def test_shared_policy_self_play_keeps_a_baseline_per_role_and_logs_each_role(tmp_path, arena_home, warm_model_dir):
    """Both negotiation seats are the one trained policy: it learns from both roles, with a return
    baseline per role, and logs its return in each role every round. (Whether it then beats its
    starting weights is measured in benchmarks/learning.py, negotiation_selfplay_role_baseline_on/off.)"""
    games = [{"id": "negotiation-v0", "name": "selfplay", "matchups": [{"seller": "main", "buyer": "main"}]}]
    rounds = 2
    trainer = {
        "recipe": "pg",
        "rounds": rounds,
        "group_size": 1,
        "groups_per_matchup": 16,
        "advantage": "none",
        "baseline": "per_role",
        "lr": 5e-4,
        "kl_coef": 0.05,
        "checkpoint_every": rounds,
    }
    cfg = _config(tmp_path, "selfplay_fast", games, trainer, episodes=4)
    res = run(cfg, Console(quiet=True))
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    for role in ("seller", "buyer"):
        hist = client.get_metric_history(res.run_id, f"train/selfplay/return/{role}/main")
        assert sorted(m.step for m in hist) == list(range(rounds))
    (state,) = [json.loads(p.read_text()) for p in sorted(res.run_dir.glob("checkpoints/round_*/state.json"))[-1:]]
    values = state["baselines"]["main"]["values"]
    assert set(values) == {"negotiation-v0/seller", "negotiation-v0/buyer"}
    assert values["negotiation-v0/seller"] != values["negotiation-v0/buyer"]
    start, trained = _warm_weights(warm_model_dir), _params(res.run_dir)
    assert any(not torch.equal(trained[k], start[k]) for k in trained)


def _warm_weights(warm_model_dir) -> dict[str, torch.Tensor]:
    """The weights every run of these tests starts from (the session's warm start, in ARENA_HOME)."""
    from safetensors.torch import load_file

    return load_file(str(warm_model_dir / "model.safetensors"))


@pytest.mark.long
def test_prisoners_dilemma_payoff_rises_against_tit_for_tat(tmp_path, arena_home, warm_model_dir):
    games = [{"id": "repeated_matrix-v0", "kwargs": {"rounds": 10}, "matchups": [{"player_0": "main", "player_1": "scripted/tit_for_tat"}]}]
    trainer = {
        "recipe": "pg",
        "rounds": 5,
        "group_size": 4,
        "groups_per_matchup": 6,
        "advantage": "group_mean",
        "lr": 1e-3,
        "kl_coef": 0.02,
        "checkpoint_every": 5,
    }
    cfg = _config(tmp_path, "pd_fast", games, trainer)
    payoff = lambda ep: ep.returns["player_0"] / 10
    untrained = _untrained(cfg, "player_0", payoff)
    res = run(cfg, Console(quiet=True))
    after = _seat_mean(res.after, "player_0", payoff)
    assert after > max(untrained), f"trained payoff per round {after:.2f} vs untrained {untrained}"
    start = _warm_weights(warm_model_dir)
    trained = _params(res.run_dir)
    assert any(not torch.equal(trained[k], start[k]) for k in trained)


def test_rest_recipe_runs_from_config_and_imitates_its_best_episodes(tmp_path, arena_home):
    games = [{"id": "negotiation-v0", "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}]
    trainer = {"recipe": "rest", "rounds": 1, "group_size": 2, "groups_per_matchup": 4, "rest_top_fraction": 0.25}
    cfg = _config(tmp_path, "rest_fast", games, trainer, episodes=2)
    res = run(cfg, Console(quiet=True))
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(res.run_id).data.metrics
    # two episodes per deal: each deal keeps its better seat, where the two differ
    assert 1 <= metrics["learn/main/rest_kept_seats"] == metrics["learn/main/rest_groups_kept"] <= metrics["learn/main/rest_groups"] == 4
    assert metrics["learn/main/samples"] > 0


def _episodes_artifact(cfg: RunConfig, run_id: str, path: str):
    import mlflow

    from arena.records import Episode

    mlflow.set_tracking_uri(cfg.tracking.uri)
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/episodes/{path}")
    # one JSON object a line: where the episode was played, why it was traced, and the episode
    return [Episode.model_validate(json.loads(line)["episode"]) for line in text.splitlines() if line]


def test_snapshot_seats_play_past_versions_and_turns_record_weight_versions(tmp_path, arena_home):
    games = [{"id": "negotiation-v0", "matchups": [{"seller": "main", "buyer": "snapshot"}]}]
    trainer = {"recipe": "pg", "rounds": 2, "group_size": 2, "groups_per_matchup": 2, "snapshot_every": 1}
    cfg = _config(tmp_path, "snapshot_fast", games, trainer, episodes=2)
    res = run(cfg, Console(quiet=True))
    first = _episodes_artifact(cfg, res.run_id, "train/round_00000.jsonl")
    second = _episodes_artifact(cfg, res.run_id, "train/round_00001.jsonl")
    assert {t.policy_id for ep in first for t in ep.turns if t.player == "buyer"} == {"main@0"}
    assert {ep.matchup.seats["buyer"] for ep in second} <= {"main@0", "main@1"}  # the pool grew after round 0
    assert {t.policy_version for ep in first for t in ep.turns if t.player == "seller"} == {0}
    assert {t.policy_version for ep in second for t in ep.turns if t.player == "seller"} == {1}
    assert {t.policy_version for ep in res.after for t in ep.turns if t.player == "seller"} == {2}


def test_one_policy_per_role_trains_separate_copies(tmp_path, arena_home):
    games = [{"id": "negotiation-v0", "matchups": [{"seller": "main/seller", "buyer": "main/buyer"}]}]
    trainer = {"recipe": "pg", "rounds": 1, "group_size": 2, "groups_per_matchup": 2}
    cfg = _config(tmp_path, "per_role_fast", games, trainer, episodes=2)
    res = run(cfg, Console(quiet=True))
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(res.run_id).data.metrics
    assert "learn/main/seller/loss" in metrics and "learn/main/buyer/loss" in metrics
    ckpt = sorted(res.run_dir.glob("checkpoints/round_*"))[-1]
    from safetensors.torch import load_file

    seller = load_file(str(ckpt / "policies" / "main__seller" / "model.safetensors"))
    buyer = load_file(str(ckpt / "policies" / "main__buyer" / "model.safetensors"))
    assert any(not torch.equal(seller[k], buyer[k]) for k in seller), "each role trained its own weights"
