"""The real `arena` entry point, run as a user runs it, on tiny inputs. Requests refused before any work
run through the same typer app in-process (conftest.arena_in_process): the script's start-up costs seconds."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import arena_in_process

ARENA = str(Path(sys.executable).with_name("arena"))


def arena(*args: str, cwd: Path, env: dict | None = None, input: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([ARENA, *args], cwd=cwd, env={**os.environ, **(env or {})}, input=input, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def home(arena_home: Path) -> dict:
    # ARENA_HOME is where the models are cached; the session fixtures already built them there.
    return {"ARENA_HOME": str(arena_home)}


def test_games_lists_versioned_ids(tmp_path):
    out = arena("games", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "repeated_matrix-v0" in out.stdout and "negotiation-v0" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["configs/does_not_exist.yaml"], "config file not found: configs/does_not_exist.yaml"),
        (["trainer.nonsense=1"], "unknown config key 'trainer.nonsense'"),
        (["sampling.temperature=-2"], "sampling.temperature"),
        (["trainer.advantage=nope"], "valid names: group_mean, grpo, none, rloo"),
        (["trainer.loss=nope"], "valid names: ppo_clip, reinforce"),
        (["trainer.kl_estimator=k9"], "valid names: k1, k2, k3"),
        ([str(Path(__file__).parents[1] / "configs" / "tournament.yaml"), "model.path=/nonexistent/model"], "'model.path': no such model directory"),
    ],
)
def test_run_rejects_bad_config_with_status_2_before_any_work(tmp_path, args, message):
    out = arena_in_process("run", *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in " ".join(out.stderr.split())
    assert not (tmp_path / "mlflow.db").exists(), "nothing may start before the config is valid"


@pytest.mark.long
def test_run_selfplay_trains_logs_episodes_and_episodes_command_reads_them(tmp_path, home):
    # the self-play config (the field defaults), shortened: one training round between the two evaluations
    selfplay = str(Path(__file__).parent.parent / "configs" / "selfplay.yaml")
    out = arena(
        "run",
        selfplay,
        "episodes_per_matchup=3",
        "tracking.traces_per_round=21",
        "tracking.trace_extremes=false",  # the sample only: tests/test_trace_inspection.py tests the other choices
        "tracking.trace_illegal=false",
        "trainer.rounds=1",
        "trainer.groups_per_matchup=1",
        "trainer.replay_coef=0.1",  # and the warm start's demonstrations replayed in the update
        cwd=tmp_path,
        env=home,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Before / after training" in out.stdout
    assert re.search(r"replay: \d+ examples of the warm start, 16 per update at weight 0\.1", out.stdout)
    run_id = re.search(r"MLflow run (\w+)", out.stdout).group(1)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.get_run(run_id)
    traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run_id, return_type="list")
    assert len(traces) == 21 + 20 + 21  # before, the round's 5 seatings x 4 episodes, after
    assert run.data.metrics["eval/repeated_matrix_v0/episodes"] == 4 * 3
    assert "eval/negotiation_v0/return/seller/main" in run.data.metrics
    assert run.data.metrics["eval/tokens_per_s"] > 0
    for key in (
        "learn/main/loss",
        "learn/main/kl",
        "learn/main/entropy",
        "learn/main/grad_norm",
        "learn/main/replay_loss",
        "train/rollout_tokens_per_s",
        "learn/main/train_tokens_per_s",
        "time/rollout_s",
        "time/learn_s",
        "train/negotiation_v0/deal",
    ):
        assert key in run.data.metrics, key
    config_text = mlflow.artifacts.load_text(f"runs:/{run_id}/config.yaml")
    assert "episodes_per_matchup: 3" in config_text
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert "reward_curve.png" in artifacts

    shown = arena("episodes", run_id, "--limit", "2", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("returns:") == 2
    assert "#0 " in shown.stdout and "→" in shown.stdout


@pytest.mark.long
def test_a_warm_start_with_model_path_is_reported_as_skipped(tmp_path, tiny_model_dir):
    config = tmp_path / "t.yaml"
    config.write_text(
        "name: given_model\nepisodes_per_matchup: 1\ntrainer: {recipe: none}\nsampling: {max_new_tokens: 4}\n"
        "games:\n  - id: repeated_matrix-v0\n    kwargs: {rounds: 1}\n    matchups: [{player_0: main, player_1: scripted/tit_for_tat}]\n"
    )
    out = arena("run", str(config), f"model.path={tiny_model_dir}", cwd=tmp_path, env={"ARENA_HOME": str(tmp_path / "empty_home"), "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model.warm_start (imitation) is skipped" in " ".join(out.stdout.split())
    run_id = re.search(r"arena episodes ([0-9a-f]{32})", out.stdout).group(1)
    run = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id)
    assert run.data.tags["model.warm_start"].startswith("skipped")
    assert not (tmp_path / "empty_home").exists(), "the given model is used as is: nothing is built"
    quiet = arena("run", str(config), f"model.path={tiny_model_dir}", "model.warm_start=null", cwd=tmp_path)
    assert quiet.returncode == 0 and "skipped" not in quiet.stdout


def test_tournament_of_bots_needs_no_model(tmp_path):
    config = Path(__file__).parent.parent / "configs" / "bots_only.yaml"
    out = arena("run", str(config), cwd=tmp_path, env={"ARENA_HOME": str(tmp_path / "empty_home")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Tournament summary" in out.stdout and "stag_hunt_shuffled" in out.stdout
    assert not (tmp_path / "empty_home").exists(), "a bots-only run builds no model"


def test_episodes_of_unknown_run_exits_2(tmp_path):
    out = arena_in_process("episodes", "no_such_run", cwd=tmp_path)
    assert out.returncode == 2 and "no_such_run" in out.stderr


def test_play_by_hand_against_a_bot(tmp_path):
    out = arena("play", "repeated_matrix-v0", "--opponent", "scripted/always_defect", cwd=tmp_path, input="J\nF\n" * 5)
    assert out.returncode == 0, out.stderr
    # J then F against always-defect in the Prisoner's Dilemma: 5 x (0 + 5) for the human, 5 x (10 + 5) for the bot
    assert "player_0 +25.000" in out.stdout and "player_1 +75.000" in out.stdout


def test_play_rejects_unknown_game_and_seat(tmp_path):
    assert arena_in_process("play", "chess-v0", cwd=tmp_path).returncode == 2
    out = arena_in_process("play", "negotiation-v0", "--seat", "judge", cwd=tmp_path)
    assert out.returncode == 2 and "seller" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store(tmp_path):
    port = _free_port()
    proc = subprocess.Popen([ARENA, "ui", "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                time.sleep(1)
        else:
            pytest.fail("the MLflow UI did not answer within 90 s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=5", timeout=10) as r:
            assert b"experiments" in r.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers
        proc.wait(timeout=30)
