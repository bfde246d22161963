"""DPO: the loss by hand, sequence log-probabilities, and learning from debate trees with the tiny model
(trees on other games: tests/test_trees.py)."""

from __future__ import annotations

import asyncio
import copy
import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console

from arena.agents.catalog import make_fixed_policy
from arena.agents.llm import LLMAgent
from arena.config import RunConfig
from arena.engines.base import SamplingParams
from arena.engines.hf import HFEngine
from arena.records import Matchup
from arena.trainers.dpo import DPOLearner, dpo_loss, dpo_step, pair_logprobs, sequence_logprobs
from arena.trainers.trees import TreeConfig, grow_trees

GAME = "debate-v0"
#: binary questions and one debate round: a tiny model's guess is right half the time, and its reply is its final answer
KW = {"question_kinds": ["true_false"], "rounds": 1}
STUBBORN = "scripted/stubborn_wrong"


# ----- the loss ---------------------------------------------------------------------------------
def test_dpo_loss_by_hand():
    pc = torch.tensor([-1.0, -3.0], requires_grad=True)
    pr = torch.tensor([-2.0, -1.0], requires_grad=True)
    rc, rr = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    loss, margins = dpo_loss(pc, pr, rc, rr, beta=0.5)
    # pair 0: 0.5 * ((-1 + 1.5) - (-2 + 1.5)) = 0.5; pair 1: 0.5 * ((-3 + 2) - (-1 + 2)) = -1
    assert margins.tolist() == pytest.approx([0.5, -1.0])
    assert not margins.requires_grad
    # mean(-log sigmoid(m)) = mean(log(1 + e^-0.5), log(1 + e^1))
    assert loss.item() == pytest.approx((math.log(1 + math.exp(-0.5)) + math.log(1 + math.e)) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(0.8936695, abs=1e-6)
    loss.backward()
    # d loss / d pi_w = -beta * sigmoid(-m) / B; d loss / d pi_l = +beta * sigmoid(-m) / B
    sig = lambda x: 1 / (1 + math.exp(-x))
    assert pc.grad.tolist() == pytest.approx([-0.25 * sig(-0.5), -0.25 * sig(1.0)], abs=1e-6)
    assert pr.grad.tolist() == pytest.approx([0.25 * sig(-0.5), 0.25 * sig(1.0)], abs=1e-6)


def test_dpo_loss_at_the_reference_is_log_2_and_inputs_are_checked():
    x = torch.tensor([-4.0, -2.0, -7.0])
    loss, margins = dpo_loss(x, x - 1, x, x - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2)) and margins.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match=r"ref_chosen_logps shape \(2,\)"):
        dpo_loss(x, x, x[:2], x, beta=0.1)
    with pytest.raises(ValueError, match=r"must be \[B\]"):
        dpo_loss(x[None], x[None], x[None], x[None], beta=0.1)


def test_sequence_logprobs_count_only_completion_tokens(tiny_model_dir):
    engine = HFEngine(tiny_model_dir)
    prompts, completions = [[5, 6, 7, 8, 9], [11, 12]], [[20, 21, 22], [30]]
    with torch.no_grad():
        got = sequence_logprobs(engine.model, prompts, completions, pad_id=engine.pad_token_id)
    want = [sum(engine.score(p, c)) for p, c in zip(prompts, completions)]
    assert got.tolist() == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match="at least one token"):
        sequence_logprobs(engine.model, [[1]], [[]])


