"""Tests for arena.trainers.losses, against numbers worked out by hand in the comments."""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from arena.trainers.losses import (
    KL_ESTIMATORS,
    LOSSES,
    entropy_from_logits,
    kl_k1,
    kl_k2,
    kl_k3,
    kl_penalty,
    masked_mean,
    masked_sum,
    ppo_clip_loss,
    reinforce_loss,
    token_logprobs,
)

# A 2x3 batch: sequence 0 generated its first two tokens, sequence 1 only its first.
# Masked-out positions hold values that would change every answer if they leaked in.
LOGPROBS = [[-1.0, -2.0, -7.0], [-0.2, -9.0, -9.0]]
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
ADV = torch.tensor([2.0, -1.0])


def lp(values=LOGPROBS) -> torch.Tensor:
    return torch.tensor(values, requires_grad=True)


# --------------------------------------------------------------------------- #
# Masked reductions
# --------------------------------------------------------------------------- #


def test_masked_sum_and_mean():
    x = torch.tensor([[1.0, 2.0, math.inf], [4.0, math.nan, 6.0]])
    assert masked_sum(x, MASK).item() == 7.0  # 1 + 2 + 4; inf and nan are outside the mask
    assert masked_mean(x, MASK).item() == pytest.approx(7.0 / 3.0)
    torch.testing.assert_close(masked_mean(x, MASK, dim=1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_sum(x, MASK, dim=0), torch.tensor([5.0, 2.0, 0.0]))


def test_masked_mean_of_nothing_is_zero():
    x = torch.ones(2, 3)
    assert masked_mean(x, torch.zeros(2, 3)).item() == 0.0
    torch.testing.assert_close(masked_mean(x, torch.tensor([[1, 0, 0], [0, 0, 0]]), dim=1), torch.tensor([1.0, 0.0]))


# --------------------------------------------------------------------------- #
# REINFORCE
# --------------------------------------------------------------------------- #


def test_reinforce_loss_by_hand():
    # per token -A * logp on the 3 masked tokens: -2 * -1 = 2, -2 * -2 = 4, 1 * -0.2 = -0.2
    # tokens: (2 + 4 - 0.2) / 3 = 1.9333333
    loss, stats = reinforce_loss(lp(), torch.tensor(LOGPROBS), ADV, MASK)
    assert loss.item() == pytest.approx(1.9333333, abs=1e-6)
    assert stats["loss"] == pytest.approx(1.9333333, abs=1e-6)
    assert stats["num_tokens"] == 3.0
    # sequences: mean(2, 4) = 3 and -0.2, then (3 - 0.2) / 2 = 1.4
    loss, _ = reinforce_loss(lp(), torch.tensor(LOGPROBS), ADV, MASK, normalize="sequences")
    assert loss.item() == pytest.approx(1.4, abs=1e-6)


def test_reinforce_gradient_by_hand():
    # d loss / d logp[b, t] = -A[b] * mask[b, t] / 3  (3 tokens)
    logprobs = lp()
    loss, _ = reinforce_loss(logprobs, torch.tensor(LOGPROBS), ADV, MASK)
    loss.backward()
    expected = torch.tensor([[-2 / 3, -2 / 3, 0.0], [1 / 3, 0.0, 0.0]])
    torch.testing.assert_close(logprobs.grad, expected)

    # per sequence: row 0 has 2 tokens, row 1 has 1, then / 2 sequences
    logprobs = lp()
    loss, _ = reinforce_loss(logprobs, torch.tensor(LOGPROBS), ADV, MASK, normalize="sequences")
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.5, -0.5, 0.0], [0.5, 0.0, 0.0]]))


def test_reinforce_stats_report_drift_from_sampler():
    logprobs = lp()
    loss_a, stats = reinforce_loss(logprobs, torch.tensor(LOGPROBS), ADV, MASK)
    assert stats["ratio_mean"] == pytest.approx(1.0)
    assert stats["approx_kl_to_sampler"] == pytest.approx(0.0, abs=1e-7)
    # the sampler's logprobs do not change the REINFORCE loss, only the stats
    old = torch.tensor(LOGPROBS) + 0.5
    loss_b, stats = reinforce_loss(logprobs, old, ADV, MASK)
    assert loss_b.item() == loss_a.item()
    # ratio exp(-0.5) = 0.6065307 on every token; k3 = 0.6065307 - 1 + 0.5 = 0.1065307
    assert stats["ratio_mean"] == pytest.approx(0.6065307, abs=1e-6)
    assert stats["approx_kl_to_sampler"] == pytest.approx(0.1065307, abs=1e-6)


