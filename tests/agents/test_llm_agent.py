"""The LLM agent on the real HF engine and the locally built tiny model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from arena.agents.base import PlayerView
from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.records import Matchup
from arena.rollout import play_episode, play_many


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(tiny_model_dir, max_batch_size=64)


def _view(history=(), obs="Round 1 of 10. Answer with J or F.") -> PlayerView:
    return PlayerView(game="repeated_matrix-v0", player="player_0", observation=obs, history=list(history), rng=np.random.default_rng(0))


def test_prompt_is_the_chat_template_of_system_history_and_observation(engine):
    agent = LLMAgent(engine, history_turns=1)
    view = _view(history=[("old obs", "F"), ("last obs", "J")])
    text = engine.tokenizer.decode(agent.prompt_ids(view))
    assert text == (
        "<|system|>You are player_0 in the game repeated_matrix-v0. Reply with your move.<|end|>"
        "<|user|>last obs<|end|><|assistant|>J<|end|>"
        "<|user|>Round 1 of 10. Answer with J or F.<|end|><|assistant|>"
    )


def test_history_is_dropped_to_fit_the_prompt_budget(engine):
    long_history = [(f"observation number {i} " * 20, "J") for i in range(10)]
    agent = LLMAgent(engine, history_turns=10, max_prompt_tokens=300)
    ids = agent.prompt_ids(_view(history=long_history))
    assert len(ids) <= 300
    assert engine.tokenizer.decode(ids).endswith("Answer with J or F.<|end|><|assistant|>")


def test_action_carries_the_sampled_tokens_and_their_logprobs(engine):
    agent = LLMAgent(engine, sampling=SamplingParams(max_new_tokens=12, temperature=1.0))
    action = asyncio.run(agent.act(_view()))
    assert 1 <= len(action.completion_ids) <= 12 and len(action.logprobs) == len(action.completion_ids)
    # the learner's view of the same tokens: teacher-forced scoring under the same weights
    scored = engine.score(action.prompt_ids, action.completion_ids)
    np.testing.assert_allclose(scored, action.logprobs, atol=1e-4)
    end = engine.tokenizer.convert_tokens_to_ids("<|end|>")
    visible = [t for t in action.completion_ids if t != end]
    assert action.text == engine.tokenizer.decode(visible, skip_special_tokens=True).strip()


def test_untrained_model_output_is_an_illegal_move_handled_by_the_rule(engine):
    agent = LLMAgent(engine, sampling=SamplingParams(max_new_tokens=16))
    bot = make_fixed_policy("scripted/fair_buyer", "negotiation-v0")
    m = Matchup(game="negotiation-v0", seed=1, seats={"seller": "main", "buyer": bot.policy_id})
    ep = asyncio.run(play_episode(m, {"main": agent, bot.policy_id: bot}))
    llm_turns = [t for t in ep.turns if t.policy_id == "main"]
    assert llm_turns and all(t.completion_ids for t in llm_turns)
    assert any(t.illegal for t in llm_turns)  # a random tiny model rarely writes a valid move
    assert ep.returns.keys() == {"seller", "buyer"}


def test_concurrent_episodes_share_batches_and_match_one_at_a_time_play(engine):
    agent = LLMAgent(engine, sampling=SamplingParams(max_new_tokens=8))
    bot = make_fixed_policy("scripted/tit_for_tat", "repeated_matrix-v0")
    pool = {"main": agent, bot.policy_id: bot}
    matchups = [Matchup(game="repeated_matrix-v0", seed=s, seats={"player_0": "main", "player_1": bot.policy_id}) for s in range(16)]
    before = engine.stats.batches
    together = asyncio.run(play_many(matchups, pool, concurrency=16))
    batches = engine.stats.batches - before
    llm_turns = sum(t.policy_id == "main" for ep in together for t in ep.turns)
    assert batches < llm_turns / 4, f"{llm_turns} model turns took {batches} batches: episodes are not sharing forward passes"
    alone = [asyncio.run(play_episode(m, pool, episode_id=ep.episode_id)) for m, ep in zip(matchups, together)]
    for a, b in zip(alone, together):
        assert [t.completion_ids for t in a.turns] == [t.completion_ids for t in b.turns]
        assert a.returns == b.returns
