"""A user's own game, in a module outside the repository, runs through the real command line with
no edit to Arena: the README's `my_auction.py` (an `arena.TextGame` with its own bots and report),
and a plain PettingZoo AEC environment registered by a factory and loaded from an installed
distribution's `arena.games` entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

README = Path(__file__).parent.parent / "README.md"
ARENA = str(Path(sys.executable).parent / "arena")


def readme_file(name: str) -> str:
    """The README block that follows ``<!-- file: NAME -->``."""
    m = re.search(rf"<!-- file: {re.escape(name)} -->\n```\w+\n(.*?)```", README.read_text(), re.S)
    assert m, f"the README shows {name}"
    return m.group(1)


def arena(*args: str, cwd: Path, env: dict | None = None, stdin: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
    run_env = {**os.environ, **(env or {})}
    return subprocess.run([ARENA, *args], cwd=cwd, env=run_env, input=stdin, capture_output=True, text=True, timeout=timeout)


#: a plain PettingZoo AEC environment (no Arena base class), two bots, and a factory registration
PENNIES = textwrap.dedent('''
    """Matching pennies for three rounds, as a plain PettingZoo AEC environment."""

    import string

    import numpy as np
    from gymnasium import spaces
    from pettingzoo import AECEnv

    import arena


    class MatchingPennies(AECEnv):
        metadata = {"name": "pennies_v0", "is_parallelizable": False}

        def __init__(self, rounds: int = 3):
            super().__init__()
            self.rounds = rounds
            self.possible_agents = ["even", "odd"]
            text = spaces.Text(max_length=200, charset=string.printable)
            self.observation_spaces = {a: spaces.Dict({"text": text}) for a in self.possible_agents}
            self.action_spaces = {a: spaces.Text(max_length=40, charset=string.printable) for a in self.possible_agents}

        def observation_space(self, agent):
            return self.observation_spaces[agent]

        def action_space(self, agent):
            return self.action_spaces[agent]

        def reset(self, seed=None, options=None):
            self.agents = list(self.possible_agents)
            self.round, self.moves, self.history = 0, {}, []
            self.rewards = {a: 0.0 for a in self.agents}
            self._cumulative_rewards = {a: 0.0 for a in self.agents}
            self.terminations = {a: False for a in self.agents}
            self.truncations = {a: False for a in self.agents}
            self.infos = {a: {} for a in self.agents}
            self.agent_selection = "even"

        def observe(self, agent):
            past = "; ".join(f"{e}/{o}" for e, o in self.history) or "none"
            return {"text": f"You are {agent}. Round {self.round + 1} of {self.rounds}. Past (even/odd): {past}. Say HEADS or TAILS."}

        def step(self, action):
            agent = self.agent_selection
            if self.terminations[agent] or self.truncations[agent]:
                self._was_dead_step(action)
                return
            self._cumulative_rewards[agent] = 0.0
            self.moves[agent] = "tails" if "tails" in str(action).lower() else "heads"  # anything else is heads
            self.rewards = {a: 0.0 for a in self.agents}
            if agent == "even":
                self.agent_selection = "odd"
            else:
                e, o = self.moves["even"], self.moves["odd"]
                self.history.append((e, o))
                self.rewards = {"even": 1.0 if e == o else 0.0, "odd": 0.0 if e == o else 1.0}
                self.round += 1
                self.moves = {}
                self.agent_selection = "even"
                if self.round >= self.rounds:
                    self.terminations = {a: True for a in self.agents}
            self._accumulate_rewards()


    class Heads(arena.ScriptedPolicy):
        def choose(self, view):
            return "HEADS"


    class Tails(arena.ScriptedPolicy):
        def choose(self, view):
            return "TAILS"


    def make_pennies(**kwargs):
        return MatchingPennies(**kwargs)


    arena.register("pennies-v0", make_pennies, description="Matching pennies, plain PettingZoo AEC.", bots={"heads": Heads, "tails": Tails})
''')

PENNIES_CONFIG = textwrap.dedent("""
    name: pennies
    episodes_per_matchup: 4
    games:
      - id: pennies-v0
        matchups:
          - {even: main, odd: scripted/tails}
          - {even: scripted/heads, odd: main}
    model:
      tiny: {hidden_size: 32, num_heads: 1, intermediate_size: 64, vocab_size: 384}
      warm_start: {steps: 40}
    sampling: {max_new_tokens: 6}
    trainer: {recipe: pg, rounds: 2, groups_per_matchup: 2, group_size: 4, lr: 0.003}
""")


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A folder outside the repository with the README's package and config."""
    d = tmp_path_factory.mktemp("user_game")
    (d / "my_auction.py").write_text(readme_file("my_auction.py"))
    (d / "user.yaml").write_text(readme_file("user.yaml"))
    return d


