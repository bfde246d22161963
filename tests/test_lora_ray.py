"""LoRA policies on the Ray runtime (``model.adapter: lora``, ``cluster.mode: ray``): one engine group
serves every policy's adapter, one Ray Train worker group trains them, a sync sends an adapter's
tensors alone, a killed engine comes back with every adapter at its version, and checkpoints hold
adapters in peft's format."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from peft import PeftModel
from rich.console import Console
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from arena.adapters import adapter_state
from arena.config import RunConfig
from arena.distributed import EngineGroup, RayRuntime
from arena.engines.actor import init_ray
from arena.experiment import run
from arena.trainers.ray_learner import RayAdapterLearner

#: one pytest-xdist worker runs every Ray test (see the Makefile)
pytestmark = pytest.mark.xdist_group("ray")

QUIET = Console(quiet=True)
POLICIES = ("main/seller", "main/buyer")


def config(model_dir, tmp_path) -> RunConfig:
    """tests/test_lora_policies.py's run, on Ray: two engines of one group, a rollout worker, a learner worker."""
    return RunConfig.model_validate(
        {
            "name": "lora_ray",
            "seed": 2,
            "episodes_per_matchup": 2,
            "games": [
                {
                    "id": "negotiation-v0",
                    "matchups": [{"seller": "main/seller", "buyer": "scripted/fair_buyer"}, {"seller": "scripted/fair_seller", "buyer": "main/buyer"}],
                }
            ],
            "model": {"path": str(model_dir), "warm_start": None, "adapter": "lora", "lora": {"rank": 4, "alpha": 8}},
            "sampling": {"max_new_tokens": 8},
            "rollout": {"concurrency": 2},
            # no baseline: a seat's return is its advantage, so every round moves both adapters (equal returns
            # in a group of two would cancel under grpo and leave an adapter where it was)
            "trainer": {"recipe": "pg", "rounds": 2, "group_size": 2, "groups_per_matchup": 1, "advantage": "none", "checkpoint_every": 1, "lr": 5e-3},
            "cluster": {
                "mode": "ray",
                "engines": 2,
                "rollout_workers": 1,
                "learner_workers": 1,
                "engine_cpus": 0.25,
                "rollout_worker_cpus": 0.25,
                "learner_worker_cpus": 0.25,
            },
            "tracking": {"traces_per_round": 0, "trace_extremes": False, "trace_illegal": False},
            "runs_dir": str(tmp_path / "runs"),
        }
    )


