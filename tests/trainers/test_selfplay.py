"""Credit assignment from episodes, token batching, and the learner step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arena.config import TrainerConfig
from arena.records import Episode, Matchup, Turn
from arena.trainers.advantages import RoleBaseline
from arena.trainers.batching import Sample, collate, forward_logprobs
from arena.trainers.selfplay import Learner, policy_gradient_samples, rest_samples, trained_seats


def _episode(seed: int, sample: int, ret_seller: float, ret_buyer: float, *, seats=None, illegal=False) -> Episode:
    seats = seats or {"seller": "main", "buyer": "scripted/fair_buyer"}
    turns = [
        Turn(
            index=0,
            player="seller",
            policy_id=seats["seller"],
            observation="o",
            action="OFFER $15",
            prompt_ids=[1, 2, 3],
            completion_ids=[7, 8],
            logprobs=[-1.0, -2.0],
            illegal_reason="bad" if illegal else None,
        ),
        Turn(
            index=1,
            player="buyer",
            policy_id=seats["buyer"],
            observation="o",
            action="ACCEPT",
            prompt_ids=[1, 2, 4],
            completion_ids=[9] if seats["buyer"] == "main" else [],
            logprobs=[-0.5] if seats["buyer"] == "main" else [],
        ),
    ]
    m = Matchup(game="negotiation-v0", seed=seed, seats=seats, sample=sample)
    return Episode(
        episode_id=f"e{seed}-{sample}", matchup=m, turns=turns, returns={"seller": ret_seller, "buyer": ret_buyer}, group_return=(ret_seller + ret_buyer) / 2
    )


def test_group_advantages_come_from_episodes_that_share_a_seed():
    eps = [_episode(1, 0, 1.0, 0.0), _episode(1, 1, 0.0, 1.0), _episode(2, 0, 0.5, 0.5), _episode(2, 1, 0.5, 0.5)]
    seats = trained_seats(eps, "main", mix=0.0)
    assert [s.player for s in seats] == ["seller"] * 4
    samples, stats = policy_gradient_samples(seats, TrainerConfig(advantage="group_mean"), None)
    # group seed 1: returns 1 and 0 -> advantages +0.5, -0.5; group seed 2: equal returns -> 0
    assert [s.advantage for s in samples] == [0.5, -0.5, 0.0, 0.0]
    assert all(s.completion_ids == [7, 8] and s.old_logprobs == [-1.0, -2.0] for s in samples)


def test_return_mix_trains_on_the_group_return():
    eps = [_episode(1, 0, 1.0, 0.0), _episode(1, 1, 0.0, 1.0)]
    seats = trained_seats(eps, "main", mix=1.0)
    assert [s.ret for s in seats] == [0.5, 0.5]  # both episodes have the same group return


def test_role_baseline_is_subtracted_per_role_before_the_group_estimator():
    seats_cfg = {"seller": "main", "buyer": "main"}
    eps = [_episode(1, 0, 1.0, 0.0, seats=seats_cfg), _episode(2, 0, 0.8, 0.2, seats=seats_cfg)]
    baseline = RoleBaseline(decay=0.5)
    baseline.update("negotiation-v0/seller", [0.9])
    baseline.update("negotiation-v0/buyer", [0.1])
    samples, _ = policy_gradient_samples(trained_seats(eps, "main", 0.0), TrainerConfig(advantage="none", baseline="per_role"), baseline)
    by = {(s.episode_id, s.player): round(s.advantage, 6) for s in samples}
    assert by == {("e1-0", "seller"): 0.1, ("e1-0", "buyer"): -0.1, ("e2-0", "seller"): -0.1, ("e2-0", "buyer"): 0.1}
    assert baseline.value("negotiation-v0/seller") == pytest.approx(0.5 * 0.9 + 0.5 * 0.9)


def test_per_game_baseline_shares_one_value_across_roles():
    seats_cfg = {"seller": "main", "buyer": "main"}
    eps = [_episode(1, 0, 1.0, 0.0, seats=seats_cfg)]
    baseline = RoleBaseline(decay=0.5)
    baseline.update("negotiation-v0", [0.25])
    samples, _ = policy_gradient_samples(trained_seats(eps, "main", 0.0), TrainerConfig(advantage="none", baseline="per_game"), baseline)
    assert sorted(round(s.advantage, 6) for s in samples) == [-0.25, 0.75]


def test_rest_keeps_the_best_seats_and_skips_their_illegal_turns():
    eps = [_episode(i, 0, float(i), 0.0, illegal=(i == 3)) for i in range(4)]
    samples, stats = rest_samples(trained_seats(eps, "main", 0.0), TrainerConfig(recipe="rest", rest_top_fraction=0.5, rest_within="game"))
    assert stats["rest_kept_seats"] == 2 and stats["rest_return_threshold"] == 2.0
    assert [s.episode_id for s in samples] == ["e2-0"]  # e3 was best but its only turn was illegal
    assert all(s.advantage == 1.0 for s in samples)


def test_rest_ranks_each_seat_within_its_question_group_by_default():
    """Two questions (seeds), four episodes each: an easy one where every episode scored near the top,
    and a hard one where one episode in four got it. Ranked across the game, the easy question's
    episodes fill the quarter kept; ranked within each group, each question keeps its own best, and a
    group whose episodes all scored alike keeps nothing."""
    easy = [_episode(1, k, r, 0.0) for k, r in enumerate([0.95, 0.95, 1.0, 0.95])]
    hard = [_episode(2, k, r, 0.0) for k, r in enumerate([0.0, 0.0, 0.9, 0.0])]
    flat = [_episode(3, k, 0.5, 0.0) for k in range(4)]
    seats = trained_seats(easy + hard + flat, "main", 0.0)
    assert TrainerConfig(recipe="rest").rest_within == "group"
    samples, stats = rest_samples(seats, TrainerConfig(recipe="rest", rest_top_fraction=0.25))
    assert sorted(s.episode_id for s in samples) == ["e1-2", "e2-2"]
    assert stats["rest_groups"] == 3 and stats["rest_groups_kept"] == 2 and stats["rest_kept_seats"] == 2
    across, _ = rest_samples(seats, TrainerConfig(recipe="rest", rest_top_fraction=0.25, rest_within="game"))
    assert sorted(s.episode_id for s in across) == ["e1-0", "e1-1", "e1-2"]  # 3 of 12: the hard question's success is lost
    # half of each group: only seats above the group's worst
    half, _ = rest_samples(seats, TrainerConfig(recipe="rest", rest_top_fraction=0.5))
    assert sorted(s.episode_id for s in half) == ["e1-2", "e2-2"]


def test_rest_with_a_floor_does_not_imitate_a_groups_best_failure():
    """A question every episode got wrong: the least bad (no search, 0.0, against -0.05 after a search) beats
    the group's worst and is kept by the ranking alone; with a floor it is not, and a right answer still is."""
    failed = [_episode(1, k, r, 0.0) for k, r in enumerate([0.0, -0.05, -0.05, -0.05])]
    solved = [_episode(2, k, r, 0.0) for k, r in enumerate([0.0, 0.95, -0.05, 0.0])]
    seats = trained_seats(failed + solved, "main", 0.0)
    ranked, _ = rest_samples(seats, TrainerConfig(recipe="rest"))
    assert sorted(s.episode_id for s in ranked) == ["e1-0", "e2-1"]
    floored, stats = rest_samples(seats, TrainerConfig(recipe="rest", rest_min_return=0.5))
    assert [s.episode_id for s in floored] == ["e2-1"] and stats["rest_groups_kept"] == 1
    assert TrainerConfig(recipe="rest").rest_min_return is None  # off unless set


