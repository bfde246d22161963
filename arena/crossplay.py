"""Cross-play: every policy against every other, in every seating, outside any run.

A policy is named by a *spec* (:func:`resolve_policy`): a scripted bot, a saved
model directory, a checkpoint round, or a run's policy at a weight version
(``RUN_ID:main@10``). :func:`crossplay` plays each ordered pair (A, B) with A in
one seat and B in all the others, ``episodes`` times per seating, and gives the
mean-return matrix, win/draw/loss counts and OpenSkill ratings
(:mod:`arena.ratings`); :func:`log_crossplay` puts them in one MLflow run with a
heatmap. Turns are recorded under the spec strings, so the episodes, the matrix
and the ratings all name policies exactly as the user did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.agents.base import Policy
from arena.records import Episode, Matchup
from arena.seeds import CROSSPLAY, derive_seed

#: what a spec may be, for error messages
ACCEPTED_FORMS = (
    "'scripted/<bot>' or 'random'",
    "a model directory (with config.json, or a LoRA adapter's adapter_config.json; e.g. a checkpoint's round_00010/policies/main)",
    "a checkpoint round directory (round_NNNNN, with state.json and policies/)",
    "'RUN_ID:policy@version' (e.g. 3f2a...:main@10, a run's local checkpoint)",
)
#: model sampling in cross-play unless overridden: the runs' own defaults for the games' short moves
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_NEW_TOKENS = 24
#: turns per episode before it is cut (the runs' default ``rollout.max_steps``)
MAX_STEPS = 1000

_RUN_SPEC = re.compile(r"^(?P<run>[0-9A-Za-z]+):(?P<policy>[^@:]+)@(?P<version>-?\d+)$")


# ----- policies ----------------------------------------------------------------------------------
def default_sampling() -> Any:
    """Temperature 1.0, 24 new tokens: the moves of Arena's games are short."""
    from arena.engines.base import SamplingParams

    return SamplingParams(temperature=DEFAULT_TEMPERATURE, max_new_tokens=DEFAULT_MAX_NEW_TOKENS)


def resolve_policy(spec: str, game: str, *, sampling: Any = None, device: str = "cpu", tracking_uri: str | None = None) -> Policy:
    """The policy a spec names, ready to play ``game``; ValueError naming the spec when it names none.

    ``spec`` is ``scripted/<bot>`` or ``random``; a model directory; a checkpoint round directory
    (its only policy); or ``RUN_ID:policy@version`` (found in the run's local checkpoints, the run
    read from the MLflow store at ``tracking_uri``). A module's policy class, ``module:Class``, is
    accepted too, as everywhere else policies are named.
    """
    from arena.agents.catalog import make_fixed_policy

    if spec == "random" or spec.startswith("scripted/"):
        return make_fixed_policy(spec, game)
    path = Path(spec).expanduser()
    if path.is_dir():
        model_dir, version = _model_dir(path, spec)
        return _model_policy(spec, model_dir, version, sampling=sampling, device=device)
    if path.exists():
        raise ValueError(f"policy {spec!r} is a file, not a model or checkpoint directory; a policy is {_forms()}")
    match = _RUN_SPEC.match(spec)
    if match:
        model_dir = run_checkpoint(match["run"], match["policy"], int(match["version"]), tracking_uri=tracking_uri)
        return _model_policy(spec, model_dir, int(match["version"]), sampling=sampling, device=device)
    if ":" in spec and "@" not in spec and not spec.startswith((".", "/", "~")):
        module, _, policy = spec.partition(":")
        if re.fullmatch(r"[0-9a-f]{32}", module):
            raise ValueError(f"policy {spec!r} names a run's policy without a version: write {spec}@VERSION (e.g. {module}:{policy}@10)")
        return make_fixed_policy(spec, game)  # module:Class
    looks_like_path = "/" in spec or spec.startswith((".", "~"))
    problem = f"no such directory {spec!r}" if looks_like_path else f"unknown policy {spec!r}"
    raise ValueError(f"{problem}; a policy is {_forms()}")


def _forms() -> str:
    return "one of: " + "; ".join(ACCEPTED_FORMS)


