"""Cross-play (`arena crossplay`, arena.crossplay) and playing by hand against a trained model (`arena play --opponent`)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import arena_in_process
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from arena.crossplay import crossplay, crossplay_matchups, log_crossplay, rating_metric_names, resolve_policy, run_checkpoint

ARENA = str(Path(sys.executable).with_name("arena"))
PD_BOTS = ["scripted/always_defect", "scripted/tit_for_tat", "scripted/random", "scripted/always_cooperate"]


def arena(*args: str, cwd: Path, env: dict | None = None, input: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    # wide lines: Rich must not fold a long path in an error message
    env = {**os.environ, "COLUMNS": "400", **(env or {})}
    return subprocess.run([ARENA, *args], cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=timeout)


def test_crossplay_of_prisoners_dilemma_bots_ranks_defection_first_and_logs_a_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = arena("crossplay", "repeated_matrix-v0", *PD_BOTS, "--episodes", "8", "--json", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)  # stdout is one JSON object and nothing else
    assert result["policies"] == PD_BOTS and result["episodes_per_pairing"] == 8
    assert result["episodes"] == 4 * 3 * 8  # ordered pairs x (one seating each in a 2-player game) x episodes

    ordinals = {p: r["ordinal"] for p, r in result["ratings"].items()}
    ranked = sorted(ordinals, key=ordinals.get, reverse=True)
    assert ranked[0] == "scripted/always_defect" and ranked[-1] == "scripted/always_cooperate", ordinals
    assert result["ranking"] == ranked

    defect, cooperate = "scripted/always_defect", "scripted/always_cooperate"
    for other in PD_BOTS:
        if other != defect:  # always-defect is never outscored ...
            assert result["losses"][defect][other] == 0 and result["matrix"][defect][other] >= result["matrix"][other][defect]
            assert result["wins"][other][defect] == 0
        if other != cooperate:  # ... and always-cooperate never outscores
            assert result["wins"][cooperate][other] == 0 and result["matrix"][cooperate][other] <= result["matrix"][other][cooperate]
    # every episode of a pairing counts once from each side (2 seatings x 8 episodes)
    for a in PD_BOTS:
        for b in PD_BOTS:
            if a != b:
                assert result["wins"][a][b] + result["draws"][a][b] + result["losses"][a][b] == 16
                assert result["wins"][a][b] == result["losses"][b][a]
    assert result["matrix"][defect][cooperate] == 100.0 and result["matrix"][cooperate][defect] == 0.0  # 10 rounds of F vs J: 10/0

    run_id = result["mlflow_run_id"]
    assert run_id in out.stderr
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert {"crossplay.json", "crossplay_heatmap.png"} <= {a.path for a in client.list_artifacts(run_id)}
    for p in PD_BOTS:
        for k in ("mu", "sigma", "ordinal"):
            assert run.data.metrics[f"rating/{p}/{k}"] == pytest.approx(result["ratings"][p][k])
    assert run.data.params["game"] == "repeated_matrix-v0" and run.data.params["policy/0"] == defect


def test_crossplay_table_and_its_usage_errors(tmp_path):
    out = arena("crossplay", "repeated_matrix-v0", *PD_BOTS[:2], "--episodes", "2", "-o", "rounds=3", "--no-log", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mu ± sigma" in out.stdout and "Mean return of the row policy" in out.stdout
    # always-defect against tit-for-tat over 3 rounds: F/J F/F F/F, 10 + 5 + 5 points against 0 + 5 + 5
    assert re.search(r"scripted/always_defect +│ +— +│ +\+20\.00 │", out.stdout), out.stdout
    assert re.search(r"scripted/tit_for_tat +│ +\+10\.00 +│ +— │", out.stdout), out.stdout
    for args, message in [
        (["repeated_matrix-v0", "scripted/always_defect"], "at least 2 distinct policies"),
        (["repeated_matrix-v0", "scripted/always_defect", "scripted/always_defect"], "more than once"),
        (["chess-v0", "random", "scripted/always_defect"], "unknown game 'chess-v0'"),
        (["repeated_matrix-v0", "random", "no_such_policy"], "unknown policy 'no_such_policy'"),
        (["repeated_matrix-v0", "random", "scripted/always_defect", "-o", "rounds"], "must look like key=value"),
        (["repeated_matrix-v0", "random", "scripted/always_defect", "-o", "rounds=0"], "rounds"),
    ]:
        bad = arena_in_process("crossplay", *args, cwd=tmp_path)
        assert bad.returncode == 2, (args, bad.stderr)
        assert message in bad.stderr, (args, bad.stderr)
    assert not (tmp_path / "mlflow.db").exists(), "nothing is logged by a request that cannot start"


def test_crossplay_with_more_than_two_players_seats_one_policy_alone_in_every_seat():
    players = ["crew_1", "crew_2", "impostor"]
    matchups = crossplay_matchups("g", players, ["A", "B"], episodes=2, seed=5)
    assert len(matchups) == 2 * 3 * 2  # ordered pairs x seatings x episodes
    for first, alone in zip(matchups[0:6:2], players):
        assert first.seats == {p: ("A" if p == alone else "B") for p in players}
    assert len({m.seed for m in matchups}) == len(matchups)
    assert [m.seed for m in crossplay_matchups("g", players, ["A", "B"], episodes=2, seed=5)] == [m.seed for m in matchups]
    assert crossplay_matchups("g", players, ["A", "B"], episodes=2, seed=6)[0].seed != matchups[0].seed

    result = crossplay("social_deduction-v0", ["random", "scripted/impostor"], episodes=1)
    players = list(result.episodes[0].matchup.seats)
    assert len(result.episodes) == 2 * len(players)
    for ep in result.episodes:
        assert sorted(ep.matchup.seats.values()).count("random") in (1, len(players) - 1)
    for spec in result.policies:
        assert result.ratings[spec]["games"] == len(result.episodes)  # one rated match per episode, whatever the seats
    a, b = result.policies
    assert result.wins[a][b] + result.draws[a][b] + result.losses[a][b] == len(result.episodes)
    assert result.wins[a][b] == result.losses[b][a]


def test_play_by_hand_against_a_trained_model(tmp_path, warm_model_dir):
    out = arena("play", "repeated_matrix-v0", "--opponent", str(warm_model_dir), "--seed", "3", cwd=tmp_path, input="J\n" * 40)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Game over." in out.stdout and f"the model {warm_model_dir} (weights version 0)" in " ".join(out.stdout.split())
    # the model's own words, and they are the moves the human saw in the round history
    moves = " ".join(out.stdout.split("The model's moves: ", 1)[1].split()).split(" | ")  # the console folds long lines
    assert moves and all(m.startswith("player_1: ") for m in moves)
    legal = [m.removeprefix("player_1: ") for m in moves if not m.endswith("(illegal)")]
    labels = [re.search(r"\b([JF])\b", ast.literal_eval(m), re.IGNORECASE).group(1).upper() for m in legal]
    history = re.findall(r"History \(you/them, your points\): (.*)", out.stdout)[-1]
    theirs = [] if history == "none" else [pair.split()[0].split("/")[1] for pair in history.split(", ")]
    assert theirs and labels[: len(theirs)] == theirs


def test_play_rejects_a_directory_that_is_not_a_model(tmp_path):
    junk = tmp_path / "not_a_model"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    out = arena_in_process("play", "repeated_matrix-v0", "--opponent", str(junk), cwd=tmp_path)
    assert out.returncode == 2
    assert str(junk) in out.stderr and "neither a model directory" in out.stderr
    missing = arena_in_process("play", "repeated_matrix-v0", "--opponent", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and f"no such directory '{tmp_path / 'nowhere'}'" in missing.stderr
    (junk / "config.json").write_text("{}")  # looks like a model, holds none
    broken = arena_in_process("play", "repeated_matrix-v0", "--opponent", str(junk), cwd=tmp_path)
    assert broken.returncode == 2 and f"cannot load the model of policy '{junk}'" in broken.stderr


def _saved_run(tmp_path: Path, uri: str, model_dir: Path) -> tuple[str, Path]:
    """A run as `arena run` leaves it: an MLflow run with config.yaml, one local checkpoint with main at version 1."""
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("saved")).info.run_id
    runs_dir = tmp_path / "arena_runs"
    client.log_text(run_id, f"name: saved\nruns_dir: {runs_dir}\n", "config.yaml")
    round_dir = runs_dir / "saved" / run_id / "checkpoints" / "round_00001"
    shutil.copytree(model_dir, round_dir / "policies" / "main")
    (round_dir / "state.json").write_text(json.dumps({"run_id": run_id, "versions": {"main": 1}}))
    return run_id, round_dir


def test_resolve_policy_finds_a_runs_checkpoint_and_names_what_exists(tmp_path, mlflow_store, warm_model_dir):
    game = "repeated_matrix-v0"
    with pytest.raises(ValueError) as bad:
        resolve_policy("nonsense", game)
    for form in ("scripted/<bot>", "model directory", "checkpoint round directory", "RUN_ID:policy@version"):
        assert form in str(bad.value)

    run_id, round_dir = _saved_run(tmp_path, mlflow_store, warm_model_dir)
    with pytest.raises(ValueError, match=r"no checkpoint of main@99; the versions it has under .*: main@1 \(round_00001\)"):
        resolve_policy(f"{run_id}:main@99", game)
    with pytest.raises(ValueError, match=r"no policy 'seller'.*its policies: main"):
        resolve_policy(f"{run_id}:seller@1", game)
    with pytest.raises(ValueError, match="without a version"):
        resolve_policy(f"{run_id}:main", game)
    with pytest.raises(ValueError, match="cannot read MLflow run 'f00'"):
        resolve_policy("f00:main@1", game)

    spec = f"{run_id}:main@1"
    agent = resolve_policy(spec, game)
    assert agent.policy_id == spec and agent.version == 1
    by_round = resolve_policy(str(round_dir), game)  # a round with one policy: that one, at the checkpoint's version
    assert by_round.version == 1 and Path(by_round.policy_id) == round_dir
    assert resolve_policy(str(warm_model_dir), game).version == 0  # a model directory outside a checkpoint

    # a version a league kept only in its snapshot pool: written out once as a model directory
    weights = load_file(str(warm_model_dir / "model.safetensors"))
    torch.save({"main": {0: weights, 7: {k: v + 0.5 for k, v in weights.items()}}}, round_dir / "league_pool.pt")
    assert run_checkpoint(run_id, "main", 7).parts[-2:] == ("league_snapshots", "main@7")
    pooled = resolve_policy(f"{run_id}:main@7", game)
    embed = next(k for k in weights if "embed" in k)
    assert pooled.version == 7 and torch.equal(pooled.engine.model.state_dict()[embed], weights[embed] + 0.5)

    shutil.copytree(warm_model_dir, round_dir / "policies" / "main__seller")
    with pytest.raises(ValueError, match=r"holds 2 policies; name one by its directory:\n .*policies/main\n .*policies/main__seller"):
        resolve_policy(str(round_dir), game)

    # a checkpointed model in cross-play: its turns and rating carry the spec and the checkpoint's version
    result = crossplay(game, [spec, "scripted/always_defect"], episodes=1, game_kwargs={"rounds": 2}, policies={spec: agent})
    assert {t.policy_version for ep in result.episodes for t in ep.turns if t.policy_id == spec} == {1}
    assert result.ratings[spec]["games"] == 2
    run = MlflowClient(tracking_uri=mlflow_store).get_run(log_crossplay(result, mlflow_store))
    assert f"rating/{run_id}:main:1/ordinal" in run.data.metrics


def test_rating_metric_names_are_distinct_and_valid_mlflow_names(tmp_path):
    specs = ["/home/me/arena_runs/x/../round_00010/policies/main", "scripted/tit_for_tat", "a b@3", "a_b:3", "./m"]
    names = rating_metric_names(specs)
    assert len(set(names.values())) == len(specs)
    assert names["scripted/tit_for_tat"] == "rating/scripted/tit_for_tat"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("names")).info.run_id
    for name in names.values():
        client.log_metric(run_id, f"{name}/mu", 1.0)  # MLflow rejects names that are not normalised paths
    assert len(client.get_run(run_id).data.metrics) == len(specs)