def test_rest_weighted_by_margin_imitates_a_seat_by_how_far_it_beat_its_groups_worst():
    """collab_qa's stakes: where the fact is unknown a search (0.75) beats a wrong answer (0.0) by 0.75; where
    it is known an answer (1.0) beats a search by 0.25. Filtering imitates both once; weighted by margin the
    search weighs three times the answer, the kept seats 1 on the mean, and alike groups still keep nothing."""
    unknown = [_episode(1, k, r, 0.0) for k, r in enumerate([0.75, 0.0, 0.75, 0.0])]
    known = [_episode(2, k, r, 0.0) for k, r in enumerate([0.75, 1.0, 0.75, 0.75])]
    alike = [_episode(3, k, 0.75, 0.0) for k in range(4)]
    seats = trained_seats(unknown + known + alike, "main", 0.0)
    cfg = TrainerConfig(recipe="rest", rest_min_return=0.5, rest_weight="margin")
    samples, stats = rest_samples(seats, cfg)
    weights = {s.episode_id: s.advantage for s in samples}
    assert weights == pytest.approx({"e1-0": 1.5, "e2-1": 0.5})  # margins 0.75 and 0.25 over their mean, 0.5
    assert stats["rest_margin_mean"] == pytest.approx(0.5) and stats["rest_kept_seats"] == 2
    plain, _ = rest_samples(seats, TrainerConfig(recipe="rest", rest_min_return=0.5))
    assert {s.episode_id: s.advantage for s in plain} == {"e1-0": 1.0, "e2-1": 1.0}  # the same seats, alike
    assert TrainerConfig(recipe="rest").rest_weight == "one"  # off unless set
    with pytest.raises(ValueError, match="rest_keep_uniform: false"):
        TrainerConfig(recipe="rest", rest_weight="margin", rest_keep_uniform=True)


