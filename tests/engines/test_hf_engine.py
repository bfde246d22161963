"""HFEngine: greedy parity with transformers, exact logprobs, per-row seeds, async batching."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.engines.base import Completion, SamplingParams
from arena.engines.hf import HFEngine
from arena.tiny import TinyModelConfig, build_tiny_model

CFG = TinyModelConfig(vocab_size=512)


def chat(tok, content: str) -> str:
    return tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)


def dialogues(n: int = 256, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        if rng.random() < 0.5:
            pairs.append((f"Round {rng.randint(1, 10)} of 10. Answer with J or F.", rng.choice("JF")))
        else:
            pairs.append((f"The seller asks ${rng.randint(10, 99)}. Your offer?", f"OFFER ${rng.randint(1, 99)}"))
    return pairs


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny model trained for about a second on game dialogues, so it answers and emits <|end|>."""
    pairs = dialogues()
    path = build_tiny_model(CFG, [f"{q}\n{a}" for q, a in pairs], tmp_path_factory.mktemp("hf") / "model")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False) for q, a in pairs]
    enc = tok(texts, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        idx = torch.randint(0, enc.input_ids.shape[0], (32,), generator=g)
        ids, am = enc.input_ids[idx], enc.attention_mask[idx]
        loss = model(input_ids=ids, attention_mask=am, labels=ids.masked_fill(am == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.5
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def engine(model_path):
    return HFEngine(model_path)


@pytest.fixture(scope="module")
def prompts(engine):
    tok = engine.tokenizer
    return [
        tok.encode(chat(tok, "Round 3 of 10. Answer with J or F.")),
        tok.encode(chat(tok, "The seller asks $40. Your offer?")),
        tok.encode("Round 7 of"),
        tok.encode("OFFER $1 or more"),
        tok.encode(chat(tok, "Round 10 of 10. Answer with J or F. The seller asks $55. Your offer? Be quick.")),
    ]


def hf_greedy(engine: HFEngine, prompt: list[int], n: int) -> list[int]:
    out = engine.model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=n,
    )
    return out[0, len(prompt) :].tolist()


def teacher_forced_logprobs(engine: HFEngine, prompt: list[int], completion: list[int], temperature: float) -> list[float]:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = engine.model(ids).logits[0, len(prompt) - 1 : -1]
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1).tolist()


# ----- greedy parity and logprobs ---------------------------------------------------------------
def test_engine_loads_from_path(engine):
    assert engine.version == 0
    assert engine.max_batch_size == 64
    assert not engine.model.training
    assert engine.tokenizer.convert_tokens_to_ids("<|end|>") in engine.eos_token_ids


def test_greedy_matches_transformers_generate_single(engine, prompts):
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    for p in prompts:
        [c] = engine.generate_batch([p], params, [0])
        assert c.token_ids == hf_greedy(engine, p, 24)


def test_greedy_matches_transformers_generate_in_left_padded_batch(engine, prompts):
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    assert len({len(p) for p in prompts}) == len(prompts)  # really padded
    out = engine.generate_batch(prompts, params, list(range(len(prompts))))
    for p, c in zip(prompts, out):
        assert c.token_ids == hf_greedy(engine, p, 24)
    # the trained model answers chat prompts and ends its turn
    assert out[0].finish_reason == "stop" and out[0].text in ("J", "F")
    assert out[1].text.startswith("OFFER $")


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.0])
def test_logprobs_match_teacher_forcing(engine, prompts, temperature):
    params = SamplingParams(max_new_tokens=12, temperature=temperature)
    out = engine.generate_batch(prompts, params, [11, 12, 13, 14, 15])
    for p, c in zip(prompts, out):
        assert len(c.logprobs) == len(c.token_ids) > 0
        ref = teacher_forced_logprobs(engine, p, c.token_ids, temperature or 1.0)
        assert c.logprobs == pytest.approx(ref, abs=1e-4)


def test_score_equals_sampled_logprobs(engine, prompts):
    out = engine.generate_batch(prompts[:2], SamplingParams(max_new_tokens=10, temperature=1.0), [3, 4])
    for p, c in zip(prompts, out):
        assert engine.score(p, c.token_ids) == pytest.approx(c.logprobs, abs=1e-4)
    out = engine.generate_batch(prompts[:1], SamplingParams(max_new_tokens=10, temperature=0.5), [5])
    assert engine.score(prompts[0], out[0].token_ids, temperature=0.5) == pytest.approx(out[0].logprobs, abs=1e-4)
    assert engine.score(prompts[0], []) == []


# ----- per-row seeds ----------------------------------------------------------------------------
def test_row_sampling_depends_only_on_its_seed(engine, prompts):
    params = SamplingParams(max_new_tokens=16, temperature=1.0)
    target = prompts[3]
    [alone] = engine.generate_batch([target], params, [42])
    batched = engine.generate_batch(prompts, params, [1, 2, 3, 42, 5])
    shuffled = engine.generate_batch([prompts[4], target, prompts[0]], params, [9, 42, 8])
    for c in (batched[3], shuffled[1]):
        assert c.token_ids == alone.token_ids
        assert c.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
    again = engine.generate_batch([target], params, [42])
    assert again[0].token_ids == alone.token_ids

    by_seed = engine.generate_batch([target] * 6, params, [100, 101, 102, 103, 104, 105])
    assert len({tuple(c.token_ids) for c in by_seed}) > 1


