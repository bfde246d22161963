"""What tracing episodes costs: ``arena run configs/bots_only.yaml`` with and without traces.

Runs the bots-only config as a user would (``arena run``, a new process each time), alternating
"traced" (the defaults: a sample of 32 per round plus each entry's best and worst and every
episode with an illegal move; here all 20 episodes) and "untraced" (``traces_per_round=0`` and the
other choices off). Two stores: a fresh SQLite store per run (the first run in a directory, which
also creates MLflow's tables), and one existing store that every run of a kind adds to. Reports
each run's wall time, the medians, and the overhead: (traced - untraced) / traced. Prints one JSON
object.

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
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
