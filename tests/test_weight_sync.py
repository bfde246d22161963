"""Weight sync learner -> engines: the version arrives through the object store, every engine is checked
on the probe against the learner, and an engine that does not serve the learner's weights fails loudly."""

from __future__ import annotations

import logging
import random
import time

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.engines.actor import EngineActor, init_ray
from arena.engines.hf import HFEngine
from arena.tiny import TinyModelConfig, build_tiny_model
from arena.weight_sync import (
    PROBE_REPLY,
    Probe,
    WeightSyncError,
    WeightSyncTimeout,
    check_probe,
    make_probe,
    probe_logprobs,
    sync_actors,
    sync_local,
)

#: one pytest-xdist worker runs all of these (see the Makefile)
pytestmark = pytest.mark.xdist_group("ray")

FLOAT32_TOL = 1e-5  # engines and learner in float32 agree far closer than the default tolerance


@pytest.fixture(scope="module")
def ray_cluster():
    init_ray(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    rng = random.Random(0)
    corpus = [f"Round {rng.randint(1, 10)} of 10. You offered {rng.randint(10, 90)}; offer, accept or reject?" for _ in range(64)]
    return build_tiny_model(TinyModelConfig(vocab_size=512), corpus, tmp_path_factory.mktemp("sync") / "model")


@pytest.fixture(scope="module")
def learner_model(model_path):
    """A learner's model after one update (one AdamW step on made-up text)."""
    model = AutoModelForCausalLM.from_pretrained(model_path)
    tok = AutoTokenizer.from_pretrained(model_path)
    enc = tok([f"offer {i} then accept" for i in range(16)], padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids.masked_fill(enc.attention_mask == 0, -100)).loss.backward()
    opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def probe(model_path) -> Probe:
    return make_probe(AutoTokenizer.from_pretrained(model_path))


def state_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----- the check itself ------------------------------------------------------------------------------
def test_check_probe_names_version_engine_and_largest_difference():
    assert check_probe("main/engine_0", 3, [-1.0, -2.0], [-1.0, -2.0005], 1e-3) == pytest.approx(5e-4)
    with pytest.raises(WeightSyncError, match=r"version 7: engine main/engine_1 .* by up to 0\.5 \(tolerance 0\.001\)") as info:
        check_probe("main/engine_1", 7, [-1.0, -2.0], [-1.0, -2.5], 1e-3)
    assert (info.value.version, info.value.engine, info.value.max_diff) == (7, "main/engine_1", pytest.approx(0.5))
    with pytest.raises(WeightSyncError, match="by up to inf"):  # a different number of tokens can never pass
        check_probe("e", 1, [-1.0], [-1.0, -2.0], 1.0)
    with pytest.raises(WeightSyncError, match="by up to nan"):
        check_probe("e", 1, [float("nan")], [-1.0], 1.0)


def test_probe_is_a_chat_turn_and_the_learner_scores_it_as_an_engine_does(model_path, probe):
    tok = AutoTokenizer.from_pretrained(model_path)
    assert make_probe(tok) == probe  # fixed: the same tokens every time
    assert tok.decode(list(probe.prompt_ids)).endswith("<|assistant|>")
    assert tok.decode(list(probe.continuation_ids)) == PROBE_REPLY
    engine = HFEngine(model_path)
    learner = probe_logprobs(engine.model, probe)
    assert len(learner) == len(probe.continuation_ids) and all(lp < 0 for lp in learner)
    assert learner == pytest.approx(engine.score(list(probe.prompt_ids), list(probe.continuation_ids)), abs=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        Probe((), (1,))


def test_local_sync_serves_the_new_version_and_checks_it(model_path, learner_model, probe):
    engine = HFEngine(model_path)
    before = engine.score(list(probe.prompt_ids), list(probe.continuation_ids))
    expected = probe_logprobs(learner_model, probe)
    assert max(abs(a - b) for a, b in zip(before, expected)) > 1e-2, "the update must move the probe, or the check proves nothing"
    report = sync_local({"main": engine}, state_of(learner_model), 3, probe, expected)
    assert engine.version == report.version == 3
    assert report.max_diff["main"] < FLOAT32_TOL
    assert report.metrics("sync/main")["sync/main/version"] == 3.0


class StaleEngineFake(HFEngine):
    """A fault for the test: an engine that records the new version but keeps its old weights."""

    def update_weights(self, state_dict, version):
        self.version = int(version)


def test_local_sync_catches_an_engine_that_kept_its_old_weights(model_path, learner_model, probe):
    engine = StaleEngineFake(model_path)
    with pytest.raises(WeightSyncError, match="version 4: engine main does not serve the learner's weights") as info:
        sync_local({"main": engine}, state_of(learner_model), 4, probe, probe_logprobs(learner_model, probe))
    assert info.value.max_diff > 1e-2


# ----- engine actors, through the object store -------------------------------------------------------------
@ray.remote(num_cpus=0.25)
class CorruptingEngineFake:
    """A fault for the test: an engine actor that loads the weights it is sent, then corrupts one tensor."""

    def __init__(self, model_path: str) -> None:
        self.engine = HFEngine(model_path)

    def update_weights(self, weights, version: int) -> int:
        corrupted = dict(weights)
        corrupted["model.norm.weight"] = corrupted["model.norm.weight"] * 1.5
        self.engine.update_weights(corrupted, version)
        return self.engine.version

    def score(self, prompt_ids, continuation_ids, temperature=1.0):
        return self.engine.score(prompt_ids, continuation_ids, temperature)


@ray.remote(num_cpus=0.25)
class HangingEngineFake:
    """A fault for the test: an engine actor whose weight update never finishes in time."""

    def update_weights(self, weights, version: int) -> int:
        time.sleep(120)
        return version

    def score(self, prompt_ids, continuation_ids, temperature=1.0):
        return [0.0] * len(continuation_ids)


def start_engines(model_path, n: int):
    actors = [EngineActor.options(num_cpus=0.25).remote("hf", str(model_path), {}) for _ in range(n)]
    ray.get([a.version.remote() for a in actors])
    return actors


def test_sync_through_the_object_store_reaches_every_engine_at_the_learner_version(ray_cluster, model_path, learner_model, probe):
    actors = start_engines(model_path, 2)
    try:
        named = {f"main/engine_{i}": a for i, a in enumerate(actors)}
        expected = probe_logprobs(learner_model, probe)
        weights = ray.put(state_of(learner_model))  # put once; both engines read it from the object store
        report = sync_actors(named, weights, 5, probe, expected, timeout_s=60)
        assert report.version == 5 and ray.get([a.version.remote() for a in actors]) == [5, 5]
        assert set(report.max_diff) == set(named) and max(report.max_diff.values()) < FLOAT32_TOL
        assert report.reference == expected
        for a in actors:  # what they serve now is the learner's model, not the starting one
            scored = ray.get(a.score.remote(list(probe.prompt_ids), list(probe.continuation_ids)))
            assert scored == pytest.approx(expected, abs=FLOAT32_TOL)

        # weights no learner scored (e.g. a past snapshot): the engines are checked against each other
        original = ray.put(state_of(AutoModelForCausalLM.from_pretrained(model_path)))
        report = sync_actors(named, original, 6, probe, None, timeout_s=60)
        assert report.version == 6 and max(report.max_diff.values()) < FLOAT32_TOL
        assert max(abs(a - b) for a, b in zip(report.reference, expected)) > 1e-2
    finally:
        for a in actors:
            ray.kill(a)


def test_an_engine_given_corrupted_weights_fails_the_check_loudly(ray_cluster, model_path, learner_model, probe):
    honest = start_engines(model_path, 1)[0]
    fake = CorruptingEngineFake.remote(str(model_path))
    try:
        with pytest.raises(
            WeightSyncError, match=r"weight sync to version 9: engine main/engine_1 does not serve the learner's weights.*differ .* by up to"
        ) as info:
            sync_actors({"main/engine_0": honest, "main/engine_1": fake}, state_of(learner_model), 9, probe, probe_logprobs(learner_model, probe), timeout_s=60)
        assert info.value.engine == "main/engine_1" and info.value.version == 9
        assert info.value.max_diff > 1e-3
    finally:
        ray.kill(honest)
        ray.kill(fake)


def test_an_engine_that_does_not_confirm_in_time_fails_with_a_timeout(ray_cluster, learner_model, probe):
    fake = HangingEngineFake.remote()
    try:
        started = time.perf_counter()
        with pytest.raises(WeightSyncTimeout, match=r"version 2: engine main/engine_0 did not load the weights within 1 s") as info:
            sync_actors({"main/engine_0": fake}, state_of(learner_model), 2, probe, probe_logprobs(learner_model, probe), timeout_s=1.0)
        assert time.perf_counter() - started < 15
        assert info.value.engine == "main/engine_0"
    finally:
        ray.kill(fake)