def test_top_p_tiny_nucleus_is_greedy(engine, prompts):
    greedy = engine.generate_batch(prompts, SamplingParams(max_new_tokens=12, temperature=0.0), [0] * 5)
    nucleus = engine.generate_batch(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=1e-6), [1, 2, 3, 4, 5])
    for g, n in zip(greedy, nucleus):
        assert n.token_ids == g.token_ids
        # logprobs are under the full distribution, before truncation
        assert n.logprobs == pytest.approx(g.logprobs, abs=1e-5)


def test_top_p_restricts_samples(engine, prompts):
    """With top_p=0.5 every sampled token lies in the smallest set holding half the mass."""
    prompt = prompts[3]
    out = engine.generate_batch([prompt] * 16, SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.5), list(range(16)))
    with torch.no_grad():
        probs = torch.softmax(engine.model(torch.tensor([prompt])).logits[0, -1], -1)
    sorted_p, order = probs.sort(descending=True)
    k = int(((sorted_p.cumsum(-1) - sorted_p) < 0.5).sum())
    allowed = set(order[:k].tolist())
    assert {c.token_ids[0] for c in out} <= allowed


# ----- stopping ---------------------------------------------------------------------------------
def test_stops_at_end_token(engine, prompts):
    end = engine.tokenizer.convert_tokens_to_ids("<|end|>")
    [c] = engine.generate_batch([prompts[0]], SamplingParams(max_new_tokens=20, temperature=0.0), [0])
    assert c.finish_reason == "stop"
    assert c.token_ids[-1] == end and end not in c.token_ids[:-1]
    assert "<|end|>" not in c.text
    assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)


def test_custom_stop_token_and_max_new_tokens(engine, prompts):
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    [full] = engine.generate_batch([prompts[1]], params, [0])
    assert len(full.token_ids) >= 3
    stop_tok = full.token_ids[1]
    [c] = engine.generate_batch([prompts[1]], SamplingParams(max_new_tokens=20, temperature=0.0, stop_token_ids=(stop_tok,)), [0])
    assert c.token_ids == full.token_ids[:2] and c.finish_reason == "stop"
    assert c.text == engine.tokenizer.decode(full.token_ids[:1])

    for n in (1, 2):
        out = engine.generate_batch(prompts, SamplingParams(max_new_tokens=n, temperature=1.0), [0, 1, 2, 3, 4])
        for c in out:
            assert 1 <= len(c.token_ids) <= n
            assert c.finish_reason == ("stop" if c.token_ids[-1] in engine.eos_token_ids else "length")
    assert engine.generate_batch(prompts[:2], SamplingParams(max_new_tokens=0), [0, 1])[0].token_ids == []


def test_rows_finish_independently(engine, prompts):
    """A row that stops early keeps its short answer while the others run to the length limit."""
    params = SamplingParams(max_new_tokens=16, temperature=0.0)
    out = engine.generate_batch([prompts[0], prompts[3]], params, [0, 0])
    short, long = out
    assert short.finish_reason == "stop" and len(short.token_ids) < 16
    assert long.finish_reason == "length" and len(long.token_ids) == 16
    assert len(short.logprobs) == len(short.token_ids)


def test_bad_input_is_rejected(engine, prompts):
    with pytest.raises(ValueError, match="seeds"):
        engine.generate_batch(prompts, SamplingParams(), [0])
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate_batch([[]], SamplingParams(), [0])
    with pytest.raises(ValueError, match="top_p"):
        engine.generate_batch(prompts[:1], SamplingParams(top_p=0.0), [0])


# ----- async batching ---------------------------------------------------------------------------
def test_async_generate_batches_concurrent_callers(engine, prompts):
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    requests = [(prompts[i % len(prompts)], 1000 + i) for i in range(8)]
    batches_before = engine.stats.batches

    async def main() -> list[Completion]:
        return await asyncio.gather(*(engine.generate(p, params, s) for p, s in requests))

    results = asyncio.run(main())
    assert engine.stats.batches - batches_before < 8
    expected = engine.generate_batch([p for p, _ in requests], params, [s for _, s in requests])
    for got, want in zip(results, expected):
        assert got.token_ids == want.token_ids
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
        assert got.text == want.text


# ----- weights ----------------------------------------------------------------------------------
def test_update_weights_changes_outputs_and_bumps_version(model_path, prompts):
    engine = HFEngine(model_path)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    before = engine.generate_batch(prompts, params, [0] * 5)
    score_before = engine.score(prompts[0], before[0].token_ids)

    g = torch.Generator().manual_seed(0)
    new = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in engine.model.state_dict().items()}
    engine.update_weights(new, version=3)
    assert engine.version == 3
    after = engine.generate_batch(prompts, params, [0] * 5)
    assert [c.token_ids for c in after] != [c.token_ids for c in before]
    assert engine.score(prompts[0], before[0].token_ids) != pytest.approx(score_before, abs=1e-3)
    # greedy parity still holds under the new weights
    assert after[2].token_ids == hf_greedy(engine, prompts[2], 12)

    with pytest.raises(RuntimeError):
        engine.update_weights({"nope": torch.zeros(1)}, version=4)


def test_from_model_wraps_loaded_objects(model_path, engine, prompts):
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    wrapped = HFEngine.from_model(model, tok, max_batch_size=8)
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    a = wrapped.generate_batch(prompts, params, [7] * 5)
    b = engine.generate_batch(prompts, params, [7] * 5)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert wrapped.max_batch_size == 8 and wrapped.version == 0
