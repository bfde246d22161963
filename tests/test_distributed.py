"""The Ray runtime: rollout workers and engine actors play the same episodes as one process; a rollout
worker killed mid-round loses and repeats nothing; a killed engine comes back at the current weights
version; faults are logged to the run; `arena run` with cluster.mode=ray trains and logs like a local run."""

from __future__ import annotations

import json
import logging
import time

import mlflow
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from arena.config import SNAPSHOT, ConfigError, RunConfig, load_config
from arena.distributed import EpisodeAccountingError, EpisodeLedger, RayRuntime, _split, least_loaded
from arena.engines.actor import init_ray
from arena.experiment import run, train_matchups
from arena.records import Episode, Matchup
from arena.runtime import LocalRuntime, load_model_policies, policy_pools
from arena.weight_sync import probe_logprobs

#: one pytest-xdist worker runs all of these (see the Makefile)
pytestmark = pytest.mark.xdist_group("ray")

QUIET = Console(quiet=True)
NEG, PD = "negotiation-v0", "repeated_matrix-v0"


def config(model_dir, mode: str, **extra) -> RunConfig:
    data = {
        "name": f"distributed-{mode}",
        "episodes_per_matchup": 2,
        "games": [
            {"id": NEG, "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]},
            {"id": PD, "kwargs": {"rounds": 3}, "matchups": [{"player_0": "main", "player_1": "scripted/tit_for_tat"}]},
        ],
        "model": {"path": str(model_dir), "warm_start": None},
        "sampling": {"max_new_tokens": 8},
        "rollout": {"concurrency": 2},
        "trainer": {"recipe": "none", "group_size": 2, "groups_per_matchup": 4},
        "cluster": {"mode": mode, "rollout_workers": 2, "engines": 2, "engine_cpus": 0.25, "rollout_worker_cpus": 0.25, "learner_worker_cpus": 0.25},
        "tracking": {"traces_per_round": 1},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return RunConfig.model_validate(data)


@pytest.fixture(scope="module")
def ray_cluster():
    init_ray(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_cluster, tiny_model_dir):
    """A Ray runtime with 2 rollout workers and 2 engines for "main", and the pools the experiment builds on it."""
    cfg = config(tiny_model_dir, "ray")
    runtime = RayRuntime(cfg)
    models = load_model_policies(cfg, QUIET, runtime)
    yield runtime, policy_pools(cfg, models), cfg
    runtime.close()


@pytest.fixture(scope="module")
def single_process(tiny_model_dir):
    """The same policies in one process: what every Ray round must reproduce."""
    cfg = config(tiny_model_dir, "local")
    models = load_model_policies(cfg, QUIET)
    return LocalRuntime.for_run(cfg), policy_pools(cfg, models), models


def round_of(cfg: RunConfig, r: int) -> tuple[list[Matchup], list[str]]:
    matchups, _ = train_matchups(cfg, r, SNAPSHOT)
    return matchups, [f"train{r}-{i:05d}" for i in range(len(matchups))]


def assert_same_episodes(ours: list[Episode], theirs: list[Episode]) -> None:
    assert [e.episode_id for e in ours] == [e.episode_id for e in theirs]
    for a, b in zip(ours, theirs):
        assert a.returns == b.returns, a.episode_id
        assert [(t.player, t.action, t.completion_ids, t.policy_version) for t in a.turns] == [
            (t.player, t.action, t.completion_ids, t.policy_version) for t in b.turns
        ]
        for ta, tb in zip(a.turns, b.turns):
            assert ta.logprobs == pytest.approx(tb.logprobs, abs=1e-4)


def model_episodes(episodes: list[Episode]) -> int:
    return sum(1 for ep in episodes if any(t.policy_id == "main" and t.completion_ids for t in ep.turns))


# ----- pure parts --------------------------------------------------------------------------------------
def test_a_new_episode_goes_to_the_least_loaded_live_engine():
    assert least_loaded([3, 1, 2], [True, True, True], [0, 0, 0]) == 1
    assert least_loaded([3, 1, 2], [True, False, True], [0, 0, 0]) == 2  # a dead engine gets nothing
    assert least_loaded([0, 0], [True, True], [5, 2]) == 1  # idle engines: the one with fewer episodes
    assert least_loaded([0, 0, 0], [True, True, True], [0, 0, 0], offset=1) == 1  # workers start at different engines
    with pytest.raises(LookupError):
        least_loaded([0], [False], [0])


def test_ledger_takes_each_episode_once_and_names_what_is_missing():
    eps = [Episode(episode_id=i, matchup=Matchup(game=NEG, seed=k, seats={})) for k, i in enumerate("abc")]
    ledger = EpisodeLedger(["a", "b", "c"])
    assert ledger.receive(eps[1]) and ledger.receive(eps[0])
    assert not ledger.receive(eps[0]) and ledger.duplicates == 1
    assert ledger.missing() == ["c"]
    with pytest.raises(EpisodeAccountingError, match=r"1 of 3 episodes never arrived: \['c'\]"):
        ledger.episodes()
    ledger.receive(eps[2])
    assert [e.episode_id for e in ledger.episodes()] == ["a", "b", "c"]
    with pytest.raises(EpisodeAccountingError, match="never asked for"):
        ledger.receive(Episode(episode_id="z", matchup=eps[0].matchup))
    with pytest.raises(ValueError, match="unique"):
        EpisodeLedger(["a", "a"])
    assert _split(list(range(5)), 2) == [[0, 1, 2], [3, 4]] and _split([1], 3) == [[1], [], []]


def test_cluster_config_is_checked_at_the_door():
    with pytest.raises(ConfigError, match="cluster.engines"):
        load_config(None, ["cluster.engines=0"])
    with pytest.raises(ConfigError, match="cluster.mode"):
        load_config(None, ["cluster.mode=slurm"])
    with pytest.raises(ConfigError, match="unknown config key 'cluster.workers'"):
        load_config(None, ["cluster.workers=2"])
    with pytest.raises(ConfigError, match="cluster.mode=ray does not run trainer.recipe=dpo"):
        load_config(None, ["cluster.mode=ray", "trainer.recipe=dpo", "games=[{id: debate-v0, matchups: [{debater_0: main, debater_1: scripted/honest}]}]"])
    assert load_config(None, []).cluster.mode == "local"


# ----- rounds on Ray -------------------------------------------------------------------------------------
def test_a_ray_round_plays_the_single_process_round(cluster, single_process):
    runtime, pools, cfg = cluster
    local, local_pools, _ = single_process
    matchups, ids = round_of(cfg, 0)
    seen: list[tuple[str, str]] = []
    runtime.on_episode = lambda worker, ep: seen.append((worker, ep.episode_id))
    tokens0 = runtime.groups["main"].stats.completion_tokens
    episodes = runtime.play(matchups, pools, ids)
    assert_same_episodes(episodes, local.play(matchups, local_pools, ids, QUIET, "local"))
    assert sorted(i for _, i in seen) == sorted(ids) and {w for w, _ in seen} == set(runtime.workers)
    assert runtime.last_ledger.duplicates == 0 and runtime.last_ledger.rerun == 0

    # each episode asked the least loaded engine once and stayed there; both engines served
    routing = runtime.routing()
    assigned = [r["main"]["assigned"] for r in routing.values()]
    assert sum(map(sum, assigned)) == model_episodes(episodes)
    assert all(sum(a[i] for a in assigned) > 0 for i in range(2))
    assert all(r["main"]["moved"] == 0 and r["main"]["retries"] == 0 for r in routing.values())
    made = sum(len(t.completion_ids) for ep in episodes for t in ep.turns if t.policy_id == "main")
    assert runtime.groups["main"].stats.completion_tokens - tokens0 == made > 0


def test_a_rollout_worker_killed_mid_round_loses_and_repeats_nothing(cluster, single_process, mlflow_store):
    runtime, pools, cfg = cluster
    local, local_pools, _ = single_process
    matchups, ids = round_of(cfg, 1)
    victim = next(iter(runtime.workers))
    actor = runtime.workers[victim]
    before_kill: list[str] = []

    def kill_after_its_first_episode(worker: str, ep: Episode) -> None:
        if worker == victim and not before_kill:
            before_kill.append(ep.episode_id)
            ray.kill(actor)

    runtime.on_episode = kill_after_its_first_episode
    with mlflow.start_run() as active:
        episodes = runtime.play(matchups, pools, ids, step=1)
    runtime.on_episode = None

    # every episode once, in order, and the same episodes as an undisturbed single-process round
    assert_same_episodes(episodes, local.play(matchups, local_pools, ids, QUIET, "local"))
    ledger = runtime.last_ledger
    assert ledger.duplicates == 0 and ledger.rerun >= 1
    fault = [f for f in runtime.faults if f["kind"] == "rollout_worker_died"][-1]
    assert fault["target"] == victim and fault["step"] == 1
    assert fault["episodes_finished"] >= 1 and fault["episodes_rerun"] == ledger.rerun
    assert fault["episodes_finished"] + fault["episodes_rerun"] == len(ids) // 2
    assert not set(fault["rerun_ids"]) & set(before_kill), "an episode that arrived is never played again"
    assert victim not in runtime.workers and len(runtime.workers) == 2 and fault["replacement"] in runtime.workers

    # the run holds the fault: a metric and a faults.jsonl line, and the round's accounting
    client = MlflowClient()
    run_id = active.info.run_id
    assert client.get_metric_history(run_id, "faults/rollout_worker_died")[-1].value == 1
    lines = [json.loads(x) for x in mlflow.artifacts.load_text(f"runs:/{run_id}/faults.jsonl").splitlines()]
    assert [(e["kind"], e["target"]) for e in lines] == [("rollout_worker_died", victim)]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["rollout/train/episodes_received"] == metrics["rollout/train/episodes_expected"] == len(ids)
    assert metrics["rollout/train/episodes_rerun"] == ledger.rerun and metrics["rollout/train/workers_lost"] == 1

    # the replacement plays the next round
    matchups, ids = round_of(cfg, 2)
    runtime.on_episode = lambda worker, ep: seen.add(worker)
    seen: set[str] = set()
    runtime.play(matchups, pools, ids)
    runtime.on_episode = None
    assert fault["replacement"] in seen and runtime.last_ledger.rerun == 0


def learner_update(model_dir) -> AutoModelForCausalLM:
    """A learner's model after one update (one AdamW step on made-up text)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok([f"offer {i} then accept" for i in range(16)], padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=enc.input_ids.masked_fill(enc.attention_mask == 0, -100)).loss.backward()
    opt.step()
    return model.eval()


def test_a_killed_engine_comes_back_at_the_current_weights_version(cluster, single_process, tiny_model_dir):
    runtime, pools, cfg = cluster
    local, local_pools, local_models = single_process
    group = runtime.groups["main"]
    learner = learner_update(tiny_model_dir)
    expected = probe_logprobs(learner, group.probe)
    weights = {k: v.detach().clone() for k, v in learner.state_dict().items()}
    report = group.sync(ray.put(weights), 1, expected)
    assert report.version == group.version == 1 and max(report.max_diff.values()) < 1e-5

    victim = group.actors[1]
    runtime.on_episode = lambda worker, ep: ray.kill(victim)  # mid-round (later kills of a dead actor do nothing)
    matchups, ids = round_of(cfg, 3)
    episodes = runtime.play(matchups, pools, ids, step=3)
    runtime.on_episode = None

    assert group.actors[1] is not victim, "the dead engine was replaced"
    assert ray.get([a.version.remote() for a in group.actors]) == [1, 1]
    restarted = ray.get(group.actors[1].score.remote(list(group.probe.prompt_ids), list(group.probe.continuation_ids)))
    assert restarted == pytest.approx(expected, abs=1e-5), "the restarted engine serves the learner's weights"
    fault = [f for f in runtime.faults if f["kind"] == "engine_died"][-1]
    assert (fault["target"], fault["version"], fault["step"]) == ("main/engine_1", 1, 3)
    # nothing lost, and every turn sampled from version 1: the same episodes as one process at version 1
    local_models.agents["main"].engine.update_weights(weights, 1)
    assert_same_episodes(episodes, local.play(matchups, local_pools, ids, QUIET, "local"))
    assert {t.policy_version for ep in episodes for t in ep.turns if t.policy_id == "main"} == {1}

    # an engine that died between rounds is restarted by the next sync, at the new version, and the workers get it
    victim = group.actors[0]
    ray.kill(victim)
    deadline = time.monotonic() + 30
    while group.dead_engines() != [0] and time.monotonic() < deadline:
        time.sleep(0.2)
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    report = group.sync(ray.put(start.state_dict()), 2, probe_logprobs(start, group.probe))
    assert group.actors[0] is not victim and ray.get([a.version.remote() for a in group.actors]) == [2, 2]
    assert max(report.max_diff.values()) < 1e-5
    retries = sum(r["main"]["retries"] for r in runtime.routing().values())
    episodes = runtime.play(matchups[:4], pools, ids[:4], step=4)
    fault = runtime.faults[-1]
    assert (fault["kind"], fault["target"], fault["version"], fault["during"]) == ("engine_died", "main/engine_0", 2, "weight push")
    assert {t.policy_version for ep in episodes for t in ep.turns if t.policy_id == "main"} == {2}
    assert sum(r["main"]["retries"] for r in runtime.routing().values()) == retries, "no request went to the dead engine"


# ----- the real entry point ------------------------------------------------------------------------------------
def test_arena_run_on_ray_trains_and_logs_like_a_local_run(ray_cluster, tiny_model_dir, mlflow_store, tmp_path):
    training = {
        "trainer": {"recipe": "pg", "rounds": 1, "group_size": 2, "groups_per_matchup": 1},
        "runs_dir": str(tmp_path / "runs"),
        "games": [{"id": NEG, "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}],
    }
    ours = run(config(tiny_model_dir, "ray", **training), QUIET)
    theirs = run(config(tiny_model_dir, "local", **training), QUIET)
    assert ours.rounds_done == theirs.rounds_done == 1
    assert_same_episodes(ours.before, theirs.before)

    client = MlflowClient()
    m, ref = client.get_run(ours.run_id).data.metrics, client.get_run(theirs.run_id).data.metrics
    assert m["sync/main/version"] == ref["sync/main/version"] == 1
    assert m["sync/main/max_probe_diff"] < 1e-5
    assert m["learn/main/learner_workers"] == 2 and m["learn/main/samples"] == ref["learn/main/samples"] > 0
    assert m["rollout/train/episodes_received"] == m["rollout/train/episodes_expected"] == 2
    assert m["train/negotiation_v0/return/seller/main"] == ref["train/negotiation_v0/return/seller/main"]
    assert not any(k.startswith("faults/") for k in m)
    params = client.get_run(ours.run_id).data.params
    assert params["cluster.mode"] == "ray" and params["cluster.learner_workers"] == "2"


def test_an_async_ray_run_retries_a_dead_engines_episodes_and_heals_one_that_dies_in_a_sync(ray_cluster, tiny_model_dir, mlflow_store, tmp_path, monkeypatch):
    """``trainer.max_staleness: 1`` on Ray: round 1 plays while round 0 learns (in the learner's thread);
    an engine killed then has its episodes retried on the other, and one killed during the next
    weight sync is restarted at the new version. Nothing is lost, and nothing staler than allowed is trained on."""
    from arena import distributed

    killed: dict[str, object] = {}
    play, sync = RayRuntime.play, distributed.EngineGroup.sync

    def play_and_kill(self, matchups, pools, ids, *args, **kwargs):
        if ids and ids[0].startswith("train1-"):  # played ahead, while round 0 learns
            victim = self.groups["main"].actors[0]

            def kill(worker, episode):
                if "play" not in killed:
                    ray.kill(victim)
                    killed["play"] = episode.episode_id

            self.on_episode = kill
        try:
            return play(self, matchups, pools, ids, *args, **kwargs)
        finally:
            self.on_episode = None

    def sync_and_kill(self, weights, version, expected):
        if version == 2 and "sync" not in killed:
            killed["sync"] = self.actors[1]
            ray.kill(self.actors[1])
        return sync(self, weights, version, expected)

    monkeypatch.setattr(RayRuntime, "play", play_and_kill)
    monkeypatch.setattr(distributed.EngineGroup, "sync", sync_and_kill)
    training = {
        "trainer": {"recipe": "pg", "rounds": 2, "group_size": 2, "groups_per_matchup": 2, "max_staleness": 1},
        "runs_dir": str(tmp_path / "runs"),
        "games": [{"id": NEG, "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}],
        "rollout": {"concurrency": 1},
        "cluster": {"learner_workers": 1},
    }
    result = run(config(tiny_model_dir, "ray", **training), QUIET)
    assert result.rounds_done == 2 and set(killed) == {"play", "sync"}

    client = MlflowClient()

    def history(key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]

    assert history("rollout/train/episodes_received") == history("rollout/train/episodes_expected") == [4.0, 4.0]
    assert history("rollout/train/engines_restarted")[1] >= 1, "the engine killed in round 1's play was replaced during it"
    assert history("staleness/main/max") == [0.0, 1.0] and sum(history("staleness/main/dropped_episodes")) == 0
    assert history("sync/main/version") == [1.0, 2.0] and max(history("sync/main/max_probe_diff")) < 1e-5
    kinds = [(f["kind"], f["target"], f.get("during")) for f in result_faults(client, result.run_id)]
    assert ("engine_died", "main/engine_0", None) in kinds and ("engine_died", "main/engine_1", "weight push") in kinds
    # round 1's episodes were all played (at version 0, while round 0 learned) despite the dead engine
    episodes = [json.loads(line)["episode"] for line in (result.run_dir / "episodes" / "train" / "round_00001.jsonl").read_text().splitlines()]
    assert len(episodes) == 4 and {t["policy_version"] for e in episodes for t in e["turns"] if t["policy_id"] == "main"} == {0}


def result_faults(client: MlflowClient, run_id: str) -> list[dict]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = client.download_artifacts(run_id, "faults.jsonl", d)
        return [json.loads(line) for line in Path(path).read_text().splitlines()]