# ----- learning from debate trees with the tiny model ----------------------------------------------
@pytest.fixture(scope="module")
def debate_warm_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model after a short imitation of the debate bots on the games trained below: it writes
    the message format and, sampled at temperature 0.5, sometimes keeps and sometimes changes its answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arena.rollout import play_many
    from arena.trainers.imitation import ImitationConfig, imitation_examples, train_imitation

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    bots = ("honest", "sycophant", STUBBORN.split("/")[1])
    demos = [
        Matchup(game=GAME, seed=1000 + i, seats={"debater_0": f"scripted/{a}", "debater_1": f"scripted/{b}"}, game_kwargs=KW)
        for a in bots
        for b in bots
        for i in range(4)
    ]
    episodes = asyncio.run(play_many(demos, lambda m: {p: make_fixed_policy(p, GAME) for p in set(m.seats.values())}))
    examples = imitation_examples(episodes, tok, render=LLMAgent(HFEngine.from_model(model, tok)).prompt_ids)
    # prompts keep their last 160 tokens: the transcript and the reply format, at a third of the cost;
    # the reply itself is about 40 tokens (the tokenizer spells ANSWER/CONFIDENCE letter by letter)
    train_imitation(model, examples, ImitationConfig(steps=200, batch_size=8, lr=5e-3, max_len=160), pad_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("debate_warm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _matchups(n: int) -> list[Matchup]:
    return [Matchup(game=GAME, seed=s, seats={"debater_0": "main", "debater_1": STUBBORN}, game_kwargs=KW) for s in range(n)]


@pytest.mark.long
def test_debate_tree_pairs_and_dpo_steps_raise_the_preference_margin(debate_warm_dir):
    from transformers import AutoModelForCausalLM

    engine = HFEngine(debate_warm_dir)
    agent = LLMAgent(engine, "main", sampling=SamplingParams(max_new_tokens=40, temperature=0.5))
    pool = {"main": agent, STUBBORN: make_fixed_policy(STUBBORN, GAME)}
    trees = asyncio.run(grow_trees(_matchups(8), pool, TreeConfig(branches=4, rollouts=1, turn=1), branch_policies={"main"}))
    pairs = [p for t in trees for p in t.pairs]
    assert len(pairs) >= 2, [[(b.action.text, b.score) for b in t.branches] for t in trees]
    end = engine.tokenizer.convert_tokens_to_ids("<|end|>")
    for tree in trees:
        branched = tree.trunk.turns[tree.branch_index]
        for p in tree.pairs:
            # the prompt the policy saw at the branch, and the completions exactly as sampled
            assert p.prompt_ids == branched.prompt_ids and p.chosen_score > p.rejected_score
            for ids, text in ((p.chosen_ids, p.chosen_text), (p.rejected_ids, p.rejected_text)):
                assert engine.tokenizer.decode([i for i in ids if i != end], skip_special_tokens=True).strip() == text
            assert p.label in ("resist", "accept", "other")

    model = AutoModelForCausalLM.from_pretrained(debate_warm_dir)
    ref = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pad = engine.pad_token_id

    def margin() -> float:
        with torch.no_grad():
            pc, pr = pair_logprobs(model, pairs, pad_id=pad)
            rc, rr = pair_logprobs(ref, pairs, pad_id=pad)
        return float(((pc - rc) - (pr - rr)).mean())

    assert margin() == pytest.approx(0.0, abs=1e-5)
    steps = [dpo_step(model, ref, pairs, opt, beta=0.1, pad_id=pad) for _ in range(4)]
    assert steps[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert margin() > 0.05, steps
    assert steps[-1]["dpo_loss"] < steps[0]["dpo_loss"] and steps[-1]["reward_accuracy"] > 0.5


def test_arena_run_trains_a_debater_by_dpo_from_trees(tmp_path, debate_warm_dir):
    from safetensors.torch import load_file

    from arena.experiment import run

    cfg = RunConfig.model_validate(
        {
            "name": "debate_dpo_test",
            "seed": 0,
            "episodes_per_matchup": 4,
            "games": [{"id": GAME, "kwargs": KW, "matchups": [{"debater_0": "main", "debater_1": STUBBORN}]}],
            "model": {"path": str(debate_warm_dir)},
            "sampling": {"max_new_tokens": 40, "temperature": 0.5},
            "trainer": {
                "recipe": "dpo",
                "rounds": 1,
                "group_size": 1,
                "groups_per_matchup": 8,
                "tree_branches": 4,
                "tree_rollouts": 1,
                "lr": 1e-3,
                "dpo_beta": 0.1,
                "batch_size": 64,
                "checkpoint_every": 1,
            },
            "runs_dir": str(tmp_path / "runs"),
            "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "debate_dpo_test", "traces_per_round": 1},
        }
    )
    res = run(cfg, Console(quiet=True))
    metrics = MlflowClient(tracking_uri=cfg.tracking.uri).get_run(res.run_id).data.metrics
    # one tree per training matchup, unless its trunk ended (a forfeit) before the branch turn
    assert metrics["learn/main/pairs"] > 0 and 1 <= metrics["learn/main/trees"] <= 8
    # every pair fits one batch: one step, taken from the reference, where the loss is log 2
    assert metrics["learn/main/steps"] == 1 and metrics["learn/main/dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert "learn/main/reward_margin" in metrics and "learn/main/pairs_resist" in metrics
    assert "train/debate_v0/final_accuracy" in metrics and "eval/debate_v0/final_accuracy" in metrics
    assert res.rounds_done == 1 and len(res.after) == 4
    (ckpt,) = res.run_dir.glob("checkpoints/round_00001/policies/main/model.safetensors")
    trained, start = load_file(str(ckpt)), load_file(str(debate_warm_dir / "model.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in trained)


def test_dpo_learner_skips_pairs_without_tokens(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from arena.config import TrainerConfig
    from arena.trainers.trees import PreferencePair

    learner = DPOLearner(AutoModelForCausalLM.from_pretrained(tiny_model_dir), TrainerConfig(recipe="dpo"), pad_id=0)
    scripted = PreferencePair(prompt_ids=[], chosen_ids=[], rejected_ids=[], chosen_score=1.0, rejected_score=0.0, label="resist")
    assert learner.learn([scripted], torch.Generator().manual_seed(0)) == {"pairs": 0.0} and learner.version == 0
    real = PreferencePair(prompt_ids=[5, 6, 7], chosen_ids=[8, 9], rejected_ids=[10], chosen_score=1.0, rejected_score=0.0, label="accept")
    stats = learner.learn([real, scripted], torch.Generator().manual_seed(0))
    assert learner.version == 1 and stats["pairs"] == 1.0 and stats["pairs_accept"] == 1.0 and stats["grad_norm"] > 0


def test_the_dpo_recipe_config_takes_any_game():
    from pathlib import Path

    from arena.config import ConfigError, load_config

    path = Path(__file__).parents[2] / "configs" / "debate_dpo.yaml"
    cfg = load_config(path, ["trainer.tree_branches=6", "trainer.dpo_beta=0.2"])
    assert cfg.trainer.recipe == "dpo" and cfg.trainer.tree_branches == 6
    # trees grow on any game (tests/test_trees.py trains on one that is not debate)
    cfg = load_config(None, ["trainer.recipe=dpo", "games=[{id: negotiation-v0, matchups: [{seller: main, buyer: random}]}]"])
    assert cfg.trainer.recipe == "dpo" and [g.id for g in cfg.games] == ["negotiation-v0"]
    with pytest.raises(ConfigError, match="tree_branches"):
        load_config(path, ["trainer.tree_branches=1"])