@pytest.fixture(scope="module")
def ray_cluster():
    init_ray(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def probe_through(actor, group: EngineGroup, adapter: str | None) -> list[float]:
    p = group.probe
    return ray.get(actor.score.remote(list(p.prompt_ids), list(p.continuation_ids), p.temperature, adapter))


def test_lora_policies_train_sync_recover_and_checkpoint_as_adapters_on_ray(ray_cluster, tiny_model_dir, mlflow_store, tmp_path, monkeypatch):
    syncs: list[dict] = []
    learns: list[tuple[str, dict, dict]] = []
    restarts: list[dict] = []
    killed: list[str] = []
    play, sync, learn, restart = RayRuntime.play, RayRuntime.sync, RayAdapterLearner.learn, EngineGroup.restart

    # the real methods, observed
    def observed_sync(self, policy_id, engine, learner):
        metrics = sync(self, policy_id, engine, learner)
        group = engine.engine
        syncs.append(
            {
                "policy": policy_id,
                "learner_version": learner.version,
                "groups": list(self.groups),
                "engines": ray.get([a.adapter_versions.remote() for a in group.actors]),
                "metrics": metrics,
            }
        )
        return metrics

    def observed_learn(self, samples, generator):
        def states():
            return {n: h.worker_state()["weights"] for n, h in self.group.learners.items()}

        before = states()
        stats = learn(self, samples, generator)
        learns.append((self.name, before, states()))
        return stats

    def observed_restart(self, index):
        actor = restart(self, index)
        survivor = self.actors[1 - index]
        restarts.append(
            {
                "versions": ray.get(actor.adapter_versions.remote()),
                "through": {a: (probe_through(actor, self, a), probe_through(survivor, self, a)) for a in POLICIES},
                "base": probe_through(actor, self, None),
            }
        )
        return actor

    def play_and_kill(self, matchups, pools, ids, *args, **kwargs):
        if ids and ids[0].startswith("train1-"):  # round 2, after the first sync: kill an engine mid-round
            victim = self.groups["lora"].actors[1]

            def kill(worker, episode):
                if not killed:
                    killed.append(episode.episode_id)
                    ray.kill(victim)
                    _wait_dead(victim)  # ray.kill returns at once: the engine must be gone before the round's sync

            self.on_episode = kill
        try:
            return play(self, matchups, pools, ids, *args, **kwargs)
        finally:
            self.on_episode = None

    monkeypatch.setattr(RayRuntime, "sync", observed_sync)
    monkeypatch.setattr(RayAdapterLearner, "learn", observed_learn)
    monkeypatch.setattr(EngineGroup, "restart", observed_restart)
    monkeypatch.setattr(RayRuntime, "play", play_and_kill)

    result = run(config(tiny_model_dir, tmp_path), QUIET)
    assert result.rounds_done == 2 and killed

    # both policies learned, each in its own adapter: a learner's step moves its adapter and no other
    order = sorted(POLICIES)  # the experiment learns and syncs in policy id order
    assert [name for name, _, _ in learns] == [*order, *order]
    for name, before, after in learns:
        assert any(not torch.equal(before[name][k], after[name][k]) for k in before[name]), f"{name} did not move"
        for other in set(POLICIES) - {name}:
            assert all(torch.equal(before[other][k], after[other][k]) for k in before[other]), f"{name}'s step moved {other}"

    # one engine group serves both; after each sync every engine serves the learner's version of that adapter
    assert [(s["policy"], s["learner_version"]) for s in syncs] == [(order[0], 1), (order[1], 1), (order[0], 2), (order[1], 2)]
    for s in syncs:
        assert s["groups"] == ["lora"] and len(s["engines"]) == 2
        assert all(e[s["policy"]] == s["learner_version"] for e in s["engines"]), s
    assert syncs[-1]["engines"] == [dict.fromkeys(POLICIES, 2)] * 2

    # what crossed to the engines is an adapter, not a model
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    full_bytes = sum(p.numel() * p.element_size() for p in model.state_dict().values())
    final = result.run_dir / "checkpoints" / "round_00002" / "policies"
    for s in syncs:
        saved = load_file(str(final / s["policy"].replace("/", "__") / "adapter_model.safetensors"))
        assert s["metrics"][f"sync/{s['policy']}/tensors"] == len(saved) < len(model.state_dict())
        assert s["metrics"][f"sync/{s['policy']}/bytes"] == sum(v.numel() * v.element_size() for v in saved.values()) < 0.1 * full_bytes
        assert s["metrics"][f"sync/{s['policy']}/max_probe_diff"] < 1e-4

    # the engine killed in round 2 came back serving both adapters at version 1, as the other engine did
    fault = next(f for f in _faults(result) if f["kind"] == "engine_died")
    assert fault["target"] == "lora/engine_1" and fault["adapter_versions"] == dict.fromkeys(POLICIES, 1)
    assert restarts and restarts[0]["versions"] == dict.fromkeys(POLICIES, 1)
    for adapter, (restarted, survivor) in restarts[0]["through"].items():
        assert restarted == pytest.approx(survivor, abs=1e-5), adapter
        assert max(abs(a - b) for a, b in zip(restarted, restarts[0]["base"])) > 1e-4, f"{adapter} is at its start, not version 1"

    # the rollout workers knew each adapter's version: round r's turns were sampled from version r of their adapter
    for r in (0, 1):
        lines = (result.run_dir / "episodes" / "train" / f"round_{r:05d}.jsonl").read_text().splitlines()
        turns = [t for line in lines for t in json.loads(line)["episode"]["turns"] if t["policy_id"] in POLICIES]
        assert {t["policy_id"] for t in turns} == set(POLICIES) and {t["policy_version"] for t in turns} == {r}

    metrics = MlflowClient().get_run(result.run_id).data.metrics
    for pid in POLICIES:
        assert metrics[f"learn/{pid}/learner_workers"] == 1 and metrics[f"learn/{pid}/samples"] > 0
        assert metrics[f"sync/{pid}/version"] == 2
    assert metrics["rollout/train/episodes_received"] == metrics["rollout/train/episodes_expected"]

    # the checkpoint holds each adapter in peft's format: the trained tensors, loadable by peft itself
    assert not list(final.rglob("model.safetensors")), "no full copy of the model is saved per policy"
    last = learns[-1][2]
    for pid in POLICIES:
        d = final / pid.replace("/", "__")
        assert (d / "adapter_config.json").is_file() and (d / "optimizer.pt").is_file()
        saved = load_file(str(d / "adapter_model.safetensors"))
        assert saved.keys() == last[pid].keys() and all(torch.equal(saved[k], last[pid][k]) for k in saved)
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(d), adapter_name="policy")
        assert all(torch.equal(v, saved[k]) for k, v in adapter_state(loaded, "policy").items())


def _faults(result) -> list[dict]:
    """The run's logged faults (faults.jsonl, an MLflow artifact)."""
    with tempfile.TemporaryDirectory() as d:
        path = MlflowClient().download_artifacts(result.run_id, "faults.jsonl", d)
        return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _wait_dead(actor, timeout_s: float = 60.0) -> None:
    """Until ``actor`` answers no more (a killed actor can serve a call or two before it is gone)."""
    import time

    from ray.exceptions import RayActorError

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ray.get(actor.version.remote(), timeout=5)
        except (RayActorError, ray.exceptions.GetTimeoutError):
            return
        time.sleep(0.1)
    raise AssertionError(f"the killed engine still answers after {timeout_s} s")


def test_an_engine_group_hands_back_each_adapters_served_tensors(ray_cluster, tiny_model_dir):
    """What a snapshot seat of a LoRA policy starts from on Ray (version 0 of main's adapter, read from the engines)."""
    from arena.adapters import LoraSpec

    group = EngineGroup("lora_state", "hf", str(tiny_model_dir), engines=1, num_cpus=0.25)
    try:
        group.add_adapters(LoraSpec(rank=4, alpha=8), ["main"])
        start = group.adapter_state("main")
        assert start and all(torch.count_nonzero(v) == 0 for k, v in start.items() if "lora_B" in k)  # a new adapter is the base
        moved = {k: v + 0.01 for k, v in start.items()}
        group.update_adapter("main", moved, 1)
        served = group.adapter_state("main")
        assert served.keys() == moved.keys() and all(torch.equal(served[k], moved[k]) for k in moved)
        assert ray.get(group.actors[0].adapter_state.remote("main")).keys() == moved.keys()
        with pytest.raises(KeyError, match="serves no adapter 'main/buyer'"):
            group.adapter_state("main/buyer")
    finally:
        for a in group.actors:
            ray.kill(a)