def _model_dir(path: Path, spec: str) -> tuple[Path, int]:
    """The model directory a directory spec names and its weight version (0 outside a checkpoint)."""
    from arena.checkpoint import STATE

    if is_model_dir(path):
        return path, _checkpoint_version(path)
    policies = path / "policies"
    if (path / STATE).is_file() and policies.is_dir():
        found = sorted(d for d in policies.iterdir() if is_model_dir(d))
        if not found:
            raise ValueError(f"checkpoint {spec!r} holds no policy model under {policies}")
        if len(found) > 1:
            listed = "\n  ".join(str(d) for d in found)
            raise ValueError(f"checkpoint {spec!r} holds {len(found)} policies; name one by its directory:\n  {listed}")
        return found[0], _checkpoint_version(found[0])
    raise ValueError(f"{spec!r} is a directory but neither a model directory (no config.json) nor a checkpoint round (no state.json and policies/)")


def _checkpoint_version(model_dir: Path) -> int:
    """The weight version a checkpoint's ``state.json`` gives the policy saved in ``model_dir``; 0 outside one."""
    from arena.checkpoint import STATE, policy_dirname, read_state

    round_dir = model_dir.parent.parent
    if model_dir.parent.name != "policies" or not (round_dir / STATE).is_file():
        return 0
    versions = read_state(round_dir).get("versions", {})
    return next((int(v) for pid, v in versions.items() if policy_dirname(pid) == model_dir.name), 0)


def _model_policy(spec: str, model_dir: Path, version: int, *, sampling: Any, device: str) -> Policy:
    from arena.agents.llm import LLMAgent
    from arena.engines.hf import HFEngine

    try:
        engine = HFEngine(model_dir, device=device)
    except (OSError, ValueError, RuntimeError) as e:  # no weights, no tokenizer, an unknown architecture or device
        raise ValueError(f"cannot load the model of policy {spec!r} from {model_dir}: {str(e).splitlines()[0][:300]}") from None
    engine.version = version  # the agent's version: what its turns and ratings record
    return LLMAgent(engine, policy_id=spec, sampling=sampling or default_sampling())


def run_checkpoint(run_id: str, policy: str, version: int, *, tracking_uri: str | None = None) -> Path:
    """The model directory of ``policy`` at weight ``version`` in MLflow run ``run_id``'s local checkpoints,
    or in its league's snapshot pool.

    The run's logged ``config.yaml`` gives ``runs_dir`` and ``name``; its checkpoints are
    ``<runs_dir>/<name>/<run_id>/checkpoints/round_*/``, each with ``state.json`` saying the versions
    (and, in a league run, ``league_pool.pt`` holding the pool's past versions).
    """
    import yaml
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from arena.checkpoint import STATE, policy_dirname, read_state
    from arena.tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp, _no_download_bar():
            config = yaml.safe_load(Path(client.download_artifacts(run_id, "config.yaml", tmp)).read_text()) or {}
    except MlflowException as e:
        raise ValueError(f"cannot read MLflow run {run_id!r} and its config.yaml in {uri}: {e.message.splitlines()[0]}") from None
    except OSError as e:
        raise ValueError(f"MLflow run {run_id!r} in {uri} has no config.yaml artifact ({e}); is it an `arena run`?") from None
    runs_dir, name = config.get("runs_dir", "arena_runs"), config.get("name")
    if not name:
        raise ValueError(f"the config.yaml of MLflow run {run_id!r} names no run (no 'name')")
    root = Path(runs_dir).expanduser() / name / run_id / "checkpoints"
    rounds = sorted(d for d in root.glob("round_*") if (d / STATE).is_file()) if root.is_dir() else []
    if not rounds:
        raise ValueError(f"run {run_id} has no local checkpoint under {root} (runs_dir {runs_dir!r} is read from the working directory)")
    seen: dict[int, Path] = {}
    for d in rounds:
        saved = read_state(d).get("versions", {})
        if policy in saved and is_model_dir(d / "policies" / policy_dirname(policy)):
            seen[int(saved[policy])] = d  # the latest round with that version
    if version not in seen:
        snapshot = _league_snapshot(rounds, policy, version)
        if snapshot is not None:
            return snapshot
        if not seen:
            policies = sorted({pid for d in rounds for pid in read_state(d).get("versions", {})})
            raise ValueError(f"run {run_id} has no policy {policy!r} in its checkpoints under {root}; its policies: {', '.join(policies) or 'none'}")
        have = ", ".join(f"{policy}@{v} ({seen[v].name})" for v in sorted(seen))
        raise ValueError(f"run {run_id} has no checkpoint of {policy}@{version}; the versions it has under {root}: {have}")
    return seen[version] / "policies" / policy_dirname(policy)


