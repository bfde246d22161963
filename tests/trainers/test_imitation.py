"""Warm start by imitation of scripted bots, on the locally built tiny model."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
from conftest import MODEL_GAMES
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.agents.random_agent import RandomPolicy
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.records import Matchup
from arena.rollout import play_many
from arena.trainers.imitation import (
    META_FILE,
    ImitationConfig,
    cached_warm_start,
    collate,
    default_seatings,
    demonstrations,
    imitation_examples,
    prompt_targets,
)

MATRIX = "repeated_matrix-v0"
NEGOTIATION = "negotiation-v0"


def _load(path):
    return AutoModelForCausalLM.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = _load(tiny_model_dir)
    return model, tok, LLMAgent(HFEngine.from_model(model, tok))


# ----- examples -----------------------------------------------------------------------------------


def test_examples_are_the_agents_prompts_and_the_bots_moves(tiny):
    _, tok, agent = tiny
    seatings = [(NEGOTIATION, {"seller": "scripted/fair_seller", "buyer": "scripted/hard_buyer"})]
    episodes = demonstrations(seatings, 2, seed=3)
    examples = imitation_examples(episodes, tok, render=agent.prompt_ids)
    turns = [t for ep in episodes for t in ep.turns]
    assert len(examples) == len(turns) > 4
    for (prompt, target), turn in zip(examples, turns):
        text = tok.decode(prompt)
        assert text.startswith(f"<|system|>You are {turn.player} in the game {NEGOTIATION}.")
        assert text.endswith(f"<|user|>{turn.observation}<|end|><|assistant|>")
        assert tok.decode(target) == turn.action + "<|end|>"


def test_the_view_carries_the_players_own_history(tiny):
    model, tok, _ = tiny
    remembering = LLMAgent(HFEngine.from_model(model, tok), history_turns=1)
    episodes = demonstrations([(MATRIX, {"player_0": "scripted/alternate", "player_1": "scripted/tit_for_tat"})], 1, seed=0)
    examples = imitation_examples(episodes, tok, players={"player_0"}, render=remembering.prompt_ids)
    mine = [t for t in episodes[0].turns if t.player == "player_0"]
    second = tok.decode(examples[1][0])
    assert f"<|user|>{mine[0].observation}<|end|><|assistant|>{mine[0].action}<|end|>" in second
    assert second.endswith(f"<|user|>{mine[1].observation}<|end|><|assistant|>")


def test_illegal_turns_are_skipped_and_players_filter(tiny):
    _, tok, agent = tiny
    junk = RandomPolicy(policy_id="junk", junk_rate=0.5)  # half its moves are random characters: mostly illegal
    bot = make_fixed_policy("scripted/tit_for_tat", MATRIX)
    matchups = [Matchup(game=MATRIX, seed=s, seats={"player_0": "junk", "player_1": bot.policy_id}) for s in range(4)]
    episodes = asyncio.run(play_many(matchups, {"junk": junk, bot.policy_id: bot}))
    turns = [t for ep in episodes for t in ep.turns]
    assert any(t.illegal for t in turns) and any(not t.illegal for t in turns)

    everyone = imitation_examples(episodes, tok, render=agent.prompt_ids)
    assert len(everyone) == sum(not t.illegal for t in turns)
    legal_actions = {t.action for t in turns if not t.illegal}
    assert all(tok.decode(target[:-1]) in legal_actions for _, target in everyone)

    bot_only = imitation_examples(episodes, tok, players={"player_1"}, render=agent.prompt_ids)
    assert len(bot_only) == sum(t.player == "player_1" and not t.illegal for t in turns)
    assert all("You are player_1" in tok.decode(prompt) for prompt, _ in bot_only)


def test_collate_masks_the_prompt_and_keeps_a_long_prompts_end():
    ids, mask, labels = collate([([1, 2, 3, 4, 5], [6, 7]), ([8], [9])], max_len=3, pad_id=0)
    assert ids.tolist() == [[3, 4, 5, 6, 7], [8, 9, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert labels.tolist() == [[-100, -100, -100, 6, 7], [-100, 9, -100, -100, -100]]


def test_prompt_targets_are_the_next_prompt_tokens_only():
    ids, mask, labels = collate([([1, 2, 3, 4, 5], [6, 7]), ([8], [9])], max_len=3, pad_id=0)
    # row 0 predicts 4 and 5 from the prompt; 6 and 7 are the target's, scored apart; row 1's prompt is one token
    assert prompt_targets(ids, mask, labels).tolist() == [[4, 5, -100, -100], [-100, -100, -100, -100]]


def test_length_chunks_split_a_batch_only_where_padding_costs_more_than_a_pass():
    from arena.trainers.imitation import length_chunks

    # two lengths far apart: two chunks, shortest first; the split saves 6 x (400 - 60) positions
    chunks = length_chunks([400, 60, 410, 55, 58, 405, 61, 62], overhead=256)
    assert chunks == [[3, 4, 1, 6, 7], [0, 5, 2]]
    assert length_chunks([100, 101, 99, 102], overhead=256) == [[2, 0, 1, 3]]  # alike: one pass
    assert sorted(i for c in length_chunks(list(range(1, 40)), overhead=8) for i in c) == list(range(39))


@pytest.mark.parametrize("prompt_loss", [0.0, 0.5])
def test_a_step_in_length_chunks_has_the_gradient_of_the_batch_padded_as_one(prompt_loss):
    """batch_step's gradients and loss against the batch padded to its longest row and scored at once (the
    mean over all its target tokens, plus prompt_loss times the mean over its prompt tokens)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from arena.trainers.imitation import batch_step, length_chunks, target_loss

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4))
    gen = torch.Generator().manual_seed(1)
    lengths = [(3, 2), (290, 4), (5, 1), (288, 3), (4, 6), (700, 2)]  # (prompt, target): short and long rows, one cut to max_len
    rows = [(torch.randint(1, 40, (p,), generator=gen).tolist(), torch.randint(1, 40, (t,), generator=gen).tolist()) for p, t in lengths]
    assert len(length_chunks([min(len(p), 300) + len(t) for p, t in rows])) > 1  # the chunked path is the one tested
    model.zero_grad()
    scored = batch_step(model, rows, 300, pad_id=0, device="cpu", prompt_loss=prompt_loss)
    chunked = {k: v.grad.clone() for k, v in model.named_parameters()}
    batch_step(model, rows, 300, pad_id=0, device="cpu", prompt_loss=prompt_loss, scale=2.0)  # adds twice the gradient
    for k, v in model.named_parameters():
        torch.testing.assert_close(v.grad, 3 * chunked[k], rtol=1e-4, atol=1e-6)
    model.zero_grad()
    ids, mask, labels = collate(rows, 300, 0)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
    whole = target_loss(logits, labels[:, 1:])
    (whole + prompt_loss * target_loss(logits, prompt_targets(ids, mask, labels))).backward()
    assert float(scored) == pytest.approx(float(whole), rel=1e-5)
    for k, v in model.named_parameters():
        torch.testing.assert_close(chunked[k], v.grad, rtol=1e-4, atol=1e-6)