def test_rest_keeping_uniform_groups_imitates_a_move_that_succeeds_everywhere():
    """A warm start that searches and reads right on every unknown fact scores alike there (0.95 each), while
    on a known fact an answer from memory (1.0) beats a search: ranked against the worst, only the known
    fact teaches (not searching). Keeping uniform groups, the unknown fact's searches are imitated too; a
    uniform group under the floor (every episode wrong) still teaches nothing."""
    unknown = [_episode(1, k, 0.95, 0.0) for k in range(4)]
    known = [_episode(2, k, r, 0.0) for k, r in enumerate([0.95, 1.0, 0.95, 0.95])]
    failed = [_episode(3, k, 0.0, 0.0) for k in range(4)]
    seats = trained_seats(unknown + known + failed, "main", 0.0)
    ranked, _ = rest_samples(seats, TrainerConfig(recipe="rest", rest_min_return=0.5))
    assert [s.episode_id for s in ranked] == ["e2-1"]
    cfg = TrainerConfig(recipe="rest", rest_min_return=0.5, rest_keep_uniform=True)
    kept, stats = rest_samples(seats, cfg)
    assert sorted(s.episode_id for s in kept) == ["e1-0", "e2-1"] and stats["rest_groups_kept"] == 2
    assert not TrainerConfig(recipe="rest").rest_keep_uniform  # off unless set
    # without a floor a uniform group of failures is kept as well: the floor is what keeps failures out
    unfloored, _ = rest_samples(seats, TrainerConfig(recipe="rest", rest_keep_uniform=True))
    assert sorted(s.episode_id for s in unfloored) == ["e1-0", "e2-1", "e3-0"]


def test_collate_masks_only_completion_tokens_and_aligns_sampler_logprobs():
    batch = collate([Sample([1, 2, 3], [7, 8], [-1.0, -2.0], 1.0), Sample([5], [6, 7, 8], [-3.0, -4.0, -5.0], -1.0)], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 7, 8], [5, 6, 7, 8, 0]]
    assert batch.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert batch.targets.tolist() == [[2, 3, 7, 8], [6, 7, 8, 0]]
    assert batch.old_logprobs.tolist() == [[0, 0, -1.0, -2.0], [-3.0, -4.0, -5.0, 0]]
    short = collate([Sample([1, 2, 3, 4, 5], [7, 8], [-1.0, -2.0], 1.0)], pad_id=0, max_len=4)
    assert short.input_ids.tolist() == [[4, 5, 7, 8]] and short.mask.tolist() == [[0, 1, 1]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_learner_step_moves_logprobs_in_the_direction_of_the_advantage(tiny):
    model, tok = tiny
    import copy

    model = copy.deepcopy(model)
    good = Sample(tok.encode("Answer with J or F.", add_special_tokens=False), tok.encode("J", add_special_tokens=False), [0.0], +1.0)
    bad = Sample(tok.encode("Answer with J or F.", add_special_tokens=False), tok.encode("F", add_special_tokens=False), [0.0], -1.0)
    with torch.no_grad():
        before, _ = forward_logprobs(model, collate([good, bad], tok.pad_token_id))
    before_params = [p.detach().clone() for p in model.parameters()]
    learner = Learner(model, TrainerConfig(recipe="pg", lr=1e-2, batch_size=2), pad_id=tok.pad_token_id)
    stats = learner.learn([good, bad], torch.Generator().manual_seed(0))
    with torch.no_grad():
        after, _ = forward_logprobs(model, collate([good, bad], tok.pad_token_id))
    mask = collate([good, bad], tok.pad_token_id).mask.bool()
    assert after[0][mask[0]].sum() > before[0][mask[0]].sum()  # the rewarded answer became likelier
    assert after[1][mask[1]].sum() < before[1][mask[1]].sum()  # the punished one less likely
    assert learner.version == 1 and stats["samples"] == 2 and stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before_params, model.parameters()))