def is_model_dir(path: Path) -> bool:
    """A directory a policy loads from: a model (``config.json``) or a LoRA adapter in peft's format
    (``adapter_config.json``, which names its base model)."""
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _league_snapshot(rounds: list[Path], policy: str, version: int) -> Path | None:
    """A past version kept only in a league's snapshot pool (``league_pool.pt`` of the newest checkpoint
    holding it), written once as a model directory next to the checkpoints (``league_snapshots/``)."""
    import shutil

    import torch
    from safetensors.torch import save_file

    from arena.checkpoint import policy_dirname
    from arena.league import POOL_FILE

    for d in reversed(rounds):
        pool_file, base = d / POOL_FILE, d / "policies" / policy_dirname(policy)
        if not (pool_file.is_file() and is_model_dir(base)):
            continue
        pool = torch.load(pool_file, weights_only=True)
        if version not in pool.get(policy, {}):
            continue
        out = d.parent.parent / "league_snapshots" / f"{policy_dirname(policy)}@{version}"
        # a LoRA run's pool holds adapters: the snapshot is an adapter directory on the same base
        weights = "adapter_model.safetensors" if (base / "adapter_config.json").is_file() else "model.safetensors"
        if not (out / weights).is_file():
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(base, tmp, ignore=shutil.ignore_patterns("optimizer.pt", "*.safetensors"))
            save_file({k: v.contiguous() for k, v in pool[policy][version].items()}, str(tmp / weights))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        return out
    return None


@contextlib.contextmanager
def _no_download_bar() -> Iterator[None]:
    """MLflow draws a progress bar for every artifact download, one small file included; not for this one."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# ----- playing -----------------------------------------------------------------------------------
@dataclass
class CrossplayResult:
    """What cross-play gives back. Matrices are row spec -> column spec -> value, from the row's side."""

    game: str
    policies: list[str]
    episodes_per_pairing: int
    seed: int
    game_kwargs: dict[str, Any] = field(default_factory=dict)
    #: mean return of the row's seats in the episodes of the row against the column (every seating)
    matrix: dict[str, dict[str, float]] = field(default_factory=dict)
    wins: dict[str, dict[str, int]] = field(default_factory=dict)
    draws: dict[str, dict[str, int]] = field(default_factory=dict)
    losses: dict[str, dict[str, int]] = field(default_factory=dict)
    #: spec -> {mu, sigma, ordinal, games}
    ratings: dict[str, dict[str, float]] = field(default_factory=dict)
    episodes: list[Episode] = field(default_factory=list)

    def ranking(self) -> list[str]:
        """The specs, best first by rating ordinal (ties by spec)."""
        return sorted(self.policies, key=lambda p: (-self.ratings[p]["ordinal"], p))

    def mean_return(self, spec: str) -> float:
        """The row's mean return against all the others (each opponent weighted alike)."""
        row = [v for c, v in self.matrix[spec].items() if c != spec]
        return sum(row) / len(row)

    def as_json(self) -> dict[str, Any]:
        return {
            "game": self.game,
            "game_kwargs": self.game_kwargs,
            "episodes_per_pairing": self.episodes_per_pairing,
            "seed": self.seed,
            "policies": list(self.policies),
            "ranking": self.ranking(),
            "ratings": self.ratings,
            "mean_return": {p: self.mean_return(p) for p in self.policies},
            "matrix": self.matrix,
            "wins": self.wins,
            "draws": self.draws,
            "losses": self.losses,
            "episodes": len(self.episodes),
        }


def seatings(players: list[str], a: str, b: str) -> list[dict[str, str]]:
    """A's seatings against B: A in seat i, B in every other seat; with two players only seat 0
    (the reversed pair plays the other)."""
    seats = range(1) if len(players) == 2 else range(len(players))
    return [{p: (a if j == i else b) for j, p in enumerate(players)} for i in seats]


def crossplay_matchups(game: str, players: list[str], specs: list[str], *, episodes: int, seed: int, game_kwargs: dict | None = None) -> list[Matchup]:
    """Every ordered pair of distinct specs, every seating, ``episodes`` seeds each: the order ratings are updated in."""
    pairs = [(a, b) for a in specs for b in specs if a != b]
    return [
        Matchup(game=game, seed=derive_seed(seed, CROSSPLAY, pi, si, k), seats=seats, game_kwargs=dict(game_kwargs or {}))
        for pi, (a, b) in enumerate(pairs)
        for si, seats in enumerate(seatings(players, a, b))
        for k in range(episodes)
    ]


