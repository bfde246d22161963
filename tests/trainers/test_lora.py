"""Policies as LoRA adapters on one base (arena.trainers.lora): each learner steps its own adapter,
the base and the other adapters stay as they were, and the KL reference is the base itself."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.adapters import LoraSpec, adapter_state, add_adapters
from arena.config import TrainerConfig
from arena.trainers.batching import Sample, collate, forward_logprobs
from arena.trainers.lora import AdapterLearner, adapter_parameters


@pytest.fixture
def shared(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = add_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraSpec(rank=4, alpha=8), ["seller", "buyer"])
    return model, tok


def test_each_policy_learns_in_its_own_adapter_and_nothing_else_moves(shared):
    model, tok = shared
    prompt = tok.encode("Answer with J or F.", add_special_tokens=False)
    good = Sample(prompt, tok.encode("J", add_special_tokens=False), [0.0], +1.0)
    bad = Sample(prompt, tok.encode("F", add_special_tokens=False), [0.0], -1.0)
    cfg = TrainerConfig(recipe="pg", lr=1e-2, batch_size=2, kl_coef=0.1)
    seller, buyer = (AdapterLearner(model, name, cfg, pad_id=tok.pad_token_id) for name in ("seller", "buyer"))
    assert seller.reference is None, "no reference copy: the base is the reference"
    trainable = sum(p.numel() for p in seller.trainable)
    assert 0 < trainable < sum(p.numel() for p in model.parameters()) / 10

    base = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" not in n}
    buyer_before = adapter_state(model, "buyer")
    batch = collate([good, bad], tok.pad_token_id)
    model.set_adapter("seller")
    with torch.no_grad():
        before = forward_logprobs(model, batch)[0]
    first = seller.learn([good, bad], torch.Generator().manual_seed(0))
    assert first["kl"] == pytest.approx(0.0, abs=1e-6), "a new adapter (B = 0) is the base model exactly"
    for _ in range(3):
        last = seller.learn([good, bad], torch.Generator().manual_seed(0))
    assert last["kl"] > 1e-5 and seller.version == 4
    model.set_adapter("seller")
    with torch.no_grad():
        after = forward_logprobs(model, batch)[0]
    mask = batch.mask.bool()
    assert after[0][mask[0]].sum() > before[0][mask[0]].sum() and after[1][mask[1]].sum() < before[1][mask[1]].sum()
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if ".lora_" not in n), "the base is frozen"
    assert all(torch.equal(v, adapter_state(model, "buyer")[k]) for k, v in buyer_before.items()), "the other policy's adapter did not move"
    # the buyer then learns in its own adapter, and the seller's stays where it was
    seller_after = adapter_state(model, "seller")
    buyer.learn([bad], torch.Generator().manual_seed(1))
    assert any(not torch.equal(v, adapter_state(model, "buyer")[k]) for k, v in buyer_before.items())
    assert all(torch.equal(v, adapter_state(model, "seller")[k]) for k, v in seller_after.items())
    assert set(seller.weights) == set(seller_after) and all("lora_" in k for k in seller.weights)


def test_an_unknown_adapter_is_named(shared):
    model, tok = shared
    with pytest.raises(KeyError, match="no adapter 'judge'"):
        adapter_parameters(model, "judge")


def test_an_adapter_learner_replays_into_its_own_adapter_only(shared):
    """trainer.replay_coef with LoRA policies: the replayed cross-entropy reaches the learner's adapter
    (a taught answer becomes likelier with no reward at all), and the base and other adapters stay."""
    model, tok = shared
    prompt, j = tok.encode("Answer with J or F.", add_special_tokens=False), tok.encode("J", add_special_tokens=False)
    neutral = Sample(prompt, tok.encode("F", add_special_tokens=False), [0.0], 0.0)  # no advantage: only the replay moves
    cfg = TrainerConfig(recipe="pg", lr=1e-2, batch_size=1, kl_coef=0.0, replay_coef=1.0, replay_batch=2)
    seller = AdapterLearner(model, "seller", cfg, pad_id=tok.pad_token_id, replay=[(prompt, j)])
    base = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" not in n}
    buyer_before = adapter_state(model, "buyer")
    batch = collate([Sample(prompt, j, [0.0], 0.0)], tok.pad_token_id)
    model.set_adapter("seller")
    with torch.no_grad():
        before = forward_logprobs(model, batch)[0][batch.mask.bool()].sum()
    for _ in range(3):
        stats = seller.learn([neutral], torch.Generator().manual_seed(0))
    model.set_adapter("seller")
    with torch.no_grad():
        after = forward_logprobs(model, batch)[0][batch.mask.bool()].sum()
    assert stats["replay_loss"] > 0 and after > before + 0.1
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if ".lora_" not in n), "the base is frozen"
    assert all(torch.equal(v, adapter_state(model, "buyer")[k]) for k, v in buyer_before.items()), "the other adapter did not move"