def test_kl_term_is_zero_at_the_start_and_grows_after_updates(tiny):
    import copy

    model, tok = tiny
    model = copy.deepcopy(model)
    s = Sample(tok.encode("Round 1 of 10.", add_special_tokens=False), tok.encode("J", add_special_tokens=False), [0.0], 1.0)
    learner = Learner(model, TrainerConfig(recipe="pg", lr=1e-2, kl_coef=0.1, batch_size=1), pad_id=tok.pad_token_id)
    first = learner.learn([s], torch.Generator().manual_seed(0))
    for _ in range(3):
        last = learner.learn([s], torch.Generator().manual_seed(0))
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert last["kl"] > 1e-4


@pytest.mark.parametrize("loss", ["reinforce", "ppo_clip"])
@pytest.mark.parametrize("advantage", ["group_mean", "grpo", "rloo", "none"])
def test_every_loss_and_advantage_variant_is_reachable_from_config(tiny, loss, advantage):
    import copy

    from arena.trainers.advantages import ADVANTAGES
    from arena.trainers.losses import LOSSES

    assert set(ADVANTAGES) == {"group_mean", "grpo", "rloo", "none"} and set(LOSSES) == {"reinforce", "ppo_clip"}
    model, tok = tiny
    cfg = TrainerConfig(recipe="pg", advantage=advantage, loss=loss, epochs=2, batch_size=2)
    eps = [_episode(1, 0, 1.0, 0.0), _episode(1, 1, 0.0, 1.0), _episode(1, 2, 0.5, 0.5)]
    samples, _ = policy_gradient_samples(trained_seats(eps, "main", 0.0), cfg, None)
    learner = Learner(copy.deepcopy(model), cfg, pad_id=tok.pad_token_id)
    stats = learner.learn(samples, torch.Generator().manual_seed(0))
    assert learner.version == 1 and np.isfinite(stats["loss"])
    if loss == "ppo_clip":
        assert "clip_fraction" in stats


def test_replay_keeps_a_taught_answer_that_the_policy_gradient_pushes_down_and_leaves_the_shuffles_alone(tiny):
    """The replay term (trainer.replay_coef) adds the warm start's cross-entropy to every update: self-play
    punishing "J" after a prompt lowers it less when "J" after that prompt is among the replayed examples.
    The replay draws never advance the round's generator, so the round's batches are those of a run without it."""
    import copy

    model, tok = tiny
    prompt, j = tok.encode("Answer with J or F.", add_special_tokens=False), tok.encode("J", add_special_tokens=False)
    punished = [Sample(prompt, j, [0.0], -1.0), Sample(prompt, tok.encode("F", add_special_tokens=False), [0.0], +1.0)]
    taught = [(prompt, j)]

    def logp_j(m) -> float:
        with torch.no_grad():
            batch = collate([punished[0]], tok.pad_token_id)
            return float(forward_logprobs(m, batch)[0][batch.mask.bool()].sum())

    start = logp_j(model)
    ends, states = {}, {}
    for coef in (0.0, 1.0):
        learner = Learner(
            copy.deepcopy(model), TrainerConfig(recipe="pg", lr=1e-2, batch_size=2, replay_coef=coef, replay_batch=4), tok.pad_token_id, replay=taught
        )
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            stats = learner.learn(punished, gen)
        ends[coef], states[coef] = logp_j(learner.model), gen.get_state()
        assert ("replay_loss" in stats) == (coef > 0)
    assert ends[0.0] < start - 0.5  # the policy gradient alone pushes the answer down
    assert ends[1.0] > ends[0.0] + 0.5  # the replay holds it up
    assert torch.equal(states[0.0], states[1.0])
