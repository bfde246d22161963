"""A training run killed with SIGKILL resumes from its last checkpoint and ends exactly where an uninterrupted run ends:
the same weights, and the same league (snapshot pool, matchmaking results, ratings); synchronous, and asynchronous
(``trainer.max_staleness: 1``, whose checkpoint holds the round it had already played ahead), and with the policy
and its league snapshots as LoRA adapters (``model.adapter: lora``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import arena_in_process
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

ARENA = str(Path(sys.executable).with_name("arena"))

CONFIG = """
name: resume_check
seed: 3
episodes_per_matchup: 2
games:
  - id: repeated_matrix-v0
    kwargs: {rounds: 3}
    matchups:
      - {player_0: main, player_1: scripted/tit_for_tat}
      - {player_0: league, player_1: main}
league: {bots: [scripted/always_defect], snapshot_every: 1, max_snapshots: 3, matchmaking: pfsp}
trainer:
  recipe: pg
  rounds: 5
  group_size: 2
  groups_per_matchup: 2
  checkpoint_every: 1
  baseline: per_role
sampling: {max_new_tokens: 8}
tracking: {traces_per_round: 1}
model: {games: [repeated_matrix-v0, negotiation-v0]}  # the session's tiny model (conftest.MODEL_GAMES): none built here
"""


def _run(cwd: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [ARENA, "run", "config.yaml", *extra], cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _final_checkpoint(cwd: Path) -> Path:
    (ckpt,) = sorted(cwd.glob("arena_runs/resume_check/*/checkpoints/round_00005"))
    return ckpt


def _final_weights(cwd: Path, adapter: str) -> dict[str, torch.Tensor]:
    name = "adapter_model.safetensors" if adapter == "lora" else "model.safetensors"
    (ckpt,) = sorted(cwd.glob(f"arena_runs/resume_check/*/checkpoints/round_00005/policies/main/{name}"))
    return load_file(str(ckpt))


@pytest.fixture(params=[(0, "full"), (1, "full"), (0, "lora")], ids=["synchronous", "asynchronous", "lora"])
def workdirs(request, tmp_path, arena_home):
    env = {"ARENA_HOME": str(arena_home), "MLFLOW_TRACKING_URI": ""}
    staleness, adapter = request.param
    dirs = []
    for name in ("killed", "straight"):
        d = tmp_path / name
        d.mkdir()
        config = CONFIG.replace("  checkpoint_every: 1\n", f"  checkpoint_every: 1\n  max_staleness: {staleness}\n")
        if adapter == "lora":  # the policy and its league snapshots as LoRA adapters of one frozen base
            config = config.replace("model: {", "model: {adapter: lora, lora: {rank: 4, alpha: 8}, ")
        (d / "config.yaml").write_text(config)
        dirs.append(d)
    return dirs, env, staleness, adapter


@pytest.mark.long
def test_sigkill_then_resume_matches_an_uninterrupted_run(workdirs):
    (killed, straight), env, staleness, adapter = workdirs

    proc = _run(killed, env)
    deadline = time.time() + 600
    while not list(killed.glob("arena_runs/resume_check/*/checkpoints/round_00002/state.json")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no second checkpoint within 600 s"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # mid-round 3: no chance to clean up
    proc.wait()
    assert not list(killed.glob("arena_runs/resume_check/*/checkpoints/round_00005"))
    (state,) = killed.glob("arena_runs/resume_check/*/checkpoints/round_00002/state.json")
    ahead = json.loads(state.read_text())["ahead"]
    # asynchronous: round 2 (the third) was played, with the weights before round 1's update, when round 1's checkpoint was saved
    assert (ahead is not None) == bool(staleness)
    if ahead:
        assert {t["policy_version"] for e in ahead["episodes"] for t in e["turns"] if t["policy_id"] == "main"} == {1}

    resumed = _run(killed, env, "--resume")
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert "Resuming MLflow run" in out and "Before / after training" in out

    full = _run(straight, env)
    out_full = full.communicate(timeout=600)[0]
    assert full.returncode == 0, out_full[-3000:]

    # synchronous: bit for bit. Asynchronous, in one process: generation and learning share the CPU's
    # thread pools while they overlap, which moves logprobs by ~1e-7 from one run to the next (two
    # uninterrupted runs differ as much); the same moves, outcomes and league, weights within 1e-6
    same = torch.equal if not staleness else (lambda x, y: torch.allclose(x, y, rtol=0, atol=1e-6))
    a, b = _final_weights(killed, adapter), _final_weights(straight, adapter)
    assert a.keys() == b.keys()
    assert all(("lora_" in k) == (adapter == "lora") for k in a)
    for k in a:
        assert same(a[k], b[k]), f"{k} differs between the resumed and the uninterrupted run"

    # the league: pool versions (round 0's kept, the oldest others dropped past 3), PFSP results, ratings
    league = [json.loads(_final_checkpoint(d).joinpath("state.json").read_text())["league"] for d in (killed, straight)]
    assert league[0] == league[1]
    assert league[0]["pool_versions"] == {"main": [0, 4, 5]}
    assert sum(sum(v) for v in league[0]["results"]["main"].values()) == 5 * 2 * 2 * 2  # every training episode: 5 rounds, 2 seatings, 2x2
    # the last round was played by version 4, or, played ahead, by version 3
    assert f"main@{4 - staleness}" in league[0]["ratings"]["table"] and "scripted/always_defect" in league[0]["ratings"]["table"]
    pools = [torch.load(_final_checkpoint(d) / "league_pool.pt", weights_only=True) for d in (killed, straight)]
    assert all(same(pools[0]["main"][v][k], pools[1]["main"][v][k]) for v in (0, 4, 5) for k in pools[0]["main"][v])
    assert all(("lora_" in k) == (adapter == "lora") for k in pools[0]["main"][0]), "a LoRA league's pool holds adapters"

    mlflow.set_tracking_uri(f"sqlite:///{killed / 'mlflow.db'}")
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("arena").experiment_id])
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/round"))
    assert steps == [0, 1, 2, 3, 4], "one continuous metric history in one MLflow run"
    loss_steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "learn/main/loss"))
    assert loss_steps == [0, 1, 2, 3, 4]
    staleness_max = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "staleness/main/max"), key=lambda m: m.step)]
    assert staleness_max == [0.0] + [float(staleness)] * 4


def test_resume_with_nothing_to_resume_exits_2(tmp_path, tiny_model_dir):
    (tmp_path / "config.yaml").write_text(CONFIG)
    out = arena_in_process("run", "config.yaml", "--resume", cwd=tmp_path, env={"ARENA_HOME": str(tiny_model_dir.parent.parent)})
    assert out.returncode == 2 and "nothing to resume" in out.stderr
