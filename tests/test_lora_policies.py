"""Trained policies as LoRA adapters in a run (``model.adapter: lora``): one engine and one base for
every policy, each learning in its own adapter, synced and checkpointed as adapters, resumed exactly."""

from __future__ import annotations

import shutil

import pytest
import torch
from mlflow.tracking import MlflowClient
from rich.console import Console
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from arena.config import RunConfig
from arena.experiment import run

QUIET = Console(quiet=True)


def config(model_dir, tmp_path, **model) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "lora_check",
            "seed": 2,
            "episodes_per_matchup": 2,
            "games": [
                {
                    "id": "negotiation-v0",
                    "matchups": [{"seller": "main/seller", "buyer": "scripted/fair_buyer"}, {"seller": "scripted/fair_seller", "buyer": "main/buyer"}],
                }
            ],
            "model": {"path": str(model_dir), "warm_start": None, "adapter": "lora", "lora": {"rank": 4, "alpha": 8}, **model},
            "sampling": {"max_new_tokens": 8},
            "trainer": {"recipe": "pg", "rounds": 2, "group_size": 2, "groups_per_matchup": 2, "checkpoint_every": 1, "lr": 5e-3},
            "tracking": {"traces_per_round": 0, "trace_extremes": False, "trace_illegal": False},
            "runs_dir": str(tmp_path / "runs"),
        }
    )


def test_two_policies_learn_as_adapters_of_one_base_and_resume_exactly(tiny_model_dir, mlflow_store, tmp_path):
    cfg = config(tiny_model_dir, tmp_path)
    result = run(cfg, QUIET)
    final = result.run_dir / "checkpoints" / "round_00002" / "policies"
    adapters = {pid: load_file(str(final / pid / "adapter_model.safetensors")) for pid in ("main__seller", "main__buyer")}
    assert adapters["main__seller"] and all("lora_" in k for a in adapters.values() for k in a)
    assert not list(final.rglob("model.safetensors")), "no full copy of the model is saved per policy"
    assert (final / "main__seller" / "adapter_config.json").is_file()
    assert any(not torch.equal(adapters["main__seller"][k], adapters["main__buyer"][k]) for k in adapters["main__seller"])

    metrics = MlflowClient().get_run(result.run_id).data.metrics
    for pid in ("main/seller", "main/buyer"):
        assert metrics[f"sync/{pid}/version"] == 2 and metrics[f"sync/{pid}/max_probe_diff"] < 1e-4
        assert metrics[f"learn/{pid}/samples"] > 0
    trained = sum(v.numel() for v in adapters["main__seller"].values())
    assert trained < 0.1 * sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())

    # cross-play loads a trained adapter by RUN_ID:policy@version, on its base: what the run's learner served
    from arena.adapters import LoraSpec
    from arena.crossplay import resolve_policy
    from arena.engines.hf import HFEngine

    seller = resolve_policy(f"{result.run_id}:main/seller@2", "negotiation-v0")
    assert seller.engine.version == 2
    reference = HFEngine(tiny_model_dir)
    base_score = reference.score([5, 6, 7], [8, 9])
    reference.add_adapters(LoraSpec(rank=4, alpha=8), ["seller"])
    reference.update_adapter("seller", adapters["main__seller"], 2)
    served = seller.engine.score([5, 6, 7], [8, 9])
    assert served == pytest.approx(reference.score([5, 6, 7], [8, 9], adapter="seller"), abs=1e-5)
    assert served != pytest.approx(base_score, abs=1e-5)

    # a run killed after round 1 resumes from its adapters and ends where the uninterrupted run ended
    shutil.rmtree(result.run_dir / "checkpoints" / "round_00002")
    resumed = run(cfg, QUIET, resume=True)
    again = {pid: load_file(str(resumed.run_dir / "checkpoints" / "round_00002" / "policies" / pid / "adapter_model.safetensors")) for pid in adapters}
    for pid, tensors in adapters.items():
        for k, v in tensors.items():
            assert torch.equal(v, again[pid][k]), f"{pid} {k} differs after resume"


def test_lora_refuses_what_it_does_not_run_yet(tiny_model_dir, tmp_path):
    data = config(tiny_model_dir, tmp_path).model_dump(mode="json")
    data["trainer"]["recipe"] = "dpo"
    with pytest.raises(ValueError, match="model.adapter=lora does not run with trainer.recipe=dpo"):
        RunConfig.model_validate(data)


def test_snapshot_and_league_pools_are_adapters_of_the_one_engine(tiny_model_dir, mlflow_store, tmp_path, monkeypatch):
    """A ``snapshot`` seat and ``league`` seats with LoRA policies: every past version is an adapter of the
    run's one engine; a pool entry is an adapter's tensors; a snapshot dropped from the league frees its adapter."""
    from arena.league import POOL_FILE
    from arena.runtime import LocalRuntime

    engines = []
    make_engine = LocalRuntime.engine

    def counted(self, name, model_path):  # the real engine, recorded
        engines.append(make_engine(self, name, model_path))
        return engines[-1]

    monkeypatch.setattr(LocalRuntime, "engine", counted)
    data = config(tiny_model_dir, tmp_path).model_dump(mode="json")
    data["games"][0]["matchups"] = [
        {"seller": "main", "buyer": "snapshot"},
        {"seller": "main/seller", "buyer": "league"},
        {"seller": "league", "buyer": "main/buyer"},
    ]
    data["league"] = {"snapshot_every": 1, "max_snapshots": 2, "matchmaking": "latest"}
    data["trainer"].update(rounds=3, snapshot_every=1, checkpoint_every=1)
    result = run(RunConfig.model_validate(data), QUIET)

    assert len(engines) == 1, "one engine serves every policy, snapshot and league opponent"
    versions = engines[0].adapter_versions
    size = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    ckpt = result.run_dir / "checkpoints"
    pools = [torch.load(ckpt / f"round_0000{r}" / POOL_FILE, weights_only=True) for r in (2, 3)]
    snapshot_pool = torch.load(ckpt / "snapshot_pool.pt", weights_only=True)
    assert sorted(snapshot_pool) == list(range(len(snapshot_pool))) and len(snapshot_pool) >= 2
    for entry in [*snapshot_pool.values(), *(s for p in pools[-1].values() for s in p.values())]:
        assert entry and all(".lora_" in k for k in entry), "a pool entry is an adapter's tensors"
        assert sum(v.numel() for v in entry.values()) < 0.1 * size
    assert all(0 in p and len(p) <= 2 for p in pools[-1].values())
    # past versions that played are adapters of the engine; those dropped from the pool are gone from it
    assert {"main", "main/seller", "main/buyer", "snapshot"} <= set(versions)
    live = {f"{pid}@{v}" for pid, p in pools[-1].items() for v in p}
    assert {k for k in versions if "@" in k} <= live
    dropped = {f"{pid}@{v}" for pid, p in pools[0].items() for v in p} - live
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    played = {k for k in dropped if f"rating/{k.replace('@', ':')}/mu" in metrics}
    assert played, f"the test needs a snapshot that played and was then dropped: dropped {dropped}"
    assert not played & set(versions), "a snapshot dropped from the pool frees its adapter"
    assert versions["snapshot"] == 0, "evaluation plays the snapshot seat with main's starting adapter"
