"""LoRA adapters on one base model (arena.adapters, peft): an HF engine serves several adapters in
one batched forward with the outputs each would give alone, and adapters move as their own tensors."""

from __future__ import annotations

import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.adapters import BASE, AdapterView, LoraSpec, adapter_state, add_adapters, load_adapter_state, routed
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine

SPEC = LoraSpec(rank=4, alpha=8)
GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=6, temperature=1.0)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    """The tiny model with two adapters whose B matrices are random, so each changes what it says."""
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    e = HFEngine.from_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tok)
    e.add_adapters(SPEC, ["seller", "buyer"], random_init=True)
    return e


def prompts(tok) -> list[list[int]]:
    texts = ["Round 1 of 10. Answer with J or F.", "The seller asks $40. Your offer?", "Round 7 of 10.", "OFFER $17"]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def test_a_mixed_adapter_batch_gives_each_row_what_its_adapter_gives_alone(engine):
    ps = prompts(engine.tokenizer)
    who = ["seller", "buyer", None, "seller"]
    for params in (GREEDY, SAMPLED):
        mixed = engine.generate_batch(ps, params, [11, 12, 13, 14], adapters=who)
        for i, (p, name) in enumerate(zip(ps, who)):
            (alone,) = engine.generate_batch([p], params, [11 + i], adapters=[name])
            assert mixed[i].token_ids == alone.token_ids, f"row {i} ({name})"
            assert mixed[i].logprobs == pytest.approx(alone.logprobs, abs=1e-5)
    # one prompt, three rows, three adapters: three different distributions in one batch
    same = engine.generate_batch([ps[0]] * 3, GREEDY, [1, 1, 1], adapters=["seller", "buyer", None])
    first = [c.logprobs[0] for c in same]
    assert len({round(x, 3) for x in first}) == 3, first
    # and the adapters are not the base: the same prompt, three different distributions
    scores = {name: engine.score(ps[0], [5, 6, 7], adapter=name) for name in ("seller", "buyer", None)}
    assert scores["seller"] != pytest.approx(scores[None], abs=1e-3) and scores["buyer"] != pytest.approx(scores["seller"], abs=1e-3)


def test_adapter_views_share_the_engines_batches(engine):
    """Two policies' agents, each through its own view, are served in the same forward passes."""
    ps = prompts(engine.tokenizer)
    views = {name: AdapterView(engine, name) for name in ("seller", "buyer")}
    who = ["seller", "buyer", "buyer", "seller"]

    async def play():
        return await asyncio.gather(*(views[name].generate(p, GREEDY, i) for i, (p, name) in enumerate(zip(ps, who))))

    batches = engine.stats.batches
    out = asyncio.run(play())
    assert engine.stats.batches == batches + 1, "one batch for both adapters' requests"
    for i, (p, name) in enumerate(zip(ps, who)):
        assert out[i].token_ids == views[name].generate_batch([p], GREEDY, [i])[0].token_ids
    assert views["seller"].version == 0
    with pytest.raises(KeyError, match="no adapter 'judge'"):
        AdapterView(engine, "judge")
    with pytest.raises(RuntimeError, match="update_adapter"):
        engine.update_weights(engine.model.state_dict(), 1)


def test_an_adapter_moves_as_its_own_tensors_and_a_view_serves_the_new_version(engine, tiny_model_dir):
    learner = add_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), SPEC, ["seller"], random_init=True)
    state = adapter_state(learner, "seller")
    base_params = sum(p.numel() for p in learner.base_model.model.parameters() if not p.requires_grad)
    assert state and all("lora_" in k for k in state) and sum(v.numel() for v in state.values()) < base_params / 10
    target = HFEngine.from_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), engine.tokenizer)
    target.add_adapters(SPEC, ["seller", "buyer"])
    view = AdapterView(target, "buyer")
    view.update_weights(state, 3)  # the learner's "seller" adapter, served as "buyer"
    assert view.version == 3 and target.adapter_versions["seller"] == 0
    p = prompts(engine.tokenizer)[1]
    with torch.inference_mode():
        ids = torch.tensor([p + [5, 6, 7]])
        expected = torch.log_softmax(learner(input_ids=ids).logits[0, len(p) - 1 : -1].float(), -1).gather(-1, ids[0, len(p) :, None]).squeeze(-1)
    assert view.score(p, [5, 6, 7]) == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        load_adapter_state(target.model, "buyer", {"nonsense": torch.zeros(1)})


def test_the_routed_forward_equals_peft_serving_each_adapter_alone(tiny_model_dir):
    """The engine's mixed-batch forward (one stacked pass per layer) against peft's own forward with
    each row's adapter set alone, and against peft's mixed batch; rows of unequal rank included."""
    model = add_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), SPEC, ["seller", "buyer"], random_init=True, seed=1)
    model = add_adapters(model, LoraSpec(rank=2, alpha=3, target_modules=["q_proj", "v_proj"]), ["judge"], random_init=True, seed=2).eval()
    torch.manual_seed(3)
    ids = torch.randint(5, 60, (5, 9))
    rows = ["buyer", None, "seller", "judge", "buyer"]
    with torch.inference_mode():
        with routed(model, rows) as extra:
            assert extra == {}, "plain LoRA linears take the stacked path"
            got = model(input_ids=ids).logits
        reference = model(input_ids=ids, adapter_names=[BASE if r is None else r for r in rows]).logits
        for i, r in enumerate(rows):
            if r is None:
                with model.disable_adapter():
                    alone = model(input_ids=ids[i : i + 1]).logits
            else:
                model.set_adapter(r)
                alone = model(input_ids=ids[i : i + 1]).logits
            assert torch.allclose(got[i], alone[0], atol=1e-5), f"row {i} ({r})"
        assert torch.allclose(got, reference, atol=1e-5)
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        for i, r in enumerate(rows):  # and each adapter changes its row
            assert torch.equal(got[i], plain[i]) if r is None else not torch.allclose(got[i], plain[i], atol=1e-3), f"row {i} ({r})"
        # a batch of one adapter, and one of base rows only
        with routed(model, ["seller", "seller"]):
            one = model(input_ids=ids[:2]).logits
        model.set_adapter("seller")
        assert torch.allclose(one, model(input_ids=ids[:2]).logits, atol=1e-5)
        with routed(model, [None, None]):
            base = model(input_ids=ids[:2]).logits
        with model.disable_adapter():
            assert torch.allclose(base, model(input_ids=ids[:2]).logits, atol=0)
        # outside, the model is as it was: adapter "seller" active, no hooks left
        assert torch.allclose(model(input_ids=ids[:2]).logits, one, atol=1e-5)
        with pytest.raises(KeyError, match="no adapter 'z'"):
            with routed(model, ["z"]):
                pass