def crossplay(
    game: str,
    specs: list[str],
    *,
    episodes: int,
    seed: int = 0,
    game_kwargs: dict | None = None,
    policies: Mapping[str, Policy] | None = None,
    console: Any = None,
    sampling: Any = None,
    device: str = "cpu",
    tracking_uri: str | None = None,
    concurrency: int = 64,
) -> CrossplayResult:
    """Play every ordered pair of ``specs`` in every seating and rate them.

    ``policies`` (spec -> policy) are used as given; the other specs are resolved with
    :func:`resolve_policy`. A progress bar goes to ``console`` when one is given.
    """
    from arena.ratings import Ratings, rating_key
    from arena.registry import make

    specs = list(specs)
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise ValueError(f"policy {', '.join(map(repr, twice))} is given more than once; cross-play needs distinct policies")
    if len(specs) < 2:
        raise ValueError(f"cross-play needs at least 2 distinct policies, got {len(specs)}")
    if episodes < 1:
        raise ValueError(f"episodes per pairing must be at least 1, got {episodes}")
    game_kwargs = dict(game_kwargs or {})
    env = make(game, **game_kwargs)
    players = list(env.possible_agents)
    env.close()
    if len(players) < 2:
        raise ValueError(f"{game} has a single player; cross-play needs a game of two or more")

    pool: dict[str, Policy] = dict(policies or {})
    for spec in specs:
        if spec not in pool:
            pool[spec] = resolve_policy(spec, game, sampling=sampling, device=device, tracking_uri=tracking_uri)
        elif getattr(pool[spec], "policy_id", spec) != spec:
            raise ValueError(f"the policy given for {spec!r} records its turns as {pool[spec].policy_id!r}; give it policy_id {spec!r}")

    matchups = crossplay_matchups(game, players, specs, episodes=episodes, seed=seed, game_kwargs=game_kwargs)
    ids = [f"crossplay-{i:05d}" for i in range(len(matchups))]
    eps = _play(matchups, {s: pool[s] for s in specs}, ids, console, concurrency)

    ratings = Ratings()
    wins = {r: {c: 0 for c in specs if c != r} for r in specs}
    draws = {r: {c: 0 for c in specs if c != r} for r in specs}
    losses = {r: {c: 0 for c in specs if c != r} for r in specs}
    sums = {r: {c: 0.0 for c in specs if c != r} for r in specs}
    counts = {r: {c: 0 for c in specs if c != r} for r in specs}
    for ep in eps:
        sides = _sides(ep)  # spec -> its seats; exactly two specs
        (a, seats_a), (b, seats_b) = sides.items()
        mean = {a: _mean(ep.returns[p] for p in seats_a), b: _mean(ep.returns[p] for p in seats_b)}
        # One two-sided match per episode, on the sides' mean returns however many seats each holds: each
        # side is rated through one of its seats, so a policy in four seats is not four clones of itself.
        rep_a, rep_b = seats_a[0], seats_b[0]
        ratings.update(ep.model_copy(update={"returns": {**ep.returns, rep_a: mean[a], rep_b: mean[b]}}), teams=[[rep_a], [rep_b]])
        for r, c in ((a, b), (b, a)):
            sums[r][c] += mean[r]
            counts[r][c] += 1
            (wins if mean[r] > mean[c] else losses if mean[r] < mean[c] else draws)[r][c] += 1
    keys = {s: rating_key(s, int(getattr(pool[s], "version", 0))) for s in specs}
    return CrossplayResult(
        game=game,
        policies=specs,
        episodes_per_pairing=episodes,
        seed=seed,
        game_kwargs=game_kwargs,
        matrix={r: {c: sums[r][c] / counts[r][c] for c in sums[r]} for r in specs},
        wins=wins,
        draws=draws,
        losses=losses,
        ratings={s: ratings.get(keys[s]).as_dict() for s in specs},
        episodes=eps,
    )


def _sides(ep: Episode) -> dict[str, list[str]]:
    sides: dict[str, list[str]] = {}
    for player, spec in ep.matchup.seats.items():
        sides.setdefault(spec, []).append(player)
    return sides


