"""Asynchronous rollouts in the experiment loop (``trainer.max_staleness``): round k+1 is played
while round k learns, no episode staler than allowed is trained on, and ``max_staleness: 0`` is
the synchronous loop, step for step."""

from __future__ import annotations

import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console

from arena.config import SNAPSHOT, RunConfig
from arena.experiment import run, train_matchups
from arena.seeds import TRAIN, derive_seed
from arena.trainers.recipes import RECIPES, RoundContext
from arena.trainers.selfplay import Learner

QUIET = Console(quiet=True)


def config(model_dir, tmp_path, **trainer) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "async_check",
            "seed": 5,
            "episodes_per_matchup": 1,
            "games": [{"id": "negotiation-v0", "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}],
            "model": {"path": str(model_dir), "warm_start": None},
            "sampling": {"max_new_tokens": 8},
            "trainer": {"recipe": "pg", "rounds": 3, "group_size": 2, "groups_per_matchup": 2, **trainer},
            "tracking": {"traces_per_round": 0, "trace_extremes": False, "trace_illegal": False},
            "runs_dir": str(tmp_path / "runs"),
        }
    )


def journal(result, r: int) -> list[dict]:
    path = result.run_dir / "episodes" / "train" / f"round_{r:05d}.jsonl"
    return [json.loads(line)["episode"] for line in path.read_text().splitlines()]


def main_versions(episode: dict) -> set[int]:
    return {t["policy_version"] for t in episode["turns"] if t["policy_id"] == "main"}


def test_rounds_play_ahead_and_no_episode_staler_than_allowed_is_trained_on(tiny_model_dir, mlflow_store, tmp_path, monkeypatch):
    learned: list[tuple[int, set[str]]] = []  # (learner version, episodes its samples came from), per round
    learn = Learner.learn

    def spy(self, samples, generator):
        learned.append((self.version, {s.episode_id for s in samples}))
        out = learn(self, samples, generator)
        if len(learned) == 2:  # after round 1, a version jump: round 2's episodes (played ahead at version 1) become 2 behind
            self.version += 1
        return out

    monkeypatch.setattr(Learner, "learn", spy)
    result = run(config(tiny_model_dir, tmp_path, max_staleness=1), QUIET)
    assert result.rounds_done == 3

    # round 0 is played first; round 1 while round 0 learns (weights version 0), round 2 while round 1 learns (version 1)
    played = [journal(result, r) for r in range(3)]
    assert [set().union(*map(main_versions, eps)) for eps in played] == [{0}, {0}, {1}]
    for (version, trained_on), episodes in zip(learned, played):
        by_id = {e["episode_id"]: e for e in episodes}
        assert trained_on <= set(by_id)
        assert all(version - min(main_versions(by_id[i])) <= 1 for i in trained_on), "an episode staler than max_staleness was trained on"
    assert learned[0][1] and learned[1][1], "rounds 0 and 1 were within max_staleness and trained on"
    assert learned[2] == (3, set()), "round 2's episodes were 2 versions behind: all dropped"

    client = MlflowClient()
    history = {
        k: [m.value for m in sorted(client.get_metric_history(result.run_id, k), key=lambda m: m.step)]
        for k in ("staleness/main/max", "staleness/main/dropped_episodes")
    }
    assert history == {"staleness/main/max": [0.0, 1.0, 2.0], "staleness/main/dropped_episodes": [0.0, 0.0, 4.0]}
    metrics = client.get_run(result.run_id).data.metrics
    assert {"time/engine_idle_s", "time/learner_idle_s", "time/round_s", "learn/main/tis_weight_mean"} <= set(metrics)


def test_max_staleness_0_is_the_synchronous_loop_step_for_step(tiny_model_dir, mlflow_store, tmp_path):
    """The driver's synchronous run, and the loop written out with the runtime, recipe and learner: the same weights."""
    from arena.runtime import LocalRuntime, load_model_policies, policy_pools

    cfg = config(tiny_model_dir, tmp_path, rounds=2)
    result = run(cfg, QUIET)
    from safetensors.torch import load_file

    driven = load_file(str(result.run_dir / "checkpoints" / "round_00002" / "policies" / "main" / "model.safetensors"))

    runtime = LocalRuntime.for_run(cfg)
    models = load_model_policies(cfg, QUIET, runtime)
    pools = policy_pools(cfg, models)
    recipe, learner = RECIPES["pg"], models.learners["main"]
    for r in range(2):
        matchups, labels = train_matchups(cfg, r, SNAPSHOT)
        ctx = RoundContext(r, matchups, labels, pools, frozenset(models.agents), runtime, cfg.trainer, cfg.rollout, QUIET)
        played = recipe.play(ctx)
        samples, _ = recipe.samples(played, "main", cfg.trainer, None)
        learner.learn(samples, torch.Generator().manual_seed(derive_seed(cfg.seed, TRAIN, r, 0x1EA2)))
        runtime.sync("main", models.agents["main"].engine, learner)
    by_hand = learner.model.state_dict()
    assert learner.version == 2
    for k, v in driven.items():
        assert torch.equal(v, by_hand[k]), f"{k} differs from the synchronous loop"


def test_a_recipe_that_cannot_learn_from_played_ahead_episodes_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"max_staleness=1 .* needs a recipe that learns from the episodes it plays \(pg, rest\), not dpo"):
        config(tiny_model_dir, tmp_path, recipe="dpo", max_staleness=1)
