"""The Ray Train learner: the recipe's Learner on two DDP workers (gloo, CPU) takes the single-process
step, keeps its workers between rounds, publishes its weights and probe, and restores from a checkpoint."""

from __future__ import annotations

import copy
import logging
import random

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena import checkpoint
from arena.config import TrainerConfig
from arena.engines.actor import init_ray
from arena.tiny import TinyModelConfig, build_tiny_model
from arena.trainers.batching import Sample
from arena.trainers.ray_learner import RayLearner, combine_stats, shard, worker_config
from arena.trainers.selfplay import Learner
from arena.weight_sync import make_probe, probe_logprobs

#: one pytest-xdist worker runs all of these (see the Makefile)
pytestmark = pytest.mark.xdist_group("ray")

CFG = TrainerConfig(batch_size=16, lr=1e-2, kl_coef=0.05)


@pytest.fixture(scope="module")
def ray_cluster():
    init_ray(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = random.Random(0)
    corpus = [f"Round {rng.randint(1, 10)} of 10. You offered {rng.randint(10, 90)}; offer, accept or reject?" for _ in range(64)]
    return build_tiny_model(TinyModelConfig(vocab_size=512), corpus, tmp_path_factory.mktemp("learner") / "model")


@pytest.fixture(scope="module")
def tokenizer(model_path):
    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="module")
def ray_learner(ray_cluster, model_path, tokenizer):
    learner = RayLearner(Learner, AutoModelForCausalLM.from_pretrained(model_path), CFG, pad_id=tokenizer.pad_token_id, workers=2)
    yield learner
    learner.close()


def make_samples(n: int, seed: int) -> list[Sample]:
    """Turns with equal completion lengths, so that each worker's token mean covers as many tokens as the other's."""
    g = torch.Generator().manual_seed(seed)
    return [
        Sample(
            torch.randint(8, 250, (int(torch.randint(6, 14, (1,), generator=g)),), generator=g).tolist(),
            torch.randint(8, 250, (6,), generator=g).tolist(),
            [-2.0] * 6,
            float(torch.randn(1, generator=g)),
            f"ep{i}",
            "seller",
        )
        for i in range(n)
    ]


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def max_weight_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ----- pure helpers ------------------------------------------------------------------------------------
def test_shards_pad_like_distributed_sampler_so_every_worker_takes_as_many_steps():
    items = list("abcde")
    assert shard(items, 0, 2) == ["a", "c", "e"] and shard(items, 1, 2) == ["b", "d", "a"]
    for n in range(0, 9):
        for world in (1, 2, 3):
            shares = [shard(list(range(n)), r, world) for r in range(world)]
            assert len({len(s) for s in shares}) == 1, "equal shares: DDP needs the same number of steps on every worker"
            assert set().union(*map(set, shares)) == set(range(n))
            assert sum(map(len, shares)) - n < world
    with pytest.raises(ValueError, match="rank"):
        shard(items, 2, 2)


def test_worker_config_splits_the_batch_and_stats_combine_across_workers():
    assert worker_config(CFG, 2).batch_size == 8 and worker_config(CFG.model_copy(update={"batch_size": 5}), 2).batch_size == 3
    assert worker_config(CFG, 2).lr == CFG.lr
    stats = combine_stats([{"loss": 1.0, "train_tokens": 10.0, "samples": 3.0}, {"loss": 3.0, "train_tokens": 30.0, "samples": 3.0}], samples=5)
    assert stats == {"loss": 2.0, "train_tokens": 40.0, "samples": 5.0, "learner_workers": 2.0}
    assert combine_stats([{}, {}], samples=0) == {}


# ----- two DDP workers ---------------------------------------------------------------------------------
def test_two_ddp_workers_take_the_single_process_step(ray_learner, model_path, tokenizer):
    start = AutoModelForCausalLM.from_pretrained(model_path)
    local = Learner(copy.deepcopy(start), CFG, pad_id=tokenizer.pad_token_id)
    samples = make_samples(16, seed=0)  # one batch: one step on the whole of it, split between two workers
    probe = make_probe(tokenizer)
    assert ray_learner.probe_logprobs(probe) == pytest.approx(probe_logprobs(start, probe), abs=1e-6)

    ours = ray_learner.learn(samples, gen())
    theirs = local.learn(samples, gen())
    assert ray_learner.version == local.version == 1
    assert ours["samples"] == theirs["samples"] == 16 and ours["learner_workers"] == 2
    assert ours["train_tokens"] == theirs["train_tokens"] == 16 * 6
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    assert ours["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
    moved = max_weight_diff(ray_learner.model.state_dict(), start.state_dict())
    assert moved > 5e-3, "the step must move the weights"
    assert max_weight_diff(ray_learner.model.state_dict(), local.model.state_dict()) < moved / 20
    # worker 0 scored the probe on the weights it published; the driver's copy agrees, and so does one process
    published = ray_learner.probe_logprobs(probe)
    assert published == pytest.approx(probe_logprobs(ray_learner.model, probe), abs=1e-6)
    assert published == pytest.approx(probe_logprobs(local.model, probe), abs=1e-4)
    assert ray.get(ray_learner.weights).keys() == start.state_dict().keys()


def test_learner_keeps_its_workers_and_resumes_from_a_checkpoint(ray_learner, tokenizer, tmp_path):
    samples = make_samples(24, seed=1)  # 24 samples, batch 16: two steps, shares of 12 per worker
    ray_learner.learn(samples, gen(2))
    saved_version = ray_learner.version
    checkpoint.save(tmp_path / "ckpt", {"rounds_done": 2}, {"main": ray_learner}, tokenizer)

    stats = ray_learner.learn(samples, gen(3))
    assert stats["samples"] == 24 and ray_learner.version == saved_version + 1
    continued = copy.deepcopy(ray_learner.model.state_dict())

    # resume: weights and optimizer state from the checkpoint go back to the workers, the version too
    checkpoint.load_policy(tmp_path / "ckpt", "main", ray_learner)
    ray_learner.version = saved_version
    assert max_weight_diff(ray_learner.model.state_dict(), continued) > 1e-4
    ray_learner.learn(samples, gen(3))
    assert ray_learner.version == saved_version + 1
    assert max_weight_diff(ray_learner.model.state_dict(), continued) < 1e-6, "the resumed step equals the uninterrupted one"