def _mean(values: Any) -> float:
    values = list(values)
    return float(sum(values) / len(values))


def _play(matchups: list[Matchup], pool: dict[str, Policy], ids: list[str], console: Any, concurrency: int) -> list[Episode]:
    """Play on one event loop (the models batch the waiting episodes' requests), with a progress bar on ``console``."""
    from arena.rollout import play_many

    if console is None:
        return asyncio.run(play_many(matchups, pool, concurrency=concurrency, episode_ids=ids, max_steps=MAX_STEPS))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("cross-play: episodes", total=len(matchups))
        return asyncio.run(
            play_many(matchups, pool, concurrency=concurrency, episode_ids=ids, on_episode=lambda ep: progress.advance(task), max_steps=MAX_STEPS)
        )


# ----- reporting ---------------------------------------------------------------------------------
def short_label(spec: str, width: int = 32) -> str:
    """A spec short enough for a plot axis: a long path keeps its last parts."""
    if len(spec) <= width or "/" not in spec:
        return spec
    parts = spec.rstrip("/").split("/")
    label = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(label) + 1 > width - 2:
            break
        label = f"{part}/{label}"
    return f"…/{label}"


def rating_metric_names(specs: list[str]) -> dict[str, str]:
    """spec -> ``rating/<name>`` metric prefix, each distinct and acceptable to MLflow (no empty,
    ``.`` or ``..`` path parts, which MLflow rejects, and at most 200 characters)."""
    from arena.reporting import metric_name

    out: dict[str, str] = {}
    for spec in specs:
        parts = [p for p in metric_name(spec).split("/") if p not in ("", ".", "..")]
        base = "/".join(parts)[-200:].lstrip("/") or "policy"
        name, n = f"rating/{base}", 2
        while name in out.values():
            name, n = f"rating/{base}_{n}", n + 1
        out[spec] = name
    return out


def heatmap(result: CrossplayResult) -> Any:
    """Row policy's mean return against the column policy, rows and columns ordered by rating."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    order = result.ranking()
    grid = np.array([[result.matrix[r][c] if r != c else np.nan for c in order] for r in order], dtype=float)
    n = len(order)
    fig, ax = plt.subplots(figsize=(2.2 + 1.1 * n, 1.6 + 0.9 * n))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis")
    fig.colorbar(image, ax=ax, label="mean return of the row policy")
    labels = [short_label(p) for p in order]
    ax.set_xticks(range(n), labels, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("against (column)")
    ax.set_ylabel("policy (row), best rated first")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=8, color="black" if grid[i, j] > middle else "white")
    ax.set_title(f"{result.game}: cross-play, {result.episodes_per_pairing} episodes per pairing and seating")
    fig.tight_layout()
    return fig


def log_crossplay(result: CrossplayResult, tracking_uri: str | None = None, experiment: str = "crossplay") -> str:
    """One MLflow run: params, ``crossplay.json``, ``rating/<spec>/mu|sigma|ordinal`` and ``crossplay_heatmap.png``; returns its id."""
    import matplotlib.pyplot as plt
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from arena.tracking import quiet_mlflow
    from arena.tracking import tracking_uri as resolve

    quiet_mlflow()
    client = MlflowClient(tracking_uri=resolve(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=f"crossplay-{result.game}", tags={"arena.kind": "crossplay"})
    run_id = run.info.run_id
    try:
        params = {
            "game": result.game,
            "episodes_per_pairing": str(result.episodes_per_pairing),
            "seed": str(result.seed),
            "n_policies": str(len(result.policies)),
            **{f"policy/{i}": spec[-6000:] for i, spec in enumerate(result.policies)},
            **{f"game_kwargs.{k}": json.dumps(v) for k, v in result.game_kwargs.items()},
        }
        names = rating_metric_names(result.policies)
        now = int(time.time() * 1000)
        metrics = [Metric(f"{names[spec]}/{k}", float(result.ratings[spec][k]), now, 0) for spec in result.policies for k in ("mu", "sigma", "ordinal")]
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=[RunTag("arena.game", result.game)])
        client.log_text(run_id, json.dumps(result.as_json(), indent=1), "crossplay.json")
        fig = heatmap(result)
        client.log_figure(run_id, fig, "crossplay_heatmap.png")
        plt.close(fig)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