# --------------------------------------------------------------------------- #
# PPO clip
# --------------------------------------------------------------------------- #


def test_ppo_clip_loss_by_hand():
    # Ratios on the masked tokens: 1.5 (A=2), 0.5 (A=2), 0.9 (A=-1); eps 0.2.
    #   r=1.5, A=2:  min(3.0, 1.2*2=2.4)   = 2.4  clipped
    #   r=0.5, A=2:  min(1.0, 0.8*2=1.6)   = 1.0  not clipped
    #   r=0.9, A=-1: min(-0.9, -0.9)       = -0.9 inside the range
    # loss = -(2.4 + 1.0 - 0.9) / 3 = -0.8333333
    ratios = torch.tensor([[1.5, 0.5, 3.0], [0.9, 3.0, 3.0]])
    old = torch.tensor(LOGPROBS) - ratios.log()
    loss, stats = ppo_clip_loss(lp(), old, ADV, MASK, clip_eps=0.2)
    assert loss.item() == pytest.approx(-0.8333333, abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    assert stats["ratio_mean"] == pytest.approx(0.9666667, abs=1e-6)  # (1.5 + 0.5 + 0.9) / 3
    # (r - 1) - log r: 0.0945349 + 0.1931472 + 0.0053605, / 3
    assert stats["approx_kl_to_sampler"] == pytest.approx(0.0976809, abs=1e-6)


def test_ppo_clipping_active_and_inactive_by_hand():
    # Four one-token sequences, eps 0.2:
    #   r=1.5, A=+1: min(1.5, 1.2)   = 1.2   clipped (no gradient)
    #   r=1.5, A=-1: min(-1.5, -1.2) = -1.5  not clipped, grad -r*A/4 = 0.375
    #   r=0.5, A=+1: min(0.5, 0.8)   = 0.5   not clipped, grad -r*A/4 = -0.125
    #   r=0.5, A=-1: min(-0.5, -0.8) = -0.8  clipped (no gradient)
    # loss = -(1.2 - 1.5 + 0.5 - 0.8) / 4 = 0.15
    logprobs = torch.zeros(4, 1, requires_grad=True)
    old = -torch.tensor([[1.5], [1.5], [0.5], [0.5]]).log()
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, stats = ppo_clip_loss(logprobs, old, adv, torch.ones(4, 1), clip_eps=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert stats["clip_fraction"] == 0.5
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0], [0.375], [-0.125], [0.0]]))


def test_ppo_inside_trust_region_clips_nothing():
    ratios = torch.tensor([[1.1, 0.95, 1.0], [0.85, 1.0, 1.0]])
    old = torch.tensor(LOGPROBS) - ratios.log()
    loss, stats = ppo_clip_loss(lp(), old, ADV, MASK, clip_eps=0.2)
    assert stats["clip_fraction"] == 0.0
    # -(2 * 1.1 + 2 * 0.95 - 1 * 0.85) / 3 = -(2.2 + 1.9 - 0.85) / 3 = -1.0833333
    assert loss.item() == pytest.approx(-1.0833333, abs=1e-6)


def test_ppo_gradient_equals_reinforce_on_policy():
    # At ratio 1, d(r * A)/d logp = A, the REINFORCE gradient.
    a, b = lp(), lp()
    ppo_clip_loss(a, torch.tensor(LOGPROBS), ADV, MASK)[0].backward()
    reinforce_loss(b, torch.tensor(LOGPROBS), ADV, MASK)[0].backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_losses_dict_and_shared_signature():
    assert LOSSES == {"reinforce": reinforce_loss, "ppo_clip": ppo_clip_loss}
    assert inspect.signature(reinforce_loss) == inspect.signature(ppo_clip_loss)


@pytest.mark.parametrize("name", ["reinforce", "ppo_clip"])
def test_losses_validate_inputs(name):
    fn = LOSSES[name]
    with pytest.raises(ValueError, match="advantages"):
        fn(lp(), torch.tensor(LOGPROBS), torch.ones(3), MASK)
    with pytest.raises(ValueError, match="mask"):
        fn(lp(), torch.tensor(LOGPROBS), ADV, torch.ones(2, 2))
    with pytest.raises(ValueError, match="normalize"):
        fn(lp(), torch.tensor(LOGPROBS), ADV, MASK, normalize="episodes")


