"""What overlapping rollouts with learning buys: a round's wall time, synchronous against asynchronous.

Runs ``configs/distributed.yaml`` (the seller against the fair buyer, on Ray) twice per recipe, as
``arena run`` would, each in a new process: ``trainer.max_staleness=0`` (play, learn, sync) and
``trainer.max_staleness=1`` (round k+1 plays while round k learns). Both get the same resources:
one engine actor and one Ray Train learner worker, each with one Ray CPU (Ray then gives each one
thread), and one rollout worker, so generation and learning each have a core of their own, as they
would have their own devices on a cluster.

Reads the runs' per-round metrics from MLflow and prints one JSON object:

- ``generation_s`` and ``training_s``: medians of ``time/rollout_s`` and ``time/learn_s`` in the
  synchronous run;
- ``round_s_sync`` and ``round_s_async``: medians of ``time/round_s`` over the steady rounds (the
  first round plays before anything overlaps, and the last has no next round to play);
- ``async_over_sync``: their ratio (target: at most 0.75);
- ``max_staleness`` and ``staleness_max_observed`` (target: observed <= allowed), episodes dropped;
- ``async_over_sync_ideal``: what perfect overlap would give (the longer of generation and
  training, plus the sync): overlap saves at most the shorter of the two;
- per-round values, engine and learner idle time, and the evaluation returns of both runs.

Two recipes, ``rest`` first (its figures are the top-level ones) and ``pg``. On this CPU a pg round
learns from every trained turn and training takes about five times as long as generation, so
overlap can hide at most a sixth of a round; ReST trains on the best quarter of the seats, which
puts generation and training closer to the balance of GPU runs, where generation is most of a step.

    python benchmarks/async_rollouts.py [--rounds 8] [--groups 8] [--recipes rest,pg]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "distributed.yaml")
ARENA = str(Path(sys.executable).with_name("arena"))
RESOURCES = [
    "cluster.num_cpus=3",
    "cluster.engines=1",
    "cluster.engine_cpus=1",
    "cluster.learner_workers=1",
    "cluster.learner_worker_cpus=1",
    "cluster.rollout_workers=1",
]
SERIES = [
    "learn/main/worker_learn_s_max",
    "learn/main/samples",
    "learn/main/train_tokens_per_s",
    "time/round_s",
    "time/rollout_s",
    "time/learn_s",
    "time/sync_s",
    "time/engine_idle_s",
    "time/learner_idle_s",
    "staleness/main/max",
    "staleness/main/mean",
    "staleness/main/dropped_episodes",
]


def one_run(directory: Path, staleness: int, rounds: int, groups: int, seed: int, recipe: str) -> dict:
    """One ``arena run`` in ``directory``; its per-round series and final metrics."""
    import mlflow
    from mlflow.tracking import MlflowClient

    overrides = [
        *RESOURCES,
        f"trainer.max_staleness={staleness}",
        f"trainer.rounds={rounds}",
        f"trainer.groups_per_matchup={groups}",
        f"seed={seed}",
        f"trainer.recipe={recipe}",
        "tracking.traces_per_round=0",
    ]
    tick = time.perf_counter()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{directory / 'mlflow.db'}"}
    subprocess.run([ARENA, "run", CONFIG, *overrides], cwd=directory, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("arena").experiment_id])
    series = {k: [m.value for m in sorted(client.get_metric_history(run.info.run_id, k), key=lambda m: m.step)] for k in SERIES}
    final = run.data.metrics
    returns = {k: v for k, v in final.items() if k.startswith("eval/") and "/return/seller/" in k}
    return {"wall_s": round(wall, 2), "series": {k: [round(x, 4) for x in v] for k, v in series.items()}, "eval_returns": returns}


def steady(values: list[float]) -> list[float]:
    """The rounds between the first and the last."""
    return values[1:-1] if len(values) > 2 else values


def compare(base: Path, recipe: str, rounds: int, groups: int, seed: int) -> dict:
    """The synchronous and the asynchronous run of one recipe, and what they say."""
    runs = {}
    for mode, staleness in (("sync", 0), ("async", 1)):
        d = base / f"{recipe}-{mode}"
        d.mkdir()
        runs[mode] = one_run(d, staleness, rounds, groups, seed, recipe)
    sync, asyn = runs["sync"]["series"], runs["async"]["series"]
    out: dict = {"recipe": recipe}
    out["generation_s"] = round(statistics.median(sync["time/rollout_s"]), 3)
    out["training_s"] = round(statistics.median(sync["time/learn_s"]), 3)
    out["round_s_sync"] = round(statistics.median(steady(sync["time/round_s"])), 3)
    out["round_s_async"] = round(statistics.median(steady(asyn["time/round_s"])), 3)
    out["async_over_sync"] = round(out["round_s_async"] / out["round_s_sync"], 3)
    # what perfect overlap would give: the longer of the two, plus the sync
    sync_s = statistics.median(sync["time/sync_s"])
    out["async_over_sync_ideal"] = round((max(out["generation_s"], out["training_s"]) + sync_s) / out["round_s_sync"], 3)
    out["max_staleness"] = 1
    out["staleness_max_observed"] = max(asyn["staleness/main/max"])
    out["dropped_episodes"] = sum(asyn["staleness/main/dropped_episodes"])
    out["training_s_async"] = round(statistics.median(asyn["time/learn_s"]), 3)
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--groups", type=int, default=8, help="trainer.groups_per_matchup (x group_size 4 = episodes per round)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipes", default="rest,pg", help="the first one's figures are also the top-level ones")
    args = parser.parse_args()
    out: dict = {"config": "configs/distributed.yaml", "resources": RESOURCES, "rounds": args.rounds, "machine": platform.platform(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        by_recipe = [compare(Path(tmp), recipe, args.rounds, args.groups, args.seed) for recipe in args.recipes.split(",")]
    out.update({k: v for k, v in by_recipe[0].items() if k != "runs"})
    out["by_recipe"] = by_recipe
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