def _env(d: Path) -> dict:
    return {"ARENA_HOME": str(d / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}", "COLUMNS": "200"}


def _run_id(stdout: str) -> str:
    m = re.search(r"arena episodes ([0-9a-f]{32})", stdout)
    assert m, stdout[-2000:]
    return m.group(1)


def _trained_changed_the_weights(run_dir: Path, home: Path) -> bool:
    """The checkpoint's policy differs from the warm start it began from (in ARENA_HOME)."""
    trained = load_file(next((run_dir / "checkpoints" / "round_00002" / "policies" / "main").glob("*.safetensors")))
    warm = [p for p in (home / "models").glob("warm-*") if (p / "model.safetensors").is_file()]
    assert len(warm) == 1, warm
    start = load_file(warm[0] / "model.safetensors")
    return any(not (trained[k] == start[k]).all() for k in start)


def _mlflow(d: Path, run_id: str) -> tuple[dict, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}")
    run = client.get_run(run_id)
    rounds = client.get_metric_history(run_id, "train/round")
    return run.data.metrics, rounds


@pytest.mark.long
def test_a_users_text_game_with_bots_and_report_trains_through_arena_run(user_dir: Path):
    out = arena("run", "user.yaml", cwd=user_dir, env=_env(user_dir))
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert "Sealed-bid auction" in out.stdout  # the game's own report, printed by the generic driver
    run_id = _run_id(out.stdout)
    metrics, rounds = _mlflow(user_dir, run_id)
    assert sorted(m.step for m in rounds) == [0, 1]  # two training rounds
    assert "auction/sealed_bid-v0/after_price" in metrics  # the report's metrics reach MLflow
    run_dir = user_dir / "arena_runs" / "auction" / run_id
    assert _trained_changed_the_weights(run_dir, user_dir / "home")
    # the game's bots play under the ids they were seated as
    from arena.tracking import episodes_from_run

    eps = episodes_from_run(run_id, f"sqlite:///{user_dir / 'mlflow.db'}", max_results=50)
    seen = {t.policy_id for ep in eps for t in ep.turns}
    assert {"scripted/shading", "scripted/truthful"} & seen
    assert seen <= {"main", "scripted/shading", "scripted/truthful"}


def test_a_users_game_is_listed_and_played_by_hand(user_dir: Path):
    listed = arena("games", "-i", "my_auction", cwd=user_dir, env=_env(user_dir))
    assert listed.returncode == 0, listed.stderr
    assert "sealed_bid-v0" in listed.stdout and "truthful" in listed.stdout
    played = arena(
        "play", "sealed_bid-v0", "-i", "my_auction", "--opponent", "scripted/shading", cwd=user_dir, env=_env(user_dir), stdin="BID 3\n", timeout=120
    )
    assert played.returncode == 0, played.stderr[-2000:]
    assert "Game over" in played.stdout
    unknown = arena("play", "sealed_bid-v0", cwd=user_dir, env=_env(user_dir), timeout=120)
    assert unknown.returncode == 2 and "--import" in unknown.stderr  # not imported: a clear error, not a traceback


@pytest.mark.long
def test_a_plain_pettingzoo_env_from_an_installed_entry_point_plays_and_trains(tmp_path: Path):
    # an installed distribution: a module and a dist-info declaring an `arena.games` entry point
    site = tmp_path / "site"
    site.mkdir()
    (site / "pennies_game.py").write_text(PENNIES)
    dist = site / "pennies_game-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pennies-game\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[arena.games]\npennies = pennies_game\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "pennies.yaml").write_text(PENNIES_CONFIG)
    env = {**_env(work), "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    listed = arena("games", cwd=work, env=env)
    assert listed.returncode == 0 and "pennies-v0" in listed.stdout, listed.stderr
    conformance = subprocess.run(
        [sys.executable, "-c", "from arena.testing import check_game; print(check_game('pennies-v0').checks)"],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert conformance.returncode == 0 and "api_test" in conformance.stdout, conformance.stderr[-2000:]

    out = arena("run", "pennies.yaml", cwd=work, env=env)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    run_id = _run_id(out.stdout)
    _, rounds = _mlflow(work, run_id)
    assert sorted(m.step for m in rounds) == [0, 1]
    assert _trained_changed_the_weights(work / "arena_runs" / "pennies" / run_id, work / "home")
    # the tokenizer was trained on this game's text: its vocabulary holds the game's words
    vocab = json.loads(next((work / "home" / "models").glob("tiny-*/tokenizer.json")).read_text())["model"]["vocab"]
    assert any("HEADS" in tok or "TAILS" in tok for tok in vocab)
