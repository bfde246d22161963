"""What tracing episodes costs: ``arena run configs/bots_only.yaml`` with and without traces.

Runs the bots-only config as a user would (``arena run``, a new process each time), alternating
"traced" (the defaults: a sample of 32 per round plus each entry's best and worst and every
episode with an illegal move; here all 20 episodes) and "untraced" (``traces_per_round=0`` and the
other choices off). Two stores: a fresh SQLite store per run (the first run in a directory, which
also creates MLflow's tables), and one existing store that every run of a kind adds to. Reports
each run's wall time, the medians, and the overhead: (traced - untraced) / traced.

Whole runs on a shared 2-core machine vary by a second from one to the next, more than tracing
costs, so the script also times the tracing itself: the run's episodes, read back from its
journal, written as traces by the same call a run makes (``log_episode_traces``), into a fresh and
into an existing store, ``--repeats`` times each. ``direct_fraction`` is that time over the traced
run's median wall time. Prints one JSON object.

    python benchmarks/tracing_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "bots_only.yaml")
ARENA = str(Path(sys.executable).with_name("arena"))
UNTRACED = ["tracking.traces_per_round=0", "tracking.trace_extremes=false", "tracking.trace_illegal=false"]


def one_run(directory: Path, traced: bool) -> tuple[float, int]:
    """Wall time of one `arena run` in ``directory`` (its store: ./mlflow.db), and the traces it logged."""
    tick = time.perf_counter()
    out = subprocess.run([ARENA, "run", CONFIG, *([] if traced else UNTRACED)], cwd=directory, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - tick
    traces = int(out.stdout.split(" episodes traced")[0].rsplit(" ", 1)[-1])
    return seconds, traces


def time_tracing(store: Path, journal: Path) -> float:
    """In a new process, as in a run: open the store and a run, then time writing the journal's traces."""
    import mlflow

    from arena import tracking
    from arena.reporting import select_traces

    tracking.quiet_mlflow()
    items = tracking.read_journal(journal)
    chosen = select_traces([ep for ep, _ in items], [c.entry for _, c in items], step=0, seed=0, sample=32, extremes=True, illegal=True)
    items = [items[i] for i in chosen]
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    experiment = mlflow.set_experiment("bots_only")
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        tick = time.perf_counter()
        tracking.log_episode_traces(items)
        return time.perf_counter() - tick


def direct(base: Path, repeats: int) -> dict:
    """Seconds that writing a run's traces takes, each time in a new process: fresh and existing stores."""
    source = base / "direct-source"
    source.mkdir()
    one_run(source, traced=True)
    journal = next((source / "arena_runs").rglob("*.jsonl"))
    times: dict[str, list[float]] = {"fresh": [], "existing": []}
    existing = base / "direct-existing"
    existing.mkdir()
    one_run(existing, traced=False)
    for i in range(repeats):
        for kind in ("fresh", "existing"):
            d = existing if kind == "existing" else base / f"direct-fresh-{i}"
            d.mkdir(exist_ok=True)
            code = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); from tracing_overhead import time_tracing; from pathlib import Path; print(time_tracing(Path({str(d)!r}), Path({str(journal)!r})))"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            times[kind].append(round(float(out.stdout.strip().splitlines()[-1]), 4))
    return {**{f"{k}_s": v for k, v in times.items()}, **{f"{k}_median_s": round(statistics.median(v), 4) for k, v in times.items()}}


def summary(traced: list[float], untraced: list[float]) -> dict:
    t, u = statistics.median(traced), statistics.median(untraced)
    return {
        "traced_s": traced,
        "untraced_s": untraced,
        "traced_median_s": round(t, 3),
        "untraced_median_s": round(u, 3),
        "overhead_s": round(t - u, 3),
        "overhead_fraction": round((t - u) / t, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    out: dict = {"config": "configs/bots_only.yaml", "repeats": args.repeats, "machine": platform.platform(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "warmup").mkdir()
        one_run(base / "warmup", traced=False)  # imports into the page cache
        fresh: dict[bool, list[float]] = {True: [], False: []}
        existing: dict[bool, list[float]] = {True: [], False: []}
        shared = {flag: base / f"existing-{flag}" for flag in (True, False)}
        for d in shared.values():
            d.mkdir()
            one_run(d, traced=False)  # the store exists before the timed runs
        for i in range(args.repeats):
            for flag in (True, False):
                d = base / f"fresh-{flag}-{i}"
                d.mkdir()
                seconds, traces = one_run(d, flag)
                fresh[flag].append(round(seconds, 3))
                if flag:
                    out["traces_per_traced_run"] = traces
                seconds, _ = one_run(shared[flag], flag)
                existing[flag].append(round(seconds, 3))
        out["fresh_store"] = summary(fresh[True], fresh[False])
        out["existing_store"] = summary(existing[True], existing[False])
        out["tracing_alone"] = direct(base, args.repeats)
    for kind in ("fresh", "existing"):
        store = out[f"{kind}_store"]
        store["direct_fraction"] = round(out["tracing_alone"][f"{kind}_median_s"] / store["traced_median_s"], 4)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
