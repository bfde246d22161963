"""The negotiation critic loop: feedback between games, memory for the coached side only, no prices."""

from __future__ import annotations

import json

import pytest
from conftest import MODEL_GAMES
from mlflow.tracking import MlflowClient
from rich.console import Console

from arena.config import ConfigError, RunConfig, load_config
from arena.critic_loop import Memory, split_feedback
from arena.environments.negotiation.critic import CUT, cut_numbers
from arena.experiment import run


def _cfg(tmp_path, seller: str, critic: str, rounds: int = 3, chains: int = 4, **extra) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "critic",
            "episodes_per_matchup": chains,
            "games": [{"id": "negotiation-v0", "matchups": [{"seller": seller, "buyer": "scripted/fair_buyer"}]}],
            "critic": {"side": "seller", "critic": critic, "rounds": rounds, **extra},
            "model": {"games": list(MODEL_GAMES)},  # the session's shared tiny model
            "trainer": {"recipe": "none"},
            "runs_dir": str(tmp_path / "runs"),
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "critic", "traces_per_round": 2},
        }
    )


def test_feedback_loses_every_number_and_keeps_at_most_the_allowed_suggestions():
    tips, cut = split_feedback("- Open at $25 next time.\n- Concede 1.50 at most.\n- Be friendly.\n- Extra tip.", 3, cut_numbers)
    assert tips == [f"Open at {CUT} next time.", f"Concede {CUT} at most.", "Be friendly."]
    assert cut == 2
    tips, cut = split_feedback("Hold firm. Ask for 1,200 dollars! Smile.", 5, cut_numbers)
    assert tips == ["Hold firm.", f"Ask for {CUT} dollars!", "Smile."] and cut == 1
    assert not any(ch.isdigit() for t in tips for ch in t)
    # numbered bullets are formatting, not numbers; a suggestion that is only a number is dropped
    tips, cut = split_feedback("1. Hold firm.\n2) $30.\n3. Ask for 40.", 3, cut_numbers)
    assert tips == ["Hold firm.", f"Ask for {CUT}."] and cut == 2


def test_without_a_filter_the_feedback_is_only_split():
    tips, cut = split_feedback("* Open at $25 next time.\n\n* Be friendly.", 3)
    assert tips == ["Open at $25 next time.", "Be friendly."] and cut == 0


def test_negotiation_declares_its_number_rule():
    from arena.registry import spec

    rule = spec("negotiation-v0").feedback_filter
    assert rule is cut_numbers and "number" in rule.rule
    assert rule("Open at $25.") == (f"Open at {CUT}.", 1)


def test_memory_keeps_every_feedback_but_only_the_last_transcripts_and_drops_the_oldest_when_long():
    mem = Memory()
    for g in range(3):
        mem.games.append((g, [f"seller: OFFER ${20 - g}", "buyer: ACCEPT"], f"deal at ${20 - g}"))
        mem.feedback.append((g, [f"tip {g}"]))
    text = mem.render(memory_games=1, max_chars=10_000)
    assert all(f"- tip {g}" in text for g in range(3))
    assert "Game 3 (outcome" in text and "Game 1 (outcome" not in text
    short = mem.render(memory_games=1, max_chars=150)
    assert "- tip 0" not in short and "tip 2" in short


def test_a_coachable_seller_raises_its_price_across_feedback_rounds_and_the_buyer_never_sees_the_feedback(tmp_path):
    cfg = _cfg(tmp_path, "scripted/coachable_seller", "scripted/critic", rounds=3, chains=6)
    res = run(cfg, Console(quiet=True))
    client = MlflowClient(tracking_uri=cfg.tracking.uri)
    price = sorted(client.get_metric_history(res.run_id, "critic/negotiation_v0/price"), key=lambda m: m.step)
    assert [m.step for m in price] == [0, 1, 2]
    assert price[-1].value > price[0].value + 0.5, [m.value for m in price]
    deal = client.get_metric_history(res.run_id, "critic/negotiation_v0/deal")
    assert len(deal) == 3
    cut = client.get_metric_history(res.run_id, "critic/cut_per_feedback")
    assert [m.value for m in sorted(cut, key=lambda m: m.step)] == [0.0, 0.0]  # the scripted critic names no number
    # the coached seller sees feedback from game 2 on; its opponent, reset each game, never does
    first, last = res.before, res.after
    assert not any("Feedback after game" in t.observation for ep in first for t in ep.turns)
    seller_obs = [t.observation for ep in last for t in ep.turns if t.player == "seller"]
    assert seller_obs and all("Feedback after game 2:" in o for o in seller_obs)
    assert not any("Feedback" in t.observation or "coach" in t.observation for ep in last for t in ep.turns if t.player == "buyer")
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.uri)
    records = [json.loads(x) for x in mlflow.artifacts.load_text(f"runs:/{res.run_id}/critic/feedback_round_000.jsonl").splitlines()]
    assert len(records) == 6 and all(r["suggestions"] for r in records)
    assert "critic_curve.png" in {a.path for a in client.list_artifacts(res.run_id)}


def test_a_model_critic_coaches_the_model_seller_with_no_number_reaching_the_prompt(tmp_path, arena_home):
    cfg = _cfg(tmp_path, "main", "main", rounds=2, chains=3)
    res = run(cfg, Console(quiet=True))
    seller_obs = [t.observation for ep in res.after for t in ep.turns if t.player == "seller"]
    assert seller_obs and all("Feedback after game 1:" in o for o in seller_obs)
    for obs in seller_obs:
        feedback = obs.split("Feedback after game 1:", 1)[1].split("Now the current game:", 1)[0]
        assert not any(ch.isdigit() for ch in feedback), feedback
    assert {t.policy_id for ep in res.after for t in ep.turns if t.player == "seller"} == {"main"}


def test_critic_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="critic.side 'judge' is not a player"):
        load_config(None, ["critic.side=judge", "trainer.recipe=none", "games=[{id: negotiation-v0, matchups: [{seller: main, buyer: scripted/fair_buyer}]}]"])
    with pytest.raises(ConfigError, match="set trainer.recipe: none"):
        load_config(None, ["critic.side=seller", "games=[{id: negotiation-v0, matchups: [{seller: main, buyer: scripted/fair_buyer}]}]"])
    with pytest.raises(ConfigError, match="scripted/nobody"):
        load_config(
            None,
            [
                "critic.side=seller",
                "critic.critic=scripted/nobody",
                "trainer.recipe=none",
                "games=[{id: negotiation-v0, matchups: [{seller: main, buyer: scripted/fair_buyer}]}]",
            ],
        )


def test_the_shipped_critic_config_validates():
    cfg = load_config("configs/negotiation_critic.yaml")
    assert cfg.critic is not None and cfg.critic.side == "seller" and cfg.trainer.recipe == "none"
