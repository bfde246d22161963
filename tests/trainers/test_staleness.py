"""Asynchronous rollouts' learning side: which episodes are fresh enough to train on, and the
off-policy correction (truncated importance weights), against numbers worked out by hand."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from arena.config import TrainerConfig
from arena.records import Episode, Matchup, Turn
from arena.trainers.batching import Sample, collate, forward_logprobs
from arena.trainers.losses import reinforce_loss, truncated_importance_weights
from arena.trainers.selfplay import Learner
from arena.trainers.staleness import episode_staleness, fresh_episodes


# ----- truncated importance weights ------------------------------------------------------------------
def test_truncated_importance_weights_by_hand():
    learner = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, 0.0, 0.0]])
    behaviour = torch.tensor([[-1.5, -1.0, float("nan")], [-3.0, -5.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    w = truncated_importance_weights(learner, behaviour, mask, cap=2.0)
    # exp(-1 + 1.5) = e^0.5 = 1.6487; exp(-2 + 1) = e^-1 = 0.3679; masked out (even NaN) -> 0
    # exp(0) = 1; exp(0 + 5) = 148.4 -> capped at 2
    expected = torch.tensor([[math.exp(0.5), math.exp(-1.0), 0.0], [1.0, 2.0, 0.0]])
    assert torch.allclose(w, expected, atol=1e-6)
    assert torch.allclose(truncated_importance_weights(learner, behaviour, mask, cap=1.5)[0, 0], torch.tensor(1.5))
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_importance_weights(learner, behaviour, mask, cap=0.0)


def test_reinforce_with_importance_weights_scales_each_tokens_gradient_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -7.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    weights = torch.tensor([[1.5, 0.5, 9.0]])
    loss, _ = reinforce_loss(logprobs, old, torch.tensor([2.0]), mask, token_weights=weights)
    # -(1.5 * 2 * -1 + 0.5 * 2 * -2) / 2 tokens = -(-3 - 2) / 2 = 2.5
    assert float(loss) == pytest.approx(2.5)
    loss.backward()
    # d/d logprob_t = -w_t * A / 2: -1.5, -0.5, and 0 where masked out
    assert logprobs.grad[0].tolist() == pytest.approx([-1.5, -0.5, 0.0])
    plain, _ = reinforce_loss(logprobs.detach(), old, torch.tensor([2.0]), mask)
    assert float(plain) == pytest.approx(3.0)  # weights of 1: -(2 * -1 + 2 * -2) / 2


# ----- staleness -------------------------------------------------------------------------------------
def _episode(name: str, versions: list[int], policy: str = "main") -> Episode:
    turns = [
        Turn(
            index=i,
            player="seller" if i % 2 == 0 else "buyer",
            policy_id=policy if i % 2 == 0 else "scripted/fair_buyer",
            policy_version=v if i % 2 == 0 else 0,
            observation="o",
            action="a",
        )
        for i, v in enumerate(versions)
    ]
    return Episode(
        episode_id=name,
        matchup=Matchup(game="negotiation-v0", seed=0, seats={"seller": policy, "buyer": "scripted/fair_buyer"}),
        turns=turns,
        returns={"seller": 0.0, "buyer": 0.0},
    )


def test_an_episode_is_as_stale_as_its_oldest_turn_of_the_policy():
    # seller turns at indices 0, 2, 4 (versions 4, 3, 5); the buyer's turns (version 0) do not count
    ep = _episode("e", [4, 0, 3, 0, 5])
    assert episode_staleness(ep, "main", learner_version=5) == 2
    assert episode_staleness(ep, "other", learner_version=5) is None


def test_only_episodes_within_max_staleness_are_kept_and_the_rest_are_counted():
    eps = [
        _episode("fresh", [5, 0, 5]),
        _episode("one_behind", [4, 0, 5]),
        _episode("two_behind", [3, 0, 5]),
        _episode("not_played", [1, 0, 1], policy="main@1"),
    ]
    kept = fresh_episodes(eps, ["a", "b", "c", "d"], "main", learner_version=5, max_staleness=1)
    assert [e.episode_id for e in kept.episodes] == ["fresh", "one_behind", "not_played"]
    assert kept.labels == ["a", "b", "d"]
    assert kept.staleness == [0, 1, 2] and kept.dropped == 1
    assert kept.metrics("main") == {"staleness/main/mean": 1.0, "staleness/main/max": 2.0, "staleness/main/dropped_episodes": 1.0}
    synchronous = fresh_episodes(eps, list("abcd"), "main", learner_version=5, max_staleness=0)
    assert [e.episode_id for e in synchronous.episodes] == ["fresh", "not_played"] and synchronous.dropped == 2


# ----- the learner ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_the_learner_weighs_off_policy_tokens_by_the_learners_probability_over_the_samplers(tiny):
    model, tok = tiny
    prompt, completion = tok.encode("Round 1 of 10. Your move:", add_special_tokens=False), tok.encode("J F", add_special_tokens=False)
    with torch.no_grad():
        own = forward_logprobs(model, collate([Sample(prompt, completion, [0.0] * len(completion), 1.0)], tok.pad_token_id))[0][0, -len(completion) :]
    # sampled by these very weights: 1; by a sampler that found the tokens 4x likelier: 1/4; 4x less likely: capped at 2
    for shift, mean, capped in ((0.0, 1.0, 0.0), (math.log(4), 0.25, 0.0), (-math.log(4), 2.0, 1.0)):
        learner = Learner(copy.deepcopy(model), TrainerConfig(recipe="pg", max_staleness=1, tis_cap=2.0, kl_coef=0.0), pad_id=tok.pad_token_id)
        out = learner.learn([Sample(prompt, completion, (own + shift).tolist(), 1.0)], torch.Generator().manual_seed(0))
        assert out["tis_weight_mean"] == pytest.approx(mean, rel=1e-4) and out["tis_capped_fraction"] == capped
        # the weight scales the step: the same sample moves the weights in proportion
        moved = sum(float((a - b).abs().sum()) for a, b in zip(learner.model.parameters(), model.parameters()))
        assert moved > 0
    # a synchronous learner (max_staleness 0) weighs nothing
    sync = Learner(copy.deepcopy(model), TrainerConfig(recipe="pg"), pad_id=tok.pad_token_id)
    assert "tis_weight_mean" not in sync.learn([Sample(prompt, completion, own.tolist(), 1.0)], torch.Generator().manual_seed(0))


def test_a_capped_weight_scales_the_gradient_of_the_learners_step(tiny):
    """One step of reinforce with a token weight of 1/4 is a quarter of the unweighted step's gradient (Adam aside: plain SGD here)."""
    model, tok = tiny
    prompt, completion = tok.encode("Round 1 of 10. Your move:", add_special_tokens=False), tok.encode("J", add_special_tokens=False)
    batch = collate([Sample(prompt, completion, [0.0], 1.0)], tok.pad_token_id)
    grads = []
    for weight in (1.0, 0.25):
        m = copy.deepcopy(model)
        logp, _ = forward_logprobs(m, batch)
        loss, _ = reinforce_loss(logp, batch.old_logprobs, batch.advantages, batch.mask, token_weights=torch.full_like(logp, weight))
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert torch.allclose(grads[1], 0.25 * grads[0], atol=1e-7)