def test_ppo_rejects_nonpositive_clip():
    with pytest.raises(ValueError, match="clip_eps"):
        ppo_clip_loss(lp(), torch.tensor(LOGPROBS), ADV, MASK, clip_eps=0.0)


# --------------------------------------------------------------------------- #
# KL estimators
# --------------------------------------------------------------------------- #


def test_kl_estimators_by_hand():
    # d = logp - ref = [0.5, 0.0, -1.0]
    logp = torch.tensor([[-1.0, -2.0, -2.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0]])
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([[0.5, 0.0, -1.0]]))
    torch.testing.assert_close(kl_k2(logp, ref), torch.tensor([[0.125, 0.0, 0.5]]))
    # exp(-0.5) + 0.5 - 1 = 0.1065307;  exp(0) - 0 - 1 = 0;  exp(1) - 1 - 1 = 0.7182818
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([[0.1065307, 0.0, 0.7182818]]))
    assert KL_ESTIMATORS == {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def test_kl_penalty_masks_and_dispatches():
    logp = torch.tensor([[-1.0, -2.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(kl_penalty(logp, ref, mask), torch.tensor([[0.1065307, 0.0, 0.0]]))
    torch.testing.assert_close(kl_penalty(logp, ref, mask, kind="k1"), torch.tensor([[0.5, 0.0, 0.0]]))
    # d k3 / d logp = 1 - exp(ref - logp) = 1 - exp(-0.5) = 0.3934693 on the first token
    kl_penalty(logp, ref, mask).sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.3934693, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="k3"):
        kl_penalty(logp, ref, mask, kind="k4")


def test_k3_non_negative_and_zero_when_equal():
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(8, 16, generator=g) * 5
    ref = -torch.rand(8, 16, generator=g) * 5
    assert (kl_k3(logp, ref) >= 0).all()
    assert (kl_k2(logp, ref) >= 0).all()
    assert (kl_k1(logp, ref) < 0).any()  # k1 is the one that can go negative
    assert torch.equal(kl_k3(logp, logp), torch.zeros(8, 16))


# --------------------------------------------------------------------------- #
# From logits
# --------------------------------------------------------------------------- #


def test_entropy_uniform_is_log_v():
    h = entropy_from_logits(torch.full((2, 3, 5), 7.0))
    torch.testing.assert_close(h, torch.full((2, 3), 1.6094379))  # log 5


def test_entropy_by_hand_and_edge_cases():
    # p = [0.5, 0.25, 0.25]: 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2 = 1.0397208
    logits = torch.tensor([0.5, 0.25, 0.25]).log().reshape(1, 1, 3) + 100.0
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([[1.0397208]]))
    # a banned token (-inf logit) contributes 0: uniform over the other 2 -> ln 2, with finite gradient
    logits = torch.tensor([[[0.0, 0.0, -math.inf]]], requires_grad=True)
    h = entropy_from_logits(logits)
    torch.testing.assert_close(h, torch.tensor([[0.6931472]]))
    h.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # huge logits do not overflow; bf16 in, float32 out
    h = entropy_from_logits(torch.tensor([[[1e4, 0.0]]], dtype=torch.bfloat16))
    assert h.dtype == torch.float32 and h.item() == 0.0


def test_token_logprobs_by_hand():
    # probs [0.25, 0.5, 0.25] -> log 0.5 for token 1, log 0.25 for token 2; uniform over 4 -> -log 4
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0, -math.inf], [1.0, 1.0, 1.0, 1.0]]])
    out = token_logprobs(logits, torch.tensor([[1, 2]]))
    torch.testing.assert_close(out, torch.tensor([[-0.6931472, -1.3862944]]))
    # large logits stay finite: log_softmax([1000, 0])[1] = -1000
    out = token_logprobs(torch.tensor([[[1000.0, 0.0]]]), torch.tensor([[1]]))
    torch.testing.assert_close(out, torch.tensor([[-1000.0]]))


def test_token_logprobs_equals_log_softmax_gather():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 4, 11, generator=g, dtype=torch.float64).to(torch.bfloat16)
    targets = torch.randint(0, 11, (3, 4), generator=g)
    out = token_logprobs(logits, targets)
    assert out.dtype == torch.float32  # upcast internally, not bf16-rounded
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(logits, targets[:, :2])