# ----- training -----------------------------------------------------------------------------------


def test_training_lowers_the_loss_changes_weights_and_is_deterministic(tiny_model_dir, tiny):
    from arena.trainers.imitation import train_imitation

    _, tok, agent = tiny
    seatings = [(MATRIX, {"player_0": "scripted/tit_for_tat", "player_1": "scripted/random"})]
    examples = imitation_examples(demonstrations(seatings, 4, seed=0), tok, render=agent.prompt_ids)
    cfg = ImitationConfig(steps=30, batch_size=8, seed=7)
    curves = []
    for _ in range(2):
        model, _ = _load(tiny_model_dir)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        curves.append(train_imitation(model, examples, cfg, pad_id=tok.pad_token_id))
        assert not model.training
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"
    first, second = curves
    assert len(first) == cfg.steps
    assert sum(first[-5:]) / 5 < 0.5 * sum(first[:5]) / 5
    assert first == second


def test_prompt_loss_teaches_the_prompt_and_reports_the_targets_loss(tiny_model_dir, tiny):
    from arena.trainers.imitation import target_loss, train_imitation

    _, tok, _ = tiny
    prompt = tok.encode("OFFER 3 ACCEPT REJECT " * 6, add_special_tokens=False)
    examples = [(prompt, tok.encode(" ACCEPT", add_special_tokens=False))] * 8

    def prompt_loss(model):
        ids, mask, labels = collate(examples[:1], 512, tok.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return float(target_loss(logits, prompt_targets(ids, mask, labels)))

    after = {}
    for weight in (0.0, 1.0):
        model, _ = _load(tiny_model_dir)
        start = prompt_loss(model)
        losses = train_imitation(model, examples, ImitationConfig(steps=40, batch_size=4, prompt_loss=weight), pad_id=tok.pad_token_id)
        after[weight] = prompt_loss(model)
        assert losses[-1] < 0.5 * losses[0], (weight, losses[0], losses[-1])  # the target's own loss either way
    assert after[1.0] < 0.6 * start, (start, after)
    assert after[1.0] < 0.5 * after[0.0]


# ----- the point of warm start, measured ----------------------------------------------------------

#: a build small enough to test the cache and its progress lines in seconds; what imitation does to play is
#: measured on the session's default warm start (conftest's warm_model_dir, which the suite builds anyway)
TEST_CFG = ImitationConfig(steps=20, batch_size=8, seatings=default_seatings(MODEL_GAMES))


def _llm_turns(model_path, game, seat, opp_seat, opponent, n=16):
    agent = LLMAgent(HFEngine(model_path), sampling=SamplingParams(max_new_tokens=24, temperature=1.0))
    bot = make_fixed_policy(opponent, game)
    matchups = [Matchup(game=game, seed=1000 + s, seats={seat: "main", opp_seat: opponent}) for s in range(n)]
    episodes = asyncio.run(play_many(matchups, {"main": agent, opponent: bot}))
    return [t for ep in episodes for t in ep.turns if t.policy_id == "main"]


def _illegal_rate(turns):
    return sum(t.illegal for t in turns) / len(turns)


#: the progress lines of the module's warm-start build (what `arena run`'s spinner shows)
BUILD_PROGRESS: list[str] = []


@pytest.fixture(scope="module")
def warm_dir(tiny_model_dir, tmp_path_factory):
    from arena.progress import build_progress

    with build_progress(BUILD_PROGRESS.append):
        return cached_warm_start(tiny_model_dir, TEST_CFG, tmp_path_factory.mktemp("warm_cache"))


def test_warm_start_is_saved_with_its_metadata_and_cached(tiny_model_dir, warm_dir):
    meta = json.loads((warm_dir / META_FILE).read_text())
    assert meta["config"] == TEST_CFG.model_dump(mode="json")
    assert meta["examples"] > 1000 and meta["final_loss"] < meta["first_loss"]
    assert warm_dir.name.startswith("warm-")
    # built once, then reused; nothing half-written is left beside it
    assert cached_warm_start(tiny_model_dir, TEST_CFG, warm_dir.parent.parent) == warm_dir
    assert [p.name for p in warm_dir.parent.iterdir()] == [warm_dir.name]
    # the build reported its steps as it went: every tenth, and the last with its loss
    steps = TEST_CFG.steps
    assert len(BUILD_PROGRESS) == len({*range(10, steps + 1, 10), steps})
    assert BUILD_PROGRESS[-1].startswith(f"imitation: step {steps}/{steps}, loss ")
    assert float(BUILD_PROGRESS[-1].rsplit(" ", 1)[1]) == pytest.approx(meta["final_loss"], abs=1e-3)


def test_warm_start_turns_illegal_play_legal_in_the_matrix_game(tiny_model_dir, warm_model_dir):
    before = _illegal_rate(_llm_turns(tiny_model_dir, MATRIX, "player_0", "player_1", "scripted/tit_for_tat"))
    after = _illegal_rate(_llm_turns(warm_model_dir, MATRIX, "player_0", "player_1", "scripted/tit_for_tat"))
    # measured on 2 CPU cores: 0.95 before, 0.01 after (a 200-step warm start: 0.02-0.14)
    assert before > 0.8
    assert after < 0.2, f"illegal-move rate {before:.2f} -> {after:.2f}"


def test_warm_start_makes_offers_and_accepts_in_negotiation(tiny_model_dir, warm_model_dir):
    before = _llm_turns(tiny_model_dir, NEGOTIATION, "seller", "buyer", "scripted/fair_buyer")
    after = _llm_turns(warm_model_dir, NEGOTIATION, "seller", "buyer", "scripted/fair_buyer")
    legal_offers = [t for t in after if not t.illegal and "OFFER" in t.action.upper()]
    # measured: 0.90 illegal before, 0.09 after, 126 legal offers (a 200-step warm start: 0.2-0.4 illegal)
    assert _illegal_rate(before) > 0.8
    assert _illegal_rate(after) < 0.35, f"illegal-move rate {_illegal_rate(before):.2f} -> {_illegal_rate(after):.2f}"
    assert len(legal_offers) >= 40


def test_the_imitation_warm_start_replays_the_examples_it_was_built_from(warm_model_dir):
    """trainer.replay_coef's examples for the default warm start: its own demonstrations, played again from
    the seatings its build recorded (as many examples as the build counted; the same for the same build)."""
    from arena.trainers.imitation import META_FILE
    from arena.warm_start import replay_examples

    meta = json.loads((warm_model_dir / META_FILE).read_text())
    examples = replay_examples(ImitationConfig(), warm_model_dir)
    assert len(examples) == meta["examples"] > 0
    assert all(prompt and target for prompt, target in examples)
    assert replay_examples(ImitationConfig(), warm_model_dir)[:20] == examples[:20]
